// Seeded fuzzing of every operation in the OpenAPI document: valid requests with one thing broken (a field's type,
// a string's length or characters, a number at or past a limit, a repeated member, the body's media type or its
// bytes, a query parameter, a path id, a conditional header). Each answer is a 4xx problem+json whose detail says
// what to fix — for a 400 or 422, naming the field or parameter at fault — never a 5xx; a refused write changes
// nothing, and the broker stays healthy. A failure names its seed and case: rerun with FUZZ_SEED to replay it;
// FUZZ_CASES sends more, FUZZ_REPORT=1 prints each operation's statuses.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Federation, startFederation } from '../support/federation.js';
import { Gen } from '../support/seeded.js';

const SEED = Number(process.env.FUZZ_SEED ?? 8693);
/** Mutated requests per operation: enough to meet every mutation kind on every field, within seconds in all. */
const CASES = Number(process.env.FUZZ_CASES ?? 200);
/** Not a measure of speed (answers take milliseconds): a request still unanswered after this hangs, named as such. */
const HANG_MS = 10_000;

const document = JSON.parse(readFileSync(new URL('../../broker/openapi.json', import.meta.url), 'utf8')) as {
  paths: Record<string, Record<string, unknown>>;
};
const METHODS = new Set(['get', 'put', 'post', 'delete', 'patch']);

let f: Federation;
let accessToken: string;
let policyId: string;
let policyEtag: string;
let keyId: string;
let auditCursor: string;
let policyCursor: string;
let keyCursor: string;

beforeAll(async () => {
  f = await startFederation({
    env: { BROKER_RATE_LIMIT_BURST: '100000', BROKER_RATE_LIMIT_PER_MINUTE: '100000' },
  });
  await createFuzzPolicy();
  for (const name of ['fuzz-2', 'fuzz-3']) await createPolicy(name);
  const created = await f.t.request('POST', '/v1/fine-grained-keys', {
    key: f.key,
    json: { name: 'fuzz', expiration: '7d', permissions: ['audit-log:read'] },
  });
  keyId = ((await created.json()) as { id: string }).id;
  await f.t.request('POST', '/v1/fine-grained-keys', {
    key: f.key,
    json: { name: 'fuzz-2', expiration: '7d', permissions: ['audit-log:read'] },
  });
  const keys = await f.t.request('GET', '/v1/fine-grained-keys?limit=1', { key: f.key });
  keyCursor = ((await keys.json()) as { next_cursor: string }).next_cursor;
  const minted = await f.t.request('POST', '/v1/tokens', { key: f.key, json: { duration_seconds: 3600 } });
  accessToken = ((await minted.json()) as { access_token: string }).access_token;
  const audit = await f.t.request('GET', '/v1/audit-events?limit=1', { key: f.key });
  auditCursor = ((await audit.json()) as { next_cursor: string }).next_cursor;
  const policies = await f.t.request('GET', '/v1/oidc/policies?limit=1', { key: f.key });
  policyCursor = ((await policies.json()) as { next_cursor: string }).next_cursor;
});
afterAll(() => f.close());

/** A policy made through the API, as a client's would be (its id a UUID): its id and ETag. */
async function createPolicy(name: string): Promise<{ id: string; etag: string }> {
  const res = await f.t.request('POST', '/v1/oidc/policies', {
    key: f.key,
    json: { name, claims: { repository: 'acme/infra' }, permissions: ['harden-runner:read'] },
  });
  if (res.status !== 201) throw new Error(`policy ${name}: ${res.status} ${await res.text()}`);
  return { id: ((await res.json()) as { policy: { id: string } }).policy.id, etag: res.headers.get('ETag')! };
}

/** The policy the `{id}` cases read, replace and delete. */
async function createFuzzPolicy(): Promise<void> {
  ({ id: policyId, etag: policyEtag } = await createPolicy('fuzz'));
}

// ---------------------------------------------------------------------------------------------------------------
// The operations, each with a valid request to break.

type Fields = Record<string, unknown>;

interface Operation {
  method: string;
  /** The path as the OpenAPI document writes it. */
  template: string;
  /** Path parameters: a valid value each (a mutation replaces one with an odd shape). */
  params?: () => Record<string, string>;
  query?: () => Fields;
  body?: { type: 'json' | 'form'; valid: (g: Gen) => Fields };
  headers?: () => Record<string, string>;
  auth: boolean;
  /** A write: when refused, the tenant's keys and policies must be as before. */
  writes?: boolean;
}

