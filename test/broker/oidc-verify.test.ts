// SECURITY-CASES.md A–H at the verifier: forged, malformed or mis-scoped GitHub-shaped tokens are refused.
import { randomBytes, randomUUID } from 'node:crypto';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createIssuerKeys, type IssuerKeysOptions } from '../../broker/core/issuer-keys.js';
import { parseCompactJws } from '../../broker/core/jws-compact.js';
import { type VerifyResult, verifyOidcToken } from '../../broker/core/oidc-verify.js';
import { nonCanonical, segments, tamperPayload } from '../support/jws-surgery.js';
import {
  attacker,
  b64url,
  type ClaimOverrides,
  FOREIGN_ISSUERS,
  GITHUB_ISSUER,
  type LocalIssuer,
  publicJwk,
  type SignOptions,
  startLocalIssuer,
} from '../support/local-issuer.js';

const START = Date.parse('2026-06-13T19:01:04Z');
const START_S = START / 1000;
const ENTERPRISE_ISSUER = 'https://token.actions.githubusercontent.com/acme';
const GHES_ISSUER = 'https://ghe.example.com/_services/token';

const clock = { now: START };
let issuer: LocalIssuer;
let attackerSite: LocalIssuer;

beforeAll(async () => {
  issuer = await startLocalIssuer({ now: () => clock.now });
  attackerSite = await startLocalIssuer();
});
afterAll(async () => {
  await issuer.close();
  await attackerSite.close();
});
beforeEach(() => {
  clock.now = START;
  issuer.reset();
  attackerSite.reset();
});

function keysFor(extra: Partial<IssuerKeysOptions> = {}) {
  return createIssuerKeys({
    issuers: [{ issuer: GITHUB_ISSUER, jwksUri: issuer.jwksUri }],
    now: () => clock.now,
    ...extra,
  });
}

function verify(token: string, keys = keysFor()): Promise<VerifyResult> {
  return verifyOidcToken(token, { issuers: keys, now: () => clock.now, leewaySeconds: 60 });
}

function sign(overrides?: ClaimOverrides, opts?: SignOptions): string {
  return issuer.sign(overrides, opts);
}

function expectRejected(result: VerifyResult, reason: RegExp, token?: string) {
  expect(result).toMatchObject({ ok: false, code: 'invalid_token' });
  expect('claims' in result).toBe(false);
  if (result.ok) return;
  expect(result.reason).toMatch(reason);
  for (const part of token?.split('.') ?? []) {
    if (part.length >= 16) expect(result.reason).not.toContain(part);
  }
}

interface Case {
  id: string;
  name: string;
  token: () => string;
  reason: RegExp;
  /** Refused on shape alone: the key set must not even be fetched. */
  beforeKeys?: boolean;
}

const HS256 = 'unsupported signing algorithm';
const UNKNOWN_KEY = /unknown signing key/;
/** A kid the issuer's set lists, with a key the broker does not verify with: the refusal says why. */
const UNUSABLE_KEY = (why: string) =>
  new RegExp(`^signing key '[^']+' of issuer \\S+ is not usable: ${why}$`);
const BAD_SIGNATURE = /signature does not verify/;
const NOT_B64URL = /outside the base64url alphabet/;
const UNTRUSTED = /issuer .* is not trusted/;

