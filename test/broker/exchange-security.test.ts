// SECURITY-CASES.md A1–I6 through POST /v1/oidc/token: refused for the reason detail names, nothing minted, echoed or
// fetched for an attacker, a verified job's refusal audited and an unverified token's not, a genuine token not used up.
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { createPolicy, type Federation, startFederation } from '../support/federation.js';
import { decodeSegment, nonCanonical, segments, tamperPayload } from '../support/jws-surgery.js';
import {
  type AddKeyOptions,
  attacker,
  b64url,
  type ClaimOverrides,
  DEFAULT_AUDIENCE,
  FOREIGN_ISSUERS,
  GITHUB_ISSUER,
  type LocalIssuer,
  publicJwk,
  type SignOptions,
  startLocalIssuer,
} from '../support/local-issuer.js';

const BETA_AUDIENCE = 'beta.api.example.io';
const ENTERPRISE_ISSUER = 'https://token.actions.githubusercontent.com/acme';

let f: Federation;
let betaKey: string;
let attackerServer: Server;
let attackerUrl: string;
const attackerHits: string[] = [];

beforeAll(async () => {
  attackerServer = createServer((req, res) => {
    attackerHits.push(req.url ?? '');
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[]}');
  });
  await new Promise<void>((resolve) => attackerServer.listen(0, '127.0.0.1', resolve));
  attackerUrl = `http://127.0.0.1:${(attackerServer.address() as AddressInfo).port}`;
  f = await startFederation();
  await f.policy('infra');
  const beta = await f.t.createTenant('beta', { audience: BETA_AUDIENCE });
  betaKey = beta.key;
  // A policy beta would grant, so a token wrongly routed to beta would be minted and the test would see it.
  await createPolicy(f.t.broker.store, beta.tenant.id, 'beta-infra', { name: 'beta-infra' }, f.t.clock.now);
});
afterAll(async () => {
  await f.close();
  attackerServer.closeAllConnections();
  await new Promise<void>((resolve) => attackerServer.close(() => resolve()));
});
// Every case starts past the key-set cooldown, so an unknown kid really makes the broker refetch.
beforeEach(() => {
  f.issuer.reset();
  f.t.clock.now += 31_000;
});

const nowS = () => Math.floor(f.t.clock.now / 1000);
const sign = (overrides?: ClaimOverrides, opts?: SignOptions) => f.issuer.sign(overrides, opts);
/** The token with its signature spelled another way (SECURITY-CASES H3). */
function nonCanonicalSignature(token: string): string {
  const [h, p, s] = segments(token);
  return `${h}.${p}.${nonCanonical(s)}`;
}

interface AuditEvent {
  id: string;
  type: string;
  outcome: string;
  details: Record<string, unknown>;
}

async function events(key: string, type: string): Promise<AuditEvent[]> {
  const res = await f.t.request('GET', `/v1/audit-events?type=${type}&limit=200`, { key });
  expect(res.status).toBe(200);
  return ((await res.json()) as { events: AuditEvent[] }).events;
}

const minted = async () =>
  (await events(f.key, 'token.exchanged')).length + (await events(betaKey, 'token.exchanged')).length;

type AuditMark = (string | undefined)[];
/** Each tenant's newest audit event, to tell the events a request writes from those before it. */
const auditMark = async (): Promise<AuditMark> =>
  Promise.all([f.key, betaKey].map(async (key) => (await events(key, ''))[0]?.id));
/** The events of either tenant written since the mark, of any type. */
async function auditSince(mark: AuditMark): Promise<AuditEvent[]> {
  const lists = await Promise.all([f.key, betaKey].map((key) => events(key, '')));
  return lists.flatMap((list, i) => {
    const end = list.findIndex((e) => e.id === mark[i]);
    return end === -1 ? list : list.slice(0, end);
  });
}

/** H10: neither the token nor any of its long segments appears in the response or the logs. */
function expectNoEcho(text: string, token: string) {
  const logs = f.t.logs.join('\n');
  for (const part of [token, ...token.split('.')].filter((x) => x.length >= 16)) {
    expect(text).not.toContain(part);
    expect(logs).not.toContain(part);
  }
}

interface Refusal {
  status: number;
  code: string;
  /** Members the problem document must carry. */
  problem?: Record<string, unknown>;
  /** What `detail` must say: the reason the caller reads. */
  detail?: RegExp;
}

const INVALID: Refusal = { status: 401, code: 'invalid_token' };
const AUDIENCE: Refusal = { status: 401, code: 'audience_mismatch' };
const TOO_LARGE: Refusal = { status: 413, code: 'payload_too_large' };
/** The key set could not be refetched, so a kid it does not hold may be one the issuer rotated in since. */
const UNVERIFIABLE: Refusal = { status: 503, code: 'issuer_unavailable' };

/** The refusal as the caller sees it: status, code and members, no access token, the token not echoed. */
async function expectProblem(res: Response, want: Refusal, token: string) {
  const text = await res.text();
  const problem = JSON.parse(text) as Record<string, unknown>;
  expect({ status: res.status, code: problem.code }).toEqual({ status: want.status, code: want.code });
  expect(problem).toMatchObject(want.problem ?? {});
  if (want.detail) expect(problem.detail).toMatch(want.detail);
  expect(text).not.toMatch(/"access_token"/);
  expectNoEcho(text, token);
}

/** The RFC 8693 form of an exchange (README, the exchange API): the other way to present a token. */
function exchangeAsForm(token: string, body: Record<string, unknown>): Promise<Response> {
  const form = new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: token,
    subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
  });
  for (const [name, v] of Object.entries(body)) form.set(name, String(v));
  return f.t.request('POST', '/v1/oidc/token', {
    body: form.toString(),
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
  });
}

/**
 * Presents the token and checks the refusal, that no token was minted for any tenant, and that the audit log
 * gained exactly the `token.exchange_denied` events given (by their details): a verified job's refusal is
 * audited at its tenant, a token that does not verify is not (nothing in it can be trusted).
 */
async function expectRefused(
  token: string,
  want: Refusal,
  body: Record<string, unknown> = {},
  audited: Record<string, unknown>[] = [],
  via: 'json' | 'form' = 'json',
) {
  const mark = await auditMark();
  const res = via === 'form' ? await exchangeAsForm(token, body) : await f.exchange(token, body);
  await expectProblem(res, want, token);
  const written = await auditSince(mark);
  expect(written).toEqual(
    audited.map((details) =>
      expect.objectContaining({
        type: 'token.exchange_denied',
        outcome: 'denied',
        details: expect.objectContaining(details),
      }),
    ),
  );
}

