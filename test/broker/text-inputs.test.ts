// Client text on its way to the database: NUL, lone surrogates and bidi overrides get a 4xx naming the field on
// both stores (never PostgreSQL's 500), names follow one rule, and a path id that is not a UUID is an unknown id.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Federation, startFederation } from '../support/federation.js';

const NUL = 'a\u0000b';
const LONE_SURROGATE = 'a\ud800b';
const BIDI_OVERRIDE = 'a\u202Eb';
const FORM = { 'Content-Type': 'application/x-www-form-urlencoded' };
const EXCHANGE_FORM = {
  grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
  subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
};

let f: Federation;
let key: string;
let tenants = 0;

beforeAll(async () => {
  f = await startFederation();
  await f.policy('infra');
  key = f.key;
});
afterAll(() => f.close());

interface Problem {
  type: string;
  title: string;
  status: number;
  code: string;
  detail: string;
  errors?: { field: string; message: string }[];
  error_description?: string;
}

/** Asserts the answer is this problem, naming exactly `field` when given. */
async function expectProblem(res: Response, status: number, code: string, field?: string): Promise<Problem> {
  const body = (await res.json()) as Problem;
  expect(res.status, JSON.stringify(body)).toBe(status);
  expect(body.code).toBe(code);
  if (field !== undefined) expect(body.errors?.map((e) => e.field)).toEqual([field]);
  return body;
}

const request = (method: string, path: string, json?: unknown, k = key) =>
  f.t.request(method, path, { key: k, json });
const form = (path: string, fields: Record<string, string>, k?: string) =>
  f.t.request('POST', path, { key: k, body: new URLSearchParams(fields).toString(), headers: FORM });
const newTenantKey = async () => (await f.t.createTenant(`text-${++tenants}`)).key;

const policyBody = (fields: Record<string, unknown> = {}) => ({
  name: `p-${randomUUID()}`,
  claims: { repository: 'acme/infra' },
  permissions: ['harden-runner:read'],
  ...fields,
});
const keyBody = (fields: Record<string, unknown> = {}) => ({
  name: `k-${randomUUID()}`,
  expiration: '7d',
  permissions: ['harden-runner:read'],
  ...fields,
});

