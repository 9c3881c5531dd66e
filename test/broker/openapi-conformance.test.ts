// The broker answers as its OpenAPI document says: each answer of each operation, success or refusal, has a
// declared status, media type, body schema and headers — what an SDK generated from the document relies on.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_PERMISSIONS } from '../../broker/core/permissions.js';
import { type Federation, startFederation } from '../support/federation.js';
import { answerDisagreements, type OpenApiDocument, schemaErrors } from '../support/openapi-check.js';

const document = JSON.parse(
  readFileSync(new URL('../../broker/openapi.json', import.meta.url), 'utf8'),
) as OpenApiDocument;

let f: Federation;
/** A Tenant read-only key: every `:read`, no `:write`. */
let readOnly: string;
const driven = new Set<string>();

beforeAll(async () => {
  // A small exchange budget, so that the 429 is reachable.
  f = await startFederation({ env: { BROKER_RATE_LIMIT_BURST: '2', BROKER_RATE_LIMIT_PER_MINUTE: '1' } });
  const rotated = await f.t.request('POST', '/v1/api-keys/tenant-read-only/primary/rotate', { key: f.key });
  readOnly = ((await rotated.json()) as { key: string }).key;
});
afterAll(() => f.close());

interface Call {
  /** The concrete path, when the template has parameters or a query is sent. */
  path?: string;
  key?: string;
  json?: unknown;
  form?: Record<string, string>;
  accept?: string;
  headers?: Record<string, string>;
}

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: a JSON body, read by the test that asked for it.
  body: any;
  disagreements: string[];
}

async function call(
  method: string,
  template: string,
  { path, key, json, form, accept, headers }: Call = {},
): Promise<Answer> {
  driven.add(`${method.toLowerCase()} ${template}`);
  const res = await f.t.request(method, path ?? template, {
    key,
    json,
    ...(form ? { body: new URLSearchParams(form).toString() } : {}),
    headers: {
      ...(form ? { 'Content-Type': 'application/x-www-form-urlencoded' } : {}),
      ...(accept ? { Accept: accept } : {}),
      ...headers,
    },
  });
  const text = await res.text();
  const isJson = /json/.test(res.headers.get('Content-Type') ?? '');
  return {
    status: res.status,
    body: isJson ? JSON.parse(text) : text,
    disagreements: answerDisagreements(document, method, template, {
      status: res.status,
      headers: res.headers,
      text,
    }),
  };
}

/** Drives the calls in order and returns every answer's disagreements with the document, with the statuses seen. */
async function drive(calls: [method: string, template: string, call?: Call][]) {
  const statuses: string[] = [];
  const disagreements: string[] = [];
  for (const [method, template, options] of calls) {
    const answer = await call(method, template, options);
    statuses.push(`${method} ${options?.path ?? template} ${answer.status}`);
    disagreements.push(...answer.disagreements);
  }
  return { statuses, disagreements };
}

const policyBody = (name: string, fields: Record<string, unknown> = {}) => ({
  name,
  claims: { repository: 'acme/infra' },
  permissions: ['harden-runner:read'],
  ...fields,
});

const exchangeForm = (token: string, fields: Record<string, string> = {}) => ({
  grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
  subject_token: token,
  subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
  ...fields,
});