const claims = () => ({ repository: 'acme/infra', ref: 'refs/heads/main', event_name: 'push' });
const policyBody = (g: Gen): Fields => ({
  name: `fuzz-${g.int(1e9)}`,
  description: 'deploys infra',
  issuer: 'https://token.actions.githubusercontent.com',
  claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
  max_session_duration_seconds: 600,
  permissions: ['harden-runner:read'],
  allow_pull_request_target: false,
});
const oidcToken = () => f.issuer.sign({ repository: 'acme/infra' });

const OPERATIONS: Operation[] = [
  { method: 'GET', template: '/healthz', auth: false },
  { method: 'GET', template: '/readyz', auth: false },
  { method: 'GET', template: '/metrics', auth: false },
  { method: 'GET', template: '/.well-known/jwks.json', auth: false },
  { method: 'GET', template: '/.well-known/oauth-authorization-server', auth: false },
  {
    method: 'POST',
    template: '/v1/oidc/token',
    auth: false,
    body: {
      type: 'json',
      valid: () => ({
        oidc_token: oidcToken(),
        permissions: ['harden-runner:read'],
        duration_seconds: 600,
        policy: 'fuzz',
      }),
    },
  },
  {
    method: 'POST',
    template: '/v1/oidc/token',
    auth: false,
    body: {
      type: 'form',
      valid: () => ({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: oidcToken(),
        subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
        scope: 'harden-runner:read',
        duration_seconds: '600',
        policy: 'fuzz',
      }),
    },
  },
  { method: 'GET', template: '/v1/whoami', auth: true },
  { method: 'GET', template: '/v1/permissions', auth: true },
  { method: 'GET', template: '/v1/api-keys', auth: true },
  {
    method: 'POST',
    template: '/v1/api-keys/{kind}/{slot}/rotate',
    // Never the Tenant key's own slots: rotated, the key every other case sends would stop working.
    params: () => ({ kind: 'secure-registry', slot: 'secondary' }),
    auth: true,
    writes: true,
  },
  {
    method: 'POST',
    template: '/v1/fine-grained-keys',
    auth: true,
    writes: true,
    body: {
      type: 'json',
      valid: (g) =>
        g.chance(0.5)
          ? { name: `fuzz ${g.int(1e9)}`, expiration: '30d', permissions: ['audit-log:read'] }
          : { name: `fuzz ${g.int(1e9)}`, expires_in_days: 12, permissions: ['read-all'] },
    },
  },
  {
    method: 'GET',
    template: '/v1/fine-grained-keys',
    auth: true,
    query: () => ({ limit: '1', cursor: keyCursor }),
  },
  { method: 'GET', template: '/v1/fine-grained-keys/{id}', params: () => ({ id: keyId }), auth: true },
  {
    method: 'DELETE',
    template: '/v1/fine-grained-keys/{id}',
    params: () => ({ id: keyId }),
    auth: true,
    writes: true,
  },
  {
    method: 'GET',
    template: '/v1/audit-events',
    auth: true,
    query: () => ({
      type: 'policy.created',
      outcome: 'success',
      since: '2020-01-01T00:00:00Z',
      until: '2999-01-01T00:00:00.000+02:00',
      limit: '10',
      cursor: auditCursor,
    }),
  },
  {
    method: 'POST',
    template: '/v1/oidc/policies',
    auth: true,
    writes: true,
    body: { type: 'json', valid: policyBody },
  },
  {
    method: 'GET',
    template: '/v1/oidc/policies',
    auth: true,
    query: () => ({ name: 'fuzz', limit: '2', cursor: policyCursor }),
  },
  {
    method: 'GET',
    template: '/v1/oidc/policies/{id}',
    params: () => ({ id: policyId }),
    headers: () => ({ 'If-None-Match': policyEtag }),
    auth: true,
  },
  {
    method: 'PUT',
    template: '/v1/oidc/policies/{id}',
    params: () => ({ id: policyId }),
    headers: () => ({ 'If-Match': policyEtag }),
    auth: true,
    writes: true,
    body: { type: 'json', valid: (g) => ({ ...policyBody(g), name: 'fuzz' }) },
  },
  {
    method: 'DELETE',
    template: '/v1/oidc/policies/{id}',
    params: () => ({ id: policyId }),
    headers: () => ({ 'If-Match': policyEtag }),
    auth: true,
    writes: true,
  },
  {
    method: 'POST',
    template: '/v1/oidc/policies/evaluate',
    auth: true,
    body: {
      type: 'json',
      valid: (g) =>
        g.chance(0.5)
          ? { claims: claims(), permissions: ['harden-runner:read'], policy: 'fuzz', duration_seconds: 600 }
          : { oidc_token: oidcToken(), permissions: ['harden-runner:read'] },
    },
  },
  { method: 'GET', template: '/v1/oidc/config', auth: true, query: () => ({ policy: 'fuzz' }) },
  {
    method: 'POST',
    template: '/v1/tokens',
    auth: true,
    body: { type: 'json', valid: () => ({ permissions: ['audit-log:read'], duration_seconds: 600 }) },
  },
  ...(['introspect', 'revoke'] as const).flatMap((what) =>
    (['json', 'form'] as const).map(
      (type): Operation => ({
        method: 'POST',
        template: `/v1/tokens/${what}`,
        auth: true,
        body: { type, valid: () => ({ token: accessToken, token_type_hint: 'access_token' }) },
      }),
    ),
  ),
];