interface Case {
  id: string;
  name: string;
  token: () => string;
  /** `shape`: refused before any key lookup; `keyset`: refused after the broker really refetched its keys. */
  kind: 'shape' | 'keyset' | 'claims';
  want: Refusal;
  body?: Record<string, unknown>;
  /** The details of the `token.exchange_denied` event the refusal writes, if any (the token's jti is added). */
  audited?: Record<string, unknown>[];
}

type Lazy<T> = T | (() => T);
const value = <T>(v: Lazy<T>): T => (typeof v === 'function' ? (v as () => T)() : v);
const times = (exp: number, iat: number, nbf = iat) => ({ exp, iat, nbf });
const hdr = (h: Lazy<Record<string, unknown>>, key?: 'attacker') => () => sign({}, { key, header: value(h) });
const signedBy = (opts: AddKeyOptions) => () => {
  const k = f.issuer.addKey(opts);
  return sign({}, { key: k.privateKey, header: { kid: k.kid } });
};
const at = (path: string) => `${attackerUrl}${path}`;
const raw = (json: (claims: string) => string) => () =>
  sign({}, { rawPayload: json(JSON.stringify(f.issuer.claims())) });
const nested = (n: number) => raw((j) => `{"d":${'['.repeat(n)}${']'.repeat(n)},${j.slice(1)}`);
const x5c = [attacker.publicKey.export({ format: 'der', type: 'spki' }).toString('base64')];
const carried = {
  jku: () => at('/k'),
  x5u: () => at('/k'),
  jwk: () => publicJwk(f.issuer.current.publicKey),
  x5c: () => ['MIIB'],
};
const served = (mode: 'duplicate-kid' | 'oversized' | 'redirect') => () => {
  f.issuer.rotate({ keepOld: mode !== 'duplicate-kid' });
  f.issuer.serve(mode);
  return sign();
};
const jsonSerialized = () => {
  const [h, p, s] = segments(sign());
  return JSON.stringify({ payload: p, signatures: [{ protected: h, signature: s }] });
};
const expiredBeyondLeeway = () => {
  const token = sign();
  f.t.clock.now += 361_000;
  return token;
};
const WHITESPACE: [string, (t: string) => string][] = [
  ['leading space', (t) => ` ${t}`],
  ['trailing newline', (t) => `${t}\n`],
  ['newline inside', (t) => t.replace('.', '.\n')],
  ['Bearer prefix', (t) => `Bearer ${t}`],
];

type ShapeRow = [id: string, name: string, token: () => string, want?: Refusal];
const SHAPE: ShapeRow[] = [
  ['A1', 'alg none, empty signature', () => sign({}, { alg: 'none' })],
  ...['None', 'NONE', 'nOnE'].map((alg): ShapeRow => ['A2', `alg ${alg}`, hdr({ alg })]),
  ['A3', 'genuine token, signature removed', () => `${segments(sign()).slice(0, 2).join('.')}.`],
  ['A4', 'HS256 keyed with the PEM', () => sign({}, { alg: 'HS256', hmacSecret: f.issuer.publicKeyPem })],
  [
    'A5',
    'HS256 keyed with JWK n',
    () => sign({}, { alg: 'HS256', hmacSecret: Buffer.from(carried.jwk().n!, 'base64url') }),
  ],
  ['A6', 'HS256 with an empty secret', () => sign({}, { alg: 'HS256', hmacSecret: '' })],
  ...['PS256', 'RS384', 'RS512', 'ES256'].map((alg): ShapeRow => ['A7', `${alg} on RS256`, hdr({ alg })]),
  ['A7', 'genuine PS256 signature', () => sign({}, { alg: 'PS256' })],
  ['A8', 'ES256 r=s=0', () => sign({}, { alg: 'ES256', signature: Buffer.alloc(64) })],
  ['B3', 'no kid, one key in the set', hdr({ kid: undefined })],
  ['B4', 'kid ../../../../dev/null', hdr({ kid: '../../../../dev/null' })],
  ...["x' UNION SELECT '1';--", '|sleep 10'].map((kid): ShapeRow => ['B5', `kid ${kid}`, hdr({ kid })]),
  ['B6', 'kid of 64 KiB: body over the limit', hdr({ kid: 'k'.repeat(65_536) }), TOO_LARGE],
  ['B6', 'kid of 6 KiB: token over 8 KiB', hdr({ kid: 'k'.repeat(6144) })],
  ['B7', 'embedded attacker jwk', hdr({ kid: undefined, jwk: publicJwk(attacker.publicKey) }, 'attacker')],
  ['B8', 'attacker jwk, GitHub kid', hdr({ jwk: publicJwk(attacker.publicKey) }, 'attacker')],
  ['B9', 'jku at the attacker', hdr(() => ({ jku: at('/jwks.json') }), 'attacker')],
  ['B10', 'x5u at the attacker', hdr(() => ({ x5u: at('/cert.pem') }), 'attacker')],
  ['B11', 'x5c with the attacker key', hdr({ kid: undefined, x5c }, 'attacker')],
  ...Object.entries(carried).map(
    ([k, v]): ShapeRow => ['B12', `genuine, with ${k}`, hdr(() => ({ [k]: v() }))],
  ),
  ...['', '/.well-known/jwks', '/_services/token'].map(
    (path): ShapeRow => [
      'B16',
      `iss at the attacker${path}`,
      () => sign({ iss: at(path) }, { key: 'attacker' }),
    ],
  ),
  ['C1', 'crit exp2', hdr({ crit: ['exp2'], exp2: 1 })],
  ...['not base64url!', 'A'.repeat(129)].map(
    (x5t): ShapeRow => ['C5', `malformed x5t ${x5t.slice(0, 16)}`, hdr({ x5t })],
  ),
  ['C2', 'crit b64 false', hdr({ crit: ['b64'], b64: false })],
  ...['at+jwt', 'jwt', undefined].map((typ): ShapeRow => ['C3', `typ ${typ}`, hdr({ typ })]),
  [
    'C4',
    'duplicate alg',
    () => sign({}, { rawHeader: `{"alg":"none","alg":"RS256","kid":"${f.issuer.kid}"}` }),
  ],
  ...['zip', 'enc', 'cty', 'b64', 'x5t#S256', 'x-custom'].map(
    (h): ShapeRow => ['C5', h, hdr({ [h]: 'DEF' })],
  ),
  ['C6', '5-segment JWE', () => ['{"alg":"RSA-OAEP"}', 'k', 'iv', 'ct', 'tag'].map(b64url).join('.')],
  ['C7', 'JWS JSON serialization', jsonSerialized],
  ...[1e308, 1.5e9 + 0.25].map((exp): ShapeRow => ['D9', `exp ${exp}`, () => sign({ exp })]),
  ...FOREIGN_ISSUERS.map(([id, iss]): ShapeRow => [id, `iss ${iss}`, () => sign({ iss })]),
  ...[undefined, [GITHUB_ISSUER], 1].map((iss): ShapeRow => ['E8', `iss ${iss}`, () => sign({ iss })]),
  ['G21', 'duplicate repository member', raw((j) => `{"repository":"evil/x",${j.slice(1)}`)],
  ['H1', 'token over 8 KiB', () => sign({ workflow: 'w'.repeat(9000) })],
  ['H2', '100k nested arrays: body over the limit', nested(100_000), TOO_LARGE],
  ['H2', 'nesting bomb under 8 KiB', nested(2000)],
  ['H3', 'non-canonical signature', () => nonCanonicalSignature(sign())],
  ['H4', '= padding on the signature', () => `${sign()}=`],
  ['H4', '= padding on the payload', () => sign().replace(/\.([^.]+)\./, '.$1=.')],
  ...['+', '/'].map(
    (ch): ShapeRow => ['H5', `${ch} in the signature`, () => sign().replace(/\.[^.](?=[^.]*$)/, `.${ch}`)],
  ),
  ...WHITESPACE.map(([what, build]): ShapeRow => ['H6', what, () => build(sign())]),
  ['H7', 'non-UTF-8 payload byte', () => sign({}, { rawPayload: Buffer.from('{"\xff"}', 'latin1') })],
  ['H7', 'UTF-16 header', () => sign({}, { rawHeader: Buffer.from(`{"alg":"RS256"}`, 'utf16le') })],
  ['H7', 'payload with a BOM', raw((j) => `\ufeff${j}`)],
];