describe('every answer agrees with the OpenAPI document', () => {
  it('discovery and operations', async () => {
    const { disagreements } = await drive([
      ['GET', '/healthz'],
      ['GET', '/readyz'],
      ['GET', '/metrics'],
      ['GET', '/.well-known/jwks.json'],
      ['GET', '/.well-known/oauth-authorization-server'],
    ]);
    expect(disagreements).toEqual([]);
  });

  it('identity and built-in keys: success, no credential, an unknown key, a missing permission', async () => {
    const calls: [string, string, Call?][] = [];
    for (const template of ['/v1/whoami', '/v1/permissions', '/v1/api-keys']) {
      calls.push(['GET', template, { key: f.key }], ['GET', template, { key: readOnly }], ['GET', template]);
      calls.push(['GET', template, { key: 'ssa_unknown' }]);
    }
    const rotate = '/v1/api-keys/{kind}/{slot}/rotate';
    calls.push(
      ['POST', rotate, { path: '/v1/api-keys/secure-registry/secondary/rotate', key: f.key }],
      ['POST', rotate, { path: '/v1/api-keys/no-such-kind/secondary/rotate', key: f.key }],
      ['POST', rotate, { path: '/v1/api-keys/secure-registry/secondary/rotate', key: readOnly }],
      ['POST', rotate, { path: '/v1/api-keys/secure-registry/secondary/rotate' }],
    );
    const { statuses, disagreements } = await drive(calls);
    expect(statuses.filter((s) => s.endsWith(' 401'))).toHaveLength(7);
    expect(statuses).toContain('POST /v1/api-keys/secure-registry/secondary/rotate 403');
    expect(disagreements).toEqual([]);
  });

  it('fine-grained keys: create, refusals, get, list, revoke', async () => {
    const keys = '/v1/fine-grained-keys';
    const created = await call('POST', keys, {
      key: f.key,
      json: { name: 'deploy', expiration: '7d', permissions: ['read-all'] },
    });
    const one = '/v1/fine-grained-keys/{id}';
    const path = `${keys}/${created.body.id}`;
    const { statuses, disagreements } = await drive([
      ['POST', keys, { key: f.key, json: { name: 'no-expiry', permissions: ['read-all'] } }],
      ['POST', keys, { key: f.key, json: { name: 'unknown', expiration: '7d', permissions: ['nope:read'] } }],
      [
        'POST',
        keys,
        { key: created.body.key, json: { name: 'x', expiration: '7d', permissions: ['read-all'] } },
      ],
      ['POST', keys, { key: readOnly, json: { name: 'x', expiration: '7d', permissions: ['read-all'] } }],
      ['GET', keys, { key: f.key }],
      ['GET', one, { path, key: f.key }],
      ['GET', one, { path: `${keys}/${crypto.randomUUID()}`, key: f.key }],
      ['GET', one, { path: `${keys}/not-an-id`, key: f.key }],
      ['DELETE', one, { path, key: readOnly }],
      ['DELETE', one, { path, key: f.key }],
      ['DELETE', one, { path, key: f.key }],
      ['GET', '/v1/whoami', { key: created.body.key }],
    ]);
    expect(created.disagreements).toEqual([]);
    expect(statuses.map((s) => Number(s.slice(-3)))).toEqual([
      400, 400, 403, 403, 200, 200, 404, 404, 403, 204, 404, 401,
    ]);
    expect(disagreements).toEqual([]);
  });

  it('trust policies: create with warnings, conflicts, invalid policies, replace, delete, config, dry runs', async () => {
    const policies = '/v1/oidc/policies';
    const created = await call('POST', policies, { key: f.key, json: policyBody('deploy') });
    const one = '/v1/oidc/policies/{id}';
    const path = `${policies}/${created.body.policy.id}`;
    const evaluate = '/v1/oidc/policies/evaluate';
    const job = { repository: 'acme/infra', repository_owner: 'acme', ref: 'refs/heads/main' };
    const etag = (await f.t.request('GET', path, { key: f.key })).headers.get('ETag')!;
    const stale = { 'If-Match': '"stale"' };
    const { statuses, disagreements } = await drive([
      ['POST', policies, { key: f.key, json: policyBody('deploy') }],
      ['GET', policies, { path: `${policies}?name=DEPLOY`, key: f.key }],
      ['GET', policies, { path: `${policies}?name=`, key: f.key }],
      ['GET', one, { path, key: f.key, headers: { 'If-None-Match': etag } }],
      ['PUT', one, { path, key: f.key, json: policyBody('deploy'), headers: stale }],
      ['PUT', one, { path, key: f.key, json: policyBody('deploy'), headers: { 'If-Match': 'unquoted' } }],
      ['DELETE', one, { path, key: f.key, headers: stale }],
      ['POST', policies, { key: f.key, json: policyBody('bad', { claims: { ref: 'main' } }) }],
      ['POST', policies, { key: f.key, json: policyBody('bad', { unknown: true }) }],
      ['POST', policies, { key: readOnly, json: policyBody('denied') }],
      ['GET', policies, { key: f.key }],
      ['GET', one, { path, key: f.key }],
      ['GET', one, { path: `${policies}/${crypto.randomUUID()}`, key: f.key }],
      [
        'PUT',
        one,
        {
          path,
          key: f.key,
          json: policyBody('deploy', {
            description: 'deploys',
            claims: { ...job, environment: 'production' },
            max_session_duration_seconds: 600,
          }),
        },
      ],
      ['PUT', one, { path, key: f.key, json: { name: '' } }],
      ['PUT', one, { path: `${policies}/${crypto.randomUUID()}`, key: f.key, json: policyBody('gone') }],
      ['GET', '/v1/oidc/config', { key: f.key }],
      ['GET', '/v1/oidc/config', { path: '/v1/oidc/config?policy=deploy', key: f.key }],
      ['GET', '/v1/oidc/config', { path: '/v1/oidc/config?policy=nope', key: f.key }],
      ['GET', '/v1/oidc/config', { path: '/v1/oidc/config?policy=', key: f.key }],
      ['POST', evaluate, { key: f.key, json: { claims: { ...job, environment: 'production' } } }],
      ['POST', evaluate, { key: f.key, json: { claims: job, permissions: ['harden-runner:write'] } }],
      ['POST', evaluate, { key: f.key, json: { claims: { ...job, aud: ['a', 'b'] } } }],
      ['POST', evaluate, { key: f.key, json: { claims: { ...job, aud: 'elsewhere' } } }],
      ['POST', evaluate, { key: f.key, json: { oidc_token: f.issuer.sign() } }],
      ['POST', evaluate, { key: f.key, json: { oidc_token: 'not.a.token' } }],
      ['POST', evaluate, { key: f.key, json: {} }],
      ['DELETE', one, { path, key: readOnly }],
      ['DELETE', one, { path, key: f.key }],
      ['DELETE', one, { path, key: f.key }],
    ]);
    expect(created.disagreements).toEqual([]);
    expect(statuses.map((s) => Number(s.slice(-3)))).toEqual([
      409, 200, 400, 304, 412, 400, 412, 422, 422, 403, 200, 200, 404, 200, 422, 404, 200, 200, 404, 400, 200,
      200, 200, 200, 200, 400, 400, 403, 204, 404,
    ]);
    expect(disagreements).toEqual([]);
  });

  it('the exchange: JSON and form, each refusal, the rate limit', async () => {
    const exchange = '/v1/oidc/token';
    await f.policy('infra');
    await f.policy('form', { claims: { repository: 'acme/form' } });
    await f.policy('twin', { claims: { repository: 'acme/twin' } });
    await f.policy('twin-2', { claims: { repository: 'acme/twin' } });
    const replayed = f.issuer.sign();
    const other = () => f.issuer.sign({ repository: 'acme/other' });
    const { statuses, disagreements } = await drive([
      ['POST', exchange, { json: { oidc_token: replayed } }],
      ['POST', exchange, { json: { oidc_token: replayed } }],
      ['POST', exchange, { form: exchangeForm(f.issuer.sign({ repository: 'acme/form' })) }],
      [
        'POST',
        exchange,
        { json: { oidc_token: f.issuer.sign({ repository: 'acme/form' }), permissions: ['api-keys:write'] } },
      ],
      ['POST', exchange, { json: { oidc_token: 'not.a.token' } }],
      ['POST', exchange, { json: { oidc_token: f.issuer.sign({ aud: 'elsewhere' }) } }],
      ['POST', exchange, { json: { oidc_token: f.issuer.sign({ repository: 'acme/twin' }) } }],
      ['POST', exchange],
      ['POST', exchange, { json: { oidc_token: other() } }],
      ['POST', exchange, { json: { oidc_token: other(), permissions: ['nope:read'] } }],
      // As an OAuth client library asks: its refusal comes as application/json.
      ['POST', exchange, { form: exchangeForm('not.a.token'), accept: 'application/json' }],
      // The third exchange of acme/other within the minute, beyond its budget of two.
      ['POST', exchange, { json: { oidc_token: other() } }],
    ]);
    expect(statuses.map((s) => Number(s.slice(-3)))).toEqual([
      200, 401, 200, 403, 401, 401, 409, 400, 403, 400, 401, 429,
    ]);
    expect(disagreements).toEqual([]);
  });

  it('tokens: mint, introspect, revoke', async () => {
    const mint = '/v1/tokens';
    const minted = await call('POST', mint, { key: f.key, json: { permissions: ['audit-log:read'] } });
    const other = await call('POST', mint, { key: f.key });
    const token = minted.body.access_token as string;
    const { statuses, disagreements } = await drive([
      ['POST', mint, { key: readOnly, json: { permissions: ['api-keys:write'] } }],
      ['POST', mint, { key: f.key, json: { duration_seconds: 0 } }],
      ['POST', mint, { key: token, json: {} }],
      ['GET', '/v1/whoami', { key: token }],
      ['POST', '/v1/tokens/introspect', { key: f.key, json: { token } }],
      ['POST', '/v1/tokens/introspect', { key: f.key, form: { token } }],
      ['POST', '/v1/tokens/introspect', { key: f.key, json: { token: 'not.a.token' } }],
      ['POST', '/v1/tokens/introspect', { key: f.key, json: {} }],
      ['POST', '/v1/tokens/revoke', { key: readOnly, json: { token: other.body.access_token } }],
      ['POST', '/v1/tokens/revoke', { key: token, form: { token } }],
      ['POST', '/v1/tokens/revoke', { key: f.key, json: { token: 'not.a.token' } }],
      ['GET', '/v1/whoami', { key: token }],
    ]);
    expect([minted, other].flatMap((a) => a.disagreements)).toEqual([]);
    expect(statuses.map((s) => Number(s.slice(-3)))).toEqual([
      403, 400, 403, 200, 200, 200, 200, 400, 403, 200, 200, 401,
    ]);
    expect(disagreements).toEqual([]);
  });

  it('the audit log: pages and refused queries', async () => {
    const events = '/v1/audit-events';
    const first = await call('GET', events, { path: `${events}?limit=2`, key: f.key });
    const { statuses, disagreements } = await drive([
      ['GET', events, { path: `${events}?limit=2&cursor=${first.body.next_cursor}`, key: f.key }],
      ['GET', events, { path: `${events}?type=permission.denied&limit=200`, key: f.key }],
      ['GET', events, { path: `${events}?limit=0`, key: f.key }],
      ['GET', events, { path: `${events}?type=nope`, key: f.key }],
      ['GET', events, { path: `${events}?cursor=forged`, key: f.key }],
      ['GET', events, { key: 'ssf_unknown' }],
    ]);
    expect(first.disagreements).toEqual([]);
    expect(statuses.map((s) => Number(s.slice(-3)))).toEqual([200, 200, 400, 400, 400, 401]);
    expect(disagreements).toEqual([]);
  });

  it('every operation of the document was driven above', () => {
    const operations = Object.entries(document.paths).flatMap(([path, item]) =>
      Object.keys(item).map((method) => `${method} ${path}`),
    );
    expect(operations.filter((operation) => !driven.has(operation))).toEqual([]);
  });
});

