// The broker fetches issuers' keys through the egress proxy HTTPS_PROXY names, unless NO_PROXY exempts the host.
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../broker/config.js';
import { createIssuerKeys, type FetchErrorKind, type KeyLookup } from '../../broker/core/issuer-keys.js';
import { proxyFor, readProxyRoutes, routeFor } from '../../broker/core/proxy-settings.js';
import { createEgressFetch, type EgressFetchOptions } from '../../broker/egress-fetch.js';
import { type FakeProxy, startFakeProxy } from '../action/support/fake-proxy.js';
import { selfSignedCertificate } from '../action/support/tls-cert.js';
import { GITHUB_ISSUER, type LocalIssuer, startLocalIssuer } from '../support/local-issuer.js';
import { silentServer } from '../support/silent-server.js';

/** A host only the proxy reaches: the fake proxy tunnels every CONNECT to 127.0.0.1. */
const HOST = 'issuer.test';
const tls = selfSignedCertificate(HOST, { dns: [HOST] });

let issuer: LocalIssuer;
/** `https://issuer.test:<port>`: the local issuer behind TLS, serving its own discovery document. */
let front: string;
let frontServer: Server;
/** The Host header of every request the issuer received. */
const hosts: (string | undefined)[] = [];
const servers: { close(): unknown }[] = [];

beforeAll(async () => {
  issuer = await startLocalIssuer();
  frontServer = createHttpsServer({ cert: tls.cert, key: tls.key }, (req, res) => {
    res.on('error', () => {});
    hosts.push(req.headers.host);
    if (req.url === '/.well-known/openid-configuration') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ issuer: front, jwks_uri: `${front}/.well-known/jwks` }));
      return;
    }
    const upstream = httpRequest(`${issuer.url}${req.url}`, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    upstream.end();
  }) as unknown as Server;
  await new Promise<void>((resolve) => frontServer.listen(0, '127.0.0.1', resolve));
  front = `https://${HOST}:${(frontServer.address() as AddressInfo).port}`;
});
afterAll(async () => {
  frontServer.closeAllConnections();
  await new Promise((resolve) => frontServer.close(resolve));
  await issuer.close();
});
beforeEach(() => issuer.reset());
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

async function proxy(options: { refuse?: number } = {}): Promise<FakeProxy> {
  const started = await startFakeProxy(options);
  servers.push(started);
  return started;
}

interface Failure {
  reason: FetchErrorKind;
  fetching: string;
  detail?: string;
}

/**
 * The broker's key cache for one issuer, fetching through the proxy settings `env` names (as loadConfig reads
 * them), trusting the test certificate for targets reached through the proxy.
 */
function keysFor(
  env: Record<string, string>,
  trusted: { issuer: string; jwksUri?: string },
  options: EgressFetchOptions & { timeoutMs?: number } = {},
) {
  const failures: Failure[] = [];
  const logs: string[] = [];
  const { timeoutMs, ...fetchOptions } = options;
  const keys = createIssuerKeys({
    issuers: [trusted],
    fetch: createEgressFetch(loadConfig(env).egressProxy, { ca: tls.cert, ...fetchOptions }),
    now: Date.now,
    ...(timeoutMs ? { timeoutMs } : {}),
    logger: {
      warn: (msg, fields) => {
        logs.push(JSON.stringify({ msg, ...fields }));
        if (msg !== 'issuer signing keys could not be fetched') return;
        const { issuer: _, ...failure } = fields ?? {};
        failures.push(failure as unknown as Failure);
      },
      info: (msg, fields) => logs.push(JSON.stringify({ msg, ...fields })),
    },
  });
  return { keys, failures, logs };
}

const viaJwks = () => ({ issuer: GITHUB_ISSUER, jwksUri: `${front}/.well-known/jwks` });
const hasKey = (lookup: KeyLookup) => lookup !== undefined && 'key' in lookup;