const KEYSET: [id: string, name: string, token: () => string, want?: Refusal][] = [
  ['A11', 'kid of another published key', hdr(() => ({ kid: f.issuer.addKey().kid }))],
  ['A12', 'published 1024-bit key', signedBy({ modulusLength: 1024 })],
  ['A12', 'published key with e=3', signedBy({ publicExponent: 3 })],
  ['A12', 'published key with its private part', signedBy({ withPrivateParts: true })],
  ['B1', 'unknown kid, attacker key', hdr(() => ({ kid: randomUUID() }), 'attacker')],
  ['B13', 'the set lists the kid twice', served('duplicate-kid')],
  ['B14', 'set entry with use enc', signedBy({ jwk: { use: 'enc' } })],
  ['B14', 'set entry with alg RS384', signedBy({ jwk: { alg: 'RS384' } })],
  ['B14', 'set entry whose key_ops omit verify', signedBy({ jwk: { key_ops: ['encrypt'] } })],
  ['B15', 'oversized key set, new kid', served('oversized'), UNVERIFIABLE],
  ['B15', 'redirected key set, new kid', served('redirect'), UNVERIFIABLE],
];

const RUNNER_CREDENTIAL = { aud: undefined, sub: undefined, repository: undefined };
const REQUIRED =
  'sub repository repository_id repository_owner repository_owner_id ref job_workflow_ref'.split(' ');
const aud = (problem?: Record<string, unknown>, tenant?: string): Partial<Case> => ({
  want: { ...AUDIENCE, problem },
  body: tenant === undefined ? undefined : { tenant },
});
// A verified job that named a tenant whose audience it does not carry: that tenant's admins see the refusal.
const TO_ACME: Partial<Case> = {
  ...aud({ audience: BETA_AUDIENCE, expected_audience: DEFAULT_AUDIENCE }, 'acme-corp'),
  audited: [{ reason: 'audience_mismatch', audience: BETA_AUDIENCE }],
};
const TO_BETA: Partial<Case> = {
  ...aud({ expected_audience: BETA_AUDIENCE }, 'beta'),
  audited: [{ reason: 'audience_mismatch', audience: DEFAULT_AUDIENCE }],
};
type ClaimsRow = [id: string, name: string, claims: Lazy<ClaimOverrides>, more?: Partial<Case>];
const CLAIMS: ClaimsRow[] = [
  ['A9', 'GitHub kid, attacker key', {}, { token: () => sign({}, { key: 'attacker' }) }],
  [
    'A10',
    'repository changed to evil/x',
    {},
    { token: () => tamperPayload(sign(), { repository: 'evil/x' }) },
  ],
  ['D1', 'exp an hour ago', () => times(nowS() - 3600, nowS() - 3900)],
  ['D1', '1 s after exp + leeway', {}, { token: expiredBeyondLeeway }],
  ['D2', 'exp 61 s ago, beyond the leeway', () => times(nowS() - 61, nowS() - 361)],
  ['D3', 'nbf in 10 min', () => ({ nbf: nowS() + 600 })],
  // Past the range of a Date (8.64e15 ms): the refusal names the time without formatting it as a date.
  ['D3', 'nbf past the last date', () => ({ nbf: 9e12 })],
  ['D4', 'iat past the last date', () => times(9e12 + 300, 9e12)],
  ['D4', 'iat in 1 h', () => times(nowS() + 3900, nowS() + 3600, nowS())],
  ['D5', 'lifetime over 24 h', () => ({ exp: nowS() + 86_401 })],
  ['D5', 'expires before it was issued', () => times(nowS() + 20, nowS() + 30, nowS())],
  // Within the leeway of its nbf and its exp alike, it would be taken, though at no moment is it valid.
  ['D5', 'valid only after it expires', () => times(nowS() + 10, nowS(), nowS() + 50)],
  ...['exp', 'iat', 'nbf'].map((t): ClaimsRow => [t === 'exp' ? 'D6' : 'D7', `no ${t}`, { [t]: undefined }]),
  ['D8', 'exp as a string', { exp: '9999999999' }],
  ...[-1, Number.NaN].map((exp): ClaimsRow => ['D9', `exp ${exp}`, { exp }]),
  ['D9', 'exp beyond 2^53', {}, { token: raw((j) => j.replace(/"exp":\d+/, `"exp":1${'0'.repeat(22)}`)) }],
  ['F1', 'aud of two', { aud: [DEFAULT_AUDIENCE, 'sts.amazonaws.com'] }],
  ['F2', 'aud array of one', { aud: [DEFAULT_AUDIENCE] }],
  ['F3', 'beta token to tenant acme-corp', { aud: BETA_AUDIENCE }, TO_ACME],
  ['F3', 'acme token to tenant beta', {}, TO_BETA],
  ['F4', 'default audience', { aud: 'https://github.com/acme' }, aud()],
  ['F5', 'audience with a suffix', { aud: `${DEFAULT_AUDIENCE}.evil.example` }, aud()],
  ['F6', 'audience upper-cased', { aud: DEFAULT_AUDIENCE.toUpperCase() }, aud()],
  ...[undefined, '', '*'].map((a): ClaimsRow => ['F7', `aud ${JSON.stringify(a)}`, { aud: a }]),
  ['F8', 'runner-credential shape, 6 h', () => ({ ...RUNNER_CREDENTIAL, ...times(nowS() + 21_600, nowS()) })],
  ...REQUIRED.map((name): ClaimsRow => ['G1', `${name} missing`, { [name]: undefined }]),
  // GitHub leaves only `ref` empty (a job with no branch or tag); any other required claim empty is refused.
  ...REQUIRED.filter((name) => name !== 'ref').map(
    (name): ClaimsRow => ['G1', `${name} empty`, { [name]: '' }],
  ),
  ['G2', 'jti missing', { jti: undefined }],
  ['G3', 'repository as an array', { repository: ['acme/infra'] }],
  ['G4', 'repository as an object', { repository: { toString: 'acme/infra' } }],
  ['G5', 'repository_owner_id as a number', { repository_owner_id: 131804563 }],
  ['G5', 'repository_id as a number', { repository_id: 632596897 }],
  ['G6', 'Cyrillic a in repository', { repository: '\u0430cme/infra' }],
  ['G6', 'Cyrillic a in repository_owner', { repository_owner: '\u0430cme' }],
  ['G7', 'fullwidth a in repository', { repository: '\uff41cme/infra' }],
  ...['acme/infra\u0000', 'acme/infra\n', 'acme/in fra', 'acme%2Finfra'].map(
    (repository): ClaimsRow => ['G8', `repository ${JSON.stringify(repository)}`, { repository }],
  ),
  ['G19', 'owner is not repository_owner', { repository: 'evil/infra' }],
  ['H7', 'NUL in jti (PostgreSQL text cannot hold it)', { jti: `${randomUUID()}\u0000` }],
  ['H1', 'jti over 255 characters', () => ({ jti: 'j'.repeat(256) })],
  // A replay record's key PostgreSQL cannot index: once a 500, and a mint on SQLite.
  ['H1', 'jti of 4,000 characters', () => ({ jti: randomBytes(3000).toString('base64url') })],
  ['H7', 'line break in ref', { ref: 'refs/heads/main\n::warning::x' }],
  ['H7', 'unpaired surrogate in sub', { sub: 'repo:acme/infra:ref:refs/heads/\ud800' }],
  ['H7', 'control character in an optional claim', { workflow: 'deploy\u001b[2J' }],
];

