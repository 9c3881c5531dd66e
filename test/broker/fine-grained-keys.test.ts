// Fine-grained keys: validation that names the field and writes nothing, shown-once secrets, revocation, expiry.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { generateKey } from '../../broker/core/keys.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { createTestDatabase } from '../support/database.js';

let t: TestBroker;
let key: string;
const DAY = 86_400_000;

let tenants = 0;

// One broker and database per file; every test gets a tenant of its own.
beforeAll(async () => {
  t = await startTestBroker();
});
beforeEach(async () => {
  key = (await t.createTenant(`acme-${++tenants}`)).key;
});
afterAll(() => t.close());

const create = (json: unknown, k = key) => t.request('POST', '/v1/fine-grained-keys', { key: k, json });
const valid = { name: 'deploy', expiration: '30d', permissions: ['harden-runner:read'] };

/** A key's `last_used_at` once it is no longer `from`: its request does not wait for the use to be recorded. */
async function lastUsed(on: TestBroker, by: string, id: string, from: string | null): Promise<string | null> {
  let value: string | null = from;
  await vi.waitFor(async () => {
    const res = await on.request('GET', `/v1/fine-grained-keys/${id}`, { key: by });
    value = ((await res.json()) as { last_used_at: string | null }).last_used_at;
    expect(value).not.toBe(from);
  });
  return value;
}

async function keyCount(): Promise<number> {
  const res = await t.request('GET', '/v1/fine-grained-keys', { key });
  return ((await res.json()) as { keys: unknown[] }).keys.length;
}

