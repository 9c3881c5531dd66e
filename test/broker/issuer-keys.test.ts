// The issuer key cache: survives issuer outages, bounds fetches, and only trusts strong RS256 signing keys.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../broker/config.js';
import {
  createIssuerKeys,
  type IssuerKeysOptions,
  isAllowedKeyUrl,
  type KeyLookup,
} from '../../broker/core/issuer-keys.js';
import { verifyOidcToken } from '../../broker/core/oidc-verify.js';
import { GITHUB_ISSUER, type LocalIssuer, publicJwk, startLocalIssuer } from '../support/local-issuer.js';

const START = Date.parse('2026-06-13T19:01:04Z');
const clock = { now: START };
let issuer: LocalIssuer;

beforeAll(async () => {
  issuer = await startLocalIssuer({ now: () => clock.now });
});
afterAll(async () => {
  await issuer.close();
});
beforeEach(() => {
  clock.now = START;
  issuer.reset();
});

interface LogLine {
  level: 'warn' | 'info';
  msg: string;
  fields?: Record<string, unknown>;
}

function cache(extra: Partial<IssuerKeysOptions> = {}) {
  const logs: LogLine[] = [];
  const keys = createIssuerKeys({
    issuers: [{ issuer: GITHUB_ISSUER, jwksUri: issuer.jwksUri }],
    now: () => clock.now,
    logger: {
      warn: (msg, fields) => logs.push({ level: 'warn', msg, fields }),
      info: (msg, fields) => logs.push({ level: 'info', msg, fields }),
    },
    ...extra,
  });
  return { keys, logs };
}

function hasKey(lookup: KeyLookup): boolean {
  return lookup !== undefined && 'key' in lookup;
}

