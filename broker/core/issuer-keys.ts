// Per-issuer cache of OIDC signing keys (DESIGN §6): bounded fetches, unknown-kid cooldown, last good keys kept.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { elapsed } from './elapsed.js';
import { isLoopbackHost } from './loopback.js';
import { ProxyRefusedError, ProxyUnreachableError } from './proxy-tunnel.js';

export interface IssuerKeysLogger {
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
}

export interface TrustedIssuer {
  /** Exact `iss` value tokens must carry. */
  issuer: string;
  /** JWKS location; when absent it is discovered from `<issuer>/.well-known/openid-configuration`. */
  jwksUri?: string;
}

export interface IssuerKeysOptions {
  issuers: TrustedIssuer[];
  fetch?: typeof fetch;
  now: () => number;
  cooldownMs?: number;
  maxAgeMs?: number;
  timeoutMs?: number;
  maxBytes?: number;
  logger?: IssuerKeysLogger;
  /** Told of each failed fetch (the issuer, and the kind of failure), for a metric: the log line alone says it too. */
  onFetchFailure?: (issuer: string, reason: FetchErrorKind) => void;
}

/**
 * `refused`: the set the last successful fetch returned lists the kid, but with a key the broker does not verify
 * with, and why (listed twice, weaker than RSA-2048, marked for encryption, …). `unavailable`: the last fetch
 * failed (`lastError`) and either no keys are cached (`none-cached`) or the kid is not among the
 * cached ones (`kid-not-cached`: it may be a key the issuer rotated in since); `retryAfterMs` is how long until the
 * cooldown lets the next lookup fetch again (before then, the answer can only be the same). `undefined`: the kid is
 * not in the set the last successful fetch returned.
 */
export type KeyLookup =
  | { key: KeyObject }
  | { refused: string }
  | { unavailable: 'none-cached' | 'kid-not-cached'; retryAfterMs: number; lastError: FetchErrorKind | null }
  | undefined;

export interface IssuerStatus {
  issuer: string;
  jwksUri: string | null;
  keyCount: number;
  /** Time (ms) of the last successful fetch, null before the first. */
  fetchedAt: number | null;
  stale: boolean;
  /** Error class of the most recent failed fetch, cleared by a success. */
  lastError: FetchErrorKind | null;
}

export interface IssuerKeys {
  isTrusted(issuer: string): boolean;
  getKey(issuer: string, kid: string): Promise<KeyLookup>;
  /** Fetches keys for every issuer that has none yet; never rejects (failures show in `status()`). */
  warmUp(): Promise<void>;
  status(): IssuerStatus[];
}

/** Every kind of failed fetch: the `reason` of the log's warning and of `issuer_key_fetch_failures_total`. */
export const FETCH_ERROR_KINDS = [
  'insecure_url',
  'network',
  'redirect',
  'timeout',
  'http_status',
  'too_large',
  'invalid_json',
  'invalid_jwks',
  'invalid_discovery',
] as const;

export type FetchErrorKind = (typeof FETCH_ERROR_KINDS)[number];

/**
 * A failed fetch: its kind, and for the operator's log what lies behind it — the HTTP status, or the system's code
 * for a connection that failed (ENOTFOUND, ECONNREFUSED, CERT_HAS_EXPIRED, …), which tell a DNS, firewall or TLS
 * problem apart. Never the URL: a configured jwks_uri may be a signed link.
 */
class FetchFailure extends Error {
  constructor(
    readonly kind: FetchErrorKind,
    readonly detail?: string,
  ) {
    super(kind);
  }
}

/** The code of the failure behind a fetch that threw (undici puts it in `cause`, or in each of an AggregateError's). */
function failureCode(err: unknown): string | undefined {
  let cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof AggregateError && cause.errors.length > 0) cause = cause.errors[0];
  const code = (cause as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,64}$/.test(code) ? code : undefined;
}

/**
 * A fetch that failed at the egress proxy, as the log's detail: the proxy and its variable (never its credentials),
 * and its answer or the system's code for the connection to it. Undefined for any other failure.
 */