const cases: Case[] = [
  // A. Algorithm / signature
  {
    id: 'A1',
    name: 'alg none with empty signature',
    token: () => sign({}, { alg: 'none' }),
    reason: /signature segment is empty/,
    beforeKeys: true,
  },
  ...['None', 'NONE', 'nOnE'].map((alg) => ({
    id: 'A2',
    name: `alg ${alg} over a genuine signature`,
    token: () => sign({}, { header: { alg } }),
    reason: new RegExp(`${HS256} '${alg}'`),
    beforeKeys: true,
  })),
  {
    id: 'A3',
    name: 'genuine token with its signature removed',
    token: () => `${sign().split('.').slice(0, 2).join('.')}.`,
    reason: /signature segment is empty/,
    beforeKeys: true,
  },
  {
    id: 'A4',
    name: 'HS256 keyed with the issuer public key PEM',
    token: () => sign({}, { alg: 'HS256', hmacSecret: issuer.publicKeyPem }),
    reason: new RegExp(`${HS256} 'HS256'`),
    beforeKeys: true,
  },
  {
    id: 'A5',
    name: 'HS256 keyed with the raw JWK n bytes',
    token: () =>
      sign(
        {},
        { alg: 'HS256', hmacSecret: Buffer.from(publicJwk(issuer.current.publicKey).n!, 'base64url') },
      ),
    reason: new RegExp(`${HS256} 'HS256'`),
    beforeKeys: true,
  },
  {
    id: 'A6',
    name: 'HS256 with an empty secret',
    token: () => sign({}, { alg: 'HS256', hmacSecret: '' }),
    reason: new RegExp(`${HS256} 'HS256'`),
    beforeKeys: true,
  },
  ...['PS256', 'RS384', 'RS512', 'ES256'].map((alg) => ({
    id: 'A7',
    name: `alg ${alg} on an RS256 signature`,
    token: () => sign({}, { header: { alg } }),
    reason: new RegExp(`${HS256} '${alg}'`),
    beforeKeys: true,
  })),
  {
    id: 'A7',
    name: 'genuine PS256 signature by the issuer key',
    token: () => sign({}, { alg: 'PS256' }),
    reason: new RegExp(`${HS256} 'PS256'`),
    beforeKeys: true,
  },
  {
    id: 'A8',
    name: 'ES256 psychic signature r=s=0',
    token: () => sign({}, { alg: 'ES256', signature: Buffer.alloc(64) }),
    reason: new RegExp(`${HS256} 'ES256'`),
    beforeKeys: true,
  },
  {
    id: 'A9',
    name: 'GitHub kid, signed by the attacker key',
    token: () => sign({}, { key: 'attacker' }),
    reason: BAD_SIGNATURE,
  },
  {
    id: 'A10',
    name: 'repository changed after signing',
    token: () => tamperPayload(sign(), { repository: 'evil/x', repository_owner: 'evil' }),
    reason: BAD_SIGNATURE,
  },
  {
    id: 'A11',
    name: 'kid swapped to another published kid',
    token: () => sign({}, { header: { kid: issuer.addKey().kid } }),
    reason: BAD_SIGNATURE,
  },
  {
    id: 'A12',
    name: 'signed by a published 1024-bit key',
    token: () => {
      const weak = issuer.addKey({ modulusLength: 1024 });
      return sign({}, { key: weak.privateKey, header: { kid: weak.kid } });
    },
    reason: UNUSABLE_KEY('its modulus has 1024 bits, outside the 2048 to 8192 accepted'),
  },
  {
    id: 'A12',
    name: 'signed by a published key with e=3',
    token: () => {
      const weak = issuer.addKey({ publicExponent: 3 });
      return sign({}, { key: weak.privateKey, header: { kid: weak.kid } });
    },
    reason: UNUSABLE_KEY('its public exponent is not 65537'),
  },

  // B. Key selection
  {
    id: 'B1',
    name: 'unknown kid, attacker-signed',
    token: () => sign({}, { key: 'attacker', header: { kid: randomUUID() } }),
    reason: UNKNOWN_KEY,
  },
  {
    id: 'B3',
    name: 'no kid while the set holds a single key',
    token: () => sign({}, { header: { kid: undefined } }),
    reason: /kid is missing or malformed/,
    beforeKeys: true,
  },
  ...['../../../../dev/null', "x' UNION SELECT '1';--", '|sleep 10', '', 'k'.repeat(129)].map((kid) => ({
    id: kid.startsWith('.') ? 'B4' : 'B5',
    name: `kid ${JSON.stringify(kid.slice(0, 24))}`,
    token: () => sign({}, { header: { kid } }),
    reason: /kid is missing or malformed/,
    beforeKeys: true,
  })),
  {
    id: 'B5',
    name: 'kid that is not a string',
    token: () => sign({}, { header: { kid: { $ne: null } } }),
    reason: /kid is missing or malformed/,
    beforeKeys: true,
  },
  {
    id: 'B6',
    name: 'kid of 64 KiB',
    token: () => sign({}, { header: { kid: 'k'.repeat(64 * 1024) } }),
    reason: /longer than 8192 bytes/,
    beforeKeys: true,
  },
  {
    id: 'B7',
    name: 'embedded jwk of the attacker, attacker-signed',
    token: () =>
      sign({}, { key: 'attacker', header: { kid: undefined, jwk: publicJwk(attacker.publicKey) } }),
    reason: /unsupported header parameter 'jwk'/,
    beforeKeys: true,
  },
  {
    id: 'B8',
    name: 'embedded attacker jwk with a GitHub kid',
    token: () => sign({}, { key: 'attacker', header: { jwk: publicJwk(attacker.publicKey) } }),
    reason: /unsupported header parameter 'jwk'/,
    beforeKeys: true,
  },
  {
    id: 'B9',
    name: 'jku pointing at an attacker JWKS',
    token: () => sign({}, { key: 'attacker', header: { jku: `${attackerSite.url}/.well-known/jwks` } }),
    reason: /unsupported header parameter 'jku'/,
    beforeKeys: true,
  },
  {
    id: 'B10',
    name: 'x5u pointing at an attacker certificate',
    token: () => sign({}, { key: 'attacker', header: { x5u: `${attackerSite.url}/cert.pem` } }),
    reason: /unsupported header parameter 'x5u'/,
    beforeKeys: true,
  },
  {
    id: 'B11',
    name: 'x5c chain carrying the attacker key',
    token: () =>
      sign(
        {},
        {
          key: 'attacker',
          header: {
            kid: undefined,
            x5c: [attacker.publicKey.export({ format: 'der', type: 'spki' }).toString('base64')],
          },
        },
      ),
    reason: /unsupported header parameter 'x5c'/,
    beforeKeys: true,
  },
  ...(['jku', 'x5u', 'jwk', 'x5c'] as const).map((param) => ({
    id: 'B12',
    name: `genuinely signed token that also carries ${param}`,
    token: () =>
      sign(
        {},
        {
          header: {
            [param]:
              param === 'jwk'
                ? publicJwk(issuer.current.publicKey)
                : param === 'x5c'
                  ? ['MIIB']
                  : `${attackerSite.url}/keys`,
          },
        },
      ),
    reason: new RegExp(`unsupported header parameter '${param}'`),
    beforeKeys: true,
  })),
  {
    id: 'B13',
    name: 'JWKS lists the token kid twice',
    token: () => {
      issuer.serve('duplicate-kid');
      return sign();
    },
    reason: UNUSABLE_KEY('the key set lists its kid more than once'),
  },
  ...(
    [
      [{ use: 'enc' }, 'the key set marks it for another use than signatures'],
      [{ alg: 'RS384' }, 'the key set marks it for another algorithm than RS256'],
      [{ alg: 'PS256' }, 'the key set marks it for another algorithm than RS256'],
      [{ key_ops: ['encrypt'] }, 'its key_ops do not include verify'],
    ] as const
  ).map(([jwk, why]) => ({
    id: 'B14',
    name: `JWKS entry for the kid has ${JSON.stringify(jwk)}`,
    token: () => {
      const key = issuer.addKey({ jwk });
      return sign({}, { key: key.privateKey, header: { kid: key.kid } });
    },
    reason: UNUSABLE_KEY(why),
  })),

  // C. Other header parameters
  {
    id: 'C1',
    name: 'crit names an extension header',
    token: () => sign({}, { header: { crit: ['exp2'], exp2: 1 } }),
    reason: /unsupported header parameter 'crit'/,
    beforeKeys: true,
  },
  {
    id: 'C2',
    name: 'crit b64 with b64 false',
    token: () => sign({}, { header: { crit: ['b64'], b64: false } }),
    reason: /unsupported header parameter 'crit'/,
    beforeKeys: true,
  },
  ...['at+jwt', 'jwt', 'JWS', undefined].map((typ) => ({
    id: 'C3',
    name: `typ ${String(typ)}`,
    token: () => sign({}, { header: { typ } }),
    reason: /typ must be 'JWT'/,
    beforeKeys: true,
  })),
  {
    id: 'C4',
    name: 'duplicate alg member in the header',
    token: () => sign({}, { rawHeader: `{"alg":"none","alg":"RS256","kid":"${issuer.kid}","typ":"JWT"}` }),
    reason: /header has a duplicate member name/,
    beforeKeys: true,
  },
  {
    id: 'C4',
    name: 'duplicate header member spelled with an escape',
    token: () =>
      sign({}, { rawHeader: `{"alg":"RS256","\\u0061lg":"RS256","kid":"${issuer.kid}","typ":"JWT"}` }),
    reason: /header has a duplicate member name/,
    beforeKeys: true,
  },
  ...['zip', 'enc', 'cty', 'b64', 'x5t#S256', 'x-custom'].map((param) => ({
    id: 'C5',
    name: `header parameter ${param}`,
    token: () => sign({}, { header: { [param]: param === 'b64' ? true : 'DEF' } }),
    reason: new RegExp(`unsupported header parameter '${param}'`),
    beforeKeys: true,
  })),
  {
    id: 'C6',
    name: '5-segment JWE compact string',
    token: () =>
      [{ alg: 'RSA-OAEP', enc: 'A256GCM' }, 'key', 'iv', 'ciphertext', 'tag']
        .map((x) => b64url(typeof x === 'string' ? x : JSON.stringify(x)))
        .join('.'),
    reason: /5 segments/,
    beforeKeys: true,
  },
  {
    id: 'C7',
    name: 'JWS JSON serialization',
    token: () => {
      const [h, p, s] = segments(sign());
      return JSON.stringify({ payload: p, signatures: [{ protected: h, signature: s }] });
    },
    reason: /JSON, not a compact JWS/,
    beforeKeys: true,
  },

  // D. Time claims
  {
    id: 'D1',
    name: 'expired an hour ago',
    token: () => sign({ exp: START_S - 3600, iat: START_S - 3900, nbf: START_S - 4200 }),
    reason: /token expired at 2026-06-13T18:01:04/,
  },
  {
    id: 'D1',
    name: 'genuine token one second after exp + leeway',
    token: () => {
      const token = sign();
      clock.now += (300 + 60 + 1) * 1000;
      return token;
    },
    reason: /token expired at/,
  },
  {
    id: 'D2',
    name: 'expired just beyond the 60 s leeway',
    token: () => sign({ exp: START_S - 61, iat: START_S - 361, nbf: START_S - 661 }),
    reason: /token expired/,
  },
  {
    id: 'D3',
    name: 'nbf ten minutes ahead',
    token: () => sign({ nbf: START_S + 600 }),
    reason: /not valid before/,
  },
  {
    id: 'D4',
    name: 'iat an hour ahead',
    token: () => sign({ iat: START_S + 3600, exp: START_S + 3900 }),
    reason: /issued in the future/,
  },
  {
    id: 'D5',
    name: 'lifetime over 24 h',
    token: () => sign({ exp: START_S + 86_401 }),
    reason: /lifetime exceeds 24 hours/,
  },
  { id: 'D6', name: 'no exp', token: () => sign({ exp: undefined }), reason: /exp claim is missing/ },
  { id: 'D7', name: 'no iat', token: () => sign({ iat: undefined }), reason: /iat claim is missing/ },
  { id: 'D7', name: 'no nbf', token: () => sign({ nbf: undefined }), reason: /nbf claim is missing/ },
  {
    id: 'D8',
    name: 'exp as a string',
    token: () => sign({ exp: '9999999999' }),
    reason: /exp claim must be a positive integer/,
  },
  {
    id: 'D9',
    name: 'exp 1e308',
    token: () => sign({ exp: 1e308 }),
    reason: /number that is not a plain integer/,
    beforeKeys: true,
  },
  {
    id: 'D9',
    name: 'exp with a fraction',
    token: () => sign({ exp: START_S + 300.000001 }),
    reason: /number that is not a plain integer/,
    beforeKeys: true,
  },
  {
    id: 'D9',
    name: 'exp beyond the safe-integer range',
    token: () =>
      sign(
        {},
        { rawPayload: JSON.stringify(issuer.claims()).replace(/"exp":\d+/, `"exp":1${'0'.repeat(22)}`) },
      ),
    reason: /exp claim must be a positive integer/,
  },
  { id: 'D9', name: 'negative exp', token: () => sign({ exp: -1 }), reason: /exp claim must be a positive/ },
  {
    id: 'D9',
    name: 'exp NaN (null in JSON)',
    token: () => sign({ exp: Number.NaN }),
    reason: /exp claim must/,
  },

  // E. Issuer
  ...FOREIGN_ISSUERS.map(([id, iss]) => ({
    id,
    name: `iss ${iss}`,
    token: () => sign({ iss }),
    reason: UNTRUSTED,
    beforeKeys: true,
  })),
  ...[undefined, [GITHUB_ISSUER], 1].map((iss) => ({
    id: 'E8',
    name: `iss ${JSON.stringify(iss) ?? 'missing'}`,
    token: () => sign({ iss }),
    reason: /iss claim is missing or not a string/,
    beforeKeys: true,
  })),

  // F. Audience (shape only; the tenant mapping happens in the exchange)
  {
    id: 'F1',
    name: 'aud array of two',
    token: () => sign({ aud: ['acme.api.example.io', 'sts.amazonaws.com'] }),
    reason: /single string, not an array/,
  },
  {
    id: 'F2',
    name: 'aud array of one',
    token: () => sign({ aud: ['acme.api.example.io'] }),
    reason: /single string, not an array/,
  },
  { id: 'F7', name: 'aud missing', token: () => sign({ aud: undefined }), reason: /aud claim is missing/ },
  { id: 'F7', name: 'aud a number', token: () => sign({ aud: 42 }), reason: /aud claim must be a string/ },
  ...['', '*', 'acme api'].map((aud) => ({
    id: 'F7',
    name: `aud ${JSON.stringify(aud)}`,
    token: () => sign({ aud }),
    reason: /aud claim is empty, a wildcard or malformed/,
  })),
  {
    id: 'F8',
    name: 'runner-credential-shaped token: no aud/sub/repository, 6 h lifetime',
    token: () =>
      sign({ aud: undefined, sub: undefined, repository: undefined, exp: START_S + 6 * 3600, nbf: START_S }),
    reason: /aud claim is missing/,
  },

  // G. Claims
  ...[
    'jti',
    'sub',
    'repository',
    'repository_id',
    'repository_owner',
    'repository_owner_id',
    'ref',
    'job_workflow_ref',
  ].map((claim) => ({
    id: claim === 'jti' ? 'G2' : 'G1',
    name: `${claim} missing`,
    token: () => sign({ [claim]: undefined }),
    reason: new RegExp(`${claim} claim is missing or not a (non-empty )?string`),
  })),
  {
    id: 'G1',
    name: 'repository empty',
    token: () => sign({ repository: '' }),
    reason: /repository claim is missing or not a non-empty string/,
  },
  {
    id: 'G3',
    name: 'repository as an array',
    token: () => sign({ repository: ['acme/infra'] }),
    reason: /repository claim is missing or not a non-empty string/,
  },
  ...(
    [
      ['environment', 1],
      ['event_name', ['push']],
      ['run_id', 27476101517],
      ['ref_type', null],
      ['workflow_ref', { toString: 'x' }],
    ] as const
  ).map(([claim, value]) => ({
    id: 'G3',
    name: `optional ${claim} not a string`,
    token: () => sign({ [claim]: value }),
    reason: new RegExp(`${claim} claim must be a string`),
  })),
  {
    id: 'G4',
    name: 'repository as an object with toString',
    token: () => sign({ repository: { toString: 'acme/infra' } }),
    reason: /repository claim is missing or not a non-empty string/,
  },
  {
    id: 'G5',
    name: 'repository_owner_id as a number',
    token: () => sign({ repository_owner_id: 4242 }),
    reason: /repository_owner_id claim is missing or not a non-empty string/,
  },
  ...[
    ['G6', '\u0430cme/infra'],
    ['G7', '\uff41cme/infra'],
    ['G8', 'acme/in fra'],
    ['G8', 'acme%2Finfra'],
    ['G8', 'acme/infra/x'],
  ].map(([id, repository]) => ({
    id: id!,
    name: `repository ${JSON.stringify(repository)}`,
    token: () => sign({ repository }),
    reason: /repository claim is not a GitHub owner\/name/,
  })),
  ...['-acme', '_acme', 'acme.corp', '\u0430cme'].map((owner) => ({
    id: 'G6',
    name: `repository_owner ${JSON.stringify(owner)}`,
    token: () => sign({ repository_owner: owner }),
    reason: /repository_owner claim is not a GitHub owner/,
  })),
  ...['acme/infra\u0000', 'acme/infra\n', 'acme/infra\ud800'].map((repository) => ({
    id: 'G8',
    name: `repository ${JSON.stringify(repository)}`,
    token: () => sign({ repository }),
    reason: /repository claim holds a control or unpaired surrogate character/,
  })),
  ...(['repository_id', 'repository_owner_id'] as const).map((claim) => ({
    id: 'G5',
    name: `${claim} not numeric`,
    token: () => sign({ [claim]: '12a' }),
    reason: new RegExp(`${claim} claim is not a numeric string`),
  })),
  {
    id: 'G19',
    name: 'repository owner differs from repository_owner',
    token: () => sign({ repository: 'evil/infra' }),
    reason: /does not belong to repository_owner/,
  },
  {
    id: 'G21',
    name: 'duplicate repository member in the payload',
    token: () => {
      const json = JSON.stringify(issuer.claims({ repository: 'evil/x' }));
      return sign({}, { rawPayload: `${json.slice(0, -1)},"repository":"acme/infra"}` });
    },
    reason: /payload has a duplicate member name/,
    beforeKeys: true,
  },

  ...['{"a":1,"a":2}', '[{"a":1},{"b":1,"\\u0062":2}]'].map((nested) => ({
    id: 'G21',
    name: `duplicate member inside a nested claim ${nested}`,
    token: () => {
      const json = JSON.stringify(issuer.claims());
      return sign({}, { rawPayload: `{"custom":${nested},${json.slice(1)}` });
    },
    reason: /payload has a duplicate member name/,
    beforeKeys: true,
  })),

  // H. Encoding and size
  {
    id: 'H1',
    name: 'token over 8 KiB',
    token: () => sign({ workflow: 'w'.repeat(9000) }),
    reason: /longer than 8192 bytes/,
    beforeKeys: true,
  },
  {
    id: 'H2',
    name: '100k nested arrays',
    token: () => sign({}, { rawPayload: `{"deep":${'['.repeat(100_000)}${']'.repeat(100_000)}}` }),
    reason: /longer than 8192 bytes/,
    beforeKeys: true,
  },
  {
    id: 'H2',
    name: 'nesting bomb small enough for the size limit',
    token: () => {
      const json = JSON.stringify(issuer.claims());
      return sign({}, { rawPayload: `{"deep":${'['.repeat(2000)}${']'.repeat(2000)},${json.slice(1)}` });
    },
    reason: /payload nests deeper than/,
    beforeKeys: true,
  },
  {
    id: 'H3',
    name: 'signature last char altered in its unused bits',
    token: () => {
      const [h, p, s] = segments(sign());
      return `${h}.${p}.${nonCanonical(s)}`;
    },
    reason: /signature segment is not canonical base64url/,
    beforeKeys: true,
  },
  ...[
    ['signature', (h: string, p: string, s: string) => `${h}.${p}.${s}=`],
    ['payload', (h: string, p: string, s: string) => `${h}.${p}=.${s}`],
  ].map(([where, build]) => ({
    id: 'H4',
    name: `= padding on the ${where as string}`,
    token: () => (build as (h: string, p: string, s: string) => string)(...segments(sign())),
    reason: NOT_B64URL,
    beforeKeys: true,
  })),
  ...['+', '/'].map((ch) => ({
    id: 'H5',
    name: `standard-alphabet ${ch} in the signature`,
    token: () => {
      const [h, p, s] = segments(sign());
      return `${h}.${p}.${ch}${s.slice(1)}`;
    },
    reason: NOT_B64URL,
    beforeKeys: true,
  })),
  ...(
    [
      ['leading space', (t: string) => ` ${t}`],
      ['trailing space', (t: string) => `${t} `],
      ['trailing newline', (t: string) => `${t}\n`],
      ['newline inside', (t: string) => t.replace('.', '.\n')],
      ['tab inside', (t: string) => `${t.slice(0, 10)}\t${t.slice(10)}`],
      ['Bearer prefix', (t: string) => `Bearer ${t}`],
    ] as const
  ).map(([what, build]) => ({
    id: 'H6',
    name: what,
    token: () => build(sign()),
    reason: NOT_B64URL,
    beforeKeys: true,
  })),
  {
    id: 'H7',
    name: 'payload with a non-UTF-8 byte',
    token: () =>
      sign(
        {},
        { rawPayload: Buffer.concat([Buffer.from('{"sub":"a'), Buffer.from([0xff]), Buffer.from('"}')]) },
      ),
    reason: /payload is not valid UTF-8/,
    beforeKeys: true,
  },
  {
    id: 'H7',
    name: 'header in UTF-16 with its BOM',
    token: () =>
      sign(
        {},
        { rawHeader: Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('{"alg":"RS256"}', 'utf16le')]) },
      ),
    reason: /header is not valid UTF-8/,
    beforeKeys: true,
  },
  {
    id: 'H7',
    name: 'header in UTF-16 without a BOM',
    token: () =>
      sign({}, { rawHeader: Buffer.from(`{"alg":"RS256","kid":"${issuer.kid}","typ":"JWT"}`, 'utf16le') }),
    reason: /header is not/,
    beforeKeys: true,
  },
  {
    id: 'H7',
    name: 'payload starting with a UTF-8 BOM',
    token: () => sign({}, { rawPayload: `\ufeff${JSON.stringify(issuer.claims())}` }),
    reason: /payload starts with a byte order mark/,
    beforeKeys: true,
  },
];