const UNTRUSTED = /^issuer '.*' is not trusted$/;
const HEADER_PARAMETER = /^unsupported header parameter '/;
const NOT_STRING = /claim is missing or not a (non-empty )?string$/;
const NOT_NAME = /claim (is not a GitHub owner|holds a control)/;
const ALPHABET = /segment has a character outside the base64url alphabet$/;
/** What each case's `detail` says: the check that refused it, not a later one that would also have. */
const REASONS: Record<string, RegExp> = {
  A1: /^signature segment is empty$/,
  A2: /^unsupported signing algorithm 'n/i,
  A3: /^signature segment is empty$/,
  A4: /^unsupported signing algorithm 'HS256'$/,
  A5: /^unsupported signing algorithm 'HS256'$/,
  A6: /^unsupported signing algorithm 'HS256'$/,
  A7: /^unsupported signing algorithm '(PS256|RS384|RS512|ES256)'$/,
  A8: /^unsupported signing algorithm 'ES256'$/,
  A9: /^signature does not verify with key /,
  A10: /^signature does not verify with key /,
  A11: /^signature does not verify with key /,
  A12: /^signing key '[^']+' of issuer \S+ is not usable: (its modulus has 1024 bits|its public exponent|the key set publishes its private part)/,
  B1: /^unknown signing key /,
  B3: /^header kid is missing or malformed$/,
  B4: /^header kid is missing or malformed$/,
  B5: /^header kid is missing or malformed$/,
  B6: /larger than 65536 bytes|^token is longer than 8192 bytes$/,
  B7: /^unsupported header parameter 'jwk'$/,
  B8: /^unsupported header parameter 'jwk'$/,
  B9: /^unsupported header parameter 'jku'$/,
  B10: /^unsupported header parameter 'x5u'$/,
  B11: /^unsupported header parameter 'x5c'$/,
  B12: HEADER_PARAMETER,
  B13: /^signing key '[^']+' of issuer \S+ is not usable: the key set lists its kid more than once$/,
  B14: /^signing key '[^']+' of issuer \S+ is not usable: (the key set marks it for another|its key_ops do not include verify)/,
  B15: /is not among the cached keys of issuer .*, which could not be refreshed: /,
  B16: UNTRUSTED,
  C1: /^unsupported header parameter 'crit'$/,
  C2: /^unsupported header parameter 'crit'$/,
  C3: /^header typ must be 'JWT'$/,
  C4: /^header has a duplicate member name$/,
  C5: /^unsupported header parameter '|^header x5t is malformed$/,
  C6: /^token has 5 segments/,
  C7: /^token is JSON, not a compact JWS$/,
  D1: /^token expired at /,
  D2: /^token expired at /,
  D3: /^token is not valid before /,
  D4: /^token is issued in the future|^token is not valid before 9000000000000 s/,
  D5: /^token (lifetime exceeds 24 hours|expires before it was issued|expires before it is valid \(nbf after exp\))$/,
  D6: /^exp claim is missing$/,
  D7: /^(iat|nbf) claim is missing$/,
  D8: /^exp claim must be a positive integer/,
  D9: /^exp claim must be a positive integer|^payload has a number that is not a plain integer$/,
  E1: UNTRUSTED,
  E2: UNTRUSTED,
  E3: UNTRUSTED,
  E4: UNTRUSTED,
  E5: UNTRUSTED,
  E6: UNTRUSTED,
  E7: UNTRUSTED,
  E8: /^iss claim is missing or not a string$/,
  F1: /^aud claim must be a single string, not an array$/,
  F2: /^aud claim must be a single string, not an array$/,
  F3: /^the token's audience ".*" is not tenant .*'s audience/,
  F4: /^no tenant on this broker expects the audience /,
  F5: /^no tenant on this broker expects the audience /,
  F6: /^no tenant on this broker expects the audience /,
  F7: /^aud claim (is missing|is empty, a wildcard or malformed)$/,
  F8: /^aud claim is missing$/,
  G1: NOT_STRING,
  G2: /^jti claim is missing or not a non-empty string$/,
  G3: /^repository claim is missing or not a non-empty string$/,
  G4: /^repository claim is missing or not a non-empty string$/,
  G5: /^repository(_owner)?_id claim is missing or not a non-empty string$/,
  G6: NOT_NAME,
  G7: NOT_NAME,
  G8: /^repository claim (is not a GitHub owner\/name|holds a control or unpaired surrogate character)$/,
  G19: /^repository 'evil\/infra' does not belong to repository_owner 'acme'$/,
  G21: /^payload has a duplicate member name$/,
  H1: /^token is longer than 8192 bytes$|^jti claim is longer than 255 characters$/,
  H2: /larger than 65536 bytes|^payload nests deeper than/,
  H3: /^signature segment is not canonical base64url$/,
  H4: ALPHABET,
  H5: ALPHABET,
  H6: ALPHABET,
  H7: /not valid UTF-8|not valid JSON|byte order mark|holds a control or unpaired surrogate character/,
};