/** A path of the document with its parameters filled in: a fresh id, and a built-in slot that exists. */
const concretePath = (template: string) =>
  template
    .replace('{id}', crypto.randomUUID())
    .replace('{kind}', 'secure-registry')
    .replace('{slot}', 'secondary');

describe('requests: what the document accepts is accepted, and what it refuses refused', () => {
  it('a request without a body is refused where the document requires one, and served where it does not', async () => {
    const answers: string[] = [];
    for (const [template, item] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(item)) {
        if (!operation.requestBody) continue;
        const res = await f.t.request(method.toUpperCase(), template.replace('{id}', crypto.randomUUID()), {
          key: template === '/v1/oidc/token' ? undefined : f.key,
        });
        const documented = operation.requestBody.required === true ? 'required' : 'optional';
        const served = res.status === 400 || res.status === 422 ? 'required' : 'optional';
        answers.push(`${method} ${template}: documented ${documented}, served ${served} (${res.status})`);
      }
    }
    expect(answers.filter((a) => !/documented (\w+), served \1 /.test(a))).toEqual([]);
    expect(answers).toContain('post /v1/tokens: documented optional, served optional (201)');
  });
});

describe('request fields: the document accepts what the broker accepts', () => {
  /** The schema of a request body's property, for a media type the operation takes. */
  const propertySchema = (template: string, mediaType: string, property: string) => {
    const body = document.paths[template]!.post!.requestBody!.content[mediaType]!.schema as { $ref: string };
    const name = body.$ref.split('/').pop()!;
    return (document.components.schemas[name] as { properties: Record<string, { type?: string }> })
      .properties[property]!;
  };

  it("the exchange's duration_seconds, in JSON and in the RFC 8693 form", async () => {
    const verdicts: string[] = [];
    for (const mediaType of ['application/json', 'application/x-www-form-urlencoded']) {
      const schema = propertySchema('/v1/oidc/token', mediaType, 'duration_seconds');
      for (const seconds of [0, 1, 60, 3600, 3601, 9999]) {
        // A form carries the value as its decimal text, whatever type the document gives it.
        const value = schema.type === 'string' ? String(seconds) : seconds;
        const documented = schemaErrors(document, schema, value).length === 0;
        // Fields are checked before the token: a value taken gets as far as the token's 401.
        const res = await f.t.request('POST', '/v1/oidc/token', {
          ...(mediaType === 'application/json'
            ? { json: { oidc_token: 'not.a.token', duration_seconds: seconds } }
            : {
                body: new URLSearchParams({
                  ...exchangeForm('not.a.token'),
                  duration_seconds: String(seconds),
                }).toString(),
                headers: { 'Content-Type': mediaType },
              }),
        });
        const served = res.status !== 400;
        if (documented !== served)
          verdicts.push(
            `${mediaType} ${seconds}: documented ${documented}, served ${served} (${res.status})`,
          );
      }
    }
    expect(verdicts).toEqual([]);
  });
});