describe('verifyOidcToken refuses every token attack', () => {
  for (const c of cases) {
    it(`${c.id} ${c.name}`, async () => {
      const token = c.token();
      const result = await verify(token);
      expectRejected(result, c.reason, token);
      if (c.beforeKeys) expect(issuer.jwksRequests).toBe(0);
      expect(attackerSite.requests).toEqual([]);
    });
  }
});

describe('verifyOidcToken accepts genuine tokens', () => {
  it('verifies a GitHub-shaped token and returns exactly the signed claims', async () => {
    const token = sign();
    const signed = JSON.parse(Buffer.from(segments(token)[1], 'base64url').toString('utf8'));
    const result = await verify(token);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.claims).toEqual(signed);
    // The same token passes a standard verifier too, so the suite's rejections are not artefacts of the fixture.
    const jwks = createLocalJWKSet({ keys: [{ ...publicJwk(issuer.current.publicKey), kid: issuer.kid }] });
    const standard = await jwtVerify(token, jwks, { currentDate: new Date(clock.now) });
    expect(standard.payload.jti).toBe(signed.jti);
  });

  it('A13 returns no claims for a token whose payload the signature does not cover', async () => {
    const genuine = sign();
    const forged = tamperPayload(genuine, { ref: 'refs/heads/evil' });
    const keys = keysFor();
    expect((await verify(genuine, keys)).ok).toBe(true);
    const result = await verify(forged, keys);
    expectRejected(result, BAD_SIGNATURE, forged);
  });

  it('omits optional claims the token does not carry (a job without an environment)', async () => {
    const result = await verify(sign({ environment: undefined, check_run_id: undefined }));
    expect(result).toMatchObject({ ok: true, claims: { repository: 'acme/infra' } });
    if (result.ok) {
      expect('environment' in result.claims).toBe(false);
      expect(result.claims.run_id).toBe('27476101517');
    }
  });

  it('ignores claims outside the known GitHub set', async () => {
    const result = await verify(sign({ custom: [{ a: 1 }, { a: 2, b: { a: [3] } }] }));
    expect(result.ok).toBe(true);
    if (result.ok) expect('custom' in result.claims).toBe(false);
  });

  it("accepts an Enterprise Managed User's repository, whose owner is handle_shortcode", async () => {
    const owner = { repository: 'mona_acme/tools', repository_owner: 'mona_acme' };
    const job_workflow_ref = 'mona_acme/tools/.github/workflows/build.yml@refs/heads/main';
    const result = await verify(sign({ ...owner, job_workflow_ref }));
    expect(result).toMatchObject({ ok: true, claims: { ...owner, job_workflow_ref } });
  });

  it('accepts the empty ref of a job with no branch or tag (a deployment created for a commit sha)', async () => {
    const job_workflow_ref = `acme/infra/.github/workflows/deploy.yml@${'3'.repeat(40)}`;
    const result = await verify(sign({ ref: '', job_workflow_ref, event_name: 'deployment' }));
    expect(result).toMatchObject({ ok: true, claims: { ref: '', job_workflow_ref } });
  });

  it('accepts a jti of up to 255 characters, a bound far above the 36 of the UUIDs GitHub sends', async () => {
    expect(await verify(sign({ jti: 'j'.repeat(255) }))).toMatchObject({ ok: true });
    expectRejected(await verify(sign({ jti: 'j'.repeat(256) })), /jti claim is longer than 255 characters/);
  });

  it('G19 compares the repository owner case-insensitively', async () => {
    const result = await verify(sign({ repository: 'ACME/Infra', repository_owner: 'acme' }));
    expect(result).toMatchObject({
      ok: true,
      claims: { repository: 'ACME/Infra', repository_owner: 'acme' },
    });
  });

  it('D2 accepts a token that expired within the 60 s leeway, and not beyond', async () => {
    const keys = keysFor();
    const justExpired = sign({ exp: START_S - 30, iat: START_S - 330, nbf: START_S - 630 });
    expect(await verify(justExpired, keys)).toMatchObject({ ok: true, claims: { exp: START_S - 30 } });
    clock.now += 31_000;
    expectRejected(await verify(justExpired, keys), /token expired at/);
  });

  it('D1 D3 D4 the leeway is exactly 60 s: refused from exp + 60 s on, and until nbf and iat are 60 s away', async () => {
    const keys = keysFor();
    const at = async (ms: number, token: string) => {
      clock.now = ms;
      return verify(token, keys);
    };
    const expired = sign({ exp: START_S, iat: START_S - 300, nbf: START_S - 300 });
    expect(await at((START_S + 60) * 1000 - 1, expired)).toMatchObject({ ok: true });
    expectRejected(await at((START_S + 60) * 1000, expired), /token expired at/);
    const early = sign({ exp: START_S + 360, iat: START_S, nbf: START_S + 60 });
    expect(await at(START, early)).toMatchObject({ ok: true });
    expectRejected(await at(START - 1, early), /token is not valid before/);
    const issuedAhead = sign({ exp: START_S + 360, iat: START_S + 60, nbf: START_S - 600 });
    expect(await at(START, issuedAhead)).toMatchObject({ ok: true });
    expectRejected(await at(START - 1, issuedAhead), /token is issued in the future/);
  });

  it('D2 clamps a configured leeway above 60 s', async () => {
    const token = sign({ exp: START_S - 90, iat: START_S - 390, nbf: START_S - 690 });
    const result = await verifyOidcToken(token, {
      issuers: keysFor(),
      now: () => clock.now,
      leewaySeconds: 600,
    });
    expectRejected(result, /token expired/);
  });

  it('E2 accepts an enterprise issuer only when it is configured', async () => {
    const token = sign({ iss: ENTERPRISE_ISSUER });
    expectRejected(await verify(token), UNTRUSTED);
    const keys = createIssuerKeys({
      issuers: [
        { issuer: GITHUB_ISSUER, jwksUri: issuer.jwksUri },
        { issuer: ENTERPRISE_ISSUER, jwksUri: issuer.jwksUri },
      ],
      now: () => clock.now,
    });
    expect(await verify(token, keys)).toMatchObject({ ok: true, claims: { iss: ENTERPRISE_ISSUER } });
  });

  it('E7 accepts a GHES issuer only when configured, finding its keys by discovery', async () => {
    const token = sign({ iss: GHES_ISSUER });
    expectRejected(await verify(token), UNTRUSTED);
    const { keys, fetched } = ghesKeys();
    issuer.discoveryIssuer = GHES_ISSUER;
    expect(await verify(token, keys)).toMatchObject({ ok: true, claims: { iss: GHES_ISSUER } });
    expect(fetched).toEqual([`${GHES_ISSUER}/.well-known/openid-configuration`, issuer.jwksUri]);
  });
});