// ---------------------------------------------------------------------------------------------------------------
// What a mutation makes: one request, and what a 400/422 answer to it must name.

interface Case {
  what: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
  /** What the detail of a 400 or 422 must mention: the field or parameter broken, or the body as a whole. */
  blame: RegExp;
}

const literally = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const named = (name: string) => new RegExp(literally(name));
const b64 = (text: string) => Buffer.from(text).toString('base64url');
const WHOLE_BODY = /body|JSON|Content-Type|UTF-8|form/i;

/** Strings that break a string field: empty, huge, unicode, control characters, look-alike white space. */
function oddString(g: Gen): string {
  return g.pick([
    '',
    ' ',
    'x'.repeat(g.pick([101, 256, 1025, 5000, 30_000])),
    '\u0000',
    'a\u0007b',
    'a\nb',
    '\t',
    'é'.repeat(200),
    '😀'.repeat(g.pick([1, 60, 300])),
    '\u202Eevil',
    '\u200B',
    '\uFEFFname',
    '\uD800',
    'a\uDC00b',
    'ǅ𝔘ŉⅠcode',
    '../../etc/passwd',
    '%00',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the text itself, as a log4j probe sends it.
    '${jndi:x}',
    // Shaped like a JWT, and not one: a header that is no JSON, no signature, alg none, a huge header, many parts.
    'a.b.c',
    '..',
    `${b64('{"alg":"RS256"')}.${b64('{}')}.x`,
    `${b64('{"alg":"none","typ":"JWT"}')}.${b64('{"iss":"https://token.actions.githubusercontent.com"}')}.`,
    `${b64(JSON.stringify({ alg: 'RS256', kid: '😀'.repeat(1000) }))}.${b64('{}')}.AAAA`,
    `${b64(JSON.stringify({ alg: 'RS256', kid: 'k', crit: ['exp'] }))}.${b64('[]')}.AAAA`,
    Array(500).fill('e30').join('.'),
    'null',
    '0',
    'harden-runner:read ',
    'HARDEN-RUNNER:READ',
  ]);
}

/** Any JSON value, of any type, at a limit, or nested. */
function oddValue(g: Gen): unknown {
  switch (g.int(6)) {
    case 0:
      return oddString(g);
    case 1:
      return g.pick([0, -1, 1.5, 3601, 43_201, 366, 1e21, -1e21, Number.MAX_SAFE_INTEGER, 2 ** 31, 2 ** 63]);
    case 2:
      return g.pick([null, true, false]);
    case 3:
      return g.pick([
        [],
        [null],
        ['harden-runner:read', 'harden-runner:read'],
        Array(65).fill('read-all'),
        [[]],
      ]);
    case 4:
      return g.pick([{}, { a: 1 }, { repository: 'acme/infra' }, { __proto__: { x: 1 } }]);
    default:
      return nested(g.pick([2, 50, 3000]), g.chance(0.5));
  }
}