const cases: Case[] = [
  ...SHAPE.map(([id, name, token, want = INVALID]): Case => ({ id, name, token, want, kind: 'shape' })),
  ...KEYSET.map(([id, name, token, want = INVALID]): Case => ({ id, name, token, want, kind: 'keyset' })),
  ...CLAIMS.map(
    ([id, name, overrides, more]): Case => ({
      id,
      name,
      token: () => sign(value(overrides)),
      want: INVALID,
      kind: 'claims',
      ...more,
    }),
  ),
].sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true }));

describe('POST /v1/oidc/token refuses every token attack', () => {
  it('accepts the genuine token these cases are built from, and audits the mint the cases look for', async () => {
    const before = await minted();
    const res = await f.exchange(sign());
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ policy: 'infra', tenant: 'acme-corp' });
    expect(await minted()).toBe(before + 1);
  });

  // A token refused on its shape is refused as well when it comes as the RFC 8693 form's subject_token, where
  // the body is URL-decoded rather than parsed as JSON.
  const runs = cases.flatMap((c) => [
    { c, via: 'json' as const },
    ...(c.kind === 'shape' ? [{ c, via: 'form' as const }] : []),
  ]);
  for (const { c, via } of runs) {
    it(`${c.id} ${c.name}${via === 'form' ? ' (RFC 8693 form)' : ''}`, async () => {
      const token = c.token();
      const detail = REASONS[c.id];
      expect(detail, `no REASONS entry for ${c.id}`).toBeDefined();
      const audited = c.audited?.map((d) => ({ ...d, oidc_jti: decodeSegment(segments(token)[1]).jti }));
      await expectRefused(token, { detail, ...c.want }, c.body, audited, via);
      if (c.kind === 'shape') expect(f.issuer.jwksRequests).toBe(0);
      if (c.kind === 'keyset') expect(f.issuer.jwksRequests).toBeGreaterThan(0);
      expect(f.issuer.discoveryRequests).toBe(0);
      expect(f.issuer.requests).not.toContain('/redirected-jwks');
      await new Promise((resolve) => setTimeout(resolve, 5));
      expect(attackerHits).toEqual([]);
    });
  }
});

