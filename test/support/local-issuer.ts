// A local stand-in for GitHub's OIDC issuer: an RSA key pair, a JWKS endpoint on 127.0.0.1, GitHub-shaped tokens.
//
//   const issuer = await startLocalIssuer({ now: () => clock.now, audience: 'acme.api.stepsecurity.io' });
//   const keys = createIssuerKeys({ issuers: [{ issuer: GITHUB_ISSUER, jwksUri: issuer.jwksUri }], now });
//   const token = issuer.sign({ repository: 'acme/app' });          // claim overrides; `undefined` removes one
//   issuer.sign({}, { key: 'attacker' });                          // right kid, wrong key
//   issuer.sign({}, { header: { jku: 'https://x' } });             // header overrides; `undefined` removes one
//   issuer.sign({}, { alg: 'HS256', hmacSecret: issuer.publicKeyPem });
//   issuer.sign({}, { rawPayload: '{"repository":"a/b","repository":"c/d"}' });  // exact JSON text
//   issuer.serve('hang');                                          // misbehave: see ServeMode
//   issuer.jwksRequests / issuer.discoveryRequests / issuer.requests  // what the server was asked
//   issuer.rotate(); issuer.addKey({ modulusLength: 1024 }); issuer.reset(); await issuer.close();
//
// Tokens carry GitHub's full claim set and header (alg, kid, typ 'JWT', x5t) as in
// github-oidc-token.example.json, a fresh jti per call, iat = now, nbf = iat - 300, exp = iat + 300, and
// iss = GITHUB_ISSUER unless overridden; trust that issuer with `jwksUri: issuer.jwksUri`.
// Discovery is answered at any path ending in /.well-known/openid-configuration, naming the issuer
// `url + prefix` (or `discoveryIssuer` when set) and `jwksUri`.
import {
  constants,
  createHash,
  createHmac,
  sign as cryptoSign,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
  randomUUID,
} from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';

/** Issuers that must not pass for GitHub's (SECURITY-CASES E1–E7): look-alikes, and an issuer nobody trusts. */
export const FOREIGN_ISSUERS: readonly (readonly [id: string, iss: string])[] = [
  ['E1', `${GITHUB_ISSUER}/`],
  ['E2', 'https://token.actions.githubusercontent.com/acme-enterprise'],
  ['E3', 'http://token.actions.githubusercontent.com'],
  ['E4', 'https://TOKEN.actions.githubusercontent.com'],
  ['E5', 'https://token.actions.githubusercontent.com.evil.example'],
  ['E6', 'https://token.actions'],
  ['E7', 'https://ghe.example.com/_services/token'],
];
export const DEFAULT_AUDIENCE = 'acme-corp.api.stepsecurity.io';

export interface KeyPair {
  publicKey: KeyObject;
  privateKey: KeyObject;
}

export interface IssuerKey extends KeyPair {
  kid: string;
  /** Extra JWK members published with the key (e.g. `use`, `alg`). */
  jwkExtras: Record<string, unknown>;
}

export interface GitHubClaims {
  actor: string;
  actor_id: string;
  aud: string;
  base_ref: string;
  check_run_id: string;
  environment: string;
  event_name: string;
  exp: number;
  head_ref: string;
  iat: number;
  iss: string;
  job_workflow_ref: string;
  job_workflow_sha: string;
  jti: string;
  nbf: number;
  ref: string;
  ref_protected: string;
  ref_type: string;
  repository: string;
  repository_id: string;
  repository_owner: string;
  repository_owner_id: string;
  repository_visibility: string;
  run_attempt: string;
  run_id: string;
  run_number: string;
  runner_environment: string;
  sha: string;
  sub: string;
  workflow: string;
  workflow_ref: string;
  workflow_sha: string;
}

/** Claim overrides may carry any JSON value (to forge wrong types); `undefined` removes the claim. */
export type ClaimOverrides = { [K in keyof GitHubClaims]?: unknown } & Record<string, unknown>;

export type SignAlg = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'ES256' | 'HS256' | 'none';

export interface SignOptions {
  /** Merged over the default header; `undefined` removes a member. */
  header?: Record<string, unknown>;
  /** Private key for RSA/EC algorithms; default the issuer's current key. */
  key?: 'attacker' | KeyObject;
  /** How the signature is computed (default RS256); the header `alg` follows unless `header.alg` is set. */
  alg?: SignAlg;
  /** HMAC secret for HS256. */
  hmacSecret?: string | Buffer;
  /** Exact header bytes (JSON text or any bytes), replacing the built header. */
  rawHeader?: string | Buffer;
  /** Exact payload bytes (JSON text or any bytes), replacing the built claims. */
  rawPayload?: string | Buffer;
  /** Bytes to use as the signature instead of signing. */
  signature?: Buffer;
}

/**
 * ok: normal answers · fail: HTTP 500 · hang: never answers · slow-body: headers, then a body that never
 * ends · oversized: a 2 MiB body · redirect: 302 to /redirected-jwks · duplicate-kid: the current key listed
 * twice under one kid.
 */