function proxyDetail(err: unknown): string | undefined {
  if (err instanceof ProxyUnreachableError) {
    const { proxy, variable } = err.unreachable;
    return `proxy ${proxy} (${variable}) could not be reached: ${failureCode(err) ?? 'connection failed'}`;
  }
  if (!(err instanceof ProxyRefusedError)) return undefined;
  const { proxy, variable, target, status, withCredentials } = err.refusal;
  const why =
    status !== 407
      ? ''
      : withCredentials
        ? `; it did not accept the user name and password ${variable} holds`
        : `; it asks for credentials, and ${variable} holds none`;
  return `proxy ${proxy} (${variable}) refused a tunnel to ${target}: HTTP ${status}${why}`;
}

interface IssuerState {
  issuer: string;
  configuredJwksUri: string | undefined;
  discoveredJwksUri: string | undefined;
  keys: Map<string, KeyObject> | null;
  /** Kids the last good set lists with an unusable key, and why. */
  refused: Map<string, string>;
  fetchedAt: number;
  lastAttemptAt: number;
  inflight: Promise<void> | null;
  lastError: FetchErrorKind | null;
}

/** https, or plain http only to a loopback host; no credentials in the URL. */
export function isAllowedKeyUrl(value: string): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  if (url.username || url.password) return false;
  return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
}