describe("the issuer's keys through the egress proxy", () => {
  it('fetches the discovery document and the key set through a CONNECT tunnel, verifying the issuer over TLS', async () => {
    const p = await proxy();
    const { keys, failures } = keysFor({ HTTPS_PROXY: p.url }, { issuer: front });

    expect(hasKey(await keys.getKey(front, issuer.kid))).toBe(true);
    expect(failures).toEqual([]);
    // The host was never resolved here (issuer.test does not exist): only the proxy could have reached it.
    const authority = new URL(front).host;
    expect(p.connects).toEqual([authority, authority]);
    expect(hosts.slice(-2)).toEqual([authority, authority]);
    expect(issuer.jwksRequests).toBe(1);
  });

  it('verifies the certificate of the issuer at the end of the tunnel, not only the proxy', async () => {
    const p = await proxy();
    const other = selfSignedCertificate(HOST, { dns: [HOST] });
    const { keys, failures } = keysFor({ https_proxy: p.url }, viaJwks(), { ca: other.cert });

    expect(hasKey(await keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(false);
    expect(failures).toEqual([
      { reason: 'network', fetching: 'jwks', detail: expect.any(String), cached_keys: 0 },
    ]);
    expect(failures[0]!.detail).toMatch(/CERT|SIGNATURE|VERIFY/);
    expect(p.connects).toHaveLength(1);
    expect(issuer.jwksRequests).toBe(0);
  });

  it('connects directly to a host NO_PROXY lists, and to loopback hosts, which are never proxied', async () => {
    const p = await proxy();
    const direct: string[] = [];
    const recordingFetch = (async (input: string | URL | Request) => {
      direct.push(String(input));
      return Response.json({ keys: [] });
    }) as typeof fetch;
    const listed = keysFor(
      { HTTPS_PROXY: p.url, NO_PROXY: `example.org,.${HOST.split('.')[1]}` },
      viaJwks(),
      {
        direct: recordingFetch,
      },
    );
    await listed.keys.warmUp();
    expect(direct).toEqual([`${front}/.well-known/jwks`]);

    // A loopback jwks_uri (an http:// one is allowed only there) goes straight to the local issuer.
    const loopback = keysFor(
      { https_proxy: p.url, http_proxy: p.url },
      { issuer: GITHUB_ISSUER, jwksUri: issuer.jwksUri },
    );
    expect(hasKey(await loopback.keys.getKey(GITHUB_ISSUER, issuer.kid))).toBe(true);
    expect(p.connects).toEqual([]);
  });

  it('reports a proxy it cannot reach as a network failure naming the proxy, never its credentials', async () => {
    const closed = createTcpServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const { keys, failures, logs } = keysFor(
      { HTTPS_PROXY: `http://egress:s3cret@127.0.0.1:${port}` },
      viaJwks(),
    );

    const lookup = await keys.getKey(GITHUB_ISSUER, issuer.kid);
    expect(lookup).toMatchObject({ unavailable: 'none-cached', lastError: 'network' });
    expect(failures).toEqual([
      {
        reason: 'network',
        fetching: 'jwks',
        detail: `proxy http://127.0.0.1:${port} (HTTPS_PROXY) could not be reached: ECONNREFUSED`,
        cached_keys: 0,
      },
    ]);
    expect(logs.join('\n')).not.toContain('s3cret');
    expect(logs.join('\n')).not.toContain('egress');
  });

  it('reports a proxy that wants credentials (407) as a network failure saying so', async () => {
    const p = await proxy({ refuse: 407 });
    const without = keysFor({ HTTPS_PROXY: p.url }, viaJwks());
    await without.keys.warmUp();
    const target = new URL(front).host;
    expect(without.failures).toEqual([
      {
        reason: 'network',
        fetching: 'jwks',
        detail: `proxy ${p.url} (HTTPS_PROXY) refused a tunnel to ${target}: HTTP 407; it asks for credentials, and HTTPS_PROXY holds none`,
        cached_keys: 0,
      },
    ]);

    const wrong = keysFor({ https_proxy: p.url.replace('//', '//egress:s3cret@') }, viaJwks());
    await wrong.keys.warmUp();
    expect(wrong.failures[0]).toMatchObject({
      reason: 'network',
      detail: `proxy ${p.url} (https_proxy) refused a tunnel to ${target}: HTTP 407; it did not accept the user name and password https_proxy holds`,
    });
    expect(wrong.logs.join('\n')).not.toContain('s3cret');
  });

  it('reports any other refusal with its status (403: a host the proxy does not allow)', async () => {
    const p = await proxy({ refuse: 403 });
    const { keys, failures } = keysFor({ HTTPS_PROXY: p.url }, { issuer: front });
    await keys.warmUp();
    expect(failures).toEqual([
      {
        reason: 'network',
        fetching: 'discovery',
        detail: `proxy ${p.url} (HTTPS_PROXY) refused a tunnel to ${new URL(front).host}: HTTP 403`,
        cached_keys: 0,
      },
    ]);
  });

  it('keeps the bounds of a direct fetch: no redirect followed, 1 MiB, the HTTP status, the deadline', async () => {
    const p = await proxy();
    const outcomes: (Failure | undefined)[] = [];
    for (const mode of ['redirect', 'oversized', 'fail', 'hang'] as const) {
      issuer.serve(mode);
      const { keys, failures } = keysFor({ HTTPS_PROXY: p.url }, viaJwks(), { timeoutMs: 300 });
      await keys.warmUp();
      outcomes.push(failures[0]);
    }
    expect(outcomes.map((f) => [f?.reason, f?.detail])).toEqual([
      ['redirect', 'HTTP 302'],
      ['too_large', undefined],
      ['http_status', 'HTTP 500'],
      ['timeout', undefined],
    ]);
    expect(issuer.requests).not.toContain('/redirected-jwks');
  });

  it('stops at the deadline when the proxy never answers CONNECT', async () => {
    const { port, accepted, close } = await silentServer();
    servers.push({ close });
    const { keys, failures } = keysFor({ HTTPS_PROXY: `127.0.0.1:${port}` }, viaJwks(), { timeoutMs: 200 });
    const started = Date.now();
    await keys.warmUp();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(failures.map((f) => f.reason)).toEqual(['timeout']);
    expect(accepted).toHaveLength(1);
  });
});

describe('routeFor, from settings read once at start', () => {
  it('answers what proxyFor answers from the environment', () => {
    const envs: Record<string, string>[] = [
      {},
      { HTTPS_PROXY: 'http://upper:3128', https_proxy: 'lower:3128', HTTP_PROXY: 'plain:8080' },
      { https_proxy: '', HTTPS_PROXY: 'http://upper:3128', no_proxy: '', NO_PROXY: '.example.com' },
      { HTTPS_PROXY: 'http://p:1', no_proxy: '*' },
      {
        HTTPS_PROXY: 'http://p:1',
        http_proxy: 'http://q:2',
        NO_PROXY: '10.0.0.0/8,[fd00::5]:443,ghe.internal:8443',
      },
    ];
    const urls = [
      'https://token.actions.githubusercontent.com/.well-known/jwks',
      'https://ghe.example.com/_services/token',
      'https://example.com/',
      'https://10.1.2.3/',
      'https://[fd00::5]/',
      'https://ghe.internal:8443/',
      'https://ghe.internal/',
      'http://intranet.corp/',
      'http://127.0.0.1:8080/jwks',
    ].map((u) => new URL(u));
    for (const env of envs) {
      const routes = readProxyRoutes(env);
      for (const url of urls) {
        expect(routeFor(url, routes)?.url.href, `${url.href} with ${JSON.stringify(env)}`).toBe(
          proxyFor(url, env)?.url.href,
        );
      }
    }
  });
});

// The proxy's own test server is http; a plain-HTTP target is reached through the same tunnel.
describe('createEgressFetch', () => {
  it('sends an http:// URL a proxy applies to through the tunnel, and refuses a request with a body', async () => {
    const p = await proxy();
    const target = createHttpServer((req, res) => res.end(`${req.method} ${req.url} ${req.headers.host}`));
    await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
    servers.push({ close: () => new Promise((resolve) => target.close(resolve)) });
    const { port } = target.address() as AddressInfo;
    const egress = createEgressFetch(readProxyRoutes({ http_proxy: p.url }));

    const answer = await egress(`http://intranet.test:${port}/keys?x=1`);
    expect(answer.status).toBe(200);
    expect(await answer.text()).toBe(`GET /keys?x=1 intranet.test:${port}`);
    expect(p.connects).toEqual([`intranet.test:${port}`]);
    await expect(egress(`http://intranet.test:${port}/`, { method: 'POST', body: 'x' })).rejects.toThrow(
      /without a body/,
    );
  });
});