describe('a path id that is not a UUID is answered like an unknown id', () => {
  const ROUTES = [
    ['GET', '/v1/fine-grained-keys'],
    ['DELETE', '/v1/fine-grained-keys'],
    ['GET', '/v1/oidc/policies'],
    ['PUT', '/v1/oidc/policies'],
    ['DELETE', '/v1/oidc/policies'],
  ] as const;
  // Encoded as they arrive in a URL: NUL, a lone surrogate's UTF-8 form, a bidi override, plain non-ids.
  const NOT_UUIDS = [
    '%00',
    'a%00b',
    `${randomUUID()}%00`,
    '%ED%A0%80',
    '%E2%80%AE',
    'not-a-uuid',
    'x'.repeat(100),
  ];

  for (const [method, base] of ROUTES) {
    it(`${method} ${base}/{id}: 404 not_found, the same answer as for an unknown UUID`, async () => {
      const body = method === 'PUT' ? policyBody() : undefined;
      const unknownId = randomUUID();
      const unknown = await expectProblem(
        await request(method, `${base}/${unknownId}`, body),
        404,
        'not_found',
      );
      const [before, after] = unknown.detail.split(unknownId) as [string, string];
      for (const id of NOT_UUIDS) {
        const answer = await expectProblem(await request(method, `${base}/${id}`, body), 404, 'not_found');
        expect(answer, id).toMatchObject({ type: unknown.type, title: unknown.title, status: 404 });
        expect(answer.detail.startsWith(before) && answer.detail.endsWith(after), answer.detail).toBe(true);
        expect(answer.errors).toBeUndefined();
      }
    });
  }

  it('authentication still comes first: no credential is 401 whatever the id', async () => {
    for (const [method, base] of ROUTES) {
      const res = await f.t.request(method, `${base}/%00`, {
        json: method === 'PUT' ? policyBody() : undefined,
      });
      await expectProblem(res, 401, 'unauthenticated');
    }
  });

  it('an id in upper case names the same resource, as UUIDs are case-insensitive (RFC 9562)', async () => {
    const k = await newTenantKey();
    const created = (await (await request('POST', '/v1/fine-grained-keys', keyBody(), k)).json()) as {
      id: string;
      key: string;
    };
    const policy = (await (await request('POST', '/v1/oidc/policies', policyBody(), k)).json()) as {
      policy: { id: string };
    };
    const upper = (id: string) => id.toUpperCase();
    const shown = await request('GET', `/v1/fine-grained-keys/${upper(created.id)}`, undefined, k);
    expect(((await shown.json()) as { id: string }).id).toBe(created.id);
    expect(
      (await request('PUT', `/v1/oidc/policies/${upper(policy.policy.id)}`, policyBody(), k)).status,
    ).toBe(200);
    expect(
      (await request('DELETE', `/v1/oidc/policies/${upper(policy.policy.id)}`, undefined, k)).status,
    ).toBe(204);
    expect((await request('DELETE', `/v1/fine-grained-keys/${upper(created.id)}`, undefined, k)).status).toBe(
      204,
    );
    expect((await f.t.request('GET', '/v1/whoami', { key: created.key })).status).toBe(401);
  });

  it('real ids still work, and the OpenAPI document says ids are UUIDs', async () => {
    const k = await newTenantKey();
    const created = (await (await request('POST', '/v1/fine-grained-keys', keyBody(), k)).json()) as {
      id: string;
    };
    expect((await request('GET', `/v1/fine-grained-keys/${created.id}`, undefined, k)).status).toBe(200);
    const policy = (await (await request('POST', '/v1/oidc/policies', policyBody(), k)).json()) as {
      policy: { id: string };
    };
    expect((await request('PUT', `/v1/oidc/policies/${policy.policy.id}`, policyBody(), k)).status).toBe(200);
    const doc = (await (await f.t.request('GET', '/v1/openapi.json')).json()) as {
      paths: Record<string, Record<string, { parameters?: { name: string; schema: { format?: string } }[] }>>;
    };
    for (const [method, base] of ROUTES) {
      const parameter = doc.paths[`${base}/{id}`]?.[method.toLowerCase()]?.parameters?.find(
        (p) => p.name === 'id',
      );
      expect(parameter?.schema.format, `${method} ${base}/{id}`).toBe('uuid');
    }
  });
});

describe('fine-grained key names follow the trust-policy name rule', () => {
  const REFUSED: [string, string][] = [
    ['NUL', NUL],
    ['a lone surrogate', LONE_SURROGATE],
    ['a bidi override', BIDI_OVERRIDE],
    ['a bidi isolate', 'a\u2066b'],
    ['a line separator', 'a\u2028b'],
    ['a tab', 'a\tb'],
  ];

  for (const [what, name] of REFUSED) {
    it(`refuses a name with ${what}: 400 invalid_request naming name, and saves nothing`, async () => {
      const k = await newTenantKey();
      const res = await request('POST', '/v1/fine-grained-keys', keyBody({ name }), k);
      await expectProblem(res, 400, 'invalid_request', 'name');
      const listed = (await (await request('GET', '/v1/fine-grained-keys', undefined, k)).json()) as {
        keys: unknown[];
      };
      expect(listed.keys).toEqual([]);
    });
  }

  it('saves any other Unicode name exactly as given', async () => {
    const name = 'déploiement 🚀 ✓';
    const res = await request('POST', '/v1/fine-grained-keys', keyBody({ name }));
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string; name: string };
    const got = (await (await request('GET', `/v1/fine-grained-keys/${id}`)).json()) as { name: string };
    expect(got.name).toBe(name);
  });

  it('accepts and refuses exactly the names a trust policy does', async () => {
    const samples = [
      'deploy',
      ' deploy',
      'deploy\u00a0',
      NUL,
      LONE_SURROGATE,
      BIDI_OVERRIDE,
      'a\u2029b',
      'a\u0085b',
      'x'.repeat(100),
      'x'.repeat(101),
      '🚀'.repeat(100),
      '🚀'.repeat(101),
    ];
    for (const name of samples) {
      const k = await newTenantKey();
      const keyRes = await request('POST', '/v1/fine-grained-keys', keyBody({ name }), k);
      const policyRes = await request('POST', '/v1/oidc/policies', policyBody({ name }), k);
      const label = JSON.stringify(name);
      if (policyRes.status === 201) {
        expect(keyRes.status, label).toBe(201);
      } else {
        await expectProblem(policyRes, 422, 'invalid_policy', 'name');
        await expectProblem(keyRes, 400, 'invalid_request', 'name');
      }
    }
  });
});