describe('bad input gets a 4xx problem naming the field, and writes nothing', () => {
  const cases: [string, unknown, string][] = [
    ['missing name', { expiration: '7d', permissions: ['audit-log:read'] }, 'name'],
    ['empty name', { ...valid, name: '' }, 'name'],
    ['name over 100 characters', { ...valid, name: 'x'.repeat(101) }, 'name'],
    ['name with surrounding spaces', { ...valid, name: ' deploy ' }, 'name'],
    [
      'unknown permission',
      { ...valid, permissions: ['audit-log:read', 'harden-runner:admin'] },
      'permissions[1]',
    ],
    ['empty permissions', { ...valid, permissions: [] }, 'permissions'],
    ['missing permissions', { name: 'x', expiration: '7d' }, 'permissions'],
    [
      'expires_in_days 0',
      { name: 'x', expires_in_days: 0, permissions: ['audit-log:read'] },
      'expires_in_days',
    ],
    [
      'expires_in_days 366',
      { name: 'x', expires_in_days: 366, permissions: ['audit-log:read'] },
      'expires_in_days',
    ],
    [
      'expires_in_days 1.5',
      { name: 'x', expires_in_days: 1.5, permissions: ['audit-log:read'] },
      'expires_in_days',
    ],
    [
      'expires_in_days as a string',
      { name: 'x', expires_in_days: '30', permissions: ['audit-log:read'] },
      'expires_in_days',
    ],
    ['both expiration and expires_in_days', { ...valid, expires_in_days: 30 }, 'expires_in_days'],
    ['neither expiration nor expires_in_days', { name: 'x', permissions: ['audit-log:read'] }, 'expiration'],
    ['unknown expiration', { ...valid, expiration: '2w' }, 'expiration'],
    ['name as a number', { ...valid, name: 42 }, 'name'],
    ['permissions as a string', { ...valid, permissions: 'harden-runner:read' }, 'permissions'],
    ['unknown field', { ...valid, scopes: ['x'] }, 'scopes'],
    ['body is an array', [valid], 'body'],
  ];
  it.each(cases)('%s', async (_label, body, field) => {
    const res = await create(body);
    expect(res.status).toBe(400);
    expect(res.headers.get('Content-Type')).toBe('application/problem+json');
    const problem = (await res.json()) as { code: string; detail: string; errors: { field: string }[] };
    expect(problem.code).toBe('invalid_request');
    expect(problem.errors.map((e) => e.field)).toContain(field);
    expect(problem.detail).toContain(field);
    expect(await keyCount()).toBe(0);
  });

  it('an empty object is told every required field at once, the lifetime among them', async () => {
    const res = await create({});
    expect(res.status).toBe(400);
    const problem = (await res.json()) as { errors: { field: string; message: string }[] };
    expect(problem.errors).toEqual([
      { field: 'name', message: 'required' },
      { field: 'permissions', message: 'required' },
      { field: 'expiration', message: expect.stringContaining('expires_in_days') },
    ]);
  });

  it('a lifetime out of bounds, or of the wrong type, is told the bounds, once', async () => {
    for (const expires_in_days of [0, -1, 366, 1.5, 1e308, '30', true, null]) {
      const res = await create({ name: 'x', expires_in_days, permissions: ['audit-log:read'] });
      expect(res.status).toBe(400);
      const problem = (await res.json()) as { errors: { field: string; message: string }[] };
      expect(problem.errors).toEqual([
        {
          field: 'expires_in_days',
          message: expect.stringContaining('a whole number of days from 1 to 365'),
        },
      ]);
    }
    for (const expiration of ['0d', '30D', '365d', '30', 30, null]) {
      const res = await create({ name: 'x', expiration, permissions: ['audit-log:read'] });
      const problem = (await res.json()) as { errors: { field: string; message: string }[] };
      expect(problem.errors).toEqual([
        {
          field: 'expiration',
          message: expect.stringMatching(/7d, 30d, 90d or 1y.*expires_in_days/),
        },
      ]);
    }
    const empty = await create({ ...valid, permissions: [] });
    expect(await empty.json()).toMatchObject({
      errors: [{ field: 'permissions', message: expect.stringContaining('at least one permission') }],
    });
    expect(await keyCount()).toBe(0);
  });

  it('every permission that names nothing is told, with the id it probably stands for', async () => {
    const res = await create({
      ...valid,
      permissions: [
        'Harden-Runner:Read',
        'audit-log:read',
        'audit-log:write',
        'secure-registry',
        'nope:read',
      ],
    });
    expect(res.status).toBe(400);
    const problem = (await res.json()) as { errors: { field: string; message: string }[] };
    expect(problem.errors).toEqual([
      { field: 'permissions[0]', message: expect.stringContaining('did you mean "harden-runner:read"?') },
      {
        field: 'permissions[2]',
        message: expect.stringContaining('"audit-log" is read only: did you mean "audit-log:read"?'),
      },
      {
        field: 'permissions[3]',
        message: expect.stringContaining('did you mean "secure-registry:read" or "secure-registry:write"?'),
      },
      {
        field: 'permissions[4]',
        message: expect.stringContaining('GET /v1/permissions lists the valid ids'),
      },
    ]);
    expect(problem.errors[3]!.message).not.toContain('did you mean');
    // The mint checks a grant the same way.
    const mint = await t.request('POST', '/v1/tokens', { key, json: { permissions: ['READ-ALL', 'x'] } });
    expect(((await mint.json()) as { errors: unknown[] }).errors).toEqual([
      { field: 'permissions[0]', message: expect.stringContaining('did you mean "read-all"?') },
      { field: 'permissions[1]', message: expect.stringContaining('unknown permission "x"') },
    ]);
    expect(await keyCount()).toBe(0);
  });

  it('a misspelt permission is told with the one id it is nearest, and one far from every id with none', async () => {
    const res = await create({
      ...valid,
      permissions: ['harden-runer:read', 'read-al', 'api-key:write', 'hardn-runr:read'],
    });
    expect(res.status).toBe(400);
    const problem = (await res.json()) as { errors: { field: string; message: string }[] };
    expect(problem.errors).toEqual([
      { field: 'permissions[0]', message: expect.stringContaining('did you mean "harden-runner:read"?') },
      { field: 'permissions[1]', message: expect.stringContaining('did you mean "read-all"?') },
      { field: 'permissions[2]', message: expect.stringContaining('did you mean "api-keys:write"?') },
      {
        field: 'permissions[3]',
        message: expect.stringContaining('GET /v1/permissions lists the valid ids'),
      },
    ]);
    expect(problem.errors[3]!.message).not.toContain('did you mean');
    // A category misspelt alone is offered its ids, as the category written right is.
    const mint = await t.request('POST', '/v1/tokens', { key, json: { permissions: ['secure-registy'] } });
    expect(((await mint.json()) as { errors: unknown[] }).errors).toEqual([
      {
        field: 'permissions[0]',
        message: expect.stringContaining('did you mean "secure-registry:read" or "secure-registry:write"?'),
      },
    ]);
    expect(await keyCount()).toBe(0);
  });

  it('malformed JSON', async () => {
    const res = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      body: '{"name": "x",',
      headers: { 'Content-Type': 'application/json' },
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      detail: expect.stringContaining('not valid JSON'),
    });
    expect(await keyCount()).toBe(0);
  });

  it('a body over the size limit', async () => {
    const res = await create({ ...valid, name: 'x'.repeat(70_000) });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ code: 'payload_too_large' });
    expect(await keyCount()).toBe(0);
  });

  it('a body that is not JSON', async () => {
    const res = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      body: 'name=x',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(res.status).toBe(415);
    expect(await res.json()).toMatchObject({ code: 'unsupported_media_type' });
  });

  it('a key with a bad checksum is refused before any lookup, naming the problem', async () => {
    const good = generateKey('fine-grained');
    const last = good.at(-1) === 'a' ? 'b' : 'a';
    const res = await t.request('GET', '/v1/whoami', { key: `${good.slice(0, -1)}${last}` });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({
      code: 'unauthenticated',
      detail: expect.stringContaining('checksum'),
    });
  });

  it('an unauthenticated request is refused before its body is looked at', async () => {
    const res = await t.request('POST', '/v1/fine-grained-keys', { json: { nonsense: true } });
    expect(res.status).toBe(401);
    expect(res.headers.get('WWW-Authenticate')).toBe('Bearer realm="oidc-auth"');
    expect(await res.json()).toMatchObject({ code: 'unauthenticated' });
  });
});