describe('request bodies that take exactly one of two fields', () => {
  it('the document refuses neither and both, as the broker does, and accepts either', async () => {
    const cases: [template: string, body: Record<string, unknown>][] = [];
    const key = { name: 'choice', permissions: ['read-all'] };
    for (const expiry of [
      {},
      { expiration: '7d' },
      { expires_in_days: 3 },
      { expiration: '7d', expires_in_days: 3 },
    ])
      cases.push(['/v1/fine-grained-keys', { ...key, name: `choice-${cases.length}`, ...expiry }]);
    const job = { claims: { repository: 'acme/infra' } };
    for (const subject of [{}, job, { oidc_token: f.issuer.sign() }, { ...job, oidc_token: f.issuer.sign() }])
      cases.push(['/v1/oidc/policies/evaluate', subject]);
    const verdicts: string[] = [];
    for (const [template, body] of cases) {
      const schema = document.paths[template]!.post!.requestBody!.content['application/json']!.schema;
      const documented = schemaErrors(document, schema, body).length === 0;
      const res = await f.t.request('POST', template, { key: f.key, json: body });
      const served = res.status !== 400;
      if (documented !== served)
        verdicts.push(
          `${template} ${Object.keys(body)}: documented ${documented}, served ${served} (${res.status})`,
        );
    }
    expect(verdicts).toEqual([]);
  });
});