describe('POST /v1/oidc/token beyond single tokens', () => {
  it('B2 refuses 1,000 unknown kids with at most one key-set refetch per 30 s cooldown', async () => {
    const [h, p, s] = segments(sign({}, { key: 'attacker' }));
    const header = decodeSegment(h);
    const forged = (n: number) =>
      Array.from({ length: n }, () => {
        const kid = randomBytes(12).toString('hex');
        return `${b64url(JSON.stringify({ ...header, kid }))}.${p}.${s}`;
      });
    const flood = async (tokens: string[]) => {
      const responses = await Promise.all(tokens.map((t) => f.exchange(t)));
      const bodies = (await Promise.all(responses.map((r) => r.json()))) as { code: string }[];
      expect(new Set(responses.map((r) => r.status))).toEqual(new Set([401]));
      expect(new Set(bodies.map((b) => b.code))).toEqual(new Set(['invalid_token']));
    };
    const before = await minted();
    // Past the cooldown, an unknown kid may mean a rotation: exactly one refetch for the whole flood.
    await flood(forged(1000));
    expect(f.issuer.jwksRequests).toBe(1);
    f.t.clock.now += 29_000;
    await flood(forged(100));
    expect(f.issuer.jwksRequests).toBe(1);
    f.t.clock.now += 2_000;
    await flood(forged(100));
    expect(f.issuer.jwksRequests).toBe(2);
    expect(await minted()).toBe(before);
  });

  it('A13/G22 decides on the signed payload only: a rewritten claim never reaches the policy', async () => {
    const genuine = sign({ repository: 'acme/other' });
    const denied = {
      status: 403,
      code: 'no_matching_policy',
      problem: { claims: { repository: 'acme/other' } },
    };
    await expectRefused(tamperPayload(genuine, { repository: 'acme/infra' }), INVALID);
    await expectRefused(genuine, denied, {}, [{ reason: 'no_matching_policy', repository: 'acme/other' }]);
  });

  it('D2 accepts a token that expired 30 s ago, within the 60 s leeway', async () => {
    const res = await f.exchange(sign(times(nowS() - 30, nowS() - 330)));
    expect(res.status).toBe(200);
    expect(await res.json()).toHaveProperty('access_token');
  });

  it('D2 accepts a token issued and valid from 30 s ahead, within the same leeway (an issuer clock running fast)', async () => {
    const res = await f.exchange(sign(times(nowS() + 330, nowS() + 30)));
    expect(res.status).toBe(200);
    expect(await res.json()).toHaveProperty('access_token');
  });

  it('durability: no token is returned when the replay record and audit event cannot be committed', async () => {
    const store = f.t.broker.store;
    const record = store.tokens.recordExchange;
    store.tokens.recordExchange = async () => {
      throw new Error('disk I/O error');
    };
    try {
      const before = await minted();
      const res = await f.exchange(sign());
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text).not.toMatch(/access_token|disk I\/O/);
      expect(await minted()).toBe(before);
    } finally {
      store.tokens.recordExchange = record;
    }
  });

  it('D10 never mints beyond the policy cap, even from a 6 h input token', async () => {
    await f.policy('capped', { claims: { repository: 'acme/capped' }, max_session_duration_seconds: 3600 });
    const long = () => sign({ repository: 'acme/capped', ...times(nowS() + 21_600, nowS()) });
    // 7200 s is above the request schema's own 3600 s maximum, so it is refused outright (nothing minted)
    // rather than cut down to the policy cap.
    const before = await minted();
    const asked = await f.exchange(long(), { duration_seconds: 7200 });
    expect(asked.status).toBe(400);
    const problem = (await asked.json()) as { code: string; errors: { field: string }[] };
    expect(problem.code).toBe('invalid_request');
    expect(problem.errors.map((e) => e.field)).toEqual(['duration_seconds']);
    expect(await minted()).toBe(before);
    // Within the schema's range but above a lower policy cap: cut down to the cap.
    await f.policy('capped-short', {
      claims: { repository: 'acme/short' },
      max_session_duration_seconds: 1800,
    });
    const short = sign({ repository: 'acme/short', ...times(nowS() + 21_600, nowS()) });
    const cut = await f.exchange(short, { duration_seconds: 3600 });
    expect(cut.status).toBe(200);
    expect(await cut.json()).toMatchObject({ expires_in: 1800 });
    const res = await f.exchange(long());
    expect(res.status).toBe(200);
    const body = (await res.json()) as { access_token: string; expires_in: number };
    const claims = decodeSegment(segments(body.access_token)[1]) as { iat: number; exp: number };
    expect(claims.exp - claims.iat).toBe(3600);
    expect(claims.exp).toBeLessThanOrEqual(nowS() + 3600);
    expect(body.expires_in).toBe(3600);
  });

  const BAD_REQUEST: Refusal = { status: 400, code: 'invalid_request' };

  it('D10 refuses a duration that is not a whole number of seconds from 1 to 3600, and mints nothing', async () => {
    const before = await minted();
    // As the JSON text is written: a number's spelling (6e2) is the number, a string is not one.
    for (const duration of ['0', '-1', '3601', '"3600"', '3600.5', 'null', 'true', '1e308']) {
      const token = sign();
      const res = await f.t.request('POST', '/v1/oidc/token', {
        body: `{"oidc_token":"${token}","duration_seconds":${duration}}`,
        headers: { 'Content-Type': 'application/json' },
      });
      const named = {
        errors: expect.arrayContaining([expect.objectContaining({ field: 'duration_seconds' })]),
      };
      await expectProblem(res, { ...BAD_REQUEST, problem: named }, token);
    }
    expect(await minted()).toBe(before);
    const res = await f.t.request('POST', '/v1/oidc/token', {
      body: `{"oidc_token":"${sign()}","duration_seconds":6e2}`,
      headers: { 'Content-Type': 'application/json' },
    });
    expect(await res.json()).toMatchObject({ expires_in: 600 });
  });

  it('H8 refuses a token sent in an Authorization header, alone, doubled or beside the body', async () => {
    const token = sign();
    const json = JSON.stringify({ oidc_token: token });
    const doubled = new Headers({ 'Content-Type': 'application/json' });
    doubled.append('Authorization', `Bearer ${token}`);
    doubled.append('Authorization', `Bearer ${sign()}`);
    const before = await minted();
    for (const [headers, body] of [
      [new Headers({ Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }), json],
      [new Headers({ Authorization: `Bearer ${token}` }), undefined],
      [doubled, json],
    ] as const) {
      const init = { method: 'POST', headers, body };
      await expectProblem(
        await f.t.broker.app.request('http://broker.test/v1/oidc/token', init),
        BAD_REQUEST,
        token,
      );
    }
    expect(await minted()).toBe(before);
  });

  it('H9 refuses a token in the query string, with or without a body', async () => {
    const token = sign();
    const before = await minted();
    for (const json of [{ oidc_token: token }, undefined]) {
      const res = await f.t.request('POST', `/v1/oidc/token?oidc_token=${token}`, { json });
      await expectProblem(res, BAD_REQUEST, token);
    }
    expect(await minted()).toBe(before);
  });

  it('answers a token with Cache-Control: no-store (RFC 6749 §5.1)', async () => {
    const res = await f.exchange(sign());
    expect(res.status).toBe(200);
    expect(res.headers.get('Cache-Control')).toBe('no-store');
  });

  it('H10 echoes neither the token nor its signature on success, denial or refusal', async () => {
    const tokens = [
      sign(),
      sign({ repository: 'acme/unknown' }),
      sign({}, { key: 'attacker' }),
      sign({ iss: 'x' }),
    ];
    for (const token of tokens) expectNoEcho(await (await f.exchange(token)).text(), token);
    const replayed = tokens[0]!;
    expectNoEcho(await (await f.exchange(replayed)).text(), replayed);
    // The logs checked above are the broker's real ones.
    expect(f.t.logs.join('\n')).toContain('exchange refused');
  });

  it('a key in a refused token shows as its hint in the answer and in the log of the refusal', async () => {
    const res = await f.exchange(sign({ iss: f.key }));
    expect(res.status).toBe(401);
    const hint = `ssa_…${f.key.slice(-4)}`;
    expect(await res.text()).toContain(hint);
    const refusals = f.t.logs.filter((line) => line.includes('exchange refused'));
    expect(refusals.at(-1)).toContain(hint);
    expect(f.t.logs.join('\n')).not.toContain(f.key.slice(4, 36));
  });

  const REPLAYED: Refusal = { status: 401, code: 'token_replayed', detail: /already exchanged/ };
  /** The audit event of a replay: the tenant's admins see the second use of a job's token. */
  const replayOf = (token: string) => [
    { reason: 'token_replayed', oidc_jti: decodeSegment(segments(token)[1]).jti },
  ];

  it('I1 the same token twice: exchanged once, then refused as a replay', async () => {
    const token = sign();
    expect((await f.exchange(token)).status).toBe(200);
    await expectRefused(token, REPLAYED, {}, replayOf(token));
  });

  it('I1 the same token sent 20 times at once: exchanged exactly once, every other copy refused as a replay', async () => {
    const token = sign();
    const mark = await auditMark();
    const responses = await Promise.all(Array.from({ length: 20 }, () => f.exchange(token)));
    const outcomes = await Promise.all(
      responses.map(async (r) => `${r.status} ${((await r.json()) as { code?: string }).code ?? 'granted'}`),
    );
    expect(outcomes.filter((o) => o === '200 granted')).toHaveLength(1);
    expect(outcomes.filter((o) => o === '401 token_replayed')).toHaveLength(19);
    const written = await auditSince(mark);
    expect(written.filter((e) => e.type === 'token.exchanged')).toHaveLength(1);
    expect(written.filter((e) => e.details.reason === 'token_replayed')).toHaveLength(19);
  });

  it('I1 refused copies and refused requests of a genuine token do not use it up: it is exchanged after them, once', async () => {
    const token = sign();
    const jti = decodeSegment(segments(token)[1]).jti as string;
    const job = { oidc_jti: jti, repository: 'acme/infra' };
    // Copies an attacker who saw the token could make (A10, H3, H4, H6): refused on their own, unaudited.
    await expectRefused(tamperPayload(token, { repository: 'evil/x' }), { ...INVALID, detail: REASONS.A10 });
    await expectRefused(nonCanonicalSignature(token), { ...INVALID, detail: REASONS.H3 });
    await expectRefused(`${token}=`, { ...INVALID, detail: REASONS.H4 });
    await expectRefused(` ${token}`, { ...INVALID, detail: REASONS.H6 });
    // The job's own requests that are refused (F3, a policy or permission it may not have): audited.
    await expectRefused(token, { ...AUDIENCE, detail: REASONS.F3 }, { tenant: 'beta' }, [
      { ...job, reason: 'audience_mismatch' },
    ]);
    await expectRefused(
      token,
      { status: 403, code: 'permission_not_allowed', detail: /does not allow audit-log:read/ },
      { permissions: ['audit-log:read'] },
      [{ ...job, reason: 'permission_not_allowed' }],
    );
    await expectRefused(
      token,
      { status: 403, code: 'no_matching_policy', detail: /named "deploy-mian"/ },
      { policy: 'deploy-mian' },
      [{ ...job, reason: 'no_matching_policy', requested_policy: 'deploy-mian' }],
    );
    await expectRefused(
      token,
      { status: 400, code: 'invalid_request', detail: /permissions\[0\]/ },
      { permissions: ['harden-runner:raed'] },
      [{ ...job, reason: 'invalid_request' }],
    );
    expect(await f.t.broker.store.tokens.wasExchanged(GITHUB_ISSUER, jti)).toBe(false);
    const res = await f.exchange(token);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ policy: 'infra', tenant: 'acme-corp' });
    await expectRefused(token, REPLAYED, {}, replayOf(token));
  });

  it('I2 a re-encoded copy (H3) of a used token is refused as invalid_token, before any replay check', async () => {
    const token = sign();
    expect((await f.exchange(token)).status).toBe(200);
    // The non-canonical encoding is rejected on its shape, so the copy never reaches the replay record
    // (it would be token_replayed otherwise).
    await expectRefused(nonCanonicalSignature(token), INVALID);
  });

  it('I3 the replay record is shared with another replica and kept until exp + skew', async () => {
    const token = sign();
    expect((await f.exchange(token)).status).toBe(200);
    const replica = await startTestBroker({
      db: f.t.db,
      clock: f.t.clock,
      env: {
        BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: f.issuer.jwksUri }]),
        BROKER_PUBLIC_URL: 'https://broker.test',
      },
    });
    try {
      const other = await replica.request('POST', '/v1/oidc/token', { json: { oidc_token: token } });
      expect(other.status).toBe(401);
      expect(await other.json()).toMatchObject({ code: 'token_replayed' });
    } finally {
      await replica.close();
    }
    // 50 s after exp the token still verifies (60 s leeway), so only the replay record refuses it: the upkeep
    // that forgets expired records must keep it that long.
    f.t.clock.now = ((decodeSegment(segments(token)[1]).exp as number) + 50) * 1000;
    await f.t.broker.maintain();
    await expectRefused(token, REPLAYED, {}, replayOf(token));
    // A replica whose clock runs 4 minutes ahead has run the upkeep; this one still sees the token in its
    // leeway, and still refuses it.
    f.t.clock.now += 4 * 60_000;
    await f.t.broker.maintain();
    f.t.clock.now -= 4 * 60_000;
    await expectRefused(token, REPLAYED, {}, replayOf(token));
  });

  it('I3 the replay record outlives the leeway by the 5 minutes replicas may disagree: upkeep 4 min 59 s ahead keeps it', async () => {
    const token = sign();
    expect((await f.exchange(token)).status).toBe(200);
    // This replica takes the token's times for one more second; one whose clock runs 4 min 59 s ahead runs the
    // upkeep then, and must leave the record this one still needs.
    f.t.clock.now = ((decodeSegment(segments(token)[1]).exp as number) + 59) * 1000;
    f.t.clock.now += 299_000;
    await f.t.broker.maintain();
    f.t.clock.now -= 299_000;
    await expectRefused(token, REPLAYED, {}, replayOf(token));
  });

  it('I4 a used token presented to another tenant is refused by audience before the replay check', async () => {
    const token = sign();
    expect((await f.exchange(token)).status).toBe(200);
    await expectRefused(
      token,
      { ...AUDIENCE, problem: { expected_audience: BETA_AUDIENCE } },
      { tenant: 'beta' },
      [{ reason: 'audience_mismatch', audience: DEFAULT_AUDIENCE }],
    );
  });

  it('I5 I6 a revoked minted token stops at once, and its OIDC token cannot be exchanged again', async () => {
    const token = sign();
    const res = await f.exchange(token);
    expect(res.status).toBe(200);
    const { access_token: access } = (await res.json()) as { access_token: string };
    expect((await f.t.request('GET', '/v1/whoami', { key: access })).status).toBe(200);
    const revoke = await f.t.request('POST', '/v1/tokens/revoke', {
      key: access,
      body: new URLSearchParams({ token: access }).toString(),
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(revoke.status).toBe(200);
    const whoami = await f.t.request('GET', '/v1/whoami', { key: access });
    expect(whoami.status).toBe(401);
    // Used as a credential, refused, revoked: the minted token never reached a log line either.
    expectNoEcho(await whoami.text(), access);
    await expectRefused(token, REPLAYED, {}, replayOf(token));
  });

  it('E9 tokens of a second trusted issuer match only policies bound to that issuer', async () => {
    const enterprise = await startLocalIssuer({ now: () => f.t.clock.now, issuer: ENTERPRISE_ISSUER });
    const e = await startFederation({
      env: {
        BROKER_TRUSTED_ISSUERS: JSON.stringify([
          { issuer: GITHUB_ISSUER, jwks_uri: f.issuer.jwksUri },
          { issuer: ENTERPRISE_ISSUER, jwks_uri: enterprise.jwksUri },
        ]),
      },
    });
    try {
      e.t.clock.now = f.t.clock.now;
      await e.policy('github');
      const outcome = async (token: string) =>
        (await (await e.exchange(token)).json()) as Record<string, unknown>;
      expect(await outcome(enterprise.sign())).toMatchObject({ code: 'no_matching_policy' });
      await e.policy('enterprise', { issuer: ENTERPRISE_ISSUER });
      expect(await outcome(enterprise.sign())).toMatchObject({ policy: 'enterprise' });
      expect(await outcome(f.issuer.sign())).toMatchObject({ policy: 'github' });
      // The enterprise iss on a token signed by the other issuer's key: each issuer has its own key set.
      expect(await outcome(f.issuer.sign({ iss: ENTERPRISE_ISSUER }))).toMatchObject({
        code: 'invalid_token',
      });
    } finally {
      await e.close();
      await enterprise.close();
    }
  });
});