function nested(depth: number, arrays: boolean): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = arrays ? [value] : { a: value };
  return value;
}

/** Number literals that JSON.stringify cannot write: taken as text into the body. */
const NUMBER_TEXTS = [
  '1e309',
  '-1e309',
  '-0',
  '9007199254740993',
  '1e-400',
  '0.0000001',
  '1E2',
  '600.0',
  '6e2',
  `1${'0'.repeat(400)}`,
];

const MARK = '"\u0001fuzz-literal\u0001"';

function jsonText(fields: Fields, literal?: string): string {
  const text = JSON.stringify(fields);
  return literal === undefined ? text : text.replace(JSON.stringify(MARK.slice(1, -1)), literal);
}

function formText(fields: Fields): string {
  const form = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) form.append(k, typeof v === 'string' ? v : JSON.stringify(v));
  return form.toString();
}

const CONTENT_TYPES = [
  'text/plain',
  'application/json; charset=latin1',
  'application/json; charset=utf-16',
  'application/JSON',
  'application/json;;',
  'application/json ; charset="utf-8"',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/merge-patch+json',
  '*/*',
  'application',
  '',
  'application/json, text/plain',
];

/** Path ids of odd shapes: none is a resource's id. */
const ODD_IDS = [
  '0',
  '-1',
  'x',
  '%00',
  '%FF',
  '%2F',
  '..',
  '%2e%2e',
  'null',
  '{id}',
  ' ',
  '%20',
  'é',
  '%C3%A9',
  '😀',
  'a'.repeat(5000),
  '00000000-0000-0000-0000-000000000000',
  '{00000000-0000-0000-0000-000000000000}',
  'urn:uuid:00000000-0000-0000-0000-000000000000',
  '00000000000000000000000000000000',
  '1e309',
];

const QUERY_VALUES = [
  '',
  '0',
  '-1',
  '1.5',
  '1e309',
  '9007199254740993',
  '-0',
  ' 5',
  '0x10',
  '%',
  '%zz',
  '%FF',
  '%C0%80',
  '%00',
  '%E2%80%AE',
  '+',
  '%2B',
  'a'.repeat(3000),
  'null',
  '[]',
  '%F0%9F%98%80',
  // Moments: no such day, a leap second, past year 9999, an offset out of range, a space for the T or the +.
  '2021-02-29T00%3A00%3A00Z',
  '2020-01-01T23%3A59%3A60Z',
  '%2B275760-09-13T00%3A00%3A00Z',
  '2020-01-01T00%3A00%3A00%2B99%3A99',
  '2020-01-01%2000%3A00%3A00%2000%3A00',
  '0000-01-01T00%3A00%3A00Z',
  '2020-01-01T00%3A00%3A00.1234567890123456789Z',
];

/** Cursors as a client might forge or mangle them: well-formed encodings of what no page returned. */
const forgedCursors = () => [
  b64('e0'),
  b64('e999999999999999'),
  b64('e9999999999999999999'),
  b64('e-1'),
  b64('e1e3'),
  b64(JSON.stringify([f.tenantId, ''])),
  b64(JSON.stringify([f.tenantId, 'z'.repeat(400)])),
  b64(JSON.stringify([f.tenantId, '\uFFFF😀%_'])),
  b64(JSON.stringify([f.tenantId, 1])),
  b64(JSON.stringify([f.tenantId])),
  b64(JSON.stringify({ 0: f.tenantId, 1: 'a', length: 2 })),
  b64('["x","a"]'),
  `${auditCursor}=`,
  `${policyCursor}==`,
  policyCursor.slice(0, -2),
  `${keyCursor}=`,
  keyCursor.slice(0, -2),
  auditCursor,
  policyCursor,
  keyCursor,
];

function buildPath(op: Operation, params: Record<string, string>, query: string): string {
  const path = op.template.replace(/{(\w+)}/g, (_, name: string) => params[name]!);
  return query === '' ? path : `${path}?${query}`;
}

function queryText(fields: Fields): string {
  return Object.entries(fields)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
}