export type ServeMode = 'ok' | 'fail' | 'hang' | 'slow-body' | 'oversized' | 'redirect' | 'duplicate-kid';

export interface AddKeyOptions {
  modulusLength?: number;
  publicExponent?: number;
  kid?: string;
  /** Extra JWK members, e.g. `{ use: 'enc' }` or `{ alg: 'RS384' }`. */
  jwk?: Record<string, unknown>;
  /** Publishes the private key's members (`d`, `p`, `q`, …) too, as a set that leaked its key would. */
  withPrivateParts?: boolean;
}

export interface LocalIssuer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly jwksUri: string;
  /** The key tokens are signed with by default. */
  readonly current: IssuerKey;
  readonly kid: string;
  readonly publicKeyPem: string;
  /** Every published key, in JWKS order. */
  readonly keys: readonly IssuerKey[];
  readonly jwksRequests: number;
  readonly discoveryRequests: number;
  /** Paths of every request received. */
  readonly requests: readonly string[];
  /** Issuer named by discovery documents; default `url + path prefix`. */
  discoveryIssuer: string | undefined;
  claims(overrides?: ClaimOverrides): Record<string, unknown>;
  sign(overrides?: ClaimOverrides, opts?: SignOptions): string;
  serve(mode: ServeMode): void;
  /** Serves this exact JWKS body instead of the published keys (undefined to stop). */
  setJwks(body: unknown): void;
  /** Adds a published key that is not used by default. */
  addKey(opts?: AddKeyOptions): IssuerKey;
  /** Switches signing to a new key; the old one stays published only when `keepOld`. */
  rotate(opts?: { keepOld?: boolean }): IssuerKey;
  /** Back to the first key only, mode 'ok', no overrides, counters at zero. */
  reset(): void;
  close(): Promise<void>;
}

export function b64url(data: string | Uint8Array): string {
  return Buffer.from(data).toString('base64url');
}

export function rsaKeyPair(modulusLength = 2048, publicExponent = 65537): KeyPair {
  return generateKeyPairSync('rsa', { modulusLength, publicExponent });
}

/** A key pair GitHub never published; tokens signed with it must never verify. */
export const attacker: KeyPair = rsaKeyPair();

let attackerEc: KeyPair | undefined;
function attackerEcKey(): KeyObject {
  attackerEc ??= generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return attackerEc.privateKey;
}

export function publicJwk(key: KeyObject): JsonWebKey {
  return key.export({ format: 'jwk' });
}

/** The members of an RSA JWK that only the key's holder should know. */
function privateParts(key: KeyObject): Record<string, unknown> {
  const { d, p, q, dp, dq, qi } = key.export({ format: 'jwk' });
  return { d, p, q, dp, dq, qi };
}

function newIssuerKey(opts: AddKeyOptions = {}): IssuerKey {
  const pair = rsaKeyPair(opts.modulusLength, opts.publicExponent);
  return {
    ...pair,
    kid: opts.kid ?? randomUUID(),
    jwkExtras: { ...(opts.withPrivateParts ? privateParts(pair.privateKey) : {}), ...opts.jwk },
  };
}

function x5tOf(key: KeyObject): string {
  return createHash('sha1')
    .update(key.export({ format: 'der', type: 'spki' }))
    .digest('base64url');
}

function jwksEntry(k: IssuerKey): Record<string, unknown> {
  const { n, e } = publicJwk(k.publicKey);
  return { kty: 'RSA', alg: 'RS256', use: 'sig', kid: k.kid, n, e, x5t: x5tOf(k.publicKey), ...k.jwkExtras };
}

/** Signs `header.payload` (already base64url) the way `alg` says. */
export function signingBytes(
  input: string,
  alg: SignAlg,
  key: KeyObject | undefined,
  hmacSecret?: string | Buffer,
): Buffer {
  const data = Buffer.from(input, 'ascii');
  switch (alg) {
    case 'none':
      return Buffer.alloc(0);
    case 'HS256':
      return createHmac('sha256', hmacSecret ?? '')
        .update(data)
        .digest();
    case 'ES256':
      return cryptoSign('sha256', data, { key: key ?? attackerEcKey(), dsaEncoding: 'ieee-p1363' });
    case 'PS256':
      return cryptoSign('sha256', data, {
        key: key!,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: 32,
      });
    default:
      return cryptoSign(`sha${alg.slice(2)}`, data, key!);
  }
}