describe('issuer outages', () => {
  it('keeps verifying with cached keys while the issuer is down, even once they are stale', async () => {
    const { keys, logs } = cache();
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
    issuer.serve('fail');
    clock.now += 600_000;
    const token = issuer.sign();
    const result = await verifyOidcToken(token, { issuers: keys, now: () => clock.now, leewaySeconds: 60 });
    expect(result.ok).toBe(true);
    // The stale set triggered one background refresh, which failed and left the keys in place.
    await vi.waitFor(() => expect(keys.status()[0]?.lastError).toBe('http_status'));
    expect(issuer.jwksRequests).toBe(2);
    expect(keys.status()[0]).toMatchObject({ keyCount: 1, stale: true });
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
    const warning = logs.find((l) => l.level === 'warn');
    expect(warning?.fields).toEqual({
      issuer: GITHUB_ISSUER,
      reason: 'http_status',
      fetching: 'jwks',
      detail: 'HTTP 500',
      cached_keys: 1,
    });
    expect(JSON.stringify(logs)).not.toContain(token.split('.')[2]);
  });

  it('says which fetch failed and why, so that the operator can tell a DNS, connection or TLS problem apart', async () => {
    const closed = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const unreachable = cache({
      issuers: [{ issuer: GITHUB_ISSUER, jwksUri: `http://127.0.0.1:${closed}/jwks` }],
    });
    await unreachable.keys.warmUp();
    expect(unreachable.logs).toContainEqual({
      level: 'warn',
      msg: 'issuer signing keys could not be fetched',
      fields: {
        issuer: GITHUB_ISSUER,
        reason: 'network',
        fetching: 'jwks',
        detail: 'ECONNREFUSED',
        cached_keys: 0,
      },
    });
    const discovering = cache({
      issuers: [{ issuer: GITHUB_ISSUER }],
      fetch: async () => new Response('', { status: 404 }),
    });
    await discovering.keys.warmUp();
    expect(discovering.logs).toContainEqual({
      level: 'warn',
      msg: 'issuer signing keys could not be fetched',
      fields: {
        issuer: GITHUB_ISSUER,
        reason: 'http_status',
        fetching: 'discovery',
        detail: 'HTTP 404',
        cached_keys: 0,
      },
    });
  });

  it('warns when a refreshed set holds no key it accepts, since every token of that issuer is refused from then on', async () => {
    const { keys, logs } = cache();
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
    expect(logs.filter((l) => l.level === 'warn')).toEqual([]);
    issuer.setJwks({ keys: [] });
    clock.now += 600_000;
    await keys.getKey(GITHUB_ISSUER, issuer.kid);
    await vi.waitFor(() => expect(issuer.jwksRequests).toBe(2));
    await vi.waitFor(() =>
      expect(logs).toContainEqual({
        level: 'warn',
        msg: 'issuer signing keys refreshed, but the set holds no key the broker accepts',
        fields: { issuer: GITHUB_ISSUER, keys: 0, skipped: 0 },
      }),
    );
  });

  it('answers unavailable with no cached keys, retries only after the cooldown, then recovers', async () => {
    const { keys } = cache();
    issuer.serve('fail');
    expect(await keys.getKey(GITHUB_ISSUER, issuer.kid)).toEqual({
      unavailable: 'none-cached',
      retryAfterMs: 30_000,
      lastError: 'http_status',
    });
    expect(await keys.getKey(GITHUB_ISSUER, issuer.kid)).toEqual({
      unavailable: 'none-cached',
      retryAfterMs: 30_000,
      lastError: 'http_status',
    });
    expect(issuer.jwksRequests).toBe(1);
    issuer.serve('ok');
    clock.now += 30_000;
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
    expect(issuer.jwksRequests).toBe(2);
  });

  it('a wall clock stepped back holds no fetch back for as long as it went back', async () => {
    const { keys } = cache();
    issuer.serve('fail');
    expect(await keys.getKey(GITHUB_ISSUER, issuer.kid)).toMatchObject({ retryAfterMs: 30_000 });
    // NTP steps the clock an hour back: the next lookup may fetch, and never says to wait an hour and more.
    clock.now -= 3_600_000;
    expect(await keys.getKey(GITHUB_ISSUER, issuer.kid)).toMatchObject({ retryAfterMs: 30_000 });
    expect(issuer.jwksRequests).toBe(2);
    issuer.serve('ok');
    clock.now += 30_000;
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
    // With keys cached, a key the issuer rotated in is looked for at once, and the set counts as stale.
    const fresh = issuer.rotate({ keepOld: true });
    clock.now -= 3_600_000;
    expect(keys.status()[0]?.stale).toBe(true);
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, fresh.kid))).toBe(true);
    expect(issuer.jwksRequests).toBe(4);
    expect(keys.status()[0]?.stale).toBe(false);
  });

  it('refreshes a stale set in the background and drops keys the issuer withdrew', async () => {
    const { keys } = cache();
    const old = issuer.kid;
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, old))).toBe(true);
    issuer.rotate();
    clock.now += 600_000;
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, old))).toBe(true);
    await vi.waitFor(() => expect(keys.status()[0]?.stale).toBe(false));
    expect(issuer.jwksRequests).toBe(2);
    expect(await keys.getKey(GITHUB_ISSUER, old)).toBeUndefined();
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
  });

  it('warmUp fetches every issuer once and never rejects', async () => {
    const { keys } = cache();
    issuer.serve('fail');
    await keys.warmUp();
    expect(keys.status()[0]).toMatchObject({ keyCount: 0, fetchedAt: null, lastError: 'http_status' });
    issuer.serve('ok');
    clock.now += 30_000;
    await keys.warmUp();
    expect(keys.status()[0]).toMatchObject({
      keyCount: 1,
      fetchedAt: clock.now,
      lastError: null,
      stale: false,
    });
  });
});

describe('unknown kids', () => {
  it('B2 a flood of random kids costs at most one fetch per cooldown window', async () => {
    const { keys } = cache();
    const flood = () =>
      Promise.all(Array.from({ length: 1000 }, () => keys.getKey(GITHUB_ISSUER, randomUUID())));
    expect(await flood()).toEqual(Array(1000).fill(undefined));
    expect(issuer.jwksRequests).toBe(1);
    clock.now += 29_999;
    await flood();
    expect(issuer.jwksRequests).toBe(1);
    clock.now += 1;
    await flood();
    expect(issuer.jwksRequests).toBe(2);
  });

  it('concurrent lookups on a cold cache share one fetch', async () => {
    const { keys } = cache();
    const results = await Promise.all(
      Array.from({ length: 50 }, () => keys.getKey(GITHUB_ISSUER, issuer.kid)),
    );
    expect(results.every(hasKey)).toBe(true);
    expect(issuer.jwksRequests).toBe(1);
  });

  it('finds a rotated key once the cooldown has passed', async () => {
    const { keys } = cache();
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
    const fresh = issuer.rotate({ keepOld: true });
    expect(await keys.getKey(GITHUB_ISSUER, fresh.kid)).toBeUndefined();
    clock.now += 30_000;
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, fresh.kid))).toBe(true);
    expect(issuer.jwksRequests).toBe(2);
  });

  it('knows nothing about issuers it was not configured with, and fetches nothing for them', async () => {
    const { keys } = cache();
    expect(keys.isTrusted(GITHUB_ISSUER)).toBe(true);
    expect(keys.isTrusted(`${GITHUB_ISSUER}/`)).toBe(false);
    expect(keys.isTrusted('https://TOKEN.actions.githubusercontent.com')).toBe(false);
    expect(await keys.getKey('https://evil.example', issuer.kid)).toBeUndefined();
    expect(issuer.jwksRequests).toBe(0);
  });
});