describe('other text that reaches a database lookup or write', () => {
  it('exchange: a tenant no name can hold is 400 naming tenant, before the token is used (JSON and form)', async () => {
    const token = f.issuer.sign();
    for (const tenant of [NUL, LONE_SURROGATE, BIDI_OVERRIDE]) {
      await expectProblem(await f.exchange(token, { tenant }), 400, 'invalid_request', 'tenant');
    }
    for (const tenant of [NUL, BIDI_OVERRIDE]) {
      const res = await form('/v1/oidc/token', { ...EXCHANGE_FORM, subject_token: token, tenant });
      await expectProblem(res, 400, 'invalid_request', 'tenant');
    }
    // An unknown but well-formed tenant keeps its answer, and the refused requests did not use the token up.
    await expectProblem(await f.exchange(token, { tenant: 'nobody' }), 401, 'audience_mismatch');
    expect((await f.exchange(token, { tenant: 'acme-corp' })).status).toBe(200);
  });

  it('exchange: a policy selector no name can hold is 400 naming policy (JSON and form)', async () => {
    const token = f.issuer.sign();
    for (const policy of [NUL, LONE_SURROGATE, BIDI_OVERRIDE]) {
      await expectProblem(await f.exchange(token, { policy }), 400, 'invalid_request', 'policy');
    }
    const res = await form('/v1/oidc/token', { ...EXCHANGE_FORM, subject_token: token, policy: NUL });
    await expectProblem(res, 400, 'invalid_request', 'policy');
    expect((await f.exchange(token, { policy: 'infra' })).status).toBe(200);
  });

  it('exchange form: bytes or percent escapes that are not UTF-8 are 400, never read as U+FFFD, and the token is unused', async () => {
    const token = f.issuer.sign();
    const fields = new URLSearchParams({ ...EXCHANGE_FORM, subject_token: token }).toString();
    const newest = async () =>
      ((await (await request('GET', '/v1/audit-events?limit=1')).json()) as { events: { id: string }[] })
        .events[0]?.id;
    const before = await newest();
    const raw = (body: Uint8Array | string) =>
      f.t.request('POST', '/v1/oidc/token', { body: body as unknown as string, headers: FORM });
    // Latin-1 "Straße" percent-encoded (%DF), half a UTF-8 sequence, a lone surrogate's UTF-8 form, a raw 0xFF.
    for (const body of [
      `${fields}&policy=Stra%DFe`,
      `${fields}&policy=Stra%C3`,
      `${fields}&policy=%ED%A0%80`,
      `${fields}&scope=harden-runner%3Aread%FF`,
      new Uint8Array([...new TextEncoder().encode(`${fields}&policy=Stra`), 0xdf, 0x65]),
    ]) {
      const problem = await expectProblem(await raw(body), 400, 'invalid_request');
      expect(problem.detail).toMatch(/UTF-8/);
      expect(JSON.stringify(problem)).not.toContain('\ufffd');
      // An OAuth client shows error_description, in ASCII: the example names its character, not a '?'.
      expect(problem.error_description).toContain('(<U+00DF> is %C3%9F)');
    }
    // Nothing reached the exchange: no event, and the token is still good. A `%` that escapes nothing stays itself.
    expect(await newest()).toBe(before);
    const literal = await raw(`${fields}&policy=100%25%&scope=harden-runner%3Aread`);
    expect(((await literal.json()) as Problem).detail).toContain('"100%%"');
    expect((await raw(`${fields}&policy=infra`)).status).toBe(200);
  });

  it('a query parameter whose percent escapes are not UTF-8 is 400 naming it, never read as the escape text', async () => {
    // A policy whose name is the text of an escape: a Latin-1 client's `?name=Stra%DFe` must not name it.
    await f.policy('Stra%DFe', { claims: { repository: 'acme/escapes' } });
    for (const [path, field] of [
      ['/v1/oidc/policies?name=Stra%DFe', 'name'],
      ['/v1/oidc/policies?name=Stra%C3', 'name'],
      ['/v1/oidc/policies?limit=5&name=%ED%A0%80', 'name'],
      ['/v1/oidc/config?policy=Stra%DFe', 'policy'],
    ] as const) {
      const problem = await expectProblem(await request('GET', path), 400, 'invalid_request', field);
      expect(problem.detail).toMatch(/UTF-8/);
    }
    // Its escaped name names it; a `%` that escapes nothing is itself, as in a form.
    const named = async (path: string) =>
      ((await (await request('GET', path)).json()) as { policies: { name: string }[] }).policies.map(
        (p) => p.name,
      );
    expect(await named('/v1/oidc/policies?name=Stra%25DFe')).toEqual(['Stra%DFe']);
    expect(await named('/v1/oidc/policies?name=Stra%C3%9Fe')).toEqual([]);
    expect(await named('/v1/oidc/policies?name=100%')).toEqual([]);
  });

  it('name selectors count characters as names do: a 100-character name outside the BMP can be selected', async () => {
    // 100 characters, 200 UTF-16 code units: a valid name, so every selector of it must be accepted.
    const name = '\u{1d49c}'.repeat(100);
    await f.policy(name, { claims: { repository: 'acme/astral' } });
    const token = f.issuer.sign({
      repository: 'acme/astral',
      job_workflow_ref: 'acme/astral/.github/workflows/ci.yml@refs/heads/main',
    });
    const exchanged = await f.exchange(token, { policy: name });
    expect(exchanged.status, await exchanged.clone().text()).toBe(200);
    expect(await exchanged.json()).toMatchObject({ policy: name });
    const config = await request('GET', `/v1/oidc/config?policy=${encodeURIComponent(name)}`);
    expect(config.status).toBe(200);
    const evaluate = await request('POST', '/v1/oidc/policies/evaluate', {
      claims: f.issuer.claims({ repository: 'acme/astral' }),
      policy: name,
    });
    expect(evaluate.status, await evaluate.clone().text()).toBe(200);
    // One more character is too long, as for a name.
    await expectProblem(
      await f.exchange(f.issuer.sign(), { policy: `${name}x` }),
      400,
      'invalid_request',
      'policy',
    );
  });

  it('exchange: NUL in permissions, scope or the token itself is a 4xx', async () => {
    const token = f.issuer.sign();
    await expectProblem(
      await f.exchange(token, { permissions: [NUL] }),
      400,
      'invalid_request',
      'permissions[0]',
    );
    const scoped = await form('/v1/oidc/token', { ...EXCHANGE_FORM, subject_token: token, scope: NUL });
    await expectProblem(scoped, 400, 'invalid_request', 'scope');
    await expectProblem(await f.exchange(`${token}\u0000`), 401, 'invalid_token');
    await expectProblem(await f.exchange(LONE_SURROGATE), 401, 'invalid_token');
  });

  it('policy dry run and workflow snippet: a policy name no name can hold is 400 naming policy', async () => {
    const claims = { repository: 'acme/infra', repository_owner: 'acme' };
    for (const policy of [NUL, LONE_SURROGATE]) {
      const res = await request('POST', '/v1/oidc/policies/evaluate', { claims, policy });
      await expectProblem(res, 400, 'invalid_request', 'policy');
    }
    await expectProblem(
      await request('GET', '/v1/oidc/config?policy=a%00b'),
      400,
      'invalid_request',
      'policy',
    );
    await expectProblem(await request('GET', '/v1/oidc/config?policy=nope'), 404, 'not_found');
  });

  it('audit events: a type or cursor with NUL or a lone surrogate is 400 naming it', async () => {
    for (const value of ['%00', 'a%00b', '%ED%A0%80']) {
      await expectProblem(
        await request('GET', `/v1/audit-events?type=${value}`),
        400,
        'invalid_request',
        'type',
      );
      await expectProblem(
        await request('GET', `/v1/audit-events?cursor=${value}`),
        400,
        'invalid_request',
        'cursor',
      );
    }
  });

  it('trust policy bodies: NUL in any text field is 422 naming it', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ name: NUL }, 'name'],
      [{ description: NUL }, 'description'],
      [{ issuer: NUL }, 'issuer'],
      [{ claims: { repository: NUL } }, 'claims.repository'],
      [{ claims: { repository: 'acme/infra', ref: `refs/heads/${NUL}` } }, 'claims.ref'],
      [{ claims: { repository: 'acme/infra', environment: NUL } }, 'claims.environment'],
    ];
    for (const [fields, field] of cases) {
      await expectProblem(
        await request('POST', '/v1/oidc/policies', policyBody(fields)),
        422,
        'invalid_policy',
        field,
      );
    }
  });

  it('a trust policy description with a lone surrogate is 422 saying so, not that it holds a control character', async () => {
    const body = await expectProblem(
      await request('POST', '/v1/oidc/policies', policyBody({ description: 'deploys \ud800 only' })),
      422,
      'invalid_policy',
      'description',
    );
    expect(body.errors?.[0]?.message).toBe(
      'description must not contain control characters (other than tab and line breaks) or unpaired surrogates',
    );
  });

  it('permissions of keys and minted tokens: NUL is 400 naming the entry', async () => {
    const res = await request('POST', '/v1/fine-grained-keys', keyBody({ permissions: [NUL] }));
    await expectProblem(res, 400, 'invalid_request', 'permissions[0]');
    await expectProblem(
      await request('POST', '/v1/tokens', { permissions: [NUL] }),
      400,
      'invalid_request',
      'permissions[0]',
    );
  });

  it('token introspection and revocation: a token with NUL or a lone surrogate is simply not active', async () => {
    for (const token of [NUL, LONE_SURROGATE]) {
      const introspected = await request('POST', '/v1/tokens/introspect', { token, token_type_hint: NUL });
      expect(introspected.status).toBe(200);
      expect(await introspected.json()).toEqual({ active: false });
      expect((await request('POST', '/v1/tokens/revoke', { token })).status).toBe(200);
    }
    const viaForm = await form('/v1/tokens/introspect', { token: NUL }, key);
    expect(await viaForm.json()).toEqual({ active: false });
    expect((await form('/v1/tokens/revoke', { token: NUL }, key)).status).toBe(200);
  });

  it('built-in key slots: a kind or slot with NUL is 400, as any unknown one is', async () => {
    await expectProblem(await request('POST', '/v1/api-keys/%00/primary/rotate'), 400, 'invalid_request');
    await expectProblem(await request('POST', '/v1/api-keys/tenant/%00/rotate'), 400, 'invalid_request');
  });
});