describe("the dry run's typed-in claims: the document takes what the broker takes", () => {
  it("a token's custom-property claims, and not their look-alikes", async () => {
    const schema =
      document.paths['/v1/oidc/policies/evaluate']!.post!.requestBody!.content['application/json']!.schema;
    const verdicts: string[] = [];
    for (const extra of [
      { repo_property_team: 'platform' },
      { repo_property_cost_center: 'x', repo_property_tier: 'gold' },
      { repo_properties_team: 'platform' },
      { Repo_property_team: 'platform' },
      { repo_property_: 'x' },
    ]) {
      const body = { claims: { repository: 'acme/infra', ...extra } };
      const documented = schemaErrors(document, schema, body).length === 0;
      const res = await f.t.request('POST', '/v1/oidc/policies/evaluate', { key: f.key, json: body });
      const served = res.status !== 400;
      if (documented !== served)
        verdicts.push(`${Object.keys(extra)}: documented ${documented}, served ${served} (${res.status})`);
    }
    expect(verdicts).toEqual([]);
  });
});

describe('permission lists: the document accepts the lists the broker accepts', () => {
  it('in every request body that takes one', async () => {
    const policy = await call('POST', '/v1/oidc/policies', {
      key: f.key,
      json: policyBody('permission-lists'),
    });
    let n = 0;
    /** A request naming `permissions`, otherwise as the operation takes it. */
    const requests: [template: string, method: string, body: (permissions: string[]) => unknown][] = [
      [
        '/v1/oidc/token',
        'POST',
        (permissions) => ({
          // A repository of its own each time, so that no exchange budget runs out.
          oidc_token: f.issuer.sign({ repository: `acme/lists-${++n}` }),
          permissions,
        }),
      ],
      [
        '/v1/fine-grained-keys',
        'POST',
        (permissions) => ({ name: `list-${++n}`, expiration: '7d', permissions }),
      ],
      ['/v1/oidc/policies', 'POST', (permissions) => policyBody(`list-${++n}`, { permissions })],
      ['/v1/oidc/policies/{id}', 'PUT', (permissions) => policyBody('permission-lists', { permissions })],
      [
        '/v1/oidc/policies/evaluate',
        'POST',
        (permissions) => ({ claims: { repository: 'acme/infra' }, permissions }),
      ],
      ['/v1/tokens', 'POST', (permissions) => ({ permissions })],
    ];
    const lists = [
      ['harden-runner:read'],
      ['read-all', 'read-write-all'],
      [],
      ['nope:read'],
      ['Harden-Runner:read'],
      ['harden-runner'],
    ];
    const verdicts: string[] = [];
    for (const [template, method, body] of requests) {
      const operation = document.paths[template]![method.toLowerCase()]!;
      const { $ref } = operation.requestBody!.content['application/json']!.schema as { $ref: string };
      const schema = document.components.schemas[$ref.split('/').pop()!] as {
        properties: { permissions: unknown };
      };
      for (const list of lists) {
        const documented = schemaErrors(document, schema.properties.permissions, list).length === 0;
        const res = await f.t.request(method, template.replace('{id}', policy.body.policy.id), {
          key: template === '/v1/oidc/token' ? undefined : f.key,
          json: body(list),
        });
        const problem = (res.status === 400 || res.status === 422 ? await res.json() : {}) as {
          errors?: { field: string }[];
        };
        const served = !problem.errors?.some((e) => e.field.startsWith('permissions'));
        if (documented !== served)
          verdicts.push(
            `${method} ${template} ${JSON.stringify(list)}: documented ${documented}, served ${served}`,
          );
      }
    }
    // The RFC 8693 form names them in `scope`, separated by spaces.
    const scope = (document.components.schemas.TokenExchangeForm as { properties: Record<string, unknown> })
      .properties.scope;
    for (const text of [
      ...lists.map((list) => list.join(' ')),
      ' read-all  harden-runner:write ',
      'read-all\tx',
    ]) {
      const documented = schemaErrors(document, scope, text).length === 0;
      const res = await f.t.request('POST', '/v1/oidc/token', {
        body: new URLSearchParams(
          exchangeForm(f.issuer.sign({ repository: `acme/lists-${++n}` }), { scope: text }),
        ).toString(),
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      });
      const problem = (res.status === 400 ? await res.json() : {}) as { errors?: { field: string }[] };
      const served = !problem.errors?.some((e) => e.field === 'scope');
      if (documented !== served)
        verdicts.push(`form scope ${JSON.stringify(text)}: documented ${documented}, served ${served}`);
    }
    expect(verdicts).toEqual([]);
  });
});