export function createIssuerKeys(opts: IssuerKeysOptions): IssuerKeys {
  const fetchImpl = opts.fetch ?? fetch;
  const { now, logger } = opts;
  const cooldownMs = opts.cooldownMs ?? 30_000;
  const maxAgeMs = opts.maxAgeMs ?? 600_000;
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const maxBytes = opts.maxBytes ?? 1_048_576;

  const states = new Map<string, IssuerState>();
  for (const { issuer, jwksUri } of opts.issuers) {
    if (!isAllowedKeyUrl(issuer)) throw new TypeError(`trusted issuer ${issuer} must be an https URL`);
    if (jwksUri !== undefined && !isAllowedKeyUrl(jwksUri)) {
      throw new TypeError(`jwks_uri for ${issuer} must be an https URL (http only for loopback hosts)`);
    }
    if (states.has(issuer)) throw new TypeError(`trusted issuer ${issuer} is listed twice`);
    states.set(issuer, {
      issuer,
      configuredJwksUri: jwksUri,
      discoveredJwksUri: undefined,
      keys: null,
      refused: new Map(),
      fetchedAt: Number.NEGATIVE_INFINITY,
      lastAttemptAt: Number.NEGATIVE_INFINITY,
      inflight: null,
      lastError: null,
    });
  }

  // Starts a fetch unless one is running (then shares it) or the cooldown since the last attempt is running.
  function refreshIfAllowed(st: IssuerState, t: number): Promise<void> | null {
    if (st.inflight) return st.inflight;
    if (elapsed(t, st.lastAttemptAt) < cooldownMs) return null;
    st.lastAttemptAt = t;
    st.inflight = refresh(st).finally(() => {
      st.inflight = null;
    });
    return st.inflight;
  }

  async function refresh(st: IssuerState): Promise<void> {
    let fetching: 'discovery' | 'jwks' = 'discovery';
    try {
      const jwksUri = st.configuredJwksUri ?? st.discoveredJwksUri ?? (await discover(st));
      fetching = 'jwks';
      const { keys, refused, skipped } = readJwks(await fetchJson(jwksUri));
      st.keys = keys;
      st.refused = refused;
      st.fetchedAt = now();
      st.lastError = null;
      if (keys.size > 0) {
        logger?.info('issuer signing keys refreshed', { issuer: st.issuer, keys: keys.size, skipped });
      } else {
        // Taken as the issuer's word (it may have withdrawn them), but from now on every token it issued is
        // refused, which the operator must hear of as more than an info line.
        logger?.warn('issuer signing keys refreshed, but the set holds no key the broker accepts', {
          issuer: st.issuer,
          keys: 0,
          skipped,
        });
      }
    } catch (err) {
      const kind = err instanceof FetchFailure ? err.kind : 'network';
      const detail = err instanceof FetchFailure ? err.detail : undefined;
      st.lastError = kind;
      st.discoveredJwksUri = undefined;
      opts.onFetchFailure?.(st.issuer, kind);
      // `reason`, not `error`: other lines give `error` as an object ({type, message}), and a log store that maps
      // field types (Elasticsearch, OpenSearch) drops the lines whose field has the other type.
      logger?.warn('issuer signing keys could not be fetched', {
        issuer: st.issuer,
        reason: kind,
        fetching,
        ...(detail === undefined ? {} : { detail }),
        cached_keys: st.keys?.size ?? 0,
      });
    }
  }

  async function discover(st: IssuerState): Promise<string> {
    const base = st.issuer.endsWith('/') ? st.issuer.slice(0, -1) : st.issuer;
    const doc = await fetchJson(`${base}/.well-known/openid-configuration`);
    // OpenID Connect Discovery §4.3: the document must name exactly the issuer it was fetched for. The one it names
    // instead is the operator's clue (a GHES known by another name, a slash too many): it is logged, bounded and
    // escaped, for the document is not the broker's. Its jwks_uri is not: it may be a signed link.
    if (!isRecord(doc)) throw new FetchFailure('invalid_discovery', 'the document is not a JSON object');
    if (doc.issuer !== st.issuer) {
      const named = doc.issuer;
      const shown =
        typeof named === 'string' && JSON.stringify(named.length > 100 ? `${named.slice(0, 100)}…` : named);
      // JSON gives a number, a boolean, an array or an object.
      const kind = Array.isArray(named)
        ? 'an array'
        : typeof named === 'object'
          ? 'an object'
          : `a ${typeof named}`;
      throw new FetchFailure(
        'invalid_discovery',
        shown
          ? `the document names the issuer ${shown}`
          : named == null
            ? 'the document names no issuer'
            : `the document names its issuer as ${kind}, not a string`,
      );
    }
    const jwksUri = doc.jwks_uri;
    if (typeof jwksUri !== 'string' || !isAllowedKeyUrl(jwksUri)) {
      throw new FetchFailure('invalid_discovery', 'its jwks_uri is missing, or not an https URL');
    }
    st.discoveredJwksUri = jwksUri;
    return jwksUri;
  }

  // One deadline covers connect, headers and body, so a slowly trickling body cannot hold a fetch open.
  async function fetchJson(url: string): Promise<unknown> {
    if (!isAllowedKeyUrl(url)) throw new FetchFailure('insecure_url');
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(new FetchFailure('timeout'));
      }, timeoutMs);
    });
    try {
      return await Promise.race([download(url, controller), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  async function download(url: string, controller: AbortController): Promise<unknown> {
    let res: Response;
    try {
      res = await fetchImpl(url, {
        redirect: 'error',
        signal: controller.signal,
        headers: { accept: 'application/json' },
      });
    } catch (err) {
      const proxy = proxyDetail(err);
      if (proxy !== undefined) throw new FetchFailure('network', proxy);
      if (isRedirectError(err)) throw new FetchFailure('redirect');
      throw new FetchFailure('network', failureCode(err));
    }
    if (res.status !== 200 || !res.body) {
      controller.abort();
      // 304 Not Modified (to a request that made no condition) and 300 are answers, not redirects.
      const kind = REDIRECT_STATUSES.has(res.status) ? 'redirect' : 'http_status';
      throw new FetchFailure(kind, `HTTP ${res.status}`);
    }
    if (Number(res.headers.get('content-length')) > maxBytes) {
      controller.abort();
      throw new FetchFailure('too_large');
    }
    const reader = res.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch {
        throw new FetchFailure('network');
      }
      if (chunk.done) break;
      total += chunk.value.byteLength;
      if (total > maxBytes) {
        controller.abort();
        reader.cancel().catch(() => {});
        throw new FetchFailure('too_large');
      }
      chunks.push(chunk.value);
    }
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks)));
    } catch {
      throw new FetchFailure('invalid_json');
    }
  }

  return {
    isTrusted: (issuer) => states.has(issuer),

    async getKey(issuer, kid) {
      const st = states.get(issuer);
      if (!st) return undefined;
      const t = now();
      const cached = st.keys?.get(kid);
      if (cached) {
        // Stale keys keep serving while a refresh runs in the background; refresh() never rejects.
        if (elapsed(t, st.fetchedAt) >= maxAgeMs) void refreshIfAllowed(st, t);
        return { key: cached };
      }
      const pending = refreshIfAllowed(st, t);
      if (pending) {
        await pending;
        const key = st.keys?.get(kid);
        if (key) return { key };
      }
      if (st.keys && st.lastError === null) {
        const reason = st.refused.get(kid);
        return reason === undefined ? undefined : { refused: reason };
      }
      const retryAfterMs = Math.max(0, cooldownMs - elapsed(now(), st.lastAttemptAt));
      return {
        unavailable: st.keys ? 'kid-not-cached' : 'none-cached',
        retryAfterMs,
        lastError: st.lastError,
      };
    },

    async warmUp() {
      const t = now();
      await Promise.all([...states.values()].filter((st) => !st.keys).map((st) => refreshIfAllowed(st, t)));
    },

    status() {
      const t = now();
      return [...states.values()].map((st) => ({
        issuer: st.issuer,
        jwksUri: st.configuredJwksUri ?? st.discoveredJwksUri ?? null,
        keyCount: st.keys?.size ?? 0,
        fetchedAt: st.keys ? st.fetchedAt : null,
        stale: !st.keys || elapsed(t, st.fetchedAt) >= maxAgeMs,
        lastError: st.lastError,
      }));
    },
  };
}