describe('a value over or under a limit is told the limit in words, on every route, never in the validator’s terms', () => {
  const VALIDATOR_WORDING = /Too (big|small)|Invalid (option|input)|expected (int|array to|string to)|[<>]=/;

  /** The message for `field`, which must be the only field named, and say no validator's jargon. */
  async function messageOf(res: Response, status: number, code: string, field: string): Promise<string> {
    const body = await expectProblem(res, status, code, field);
    expect(body.detail).not.toMatch(VALIDATOR_WORDING);
    return body.errors![0]!.message;
  }

  it('a permission list longer than 64 entries says how many it may hold, and that each id is listed once', async () => {
    const many = Array(65).fill('harden-runner:read');
    for (const [res, status, code] of [
      [
        await request('POST', '/v1/fine-grained-keys', keyBody({ permissions: many })),
        400,
        'invalid_request',
      ],
      [await request('POST', '/v1/tokens', { permissions: many }), 400, 'invalid_request'],
      [await request('POST', '/v1/oidc/policies', policyBody({ permissions: many })), 422, 'invalid_policy'],
      [
        await request('POST', '/v1/oidc/policies/evaluate', {
          claims: { repository: 'acme/infra' },
          permissions: many,
        }),
        400,
        'invalid_request',
      ],
      [
        await request('POST', '/v1/oidc/token', { oidc_token: 'x', permissions: many }, ''),
        400,
        'invalid_request',
      ],
    ] as const) {
      const message = await messageOf(res, status, code, 'permissions');
      expect(message).toContain('at most 64');
      expect(message).toContain('read-all');
    }
  });

  it('a permission entry longer than any id is an unknown permission, pointing at the catalogue', async () => {
    const res = await request('POST', '/v1/fine-grained-keys', keyBody({ permissions: ['x'.repeat(65)] }));
    const message = await messageOf(res, 400, 'invalid_request', 'permissions[0]');
    expect(message).toContain('unknown permission');
    expect(message).toContain('GET /v1/permissions');
  });

  it('an empty or overlong token, type hint or client id says empty, or the most characters it may have', async () => {
    expect(
      await messageOf(
        await request('POST', '/v1/oidc/token', { oidc_token: '' }, ''),
        400,
        'invalid_request',
        'oidc_token',
      ),
    ).toMatch(/empty/);
    expect(
      await messageOf(
        await request('POST', '/v1/tokens/introspect', { token: '' }),
        400,
        'invalid_request',
        'token',
      ),
    ).toMatch(/empty/);
    expect(
      await messageOf(
        await request('POST', '/v1/tokens/introspect', { token: 'x'.repeat(16_385) }),
        400,
        'invalid_request',
        'token',
      ),
    ).toContain('at most 16384 characters');
    expect(
      await messageOf(
        await request('POST', '/v1/tokens/revoke', { token: 'x', token_type_hint: 'h'.repeat(65) }),
        400,
        'invalid_request',
        'token_type_hint',
      ),
    ).toContain('at most 64 characters');
    const exchange = { ...EXCHANGE_FORM, subject_token: 'x' };
    expect(
      await messageOf(
        await form('/v1/oidc/token', { ...exchange, client_id: 'c'.repeat(256) }),
        400,
        'invalid_request',
        'client_id',
      ),
    ).toContain('at most 255 characters');
  });

  it('a value that is none of those a field takes lists them', async () => {
    expect(
      await messageOf(
        await form('/v1/oidc/token', { ...EXCHANGE_FORM, subject_token: 'x', subject_token_type: 'jwt' }),
        400,
        'invalid_request',
        'subject_token_type',
      ),
    ).toBe('must be one of urn:ietf:params:oauth:token-type:id_token, urn:ietf:params:oauth:token-type:jwt');
    expect(
      await messageOf(
        await request('POST', '/v1/api-keys/tenants/primary/rotate'),
        400,
        'invalid_request',
        'kind',
      ),
    ).toBe('must be one of tenant, tenant-read-only, secure-registry');
    expect(
      await messageOf(
        await request('POST', '/v1/api-keys/tenant/first/rotate'),
        400,
        'invalid_request',
        'slot',
      ),
    ).toBe('must be one of primary, secondary');
  });
});