export async function startLocalIssuer(
  opts: { now?: () => number; audience?: string; issuer?: string } = {},
): Promise<LocalIssuer> {
  const now = opts.now ?? Date.now;
  const first = newIssuerKey();
  let published: IssuerKey[] = [first];
  let current = first;
  let mode: ServeMode = 'ok';
  let jwksOverride: unknown;
  let jwksRequests = 0;
  let discoveryRequests = 0;
  const requests: string[] = [];

  const jwksBody = (): unknown => jwksOverride ?? { keys: published.map(jwksEntry) };

  const json = (res: ServerResponse, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const misbehave = (res: ServerResponse): boolean => {
    switch (mode) {
      case 'fail':
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":"unavailable"}');
        return true;
      case 'hang':
        return true;
      case 'slow-body':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"keys":[');
        return true;
      case 'oversized': {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"keys":[],"padding":"');
        const chunk = 'a'.repeat(64 * 1024);
        for (let i = 0; i < 32; i++) res.write(chunk);
        res.end('"}');
        return true;
      }
      case 'redirect':
        res.writeHead(302, { location: `${url}/redirected-jwks` });
        res.end();
        return true;
      default:
        return false;
    }
  };

  const server = createServer((req, res) => {
    res.on('error', () => {});
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    requests.push(path);
    if (path === '/.well-known/jwks') {
      jwksRequests++;
      if (misbehave(res)) return;
      if (mode === 'duplicate-kid') {
        const entry = jwksEntry(current);
        json(res, { keys: [entry, { ...entry }] });
        return;
      }
      json(res, jwksBody());
      return;
    }
    const suffix = '/.well-known/openid-configuration';
    if (path.endsWith(suffix)) {
      discoveryRequests++;
      if (misbehave(res)) return;
      const prefix = path.slice(0, -suffix.length);
      json(res, { issuer: issuer.discoveryIssuer ?? `${url}${prefix}`, jwks_uri: `${url}/.well-known/jwks` });
      return;
    }
    if (path === '/redirected-jwks') {
      json(res, jwksBody());
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const claims = (overrides: ClaimOverrides = {}): Record<string, unknown> => {
    const iat = Math.floor(now() / 1000);
    const base: Record<string, unknown> = {
      actor: 'octocat',
      actor_id: '583231',
      aud: opts.audience ?? DEFAULT_AUDIENCE,
      base_ref: '',
      check_run_id: '81215574497',
      environment: 'production',
      event_name: 'push',
      exp: iat + 300,
      head_ref: '',
      iat,
      iss: opts.issuer ?? GITHUB_ISSUER,
      job_workflow_ref: 'acme/infra/.github/workflows/deploy.yml@refs/heads/main',
      job_workflow_sha: '30bace97d4fbcd657d31d2de06068ab14b491473',
      jti: randomUUID(),
      nbf: iat - 300,
      ref: 'refs/heads/main',
      ref_protected: 'true',
      ref_type: 'branch',
      repository: 'acme/infra',
      repository_id: '632596897',
      repository_owner: 'acme',
      repository_owner_id: '131804563',
      repository_visibility: 'private',
      run_attempt: '1',
      run_id: '27476101517',
      run_number: '333',
      runner_environment: 'github-hosted',
      sha: '30bace97d4fbcd657d31d2de06068ab14b491473',
      sub: 'repo:acme/infra:environment:production',
      workflow: 'Deploy',
      workflow_ref: 'acme/infra/.github/workflows/deploy.yml@refs/heads/main',
      workflow_sha: '30bace97d4fbcd657d31d2de06068ab14b491473',
    };
    return withOverrides(base, overrides);
  };

  const issuer: LocalIssuer = {
    url,
    jwksUri: `${url}/.well-known/jwks`,
    get current() {
      return current;
    },
    get kid() {
      return current.kid;
    },
    get publicKeyPem() {
      return current.publicKey.export({ format: 'pem', type: 'spki' }) as string;
    },
    get keys() {
      return published;
    },
    get jwksRequests() {
      return jwksRequests;
    },
    get discoveryRequests() {
      return discoveryRequests;
    },
    requests,
    discoveryIssuer: undefined,
    claims,
    sign(overrides = {}, o = {}) {
      const alg = o.alg ?? 'RS256';
      const header = withOverrides(
        { alg, kid: current.kid, typ: 'JWT', x5t: x5tOf(current.publicKey) },
        o.header ?? {},
      );
      const h = b64url(o.rawHeader ?? JSON.stringify(header));
      const p = b64url(o.rawPayload ?? JSON.stringify(claims(overrides)));
      let key: KeyObject | undefined =
        o.key === 'attacker' ? attacker.privateKey : (o.key ?? current.privateKey);
      // ES256 needs an EC key: an explicit one, else the attacker's P-256 key.
      if (alg === 'ES256') key = typeof o.key === 'object' ? o.key : undefined;
      const sig = o.signature ?? signingBytes(`${h}.${p}`, alg, key, o.hmacSecret);
      return `${h}.${p}.${b64url(sig)}`;
    },
    serve(m) {
      mode = m;
    },
    setJwks(body) {
      jwksOverride = body;
    },
    addKey(o) {
      const k = newIssuerKey(o);
      published = [...published, k];
      return k;
    },
    rotate(o = {}) {
      const k = newIssuerKey();
      published = o.keepOld ? [...published, k] : [k];
      current = k;
      return k;
    },
    reset() {
      published = [first];
      current = first;
      mode = 'ok';
      jwksOverride = undefined;
      jwksRequests = 0;
      discoveryRequests = 0;
      requests.length = 0;
      issuer.discoveryIssuer = undefined;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return issuer;
}

function withOverrides(
  base: Record<string, unknown>,
  overrides: Record<string, unknown>,
): Record<string, unknown> {
  const out = { ...base };
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) delete out[name];
    else out[name] = value;
  }
  return out;
}