describe('E2 E7 a configured enterprise or GHES issuer, its keys found by discovery', () => {
  const GHES_ISSUER = 'https://ghe.example.com/_services/token';
  let enterprise: LocalIssuer;
  let ghes: LocalIssuer;
  let e: TestBroker;
  let eKey: string;
  const fetched: string[] = [];

  beforeAll(async () => {
    enterprise = await startLocalIssuer({ now: () => f.t.clock.now, issuer: ENTERPRISE_ISSUER });
    ghes = await startLocalIssuer({ now: () => f.t.clock.now, issuer: GHES_ISSUER });
    // Each issuer's discovery document names it, as GitHub's and a GHES's do.
    enterprise.discoveryIssuer = ENTERPRISE_ISSUER;
    ghes.discoveryIssuer = GHES_ISSUER;
    const hosts: [string, string][] = [
      ['https://token.actions.githubusercontent.com', enterprise.url],
      ['https://ghe.example.com', ghes.url],
    ];
    e = await startTestBroker({
      clock: f.t.clock,
      env: {
        BROKER_TRUSTED_ISSUERS: JSON.stringify([
          { issuer: GITHUB_ISSUER, jwks_uri: f.issuer.jwksUri },
          { issuer: ENTERPRISE_ISSUER },
          { issuer: GHES_ISSUER },
        ]),
        BROKER_PUBLIC_URL: 'https://broker.test',
      },
      fetch: (input, init) => {
        const url = String(input);
        fetched.push(url);
        const routed = hosts.find(([host]) => url.startsWith(`${host}/`));
        return fetch(routed ? routed[1] + url.slice(routed[0].length) : url, init);
      },
    });
    const { tenant, key } = await e.createTenant('acme-corp', { audience: DEFAULT_AUDIENCE });
    eKey = key;
    for (const [name, issuer] of [
      ['github', GITHUB_ISSUER],
      ['enterprise', ENTERPRISE_ISSUER],
      ['ghes', GHES_ISSUER],
    ]) {
      await createPolicy(e.broker.store, tenant.id, name, { name, issuer }, f.t.clock.now);
    }
  });
  afterAll(async () => {
    await e.close();
    await enterprise.close();
    await ghes.close();
  });
  beforeEach(() => {
    fetched.length = 0;
  });

  const exchange = (token: string) => e.request('POST', '/v1/oidc/token', { json: { oidc_token: token } });
  const auditCount = async () => {
    const res = await e.request('GET', '/v1/audit-events?limit=200', { key: eKey });
    return ((await res.json()) as { events: unknown[] }).events.length;
  };

  it('exchanges the exact configured issuer, fetching its discovery document at that issuer and nowhere else', async () => {
    for (const [issuer, iss, policy] of [
      [enterprise, ENTERPRISE_ISSUER, 'enterprise'],
      [ghes, GHES_ISSUER, 'ghes'],
    ] as const) {
      const res = await exchange(issuer.sign());
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ policy, tenant: 'acme-corp' });
      expect(issuer.discoveryRequests).toBeGreaterThan(0);
      expect(issuer.jwksRequests).toBeGreaterThan(0);
      expect(fetched).toContain(`${iss}/.well-known/openid-configuration`);
    }
  });

  const LOOK_ALIKES: [id: string, iss: string][] = [
    ['E1', `${ENTERPRISE_ISSUER}/`],
    ['E2', `${GITHUB_ISSUER}/acme-enterprise`],
    ['E2', `${GITHUB_ISSUER}/ACME`],
    ['E2', `${ENTERPRISE_ISSUER}/.well-known/jwks`],
    ['E1', `${GHES_ISSUER}/`],
    ['E3', 'http://ghe.example.com/_services/token'],
    ['E4', 'https://GHE.example.com/_services/token'],
    ['E5', `${GHES_ISSUER}.evil.example`],
    ['E6', 'https://ghe.example.com'],
    ['E6', 'https://ghe.example.com/_services'],
  ];
  for (const [id, iss] of LOOK_ALIKES) {
    it(`${id} refuses the look-alike ${iss} signed with the configured issuer's key, fetching nothing for it`, async () => {
      const signer = /ghe\./i.test(iss) ? ghes : enterprise;
      const token = signer.sign({ iss });
      const jti = decodeSegment(segments(token)[1]).jti as string;
      const events = await auditCount();
      const res = await exchange(token);
      const text = await res.text();
      expect({ status: res.status, body: JSON.parse(text) }).toMatchObject({
        status: 401,
        body: { code: 'invalid_token', detail: `issuer '${iss}' is not trusted` },
      });
      expect(text).not.toMatch(/"access_token"/);
      // An unverified token is not audited (nothing about it can be trusted), and nothing was recorded.
      expect(await auditCount()).toBe(events);
      expect(await e.broker.store.tokens.wasExchanged(iss, jti)).toBe(false);
      // Refused on its iss alone: no discovery or key URL is ever made from it.
      expect(fetched).toEqual([]);
    });
  }

  it('B15 a discovery document that names another issuer is not followed: 503, nothing minted, its key URL never fetched', async () => {
    const impostor = await startLocalIssuer({ now: () => f.t.clock.now, issuer: GHES_ISSUER });
    impostor.discoveryIssuer = 'https://ghe.example.com/_services/token/';
    const seen: string[] = [];
    const b = await startTestBroker({
      clock: f.t.clock,
      env: {
        BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GHES_ISSUER }]),
        BROKER_PUBLIC_URL: 'https://broker.test',
      },
      fetch: (input, init) => {
        seen.push(String(input));
        return fetch(String(input).replace('https://ghe.example.com', impostor.url), init);
      },
    });
    try {
      const { tenant, key } = await b.createTenant('acme-corp', { audience: DEFAULT_AUDIENCE });
      await createPolicy(
        b.broker.store,
        tenant.id,
        'ghes',
        { name: 'ghes', issuer: GHES_ISSUER },
        f.t.clock.now,
      );
      const token = impostor.sign();
      const res = await b.request('POST', '/v1/oidc/token', { json: { oidc_token: token } });
      const text = await res.text();
      expect({ status: res.status, body: JSON.parse(text) }).toMatchObject({
        status: 503,
        body: {
          code: 'issuer_unavailable',
          // What will not mend itself with a retry, said to the workflow rather than only in the broker's log.
          detail:
            `signing keys for issuer ${GHES_ISSUER} are unavailable: its discovery document ` +
            '(/.well-known/openid-configuration) names another issuer or no https jwks_uri; check the issuer URL configured',
        },
      });
      expect(res.headers.get('Retry-After')).toMatch(/^[1-9][0-9]*$/);
      expect(text).not.toMatch(/"access_token"/);
      expect(seen).toEqual([`${GHES_ISSUER}/.well-known/openid-configuration`]);
      expect(impostor.jwksRequests).toBe(0);
      const events = await b.request('GET', '/v1/audit-events', { key });
      expect(
        ((await events.json()) as { events: { type: string }[] }).events.map((ev) => ev.type),
      ).not.toContain('token.exchanged');
    } finally {
      await b.close();
      await impostor.close();
    }
  });

  it("E9 refuses a configured issuer's iss signed with another configured issuer's key", async () => {
    for (const [signer, iss] of [
      [ghes, ENTERPRISE_ISSUER],
      [enterprise, GHES_ISSUER],
      [ghes, GITHUB_ISSUER],
    ] as const) {
      const res = await exchange(signer.sign({ iss }));
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({
        code: 'invalid_token',
        detail: expect.stringMatching(/signing key/),
      });
    }
  });
});