/** The statuses that send a client elsewhere (RFC 9110 §15.4); fetch refuses them with `redirect: 'error'`. */
const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isRedirectError(err: unknown): boolean {
  const cause = err instanceof Error ? err.cause : undefined;
  return cause instanceof Error && /redirect/i.test(cause.message);
}

/**
 * A syntactically valid JWKS replaces the cached set (keys the issuer withdrew stop verifying); entries
 * that are malformed, weak, published with their private part or not RS256 signature-verification keys are
 * skipped, and a kid listed twice is dropped because the set no longer says which key it means. The kids
 * skipped are kept with the reason, so that a token signed with one is told why rather than that its key is unknown.
 */
function readJwks(body: unknown): {
  keys: Map<string, KeyObject>;
  refused: Map<string, string>;
  skipped: number;
} {
  if (!isRecord(body) || !Array.isArray(body.keys)) throw new FetchFailure('invalid_jwks');
  const byKid = new Map<string, KeyObject | string>();
  let skipped = 0;
  for (const entry of body.keys as unknown[]) {
    const kid = isRecord(entry) ? entry.kid : undefined;
    if (typeof kid !== 'string' || kid === '') {
      skipped++;
      continue;
    }
    if (byKid.has(kid)) {
      byKid.set(kid, 'the key set lists its kid more than once');
      continue;
    }
    byKid.set(kid, importRs256Key(entry as Record<string, unknown>));
  }
  const keys = new Map<string, KeyObject>();
  const refused = new Map<string, string>();
  for (const [kid, key] of byKid) {
    if (typeof key === 'string') {
      refused.set(kid, key);
      skipped++;
    } else keys.set(kid, key);
  }
  return { keys, refused, skipped };
}

const MIN_MODULUS_BITS = 2048;
// Larger moduli only add verification cost an attacker-influenced set could exploit; no issuer uses them.
const MAX_MODULUS_BITS = 8192;
// An RSA key's private members (RFC 7518 §6.3.2): a set that publishes them lets anyone sign with the key.
const PRIVATE_RSA_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth'];

/** The key, or why it is not one to verify RS256 signatures with (shown to callers: the set is public). */
function importRs256Key(jwk: Record<string, unknown>): KeyObject | string {
  if (jwk.kty !== 'RSA') return 'it is not an RSA key';
  if (jwk.use !== undefined && jwk.use !== 'sig')
    return 'the key set marks it for another use than signatures';
  if (jwk.alg !== undefined && jwk.alg !== 'RS256')
    return 'the key set marks it for another algorithm than RS256';
  // key_ops, when present, says what the key is for (RFC 7517 §4.3); verifying signatures must be among it.
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify')))
    return 'its key_ops do not include verify';
  if (PRIVATE_RSA_MEMBERS.some((name) => jwk[name] !== undefined)) {
    return 'the key set publishes its private part, so anyone can sign with it';
  }
  if (typeof jwk.n !== 'string' || typeof jwk.e !== 'string') return 'it is not a well-formed RSA key';
  let key: KeyObject;
  try {
    key = createPublicKey({ key: { kty: 'RSA', n: jwk.n, e: jwk.e }, format: 'jwk' });
  } catch {
    return 'it is not a well-formed RSA key';
  }
  const details = key.asymmetricKeyDetails;
  const bits = details?.modulusLength ?? 0;
  if (bits < MIN_MODULUS_BITS || bits > MAX_MODULUS_BITS) {
    return `its modulus has ${bits} bits, outside the ${MIN_MODULUS_BITS} to ${MAX_MODULUS_BITS} accepted`;
  }
  if (details?.publicExponent !== 65537n) return 'its public exponent is not 65537';
  return key;
}