describe('lifecycle', () => {
  it('creates a key shown once; get and list never show it again', async () => {
    const res = await create(valid);
    expect(res.status).toBe(201);
    expect(res.headers.get('Cache-Control')).toBe('no-store');
    const created = (await res.json()) as {
      id: string;
      key: string;
      hint: string;
      expires_at: string;
      last_used_at: null;
    };
    expect(created.key).toMatch(/^ssf_[0-9A-Za-z]{38}$/);
    expect(created.hint).toBe(`ssf_…${created.key.slice(-4)}`);
    expect(Date.parse(created.expires_at)).toBe(t.clock.now + 30 * DAY);
    expect(res.headers.get('Location')).toBe(`/v1/fine-grained-keys/${created.id}`);

    t.clock.now += 1000;
    expect((await t.request('GET', '/v1/whoami', { key: created.key })).status).toBe(200);
    const got = await t.request('GET', `/v1/fine-grained-keys/${created.id}`, { key });
    const gotText = await got.text();
    expect(gotText).not.toContain(created.key);
    expect(JSON.parse(gotText)).toMatchObject({ name: 'deploy' });
    expect(await lastUsed(t, key, created.id, null)).toBe(new Date(t.clock.now).toISOString());
    const all = [await (await t.request('GET', '/v1/fine-grained-keys', { key })).text(), ...t.logs];
    for (const text of all) expect(text).not.toContain(created.key);
    expect(readFileSync(t.db.file ?? '/dev/null').includes(created.key)).toBe(false);
  });

  it('last_used_at is kept to the minute: a use within a minute of the one recorded is not written again', async () => {
    const db = await createTestDatabase();
    const clock = { now: Date.now() };
    let b = await startTestBroker({ db, clock });
    try {
      const { key: tenantKey } = await b.createTenant('acme');
      const created = (await (
        await b.request('POST', '/v1/fine-grained-keys', { key: tenantKey, json: valid })
      ).json()) as { id: string; key: string };
      const use = async (ms: number) => {
        clock.now += ms;
        expect((await b.request('GET', '/v1/whoami', { key: created.key })).status).toBe(200);
        return new Date(clock.now).toISOString();
      };
      const lastUsedOnceChanged = (from: string | null) => lastUsed(b, tenantKey, created.id, from);
      const first = await use(1_000);
      expect(await lastUsedOnceChanged(null)).toBe(first);
      await use(59_000);
      // Stopping the broker writes whatever it had still to write: the use 59 s after the first was not.
      await b.broker.close();
      b = await startTestBroker({ db, clock });
      const got = await b.request('GET', `/v1/fine-grained-keys/${created.id}`, { key: tenantKey });
      expect(((await got.json()) as { last_used_at: string }).last_used_at).toBe(first);
      // A minute after the one recorded, a use is written again.
      const third = await use(1_000);
      expect(await lastUsedOnceChanged(first)).toBe(third);
      // So is one after the clock was stepped back.
      const stepped = await use(-3_600_000);
      expect(await lastUsedOnceChanged(third)).toBe(stepped);
    } finally {
      await b.broker.close();
      await db.drop();
    }
  });

  it('a use that cannot be recorded is logged with the request_id of the request that used the key', async () => {
    const created = (await (await create(valid)).json()) as { id: string; key: string };
    const keys = t.broker.store.keys;
    const touch = keys.touchFineGrained;
    keys.touchFineGrained = () => Promise.reject(new Error('disk I/O error'));
    try {
      const res = await t.request('GET', '/v1/whoami', { key: created.key });
      expect(res.status).toBe(200);
      const requestId = res.headers.get('X-Request-Id');
      let line: Record<string, unknown> | undefined;
      await vi.waitFor(() => {
        line = t.logs
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find((l) => l.msg === "a fine-grained key's use could not be recorded" && l.key_id === created.id);
        expect(line).toBeDefined();
      });
      expect(line).toMatchObject({ level: 'warn', request_id: requestId });
    } finally {
      keys.touchFineGrained = touch;
    }
  });

  it('a query parameter is refused by name, not ignored: a filter that filters nothing lists, or revokes, every key', async () => {
    const created = (await (await create(valid)).json()) as { id: string; key: string };
    await create({ ...valid, name: 'other' });
    const refused = [
      await t.request('GET', '/v1/fine-grained-keys?name=other', { key }),
      await t.request('GET', `/v1/fine-grained-keys/${created.id}?fields=hint`, { key }),
      await t.request('DELETE', `/v1/fine-grained-keys/${created.id}?dry_run=true`, { key }),
      await t.request('POST', '/v1/fine-grained-keys?dry_run=true', { key, json: { ...valid, name: 'dry' } }),
    ];
    for (const [res, field, takes] of refused.map(
      (r, i) => [r, ['name', 'fields', 'dry_run', 'dry_run'][i], i === 0 ? 'limit, cursor' : 'none'] as const,
    )) {
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [{ field, message: `unknown query parameter; this operation takes ${takes}` }],
      });
    }
    expect((await t.request('GET', '/v1/whoami', { key: created.key })).status).toBe(200);
    expect(await keyCount()).toBe(2);
  });

  it('revocation takes effect on the next request', async () => {
    const created = (await (await create(valid)).json()) as { id: string; key: string };
    expect((await t.request('GET', '/v1/whoami', { key: created.key })).status).toBe(200);
    const del = await t.request('DELETE', `/v1/fine-grained-keys/${created.id}`, { key });
    expect(del.status).toBe(204);
    const after = await t.request('GET', '/v1/whoami', { key: created.key });
    expect(after.status).toBe(401);
    expect((await t.request('GET', `/v1/fine-grained-keys/${created.id}`, { key })).status).toBe(404);
    expect((await t.request('DELETE', `/v1/fine-grained-keys/${created.id}`, { key })).status).toBe(404);
    const { events } = (await (
      await t.request('GET', '/v1/audit-events?type=fine_grained_key.revoked', { key })
    ).json()) as {
      events: { target: { id: string; name: string } }[];
    };
    expect(events).toHaveLength(1);
    expect(events[0]?.target).toEqual({ type: 'fine_grained_key', id: created.id, name: 'deploy' });
  });

  it('an expired key authenticates nothing', async () => {
    const created = (await (
      await create({ ...valid, expiration: undefined, expires_in_days: 1 })
    ).json()) as { id: string; key: string };
    t.clock.now += DAY - 1;
    expect((await t.request('GET', '/v1/whoami', { key: created.key })).status).toBe(200);
    t.clock.now += 1;
    const res = await t.request('GET', '/v1/whoami', { key: created.key });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ detail: expect.stringContaining('expired') });
    const listed = (await (
      await t.request('GET', `/v1/fine-grained-keys/${created.id}`, { key })
    ).json()) as { expired: boolean };
    expect(listed.expired).toBe(true);
  });

  it.each(['PUT', 'PATCH'])('%s answers 405: keys are immutable', async (method) => {
    const created = (await (await create(valid)).json()) as { id: string };
    const res = await t.request(method, `/v1/fine-grained-keys/${created.id}`, {
      key,
      json: { name: 'renamed' },
    });
    expect(res.status).toBe(405);
    expect(res.headers.get('Allow')).toBe('DELETE, GET, HEAD');
    expect(await res.json()).toMatchObject({
      code: 'method_not_allowed',
      detail: expect.stringContaining('immutable'),
    });
  });

  it('other unsupported methods answer 405 with Allow', async () => {
    const res = await t.request('DELETE', '/v1/fine-grained-keys', { key });
    expect(res.status).toBe(405);
    expect(res.headers.get('Allow')).toBe('GET, HEAD, POST');
  });

  it.each([
    ['GET', '/v1/fine-grained-keys/'],
    ['GET', '/v1/whoami/'],
    ['POST', '/v1/api-keys/tenant/secondary/rotate/'],
  ])(
    '%s %s (a trailing slash) is no route: 404, not a 405 that allows the same method',
    async (method, path) => {
      const res = await t.request(method, path, { key });
      expect(res.status).toBe(404);
      expect(res.headers.get('Allow')).toBeNull();
    },
  );
});