/** Trusts the GHES issuer by discovery, routing its host to the local issuer and recording fetched URLs. */
function ghesKeys() {
  const fetched: string[] = [];
  const keys = createIssuerKeys({
    issuers: [{ issuer: GHES_ISSUER }],
    now: () => clock.now,
    fetch: (input, init) => {
      const url = String(input);
      fetched.push(url);
      return fetch(url.replace('https://ghe.example.com', issuer.url), init);
    },
  });
  return { keys, fetched };
}

describe('verifyOidcToken and the key set', () => {
  it('B2 refuses 1,000 random kids with at most one key-set refetch', async () => {
    const keys = keysFor();
    expect((await verify(sign(), keys)).ok).toBe(true);
    expect(issuer.jwksRequests).toBe(1);
    const [h, p, s] = segments(sign({}, { key: 'attacker' }));
    const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    const tokens = Array.from({ length: 1000 }, () => {
      const forged = b64url(JSON.stringify({ ...header, kid: randomBytes(12).toString('hex') }));
      return `${forged}.${p}.${s}`;
    });
    clock.now += 30_000;
    const results = await Promise.all(tokens.map((t) => verify(t, keys)));
    for (const r of results) expectRejected(r, UNKNOWN_KEY);
    expect(issuer.jwksRequests).toBe(2);
    clock.now += 29_000;
    for (const t of tokens.slice(0, 100)) expectRejected(await verify(t, keys), UNKNOWN_KEY);
    expect(issuer.jwksRequests).toBe(2);
  });

  it('answers issuer_unavailable when no keys were ever fetched and the issuer is down', async () => {
    issuer.serve('fail');
    const result = await verify(sign());
    expect(result).toMatchObject({ ok: false, code: 'issuer_unavailable' });
  });

  const failures = {
    oversized: ['too_large', 'its answer was too large'],
    'slow-body': ['timeout', 'it did not answer in time'],
    hang: ['timeout', 'it did not answer in time'],
    redirect: ['redirect', 'it answered with a redirect'],
  } as const;
  for (const [mode, [error, why]] of Object.entries(failures) as [
    keyof typeof failures,
    readonly [string, string],
  ][]) {
    it(`B15 ${mode} key-set response: fetch aborted, cached keys kept, new kid refused`, async () => {
      const keys = keysFor({ timeoutMs: 200 });
      const old = issuer.current;
      expect((await verify(sign(), keys)).ok).toBe(true);
      issuer.rotate({ keepOld: true });
      issuer.serve(mode);
      clock.now += 31_000;
      // The refetch failed, so the new kid may be genuine: refused as unverifiable for now, not as forged.
      expect(await verify(sign(), keys)).toEqual({
        ok: false,
        code: 'issuer_unavailable',
        reason: `signing key '${issuer.kid}' is not among the cached keys of issuer ${GITHUB_ISSUER}, which could not be refreshed: ${why}`,
        // The failed refetch started the 30 s cooldown: no retry fetches the keys before it ends.
        retryAfterSeconds: 30,
      });
      expect(issuer.jwksRequests).toBe(2);
      expect(keys.status()[0]).toMatchObject({ keyCount: 1, lastError: error });
      expect((await verify(sign({}, { key: old.privateKey, header: { kid: old.kid } }), keys)).ok).toBe(true);
      expect(issuer.requests).not.toContain('/redirected-jwks');
    });
  }

  it('says an answer that is not a key set is not one, and refuses a token no key of a set that holds none verifies', async () => {
    // No `keys` list: a failed fetch, which the workflow is told as such.
    issuer.setJwks({ jwks_uri: issuer.jwksUri });
    expect(await verify(sign())).toEqual({
      ok: false,
      code: 'issuer_unavailable',
      reason: `signing keys for issuer ${GITHUB_ISSUER} are unavailable: its answer is not a key set (no "keys" list)`,
      retryAfterSeconds: 30,
    });
    // A key set none of whose keys is usable is fetched, not failed: the token's kid has no key to verify with.
    issuer.setJwks({ keys: [{ kty: 'EC', kid: issuer.kid, crv: 'P-256', x: 'x', y: 'y' }] });
    clock.now += 31_000;
    expectRejected(await verify(sign()), UNUSABLE_KEY('it is not an RSA key'));
  });

  it('B16 never derives a key URL from a token iss', async () => {
    const { keys, fetched } = ghesKeys();
    issuer.discoveryIssuer = GHES_ISSUER;
    for (const iss of [attackerSite.url, `${GHES_ISSUER}.evil`, `${attackerSite.url}/_services/token`]) {
      expectRejected(await verify(sign({ iss }, { key: 'attacker' }), keys), UNTRUSTED);
    }
    expect(fetched).toEqual([]);
    expectRejected(
      await verify(sign({ iss: GHES_ISSUER }, { key: 'attacker', header: { kid: 'k1' } }), keys),
      UNKNOWN_KEY,
    );
    expect(fetched).toEqual([`${GHES_ISSUER}/.well-known/openid-configuration`, issuer.jwksUri]);
    expect(attackerSite.requests).toEqual([]);
  });
});

describe('parseCompactJws base64url', () => {
  it('H3 accepts a segment exactly when it is the canonical encoding of its bytes', () => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const head = b64url('{"alg":"RS256"}');
    const body = b64url('{"sub":"x"}');
    let accepted = 0;
    for (let i = 0; i < 2000; i++) {
      const length = 1 + (i % 9);
      const sig = Array.from({ length }, () => alphabet[Math.floor(Math.random() * 64)]).join('');
      const result = parseCompactJws(`${head}.${body}.${sig}`, { maxBytes: 8192 });
      const canonical = length % 4 !== 1 && Buffer.from(sig, 'base64url').toString('base64url') === sig;
      expect(result.ok).toBe(canonical);
      if (result.ok) {
        accepted++;
        expect(result.signature).toEqual(Buffer.from(sig, 'base64url'));
      }
    }
    expect(accepted).toBeGreaterThan(0);
  });
});
