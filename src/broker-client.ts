// Talks to the broker: the OIDC token exchange and RFC 7009 revocation, every outcome returned as a value.
import { ProxySettingError } from '../broker/core/proxy-settings.js';
import { ProxyRefusedError, type ProxyUnreachable, type TunnelRefusal } from '../broker/core/proxy-tunnel.js';
import type { Fetch, FetchResponse } from './deps.js';
import { describeNetworkError } from './network-error.js';
import { isProxyError, type ProxyError } from './proxy.js';

const USER_AGENT = 'stepsec-oidc-auth/1';

export interface ExchangeRequest {
  oidcToken: string;
  tenant: string;
  permissions: string[];
  durationSeconds?: number;
  policy?: string;
}

/** A successful exchange, validated; `expiresAt` is normalised to ISO 8601. */
export interface TokenGrant {
  accessToken: string;
  expiresAt: string;
  expiresIn: number;
  permissions: string[];
  policy: string;
  tenant: string;
}

/** An RFC 9457 problem document; only the fields the action reads are typed. */
export interface Problem {
  code?: string;
  title?: string;
  detail?: string;
  request_id?: string;
  [extension: string]: unknown;
}

export type BrokerFailure =
  | { kind: 'problem'; url: string; status: number; problem: Problem; retryAfter?: string }
  /** An answer that is not the broker's: never carries the body, which could hold a token. */
  | {
      kind: 'unexpected';
      url: string;
      status: number;
      contentType: string;
      location?: string;
      retryAfter?: string;
      /** A 2xx of another shape that carried an access token: it is valid at the broker all the same. */
      issuedToken?: string;
    }
  | { kind: 'network'; url: string; code?: string; message: string; tls: boolean; timedOut: boolean }
  /** The runner's proxy setting names no usable proxy, so nothing was sent. */
  | { kind: 'proxy'; variable: string; message: string }
  /** The proxy opened no tunnel to the target, so nothing reached it. */
  | ({ kind: 'tunnel' } & TunnelRefusal)
  /** The proxy itself could not be reached, so nothing reached the target. */
  | ({ kind: 'proxy-unreachable'; code?: string; message: string; tls: boolean } & ProxyUnreachable);

export type BrokerAnswer<T> = { kind: 'ok'; value: T } | BrokerFailure;

export interface BrokerClient {
  exchange(request: ExchangeRequest, timeoutMs: number): Promise<BrokerAnswer<TokenGrant>>;
  revoke(token: string, timeoutMs: number): Promise<BrokerAnswer<null>>;
}

export function createBrokerClient(fetchFn: Fetch, apiUrl: string): BrokerClient {
  return {
    async exchange(request, timeoutMs) {
      const url = `${apiUrl}/oidc/token`;
      const body = {
        oidc_token: request.oidcToken,
        tenant: request.tenant,
        ...(request.permissions.length > 0 ? { permissions: request.permissions } : {}),
        ...(request.durationSeconds !== undefined ? { duration_seconds: request.durationSeconds } : {}),
        ...(request.policy !== undefined ? { policy: request.policy } : {}),
      };
      const answer = await send(fetchFn, url, timeoutMs, {
        'content-type': 'application/json',
        body: JSON.stringify(body),
      });
      if (answer.kind !== 'ok') return answer;
      const grant = answer.json === undefined ? undefined : toGrant(answer.json);
      if (!grant) return { ...unexpected(url, answer.response), issuedToken: tokenIn(answer.json) };
      return { kind: 'ok', value: grant };
    },

    async revoke(token, timeoutMs) {
      const url = `${apiUrl}/tokens/revoke`;
      const answer = await send(fetchFn, url, timeoutMs, {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Bearer ${token}`,
        body: new URLSearchParams({ token }).toString(),
      });
      return answer.kind === 'ok' ? { kind: 'ok', value: null } : answer;
    },
  };
}

type Sent = { kind: 'ok'; response: FetchResponse; json: unknown } | BrokerFailure;

async function send(
  fetchFn: Fetch,
  url: string,
  timeoutMs: number,
  { body, ...headers }: Record<string, string> & { body: string },
): Promise<Sent> {
  let response: FetchResponse;
  let text: string;
  try {
    // Redirects are not followed: the request carries a credential, and a moved broker is a misconfiguration.
    response = await fetchFn(url, {
      method: 'POST',
      headers: { accept: 'application/json, application/problem+json', 'user-agent': USER_AGENT, ...headers },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await response.text();
  } catch (error) {
    return isProxyError(error) ? proxyFailure(error) : networkFailure(url, error);
  }
  const json = isJson(response) ? parseJson(text) : undefined;
  if (response.status >= 200 && response.status < 300) return { kind: 'ok', response, json };
  if (isProblem(json)) {
    const retryAfter = response.headers.get('retry-after') ?? undefined;
    return { kind: 'problem', url, status: response.status, problem: json, retryAfter };
  }
  return unexpected(url, response);
}

function unexpected(url: string, response: FetchResponse): BrokerFailure {
  return {
    kind: 'unexpected',
    url,
    status: response.status,
    contentType: response.headers.get('content-type') ?? '(none)',
    location: response.headers.get('location') ?? undefined,
    retryAfter: response.headers.get('retry-after') ?? undefined,
  };
}

function isJson(response: FetchResponse): boolean {
  const type = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  return type === 'application/json' || type === 'application/problem+json';
}

/** The value `text` holds as JSON, or undefined when it is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isProblem(json: unknown): json is Problem {
  return typeof json === 'object' && json !== null && typeof (json as Problem).code === 'string';
}

/** The access token an answer carries, whatever else it holds. */
function tokenIn(json: unknown): string | undefined {
  const token =
    typeof json === 'object' && json !== null ? (json as Record<string, unknown>).access_token : undefined;
  return typeof token === 'string' && token !== '' ? token : undefined;
}

function toGrant(json: unknown): TokenGrant | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const body = json as Record<string, unknown>;
  const expiresAt = typeof body.expires_at === 'string' ? Date.parse(body.expires_at) : Number.NaN;
  const permissions = body.permissions;
  if (
    typeof body.access_token !== 'string' ||
    body.access_token === '' ||
    Number.isNaN(expiresAt) ||
    typeof body.expires_in !== 'number' ||
    !Array.isArray(permissions) ||
    !permissions.every((p) => typeof p === 'string') ||
    typeof body.policy !== 'string' ||
    typeof body.tenant !== 'string'
  ) {
    return undefined;
  }
  return {
    accessToken: body.access_token,
    expiresAt: new Date(expiresAt).toISOString(),
    expiresIn: body.expires_in,
    permissions,
    policy: body.policy,
    tenant: body.tenant,
  };
}

/** A request that failed at the proxy, as the failure it reports, whether it went to the broker or to GitHub. */
export function proxyFailure(error: ProxyError): BrokerFailure {
  if (error instanceof ProxySettingError)
    return { kind: 'proxy', variable: error.variable, message: error.message };
  if (error instanceof ProxyRefusedError) return { kind: 'tunnel', ...error.refusal };
  const { code, message, tls } = describeNetworkError(error);
  return { kind: 'proxy-unreachable', ...error.unreachable, code, message, tls };
}

function networkFailure(url: string, error: unknown): BrokerFailure {
  const { code, message, tls, timedOut } = describeNetworkError(error);
  return {
    kind: 'network',
    url,
    code,
    message: timedOut ? 'no answer before the time limit' : message,
    tls,
    timedOut,
  };
}