describe('security: the permission each operation names is the one the broker requires', () => {
  /** A fine-grained key holding `permissions` (and what they imply). */
  const keyHolding = async (permissions: string[]) => {
    const res = await f.t.request('POST', '/v1/fine-grained-keys', {
      key: f.key,
      json: { name: `holds-${permissions.length}-${crypto.randomUUID()}`, expiration: '7d', permissions },
    });
    return ((await res.json()) as { key: string }).key;
  };

  it('a credential without it is refused naming it; with only it, the operation is no longer refused for a permission', async () => {
    const minimal = await keyHolding(['harden-runner:read']);
    const verdicts: string[] = [];
    for (const [template, item] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(item)) {
        if (!operation.security) continue;
        const roles = operation.security.flatMap((requirement) => requirement.bearerAuth ?? []);
        const path = concretePath(template);
        /** The permission the broker says the credential lacks, if it refuses for one. */
        const missing = async (key: string) => {
          const res = await f.t.request(method.toUpperCase(), path, {
            key,
            json: operation.requestBody ? {} : undefined,
          });
          const body = (res.status === 403 ? await res.json() : {}) as { missing_permission?: string };
          return body.missing_permission;
        };
        const where = `${method.toUpperCase()} ${template}`;
        if (roles.length === 0) {
          const lacking = await missing(minimal);
          if (lacking) verdicts.push(`${where}: documented for any credential, refused lacking ${lacking}`);
          continue;
        }
        for (const role of roles) {
          const implying = role.endsWith(':read') ? role.replace(/:read$/, ':write') : role;
          const without = await keyHolding(ALL_PERMISSIONS.filter((p) => p !== role && p !== implying));
          const lacking = await missing(without);
          if (lacking !== role)
            verdicts.push(`${where}: documented ${role}, refused without it for ${lacking}`);
          const alone = await missing(await keyHolding([role]));
          if (alone) verdicts.push(`${where}: documented ${role}, refused with it for ${alone}`);
        }
      }
    }
    expect(verdicts).toEqual([]);
  });
});