function mutate(op: Operation, g: Gen): Case {
  const params = op.params?.() ?? {};
  const query = op.query?.() ?? {};
  const headers: Record<string, string> = { ...(op.auth ? { Authorization: `Bearer ${f.key}` } : {}) };
  Object.assign(headers, op.headers?.());
  const valid = op.body?.valid(g);
  const contentType = op.body?.type === 'form' ? 'application/x-www-form-urlencoded' : 'application/json';
  const encode = (fields: Fields) => (op.body?.type === 'form' ? formText(fields) : jsonText(fields));
  // A body broken as a whole may still be an object: then naming a field it lacks or should not have says what to fix.
  const wholeBody = valid ? new RegExp(`${WHOLE_BODY.source}|^[^\\s:]+: `, 'i') : WHOLE_BODY;
  const base = (what: string, blame: RegExp, extra: Partial<Case> = {}): Case => ({
    what,
    path: buildPath(op, params, queryText(query)),
    headers: { ...headers, ...(valid ? { 'Content-Type': contentType } : {}) },
    ...(valid ? { body: encode(valid) } : {}),
    blame,
    ...extra,
  });

  const kinds: (() => Case)[] = [];
  if (valid) {
    const fields = Object.keys(valid);
    kinds.push(
      () => {
        const field = g.pick(fields);
        const value = op.body?.type === 'form' ? oddString(g) : oddValue(g);
        return base(`${field} = ${preview(value)}`, named(field), {
          body: encode({ ...valid, [field]: value }),
        });
      },
      () => {
        const field = g.pick(fields);
        const { [field]: _, ...rest } = valid;
        return base(`without ${field}`, named(field), { body: encode(rest) });
      },
      () => {
        const name = g.pick([
          'extra',
          '',
          '__proto__',
          'constructor',
          'Name',
          'naïve',
          'x'.repeat(80),
          'a b',
          ' ',
        ]);
        return base(
          `unknown member "${preview(name)}"`,
          // A name that would not show written bare is quoted.
          named(/^$|^\s|\s$/.test(name) ? JSON.stringify(name) : name.slice(0, 40)),
          {
            body: encode({ ...valid, [name]: oddValue(g) }),
          },
        );
      },
      () => {
        // A member sent twice: the second differs, as a reviewer and the parser might read it differently.
        const field = g.pick(fields);
        const text = encode(valid);
        const twice =
          op.body?.type === 'form'
            ? `${text}&${encodeURIComponent(field)}=${encodeURIComponent('other')}`
            : `${text.slice(0, -1)},${JSON.stringify(field)}:${JSON.stringify('other')}}`;
        return base(`${field} twice`, named(field), { body: twice });
      },
      () => {
        const text = encode(valid);
        const cut = g.pick([
          text.slice(0, g.int(text.length)),
          `${text}}`,
          `${text} x`,
          ` ${text}\n`,
          `\uFEFF${text}`,
          '[]',
          '"text"',
          'null',
          '0',
          `[${text}]`,
          '{',
          '}',
          '',
          '   ',
          `/* c */${text}`,
          `{"a":${'['.repeat(100_000 / 2)}`,
          `${'['.repeat(20_000)}${']'.repeat(20_000)}`,
          `${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}`,
          'x'.repeat(70_000),
          `{"name":"${'\\u0000'.repeat(10)}"}`,
          `{"a":"\\ud800"}`,
          `{"a":"\\x"}`,
          `{"a":1,}`,
          `{'a':1}`,
          'a=1&a=2',
          '%',
        ]);
        return base(`body ${preview(cut)}`, wholeBody, { body: cut });
      },
      () => {
        const bytes = g.pick([
          new Uint8Array([0xff, 0xfe, 0x7b, 0x7d]),
          new Uint8Array([0x7b, 0x22, 0xc0, 0x80, 0x22, 0x7d]),
          new Uint8Array([0xfe, 0xff, 0x00, 0x7b, 0x00, 0x7d]),
          new TextEncoder().encode(encode(valid)).subarray(0, 7),
          new Uint8Array([0x00]),
        ]);
        return base(`body bytes ${[...bytes.slice(0, 6)].join(',')}`, wholeBody, { body: bytes });
      },
      () => {
        // A form's text broken: lone escapes, empty names, separators in odd places.
        const text = encode(valid);
        const broken = g.pick([
          `${text}&%`,
          `${text}&=x`,
          `&&${text}&&`,
          `${text}&${g.pick(fields)}`,
          `${text};x=1`,
          text.replaceAll('=', '%3D'),
          text.replaceAll('&', '%26'),
          `${text}&${g.pick(fields)}=%FF`,
          `${text}&${g.pick(fields)}=%C3`,
          text.replace(/=/, '=%00'),
          text.replaceAll('%', '%25'),
        ]);
        return base(`form ${preview(broken)}`, wholeBody, { body: broken });
      },
      () => {
        const type = g.pick(CONTENT_TYPES);
        const sent = { ...headers, ...(type === '' ? {} : { 'Content-Type': type }) };
        return base(`Content-Type ${JSON.stringify(type)}`, WHOLE_BODY, { headers: sent });
      },
      () => {
        const coding = g.pick(['gzip', 'identity', 'br, gzip', 'x']);
        return base(`Content-Encoding ${coding}`, WHOLE_BODY, {
          headers: { ...headers, 'Content-Type': contentType, 'Content-Encoding': coding },
        });
      },
    );
    if (op.body?.type === 'json') {
      kinds.push(() => {
        const numbers = fields.filter((k) => typeof valid[k] === 'number');
        const field = numbers.length > 0 ? g.pick(numbers) : g.pick(fields);
        const literal = g.pick(NUMBER_TEXTS);
        return base(`${field} = ${literal.slice(0, 20)}`, named(field), {
          body: jsonText({ ...valid, [field]: MARK.slice(1, -1) }, literal),
        });
      });
      kinds.push(() => {
        // A field of a nested object (claims) or list (permissions) broken one level down.
        const nestedFields = fields.filter((k) => typeof valid[k] === 'object' && valid[k] !== null);
        if (nestedFields.length === 0) return base('valid', /$^/);
        const field = g.pick(nestedFields);
        const inner = valid[field] as Fields | unknown[];
        const value = oddValue(g);
        const broken = Array.isArray(inner)
          ? [...inner, value]
          : { ...inner, [g.pick([...Object.keys(inner), 'sub', 'ref_type', 'iss'])]: value };
        return base(`${field} holding ${preview(value)}`, named(field), {
          body: encode({ ...valid, [field]: broken }),
        });
      });
    }
    if (op.auth) {
      kinds.push(() => {
        // A secret where text is stored or shown back: refused, and never echoed.
        const strings = fields.filter((k) => typeof valid[k] === 'string');
        if (strings.length === 0) return base('valid', /$^/);
        const field = g.pick(strings);
        return base(`${field} = a key`, named(field), { body: encode({ ...valid, [field]: f.key }) });
      });
    }
  }
  const queryNames = Object.keys(query);
  kinds.push(() => {
    // Query parameters: broken values, repeated, unknown, oddly escaped.
    const name =
      queryNames.length > 0 && g.chance(0.8) ? g.pick(queryNames) : g.pick(['x', 'limit', '%FF', 'a%00']);
    const value = name === 'cursor' && g.chance(0.5) ? g.pick(forgedCursors()) : g.pick(QUERY_VALUES);
    const rest = Object.entries(query)
      .filter(([k]) => k !== name)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
    const own = g.pick([
      `${name}=${value}`,
      `${name}=${value}&${name}=${value}`,
      `${name}=${encodeURIComponent(String(query[name] ?? '1'))}&${name}=2`,
      `${name}`,
      `${name}[]=1`,
      `${name}=1;${name}=2`,
    ]);
    // The exchange takes no query at all (its token travels in the body only), and says so of any parameter.
    const blame = name.includes('%') ? /./ : new RegExp(`${literally(name)}|no query parameters`);
    return base(`?${own.slice(0, 60)}`, blame, { path: buildPath(op, params, [...rest, own].join('&')) });
  });
  if (op.params) {
    const names = Object.keys(params);
    kinds.push(() => {
      const name = g.pick(names);
      const id = g.pick([...ODD_IDS, params[name]!.toUpperCase(), ` ${params[name]}`, `${params[name]}x`]);
      return base(`{${name}} = ${preview(id)}`, named(name), {
        path: buildPath(op, { ...params, [name]: id }, queryText(query)),
      });
    });
  }
  if (op.headers) {
    kinds.push(() => {
      const [name] = Object.keys(op.headers!());
      const value = g.pick([
        '*',
        '""',
        'W/"x"',
        '"x", *',
        'x',
        '',
        '"\u00e9"',
        `${policyEtag}, ${policyEtag}`,
        ' ',
      ]);
      return base(`${name}: ${value}`, /If-(None-)?Match|ETag/i, { headers: { ...headers, [name!]: value } });
    });
  }
  kinds.push(() => {
    // Headers the broker reads on every route: what the answer's type is, a proxy's ids, conditions, codings.
    const [name, value] = g.pick<[string, string]>([
      ['Accept', g.pick(['application/json', 'application/json;q=abc', 'text/html', '*/*;q=0', ',;,', 'é'])],
      ['X-Request-Id', g.pick(['', ' ', 'x'.repeat(500), f.key, 'a"b', 'Root=1-abc'])],
      ['traceparent', g.pick([`00-${'0'.repeat(32)}-${'1'.repeat(16)}-01`, 'ff-x', '-'.repeat(60)])],
      ['If-Match', g.pick(['*', 'x', '"a"'])],
      ['If-None-Match', g.pick(['*', '', 'W/'])],
      ['Transfer-Encoding', g.pick(['chunked', 'gzip', 'chunked, gzip', 'x'])],
      ['Content-Length', g.pick(['0', '-1', '1e309', 'x', '99999999999999999999'])],
    ]);
    return base(
      `${name}: ${preview(value.replace(f.key, '<key>'))}`,
      new RegExp(`${literally(name)}|body`, 'i'),
      {
        headers: { ...headers, ...(valid ? { 'Content-Type': contentType } : {}), [name]: value },
      },
    );
  });
  kinds.push(() => {
    const value = g.pick([
      'Bearer',
      'Bearer ',
      `Bearer  ${f.key}`,
      `bearer ${f.key}`,
      `Basic ${f.key}`,
      `Bearer ${f.key} x`,
      `Bearer ${f.key.slice(0, -1)}`,
      `Bearer ${f.key}\t`,
      'Bearer ssa_',
      `Bearer ${'a'.repeat(10_000)}`,
      'Bearer é',
    ]);
    return base(
      `Authorization ${preview(value.replace(f.key, '<key>'))}`,
      /Authorization|Bearer|key|token/i,
      {
        headers: { ...headers, Authorization: value },
      },
    );
  });
  return g.pick(kinds)();
}