describe('who created a key', () => {
  it('every view names the creating credential, as the audit log does, so a leaked key’s children can be found', async () => {
    const admin = (await (
      await create({ name: 'key-admin', expiration: '7d', permissions: ['api-keys:write'] })
    ).json()) as { id: string; key: string; created_by: string };
    expect(admin.created_by).toBe('tenant/primary');
    t.clock.now += 1000;
    const child = (await (
      await create({ name: 'child', expiration: '1y', permissions: ['api-keys:read'] }, admin.key)
    ).json()) as { id: string; created_by: string };
    expect(child.created_by).toBe(admin.id);

    const got = (await (await t.request('GET', `/v1/fine-grained-keys/${child.id}`, { key })).json()) as {
      created_by: string;
    };
    expect(got.created_by).toBe(admin.id);
    const { keys } = (await (await t.request('GET', '/v1/fine-grained-keys', { key })).json()) as {
      keys: { id: string; created_by: string }[];
    };
    expect(keys.map((k) => [k.id, k.created_by])).toEqual([
      [child.id, admin.id],
      [admin.id, 'tenant/primary'],
    ]);
    const { events } = (await (
      await t.request('GET', '/v1/audit-events?type=fine_grained_key.created', { key })
    ).json()) as { events: { actor: { id: string }; target: { id: string } }[] };
    expect(events.find((e) => e.target.id === child.id)?.actor.id).toBe(child.created_by);
  });
});

describe('behind a path prefix (BROKER_PUBLIC_URL=https://host/broker, the proxy strips /broker)', () => {
  it("the created key's Location, resolved as a client resolves it, is where the key is read", async () => {
    const prefixed = await startTestBroker({ env: { BROKER_PUBLIC_URL: 'https://host/broker' } });
    try {
      const { key: tenant } = await prefixed.createTenant('acme');
      const res = await prefixed.request('POST', '/v1/fine-grained-keys', { key: tenant, json: valid });
      expect(res.status).toBe(201);
      const { id } = (await res.json()) as { id: string };
      // RFC 9110 §10.2.2: a relative Location is resolved against the URL the client asked.
      const location = new URL(res.headers.get('Location')!, 'https://host/broker/v1/fine-grained-keys');
      expect(location.href).toBe(`https://host/broker/v1/fine-grained-keys/${id}`);
    } finally {
      await prefixed.close();
    }
  });
});