describe('refused before routing', () => {
  it('a body too large, or in a transfer coding but chunked, is answered on every operation as the document says', async () => {
    const disagreements: string[] = [];
    const statuses: string[] = [];
    for (const [template, item] of Object.entries(document.paths)) {
      for (const method of Object.keys(item)) {
        const path = concretePath(template);
        // A GET carries no body through fetch's Request: its Transfer-Encoding is refused all the same.
        const withBody = method !== 'get';
        for (const [body, headers] of [
          ...(withBody ? [[`{"x":"${'a'.repeat(70_000)}"}`, {}] as const] : []),
          [withBody ? '{}' : undefined, { 'Transfer-Encoding': 'gzip, chunked' }] as const,
        ]) {
          const res = await f.t.request(method.toUpperCase(), path, {
            key: template === '/v1/oidc/token' ? undefined : f.key,
            body,
            headers: { 'Content-Type': 'application/json', ...headers },
          });
          statuses.push(`${method} ${template} ${res.status}`);
          const answer = { status: res.status, headers: res.headers, text: await res.text() };
          disagreements.push(...answerDisagreements(document, method.toUpperCase(), template, answer));
        }
      }
    }
    expect(statuses.filter((s) => !/ (413|501)$/.test(s))).toEqual([]);
    expect(disagreements).toEqual([]);
  });
});

describe('while the database does not answer', () => {
  it('every operation answers a status the document declares for it', async () => {
    const down = await startFederation();
    try {
      const job = down.issuer.sign();
      const bodies: Record<string, unknown> = {
        'post /v1/oidc/token': { oidc_token: job },
        'post /v1/fine-grained-keys': { name: 'k', expiration: '7d', permissions: ['read-all'] },
        'post /v1/oidc/policies': policyBody('deploy'),
        'put /v1/oidc/policies/{id}': policyBody('deploy'),
        'post /v1/oidc/policies/evaluate': { oidc_token: job },
        'post /v1/tokens': {},
        'post /v1/tokens/introspect': { token: job },
        'post /v1/tokens/revoke': { token: job },
      };
      // As a broker that is stopping meets it; and past the interval at which the signing keys are read again.
      await down.t.broker.store.close();
      down.t.clock.now += 5 * 60_000;
      const disagreements: string[] = [];
      const statuses = new Set<number>();
      for (const [template, item] of Object.entries(document.paths)) {
        for (const method of Object.keys(item)) {
          const path = concretePath(template);
          const res = await down.t.request(method.toUpperCase(), path, {
            key: template === '/v1/oidc/token' ? undefined : down.key,
            json: bodies[`${method} ${template}`],
          });
          statuses.add(res.status);
          const answer = { status: res.status, headers: res.headers, text: await res.text() };
          disagreements.push(...answerDisagreements(document, method.toUpperCase(), template, answer));
        }
      }
      expect(statuses).toContain(503);
      expect(disagreements).toEqual([]);
    } finally {
      await down.close();
    }
  });
});

describe('the document itself', () => {
  it('every example and default is valid against the schema that carries it', () => {
    const invalid: string[] = [];
    const walk = (node: unknown, at: string): void => {
      if (typeof node !== 'object' || node === null) return;
      const { example, default: fallback, ...schema } = node as Record<string, unknown>;
      const isSchema = 'type' in schema || '$ref' in schema || 'allOf' in schema;
      if (isSchema && example !== undefined) invalid.push(...schemaErrors(document, schema, example, at));
      if (isSchema && fallback !== undefined) invalid.push(...schemaErrors(document, schema, fallback, at));
      for (const [member, child] of Object.entries(node)) walk(child, `${at}/${member}`);
    };
    walk(document, '#');
    expect(invalid).toEqual([]);
  });
});