function preview(value: unknown): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…(${text.length})` : text);
}

// ---------------------------------------------------------------------------------------------------------------
// Sending, and what every answer must be.

async function send(c: Case, method: string): Promise<Response> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${HANG_MS} ms`)), HANG_MS);
  });
  try {
    return await Promise.race([
      Promise.resolve(
        f.t.broker.app.request(`http://broker.test${c.path}`, {
          method,
          headers: c.headers,
          ...(c.body !== undefined ? { body: c.body } : {}),
        }),
      ),
      hang,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the tenant's keys and policies are: a refused write must leave it as it was. */
async function snapshot(): Promise<string> {
  const { store } = f.t.broker;
  const [builtin, fineGrained, policies] = await Promise.all([
    store.keys.listBuiltin(f.tenantId),
    store.keys.pageFineGrained(f.tenantId, { limit: 1000 }),
    store.policies.list(f.tenantId),
  ]);
  const strip = <T extends object>(rows: T[]) =>
    rows.map((row) => Object.fromEntries(Object.entries(row).filter(([k]) => !/last_used|lastUsed/.test(k))));
  return JSON.stringify([strip(builtin), strip(fineGrained), policies]);
}

/** The answer's faults, if any, as lines to read. */
async function faults(c: Case, res: Response): Promise<string[]> {
  const text = await res.text();
  const out: string[] = [];
  if (text.includes(f.key) || text.includes(accessToken))
    out.push('the answer holds a secret the request sent');
  // A transfer coding the broker does not implement is a 501 by RFC 9112 §6.1, saying so: not a failure.
  const unimplemented = res.status === 501 && /Transfer-Encoding/.test(text);
  if (res.status >= 500 && !unimplemented) out.push(`${res.status}: ${text.slice(0, 300)}`);
  if (res.status < 400) return out;
  if (!/^application\/problem\+json/.test(res.headers.get('Content-Type') ?? ''))
    out.push(`${res.status} as ${res.headers.get('Content-Type')}, not problem+json`);
  let problem: { code?: unknown; detail?: unknown; request_id?: unknown };
  try {
    problem = JSON.parse(text);
  } catch {
    return [...out, `${res.status} with a body that is not JSON: ${text.slice(0, 200)}`];
  }
  if (typeof problem.code !== 'string' || problem.code === '') out.push(`${res.status} without a code`);
  if (typeof problem.request_id !== 'string' || problem.request_id === '')
    out.push(`${res.status} without a request_id`);
  if (typeof problem.detail !== 'string' || problem.detail.trim() === '') {
    out.push(`${res.status} ${String(problem.code)} without a detail`);
  } else if ((res.status === 400 || res.status === 422) && !c.blame.test(problem.detail)) {
    out.push(
      `${res.status} ${String(problem.code)} does not name ${c.blame}: ${problem.detail.slice(0, 300)}`,
    );
  }
  return out;
}

/** Puts back what a write the fuzzer made succeed took away: the fixtures the other cases break. */
async function restore(op: Operation, status: number): Promise<void> {
  if (status >= 300) return;
  if (op.template === '/v1/fine-grained-keys/{id}' && op.method === 'DELETE') {
    const created = await f.t.request('POST', '/v1/fine-grained-keys', {
      key: f.key,
      json: { name: 'fuzz', expiration: '7d', permissions: ['audit-log:read'] },
    });
    keyId = ((await created.json()) as { id: string }).id;
  }
  if (op.template === '/v1/oidc/policies/{id}' && op.method !== 'GET') {
    if (op.method === 'DELETE') return createFuzzPolicy();
    const got = await f.t.request('GET', `/v1/oidc/policies/${policyId}`, { key: f.key });
    policyEtag = got.headers.get('ETag')!;
  }
  if (op.template === '/v1/oidc/policies' && op.method === 'POST') {
    // Many successes would fill the first page the cursor cases read: keep the tenant's policies few.
    for (const p of await f.t.broker.store.policies.list(f.tenantId)) {
      if (p.id === policyId || !p.name.startsWith('fuzz-') || p.name === 'fuzz-2' || p.name === 'fuzz-3')
        continue;
      await f.t.request('DELETE', `/v1/oidc/policies/${p.id}`, { key: f.key });
    }
  }
}

async function fuzz(op: Operation, seed: number): Promise<string[]> {
  const g = new Gen(seed);
  const found: string[] = [];
  const statuses: Record<number, number> = {};
  for (let i = 0; i < CASES; i++) {
    const c = mutate(op, g);
    const before = op.writes ? await snapshot() : '';
    let res: Response;
    try {
      res = await send(c, op.method);
    } catch (error) {
      found.push(`${c.what}: ${(error as Error).message}`);
      continue;
    }
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    for (const fault of await faults(c, res)) found.push(`${c.what}: ${fault}`);
    if (op.writes && res.status >= 400 && (await snapshot()) !== before)
      found.push(`${c.what}: refused with ${res.status}, yet the store changed`);
    await restore(op, res.status);
  }
  if (process.env.FUZZ_REPORT) console.log(`${label(op)} statuses ${JSON.stringify(statuses)}`);
  return found;
}

const label = (op: Operation) => `${op.method} ${op.template}${op.body ? ` (${op.body.type})` : ''}`;

describe(`every operation, fuzzed (seed ${SEED}, ${CASES} cases each)`, () => {
  it('covers every operation of the OpenAPI document', () => {
    const documented = Object.entries(document.paths).flatMap(([path, ops]) =>
      Object.keys(ops)
        .filter((m) => METHODS.has(m))
        .map((m) => `${m.toUpperCase()} ${path}`),
    );
    expect(new Set(OPERATIONS.map((op) => `${op.method} ${op.template}`))).toEqual(new Set(documented));
  });

  it.each(OPERATIONS.map((op, i) => [label(op), op, i] as const))(
    '%s: no 5xx, hang or vague refusal',
    async (_, op, i) => {
      const found = await fuzz(op, SEED * 1000 + i);
      if (process.env.FUZZ_REPORT) console.log(`${label(op)}\n  ${found.join('\n  ')}`);
      expect(found.slice(0, 20), `seed ${SEED * 1000 + i}, ${found.length} faults`).toEqual([]);
      const health = await f.t.request('GET', '/healthz');
      expect(health.status).toBe(200);
    },
    30_000,
  );
});
