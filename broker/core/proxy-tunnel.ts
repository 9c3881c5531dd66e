// A CONNECT tunnel through an HTTP(S) proxy to a target's host and port: the action's requests and the broker's
// fetches of issuers' keys run inside one when a proxy setting applies (proxy-settings.ts).
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { type ProxySetting, portOf } from './proxy-settings.js';

/** A proxy's answer other than 2xx to CONNECT: it opened no tunnel, so nothing reached the target. */
export interface TunnelRefusal {
  /** The environment variable that names the proxy, e.g. `HTTPS_PROXY`. */
  variable: string;
  /** The proxy's scheme, host and port, e.g. `http://proxy.corp:3128`; never its credentials. */
  proxy: string;
  /** The `host:port` the tunnel was asked for. */
  target: string;
  status: number;
  /** Whether the setting held credentials, which went to the proxy as Proxy-Authorization. */
  withCredentials: boolean;
}

/** openTunnel rejects with it when the proxy opens no tunnel; see TunnelRefusal. */
export class ProxyRefusedError extends Error {
  override name = 'ProxyRefusedError';

  constructor(readonly refusal: TunnelRefusal) {
    super(`The proxy ${refusal.proxy} refused a tunnel to ${refusal.target} (HTTP ${refusal.status}).`);
  }
}

/** The connection to the proxy itself failed (refused, reset, no such host, TLS), so no tunnel was asked for. */
export interface ProxyUnreachable {
  /** The environment variable that names the proxy, e.g. `HTTPS_PROXY`. */
  variable: string;
  /** The proxy's scheme, host and port; never its credentials. */
  proxy: string;
  /** The `host:port` the tunnel was to go to. */
  target: string;
}

/** openTunnel rejects with it when it cannot reach the proxy; `cause` is the socket's error. */
export class ProxyUnreachableError extends Error {
  override name = 'ProxyUnreachableError';

  constructor(
    readonly unreachable: ProxyUnreachable,
    cause: Error,
  ) {
    super(`Could not reach the proxy ${unreachable.proxy}: ${cause.message}`, { cause });
  }
}

/**
 * Asks an HTTP(S) proxy for a tunnel to the target's host and port; the request then runs inside it. An abort
 * rejects with the signal's reason; a connection to the proxy that fails, with ProxyUnreachableError; an answer
 * other than 2xx, with ProxyRefusedError. Neither names the credentials the setting holds.
 */
export async function openTunnel(setting: ProxySetting, target: URL, signal?: AbortSignal): Promise<Socket> {
  const proxy = setting.url;
  const authority = `${target.hostname}:${portOf(target)}`;
  const headers: Record<string, string> = { host: authority };
  if (setting.credentials !== undefined) {
    headers['proxy-authorization'] = `Basic ${Buffer.from(setting.credentials).toString('base64')}`;
  }
  const lib = proxy.protocol === 'https:' ? await import('node:https') : await import('node:http');
  const connect: ClientRequest = lib.request({
    method: 'CONNECT',
    host: bareHost(proxy.hostname),
    port: portOf(proxy),
    path: authority,
    headers,
    agent: false,
  });
  return new Promise<Socket>((resolve, reject) => {
    const onAbort = () => connect.destroy(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    connect.once('error', (error) => {
      signal?.removeEventListener('abort', onAbort);
      // An abort is the request's time limit, reported as such; any other error is the proxy's connection.
      const aborted = signal?.aborted && error === signal.reason;
      const unreachable = { variable: setting.variable, proxy: proxy.origin, target: authority };
      reject(aborted ? error : new ProxyUnreachableError(unreachable, error));
    });
    connect.once('connect', (response: IncomingMessage, socket: Socket, head: Buffer) => {
      signal?.removeEventListener('abort', onAbort);
      const status = response.statusCode ?? 0;
      if (status < 200 || status > 299) {
        socket.destroy();
        reject(
          new ProxyRefusedError({
            variable: setting.variable,
            proxy: proxy.origin,
            target: authority,
            status,
            withCredentials: setting.credentials !== undefined,
          }),
        );
        return;
      }
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    connect.end();
  });
}

/** A URL's hostname as node:net takes it: IPv6 addresses without their brackets. */
export function bareHost(hostname: string): string {
  return hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
}

/** SNI and the certificate's host name check; RFC 6066 allows no IP address as a server name. */
export function serverName(url: URL): string | undefined {
  const host = bareHost(url.hostname);
  return /^[\d.]+$/.test(host) || host.includes(':') ? undefined : host;
}
