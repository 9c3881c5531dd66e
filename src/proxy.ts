// The action's requests that fail at a proxy (its setting, its refusal, its connection) rather than at the target.
import { ProxySettingError } from '../broker/core/proxy-settings.js';
import { ProxyRefusedError, ProxyUnreachableError } from '../broker/core/proxy-tunnel.js';

/** A request that failed at the proxy (its setting, its refusal, its connection) rather than at the target. */
export type ProxyError = ProxySettingError | ProxyRefusedError | ProxyUnreachableError;

export function isProxyError(error: unknown): error is ProxyError {
  return (
    error instanceof ProxySettingError ||
    error instanceof ProxyRefusedError ||
    error instanceof ProxyUnreachableError
  );
}