describe('bounded fetches (B15)', () => {
  const cases = [
    ['oversized', 'too_large'],
    ['slow-body', 'timeout'],
    ['hang', 'timeout'],
    ['redirect', 'redirect'],
  ] as const;
  for (const [mode, error] of cases) {
    it(`aborts a ${mode} response and reports ${error}`, async () => {
      const { keys, logs } = cache({ timeoutMs: 150 });
      issuer.serve(mode);
      expect(await keys.getKey(GITHUB_ISSUER, issuer.kid)).toEqual({
        unavailable: 'none-cached',
        retryAfterMs: 30_000,
        lastError: error,
      });
      expect(keys.status()[0]).toMatchObject({ lastError: error, keyCount: 0 });
      expect(logs).toContainEqual({
        level: 'warn',
        msg: 'issuer signing keys could not be fetched',
        fields: expect.objectContaining({
          issuer: GITHUB_ISSUER,
          reason: error,
          fetching: 'jwks',
          cached_keys: 0,
        }),
      });
      expect(issuer.requests).not.toContain('/redirected-jwks');
    });
  }

  it('refuses a body over maxBytes even when it is valid JSON', async () => {
    const padding = 'p'.repeat(2048);
    issuer.setJwks({ keys: [], padding });
    const { keys } = cache({ maxBytes: 1024 });
    expect(await keys.getKey(GITHUB_ISSUER, issuer.kid)).toEqual({
      unavailable: 'none-cached',
      retryAfterMs: 30_000,
      lastError: 'too_large',
    });
    expect(keys.status()[0]?.lastError).toBe('too_large');
  });

  it('calls an answer that is not a redirect an HTTP error, whatever its 3xx status', async () => {
    for (const [status, lastError] of [
      [304, 'http_status'],
      [300, 'http_status'],
      [307, 'redirect'],
    ] as const) {
      const { keys, logs } = cache({ fetch: async () => new Response(null, { status }) });
      expect(await keys.getKey(GITHUB_ISSUER, issuer.kid), String(status)).toMatchObject({ lastError });
      expect(logs[0]?.fields).toMatchObject({ reason: lastError, detail: `HTTP ${status}` });
    }
  });

  it('treats a body that is not a JWKS as a failed fetch', async () => {
    issuer.setJwks(['not', 'a', 'jwks']);
    const { keys } = cache();
    expect(await keys.getKey(GITHUB_ISSUER, issuer.kid)).toEqual({
      unavailable: 'none-cached',
      retryAfterMs: 30_000,
      lastError: 'invalid_jwks',
    });
    expect(keys.status()[0]?.lastError).toBe('invalid_jwks');
  });
});

describe('key acceptance', () => {
  it('A12/B13/B14 publishes weak, non-signing and ambiguous keys as unusable, keeping the good one', async () => {
    const weak = issuer.addKey({ modulusLength: 1024 });
    const smallExponent = issuer.addKey({ publicExponent: 3 });
    const enc = issuer.addKey({ jwk: { use: 'enc' } });
    const rs384 = issuer.addKey({ jwk: { alg: 'RS384' } });
    // RFC 7517 §4.3: key_ops, when present, lists what the key is for; verifying signatures must be one.
    const encrypting = issuer.addKey({ jwk: { key_ops: ['encrypt', 'wrapKey'] } });
    const opsNotAList = issuer.addKey({ jwk: { key_ops: 'verify' } });
    // A key whose private part is published is anyone's to sign with.
    const leaked = issuer.addKey({ withPrivateParts: true });
    const twin = issuer.addKey();
    const twinCopy = issuer.addKey({ kid: twin.kid });
    const ec = issuer.addKey({ jwk: { kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' } });
    const broken = issuer.addKey({ jwk: { n: 'not base64url!' } });
    // A modulus over 8,192 bits: every verification with it would cost a multiple of a normal one.
    const huge = issuer.addKey({ jwk: { n: Buffer.alloc(1040, 0xc5).toString('base64url') } });
    const { keys, logs } = cache();
    // A token signed with one is told why its key is refused, not that the issuer has no such key.
    const unusable = [
      [weak, 'its modulus has 1024 bits, outside the 2048 to 8192 accepted'],
      [smallExponent, 'its public exponent is not 65537'],
      [enc, 'the key set marks it for another use than signatures'],
      [rs384, 'the key set marks it for another algorithm than RS256'],
      [encrypting, 'its key_ops do not include verify'],
      [opsNotAList, 'its key_ops do not include verify'],
      [leaked, 'the key set publishes its private part, so anyone can sign with it'],
      [twinCopy, 'the key set lists its kid more than once'],
      [ec, 'it is not an RSA key'],
      [broken, 'its modulus has 72 bits, outside the 2048 to 8192 accepted'],
      [huge, 'its modulus has 8320 bits, outside the 2048 to 8192 accepted'],
    ] as const;
    for (const [k, refused] of unusable) {
      expect(await keys.getKey(GITHUB_ISSUER, k.kid), refused).toEqual({ refused });
    }
    expect(await keys.getKey(GITHUB_ISSUER, 'not-listed')).toBeUndefined();
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
    expect(keys.status()[0]?.keyCount).toBe(1);
    expect(logs).toContainEqual({
      level: 'info',
      msg: 'issuer signing keys refreshed',
      fields: { issuer: GITHUB_ISSUER, keys: 1, skipped: 11 },
    });
  });

  it('accepts keys published without use or alg', async () => {
    const { n, e } = publicJwk(issuer.current.publicKey);
    issuer.setJwks({ keys: [{ kty: 'RSA', kid: issuer.kid, n, e }, 'junk', { kid: 'x' }] });
    const { keys } = cache();
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
  });

  it('accepts a key whose key_ops include verify', async () => {
    const { n, e } = publicJwk(issuer.current.publicKey);
    issuer.setJwks({ keys: [{ kty: 'RSA', kid: issuer.kid, n, e, key_ops: ['verify'] }] });
    const { keys } = cache();
    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
  });
});

describe('locating the key set', () => {
  it('discovers jwks_uri from the configured issuer when none is configured', async () => {
    const configured = `${issuer.url}/acme`;
    const keys = createIssuerKeys({ issuers: [{ issuer: configured }], now: () => clock.now });
    expect(hasKey(await keys.getKey(configured, issuer.kid))).toBe(true);
    expect(issuer.requests).toEqual(['/acme/.well-known/openid-configuration', '/.well-known/jwks']);
    expect(keys.status()[0]?.jwksUri).toBe(issuer.jwksUri);
  });

  it('refuses a discovery document that names another issuer', async () => {
    issuer.discoveryIssuer = 'https://token.actions.githubusercontent.com';
    const configured = `${issuer.url}/acme`;
    const keys = createIssuerKeys({ issuers: [{ issuer: configured }], now: () => clock.now });
    expect(await keys.getKey(configured, issuer.kid)).toEqual({
      unavailable: 'none-cached',
      retryAfterMs: 30_000,
      lastError: 'invalid_discovery',
    });
    expect(keys.status()[0]?.lastError).toBe('invalid_discovery');
    expect(issuer.jwksRequests).toBe(0);
  });

  it('logs the issuer a discovery document names instead, so that the operator sees which value to configure', async () => {
    // A GHES reached by another of its names: the document, and the tokens, carry the name GHES is configured with.
    const configured = `${issuer.url}/_services/token`;
    issuer.discoveryIssuer = 'https://github.corp.example/_services/token';
    const { keys, logs } = cache({ issuers: [{ issuer: configured }] });
    await keys.warmUp();
    expect(logs).toContainEqual({
      level: 'warn',
      msg: 'issuer signing keys could not be fetched',
      fields: {
        issuer: configured,
        reason: 'invalid_discovery',
        fetching: 'discovery',
        detail: 'the document names the issuer "https://github.corp.example/_services/token"',
        cached_keys: 0,
      },
    });
    // A value no issuer has is shown bounded and escaped, as the document is not the broker's.
    issuer.discoveryIssuer = `https://evil.example/\n${'x'.repeat(300)}`;
    const other = cache({ issuers: [{ issuer: configured }] });
    await other.keys.warmUp();
    const detail = String(other.logs.find((l) => l.level === 'warn')?.fields?.detail);
    expect(detail).toMatch(/^the document names the issuer "https:\/\/evil\.example\/\\nxxx/);
    expect(detail.length).toBeLessThan(160);
  });

  it('says a discovery document whose issuer is not a string has one, not that it names none', async () => {
    const detail = async (doc: Record<string, unknown>) => {
      const { keys, logs } = cache({
        issuers: [{ issuer: GITHUB_ISSUER }],
        fetch: async () => Response.json({ ...doc, jwks_uri: `${GITHUB_ISSUER}/.well-known/jwks` }),
      });
      await keys.warmUp();
      return logs.find((l) => l.level === 'warn')?.fields?.detail;
    };
    expect(await detail({ issuer: [GITHUB_ISSUER] })).toBe(
      'the document names its issuer as an array, not a string',
    );
    expect(await detail({ issuer: 42 })).toBe('the document names its issuer as a number, not a string');
    expect(await detail({ issuer: { url: GITHUB_ISSUER } })).toBe(
      'the document names its issuer as an object, not a string',
    );
    expect(await detail({ issuer: null })).toBe('the document names no issuer');
    expect(await detail({})).toBe('the document names no issuer');
  });

  it('refuses a discovered jwks_uri that is plain http to a non-loopback host', async () => {
    const fetched: string[] = [];
    const keys = createIssuerKeys({
      issuers: [{ issuer: GITHUB_ISSUER }],
      now: () => clock.now,
      fetch: async (input) => {
        fetched.push(String(input));
        return Response.json({ issuer: GITHUB_ISSUER, jwks_uri: 'http://keys.example.com/jwks' });
      },
    });
    expect(await keys.getKey(GITHUB_ISSUER, 'k')).toEqual({
      unavailable: 'none-cached',
      retryAfterMs: 30_000,
      lastError: 'invalid_discovery',
    });
    expect(fetched).toEqual([`${GITHUB_ISSUER}/.well-known/openid-configuration`]);
    expect(keys.status()[0]?.lastError).toBe('invalid_discovery');
  });

  it('asks fetch not to follow redirects and to honour the deadline', async () => {
    let seen: RequestInit | undefined;
    const keys = createIssuerKeys({
      issuers: [{ issuer: GITHUB_ISSUER, jwksUri: 'https://keys.example.com/jwks' }],
      now: () => clock.now,
      fetch: async (_input, init) => {
        seen = init;
        return Response.json({ keys: [] });
      },
    });
    expect(await keys.getKey(GITHUB_ISSUER, 'k')).toBeUndefined();
    expect(seen?.redirect).toBe('error');
    expect(seen?.signal).toBeInstanceOf(AbortSignal);
  });

  it('refuses configuration with a plain-http issuer or key URL outside loopback', () => {
    const now = () => clock.now;
    expect(() => createIssuerKeys({ issuers: [{ issuer: 'http://token.example.com' }], now })).toThrow(
      /https/,
    );
    expect(() =>
      createIssuerKeys({
        issuers: [{ issuer: GITHUB_ISSUER, jwksUri: 'http://keys.example.com/jwks' }],
        now,
      }),
    ).toThrow(/https/);
    expect(() =>
      createIssuerKeys({ issuers: [{ issuer: GITHUB_ISSUER }, { issuer: GITHUB_ISSUER }], now }),
    ).toThrow(/twice/);
    for (const host of ['127.0.0.1:8080', '[::1]:8080', 'localhost:8080']) {
      expect(() =>
        createIssuerKeys({ issuers: [{ issuer: GITHUB_ISSUER, jwksUri: `http://${host}/jwks` }], now }),
      ).not.toThrow();
    }
  });
});

describe('loopback exception', () => {
  /** Whether loadConfig accepts `url` as a trusted issuer's jwks_uri. */
  const configAccepts = (url: string): boolean => {
    try {
      loadConfig({ BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: url }]) });
      return true;
    } catch (err) {
      expect((err as Error).message, url).toMatch(/^BROKER_TRUSTED_ISSUERS\[0\]\.jwks_uri: /);
      return false;
    }
  };

  it('allows plain http only to loopback hosts, the same rule configuration applies', () => {
    for (const url of [
      'http://127.0.0.1:1/j',
      'http://127.9.9.9/j',
      'http://[::1]:8/j',
      'http://localhost/j',
      'https://keys.example/j',
    ]) {
      expect(isAllowedKeyUrl(url), url).toBe(true);
      expect(configAccepts(url), url).toBe(true);
    }
    for (const url of [
      'http://10.0.0.1/j',
      'http://keys.example/j',
      'http://127.0.0.1.nip.io/j',
      'https://u:p@k.example/j',
    ]) {
      expect(isAllowedKeyUrl(url), url).toBe(false);
      expect(configAccepts(url), url).toBe(false);
    }
  });
});
