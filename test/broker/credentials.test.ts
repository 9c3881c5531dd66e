// Each credential kind's effective permissions, rotation and escalation — through real HTTP requests.
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ALL_PERMISSIONS } from '../../broker/core/permissions.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { createTestDatabase } from '../support/database.js';
import { deferred } from '../support/deferred.js';

let t: TestBroker;
let tenantKey: string;

let tenants = 0;

// One broker and database per file; every test gets a tenant of its own.
beforeAll(async () => {
  t = await startTestBroker();
});
beforeEach(async () => {
  tenantKey = (await t.createTenant(`acme-${++tenants}`)).key;
});
afterAll(() => t.close());

async function rotate(kind: string, slot: string, key = tenantKey): Promise<string> {
  const res = await t.request('POST', `/v1/api-keys/${kind}/${slot}/rotate`, { key });
  expect(res.status).toBe(200);
  return ((await res.json()) as { key: string }).key;
}

async function fineGrained(permissions: string[], key = tenantKey): Promise<string> {
  const res = await t.request('POST', '/v1/fine-grained-keys', {
    key,
    json: { name: 'k', expiration: '7d', permissions },
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { key: string }).key;
}

async function whoami(key: string) {
  const res = await t.request('GET', '/v1/whoami', { key });
  expect(res.status).toBe(200);
  return (await res.json()) as {
    credential: { kind: string; id: string; slot: string | null };
    permissions: string[];
  };
}

describe('effective permissions', () => {
  it('Tenant API key: every permission', async () => {
    const me = await whoami(tenantKey);
    expect(me.credential).toMatchObject({ kind: 'tenant', slot: 'primary' });
    expect(me.permissions).toEqual([...ALL_PERMISSIONS]);
  });

  it('Tenant read-only key: every :read, so it can list keys but not create them', async () => {
    const key = await rotate('tenant-read-only', 'primary');
    expect(key.startsWith('ssr_')).toBe(true);
    const me = await whoami(key);
    expect(me.permissions).toEqual(ALL_PERMISSIONS.filter((p) => p.endsWith(':read')));
    expect((await t.request('GET', '/v1/api-keys', { key })).status).toBe(200);
    const denied = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      json: { name: 'x', expiration: '7d', permissions: ['audit-log:read'] },
    });
    expect(denied.status).toBe(403);
    expect(await denied.json()).toMatchObject({ code: 'forbidden', missing_permission: 'api-keys:write' });
  });

  it('Secure Registry key: secure-registry read and write only', async () => {
    const key = await rotate('secure-registry', 'secondary');
    expect(key.startsWith('ssg_')).toBe(true);
    expect((await whoami(key)).permissions).toEqual(['secure-registry:read', 'secure-registry:write']);
    const denied = await t.request('GET', '/v1/api-keys', { key });
    expect(denied.status).toBe(403);
    expect((await denied.json()) as { detail: string }).toMatchObject({
      detail: expect.stringContaining('api-keys:read'),
    });
  });

  it('fine-grained key: exactly its grant, write implying read', async () => {
    const key = await fineGrained(['harden-runner:write', 'api-keys:read']);
    expect((await whoami(key)).permissions).toEqual([
      'harden-runner:read',
      'harden-runner:write',
      'api-keys:read',
    ]);
    expect((await t.request('GET', '/v1/fine-grained-keys', { key })).status).toBe(200);
    expect((await t.request('GET', '/v1/audit-events', { key })).status).toBe(403);
  });

  it('shortcuts expand to explicit ids at creation', async () => {
    const res = await t.request('POST', '/v1/fine-grained-keys', {
      key: tenantKey,
      json: { name: 'reader', expires_in_days: 3, permissions: ['read-all'] },
    });
    const body = (await res.json()) as { permissions: string[] };
    expect(body.permissions).toEqual(ALL_PERMISSIONS.filter((p) => p.endsWith(':read')));
  });

  it('disabled categories can be neither used nor granted', async () => {
    const { key } = await t.createTenant(`limited-${++tenants}`, {
      disable: ['harden-runner', 'secure-registry'],
    });
    const me = await whoami(key);
    expect(me.permissions.some((p) => p.startsWith('harden-runner') || p.startsWith('secure-registry'))).toBe(
      false,
    );
    const res = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      json: { name: 'x', expiration: '30d', permissions: ['audit-log:read', 'harden-runner:read'] },
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      errors: [{ field: 'permissions[1]', message: expect.stringContaining('disabled') }],
    });
    // A mistyped id is not answered with one of a disabled category, which would only be refused next.
    const typo = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      json: {
        name: 'x',
        expiration: '30d',
        permissions: ['Harden-Runner:Read', 'Audit-Log:Read', 'harden-runer:read', 'audit-logs:read'],
      },
    });
    const { errors } = (await typo.json()) as { errors: { field: string; message: string }[] };
    expect(errors.map((e) => e.field)).toEqual([
      'permissions[0]',
      'permissions[1]',
      'permissions[2]',
      'permissions[3]',
    ]);
    expect(errors[0]!.message).not.toContain('did you mean');
    expect(errors[1]!.message).toContain('did you mean "audit-log:read"?');
    expect(errors[2]!.message).not.toContain('did you mean');
    expect(errors[3]!.message).toContain('did you mean "audit-log:read"?');
    const catalogue = (await (await t.request('GET', '/v1/permissions', { key })).json()) as {
      categories: { id: string; enabled: boolean }[];
      shortcuts: Record<string, string[]>;
    };
    expect(catalogue.categories.find((c) => c.id === 'harden-runner')?.enabled).toBe(false);
    expect(catalogue.shortcuts['read-write-all']).not.toContain('harden-runner:write');

    // A Secure Registry key of such a tenant holds nothing: it mints no token, by default or by request.
    const registry = await rotate('secure-registry', 'primary', key);
    for (const json of [{}, { permissions: [] }]) {
      const minted = await t.request('POST', '/v1/tokens', { key: registry, json });
      expect(minted.status).toBe(400);
      expect(await minted.json()).toMatchObject({
        code: 'invalid_request',
        errors: [{ field: 'permissions' }],
      });
    }
  });
});

describe('GET /v1/whoami and GET /v1/permissions', () => {
  it('refuse a query parameter by name, as every other admin route does: a filter is not silently ignored', async () => {
    for (const [path, field] of [
      ['/v1/whoami?tenant=other', 'tenant'],
      ['/v1/permissions?category=audit-log', 'category'],
      ['/v1/permissions?enabled=true&x=1', 'enabled'],
    ] as const) {
      const res = await t.request('GET', path, { key: tenantKey });
      expect(res.status, path).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: expect.arrayContaining([
          { field, message: 'unknown query parameter; this operation takes none' },
        ]),
      });
    }
    expect((await t.request('GET', '/v1/whoami', { key: tenantKey })).status).toBe(200);
    expect((await t.request('GET', '/v1/permissions', { key: tenantKey })).status).toBe(200);
  });
});

describe('no escalation', () => {
  it('a harden-runner:read key cannot create a key with harden-runner:write, but can delegate what it holds', async () => {
    const key = await fineGrained(['harden-runner:read', 'api-keys:write']);
    const res = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      json: { name: 'more', expiration: '7d', permissions: ['harden-runner:write'] },
    });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({
      code: 'permission_escalation',
      missing: ['harden-runner:write'],
    });
    expect(
      (await t.request('GET', '/v1/fine-grained-keys', { key: tenantKey }).then((r) => r.json())) as object,
    ).toMatchObject({
      keys: [{ permissions: ['harden-runner:read', 'api-keys:write'] }],
    });
    const ok = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      json: { name: 'same', expiration: '7d', permissions: ['harden-runner:read'] },
    });
    expect(ok.status).toBe(201);
  });

  it('read-write-all from a limited key is refused rather than silently narrowed', async () => {
    const key = await fineGrained(['api-keys:write']);
    const res = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      json: { name: 'all', expiration: '7d', permissions: ['read-write-all'] },
    });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ code: 'permission_escalation' });
  });
});

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `key` with one character of its random part changed and its CRC32 checksum made right again: well-formed. */
function neighbourOf(key: string, at: number): string {
  const random = key.slice(4, 36);
  const changed = `${random.slice(0, at)}${random[at] === 'A' ? 'B' : 'A'}${random.slice(at + 1)}`;
  let n = crc32(changed);
  let checksum = '';
  for (let i = 0; i < 6; i++) {
    checksum = BASE62[n % 62] + checksum;
    n = Math.floor(n / 62);
  }
  return `${key.slice(0, 4)}${changed}${checksum}`;
}

describe('a key is matched whole', () => {
  it('a well-formed key one character away from a real one, at either end of its random part, authenticates nothing', async () => {
    const keys = [tenantKey, await rotate('tenant-read-only', 'primary'), await fineGrained(['read-all'])];
    for (const key of keys) {
      for (const at of [0, 31]) {
        const neighbour = neighbourOf(key, at);
        const res = await t.request('GET', '/v1/whoami', { key: neighbour });
        expect(res.status, `${key.slice(0, 4)} changed at ${at}`).toBe(401);
        // Refused by the lookup, not by its format: the neighbour is a well-formed key that was never issued.
        expect(await res.json()).toMatchObject({
          code: 'unauthenticated',
          detail: expect.stringMatching(/^unknown or (rotated|revoked) API key$/),
        });
      }
      expect((await t.request('GET', '/v1/whoami', { key })).status).toBe(200);
    }
  });
});

describe('rotation', () => {
  it('the rotated slot stops working at once, the new key works, the other slot is unaffected', async () => {
    const secondary = await rotate('tenant', 'secondary');
    const newPrimary = await rotate('tenant', 'primary', secondary);
    const old = await t.request('GET', '/v1/whoami', { key: tenantKey });
    expect(old.status).toBe(401);
    expect(old.headers.get('WWW-Authenticate')).toMatch(/^Bearer /);
    expect((await whoami(newPrimary)).credential).toMatchObject({ kind: 'tenant', slot: 'primary' });
    expect((await whoami(secondary)).credential).toMatchObject({ kind: 'tenant', slot: 'secondary' });
  });

  it('a query parameter is refused by name, not ignored: ?dry_run=true rotates nothing', async () => {
    const secondary = await rotate('tenant', 'secondary');
    for (const [method, path, field] of [
      ['POST', '/v1/api-keys/tenant/secondary/rotate?dry_run=true', 'dry_run'],
      ['GET', '/v1/api-keys?kind=tenant', 'kind'],
    ] as const) {
      const res = await t.request(method, path, { key: tenantKey });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [{ field, message: 'unknown query parameter; this operation takes none' }],
      });
    }
    expect((await whoami(secondary)).credential).toMatchObject({ kind: 'tenant', slot: 'secondary' });
  });

  it('lists the six slots with hints and rotation times, never a secret', async () => {
    t.clock.now += 60_000;
    const key = await rotate('secure-registry', 'primary');
    const res = await t.request('GET', '/v1/api-keys', { key: tenantKey });
    const text = await res.text();
    expect(text).not.toContain(key);
    expect(text).not.toContain(tenantKey);
    const { keys } = JSON.parse(text) as {
      keys: { kind: string; slot: string; hint: string | null; last_rotated_at: string | null }[];
    };
    expect(keys).toHaveLength(6);
    expect(keys.find((k) => k.kind === 'secure-registry' && k.slot === 'primary')).toEqual({
      kind: 'secure-registry',
      slot: 'primary',
      hint: `ssg_…${key.slice(-4)}`,
      last_rotated_at: new Date(t.clock.now).toISOString(),
      last_used_at: null,
    });
    expect(keys.find((k) => k.kind === 'tenant-read-only' && k.slot === 'secondary')?.hint).toBeNull();
  });

  it('only the Tenant API key may rotate; the refusal is audited', async () => {
    const key = await fineGrained(['read-write-all']);
    const res = await t.request('POST', '/v1/api-keys/tenant-read-only/primary/rotate', { key });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({
      code: 'forbidden',
      detail: expect.stringContaining('Tenant API key'),
      required_credential: 'tenant',
    });
    const denied = await t.request('GET', '/v1/audit-events?type=permission.denied&limit=1', {
      key: tenantKey,
    });
    expect(((await denied.json()) as { events: unknown[] }).events[0]).toMatchObject({
      outcome: 'denied',
      actor: { kind: 'fine-grained' },
      details: {
        required_credential: 'tenant',
        method: 'POST',
        route: '/v1/api-keys/:kind/:slot/rotate',
        request_id: res.headers.get('X-Request-Id'),
      },
    });
    // A read-only or Secure Registry key lacks api-keys:write too, but that is not what to change.
    for (const kind of ['tenant-read-only', 'secure-registry'] as const) {
      const other = await rotate(kind, 'secondary');
      const refused = await t.request('POST', `/v1/api-keys/${kind}/secondary/rotate`, { key: other });
      expect(refused.status).toBe(403);
      expect(await refused.json()).toMatchObject({ required_credential: 'tenant' });
    }
    const unknownSlot = await t.request('POST', '/v1/api-keys/tenant/tertiary/rotate', { key: tenantKey });
    expect(unknownSlot.status).toBe(400);
  });

  it('records rotations and permission denials in the audit log without secrets', async () => {
    const rotated = await rotate('tenant-read-only', 'primary');
    await t.request('POST', '/v1/api-keys/tenant/primary/rotate', { key: rotated });
    const res = await t.request('GET', '/v1/audit-events', { key: tenantKey });
    const text = await res.text();
    expect(text).not.toContain(rotated);
    const { events } = JSON.parse(text) as {
      events: { type: string; outcome: string; actor: object; target: object | null; details: object }[];
    };
    expect(events[0]).toMatchObject({
      type: 'permission.denied',
      outcome: 'denied',
      actor: { kind: 'tenant-read-only', id: 'tenant-read-only/primary' },
      details: { required_credential: 'tenant' },
    });
    expect(events[1]).toMatchObject({
      type: 'api_key.rotated',
      actor: { kind: 'tenant', id: 'tenant/primary' },
      target: { type: 'api_key', id: 'tenant-read-only/primary' },
    });
  });
});

describe("a slot's last_used_at, for telling which slot is still in use before rotating it", () => {
  type Listed = { kind: string; slot: string; hint: string | null; last_used_at: string | null };
  const slotsOf = async (on: TestBroker, key: string) => {
    const res = await on.request('GET', '/v1/api-keys', { key });
    expect(res.status).toBe(200);
    return ((await res.json()) as { keys: Listed[] }).keys;
  };
  /** A slot's `last_used_at` once it is no longer `from`: the request that used the key does not wait for it. */
  async function slotLastUsed(on: TestBroker, by: string, id: string, from: string | null) {
    let value: string | null = from;
    await vi.waitFor(async () => {
      value = (await slotsOf(on, by)).find((s) => `${s.kind}/${s.slot}` === id)!.last_used_at;
      expect(value).not.toBe(from);
    });
    return value;
  }

  it('shows the slot a key was used through at the time of that use, and null for the slots not used', async () => {
    const readOnly = await rotate('tenant-read-only', 'primary');
    await rotate('tenant-read-only', 'secondary');
    const registry = await rotate('secure-registry', 'secondary');
    t.clock.now += 1_000;
    await whoami(readOnly);
    const readOnlyUse = new Date(t.clock.now).toISOString();
    expect(await slotLastUsed(t, tenantKey, 'tenant-read-only/primary', null)).toBe(readOnlyUse);
    t.clock.now += 5_000;
    await whoami(registry);
    expect(await slotLastUsed(t, tenantKey, 'secure-registry/secondary', null)).toBe(
      new Date(t.clock.now).toISOString(),
    );
    const slots = await slotsOf(t, tenantKey);
    // The Tenant key rotated and listed: its own use is recorded too.
    expect(slots.find((s) => s.kind === 'tenant' && s.slot === 'primary')!.last_used_at).not.toBeNull();
    const unused = slots.filter((s) => s.kind !== 'tenant' && s.last_used_at === null);
    expect(unused.map((s) => `${s.kind}/${s.slot}:${s.hint === null ? 'empty' : 'set'}`)).toEqual([
      'tenant-read-only/secondary:set',
      'secure-registry/primary:empty',
    ]);
    expect(slots.find((s) => s.kind === 'tenant-read-only' && s.slot === 'primary')!.last_used_at).toBe(
      readOnlyUse,
    );
  });

  it('a rotation gives the slot a key not used yet: null, until the new key is used', async () => {
    const old = await rotate('tenant-read-only', 'primary');
    await whoami(old);
    await slotLastUsed(t, tenantKey, 'tenant-read-only/primary', null);
    t.clock.now += 60_000;
    const replaced = await rotate('tenant-read-only', 'primary');
    const slot = (await slotsOf(t, tenantKey)).find(
      (s) => s.kind === 'tenant-read-only' && s.slot === 'primary',
    );
    expect(slot).toMatchObject({ hint: `ssr_…${replaced.slice(-4)}`, last_used_at: null });
    t.clock.now += 1_000;
    await whoami(replaced);
    expect(await slotLastUsed(t, tenantKey, 'tenant-read-only/primary', null)).toBe(
      new Date(t.clock.now).toISOString(),
    );
  });

  it('a use that cannot be recorded fails no request: it is logged, with the slot and the request_id', async () => {
    const keys = t.broker.store.keys;
    const touch = keys.touchBuiltin;
    keys.touchBuiltin = () => Promise.reject(new Error('disk I/O error'));
    try {
      const res = await t.request('GET', '/v1/whoami', { key: tenantKey });
      expect(res.status).toBe(200);
      let line: Record<string, unknown> | undefined;
      await vi.waitFor(() => {
        line = t.logs
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find(
            (l) =>
              l.msg === "a built-in key's use could not be recorded" &&
              l.request_id === res.headers.get('X-Request-Id'),
          );
        expect(line).toBeDefined();
      });
      expect(line).toMatchObject({ level: 'warn', key_id: 'tenant/primary' });
    } finally {
      keys.touchBuiltin = touch;
    }
  });

  it('is kept to the minute: a use within a minute of the one recorded is not written again', async () => {
    const db = await createTestDatabase();
    const clock = { now: Date.now() };
    let b = await startTestBroker({ db, clock });
    try {
      const { key: admin } = await b.createTenant('acme');
      const rotated = await b.request('POST', '/v1/api-keys/tenant-read-only/secondary/rotate', {
        key: admin,
      });
      const { key } = (await rotated.json()) as { key: string };
      const use = async (ms: number) => {
        clock.now += ms;
        expect((await b.request('GET', '/v1/whoami', { key })).status).toBe(200);
        return new Date(clock.now).toISOString();
      };
      const lastUsedOnceChanged = (from: string | null) =>
        slotLastUsed(b, admin, 'tenant-read-only/secondary', from);
      const first = await use(1_000);
      expect(await lastUsedOnceChanged(null)).toBe(first);
      await use(59_000);
      // Stopping the broker writes whatever it had still to write: the use 59 s after the first was not.
      await b.broker.close();
      b = await startTestBroker({ db, clock });
      const listed = (await slotsOf(b, admin)).find(
        (s) => s.kind === 'tenant-read-only' && s.slot === 'secondary',
      );
      expect(listed!.last_used_at).toBe(first);
      // A minute after the one recorded, a use is written again.
      const third = await use(1_000);
      expect(await lastUsedOnceChanged(first)).toBe(third);
    } finally {
      await b.broker.close();
      await db.drop();
    }
  });
});

describe('after a leak, as the README\'s "If a key or token leaks" tells it', () => {
  type Event = {
    type: string;
    time: string;
    actor: { kind: string; id: string };
    target: { type: string; id: string } | null;
    details: Record<string, unknown>;
  };
  /** The whole log, as the README's export loop reads it, oldest first. */
  async function exported(key: string): Promise<Event[]> {
    const events: Event[] = [];
    let cursor = '';
    do {
      const res = await t.request('GET', `/v1/audit-events?limit=200${cursor && `&cursor=${cursor}`}`, {
        key,
      });
      expect(res.status).toBe(200);
      const page = (await res.json()) as { events: Event[]; next_cursor: string | null };
      events.push(...page.events);
      cursor = page.next_cursor ?? '';
    } while (cursor);
    return events.reverse();
  }

  it('a leaked Tenant API key: named, ended with its tokens, and everything it did found by its actor id and undone', async () => {
    // The administrator works with the secondary slot; the primary key is posted in a public log.
    const admin = await rotate('tenant', 'secondary');
    const leaked = tenantKey;
    t.clock.now += 60_000;
    const leakedAt = new Date(t.clock.now).toISOString();
    // What whoever found it does with it: a key of its own, another slot, a token, a trust policy, and through
    // the token another key; and reads, which leave no trace.
    const fgRes = await t.request('POST', '/v1/fine-grained-keys', {
      key: leaked,
      json: { name: 'innocent', expiration: '1y', permissions: ['read-write-all'] },
    });
    const fg = (await fgRes.json()) as { id: string; key: string };
    const readOnly = await rotate('tenant-read-only', 'primary', leaked);
    const minted = await t.request('POST', '/v1/tokens', { key: leaked, json: {} });
    const token = ((await minted.json()) as { access_token: string }).access_token;
    const viaTokenRes = await t.request('POST', '/v1/fine-grained-keys', {
      key: token,
      json: { name: 'also-innocent', expiration: '1y', permissions: ['audit-log:read'] },
    });
    const viaToken = (await viaTokenRes.json()) as { id: string; key: string };
    const policyRes = await t.request('POST', '/v1/oidc/policies', {
      key: leaked,
      json: { name: 'backdoor', claims: { repository: 'evil/repo' }, permissions: ['read-write-all'] },
    });
    expect(policyRes.status).toBe(201);
    const policy = ((await policyRes.json()) as { policy: { id: string } }).policy;
    const before = (await exported(admin)).length;
    for (const path of ['/v1/oidc/policies', '/v1/api-keys', '/v1/fine-grained-keys', '/v1/whoami'])
      expect((await t.request('GET', path, { key: leaked })).status).toBe(200);
    expect((await exported(admin)).length).toBe(before);

    // 1. Tell what leaked.
    expect((await whoami(leaked)).credential).toMatchObject({
      kind: 'tenant',
      slot: 'primary',
      id: 'tenant/primary',
    });
    // 2. End it: rotate its slot with the other one; the token it minted goes with it.
    t.clock.now += 1000;
    await rotate('tenant', 'primary', admin);
    expect((await t.request('GET', '/v1/whoami', { key: leaked })).status).toBe(401);
    expect((await t.request('GET', '/v1/whoami', { key: token })).status).toBe(401);
    // 3. Find what it did: its events, by actor id, before the rotation; then those of the tokens it minted.
    const events = await exported(admin);
    const rotation = events.findLast(
      (e) => e.type === 'api_key.rotated' && e.target?.id === 'tenant/primary',
    )!;
    // The slot's id is its key's before and after a rotation: what it did since it leaked, and until it was rotated.
    const byLeaked = events.filter(
      (e) => e.actor.id === 'tenant/primary' && e.time >= leakedAt && e.time < rotation.time,
    );
    const tokens = byLeaked.filter((e) => e.type === 'token.minted').map((e) => e.target!.id);
    expect(tokens).toHaveLength(1);
    const byTokens = events.filter((e) => tokens.includes(e.actor.id));
    expect(byLeaked.map((e) => `${e.type} ${e.target?.id}`)).toEqual([
      `fine_grained_key.created ${fg.id}`,
      'api_key.rotated tenant-read-only/primary',
      `token.minted ${tokens[0]}`,
      `policy.created ${policy.id}`,
    ]);
    expect(byTokens.map((e) => `${e.type} ${e.target?.id}`)).toEqual([
      `fine_grained_key.created ${viaToken.id}`,
    ]);
    // Keys name their creator, as the events do.
    const listed = (await (await t.request('GET', '/v1/fine-grained-keys', { key: admin })).json()) as {
      keys: { id: string; created_by: string }[];
    };
    expect(listed.keys.find((k) => k.id === fg.id)?.created_by).toBe('tenant/primary');
    expect(listed.keys.find((k) => k.id === viaToken.id)?.created_by).toBe(tokens[0]);
    // 4. Undo what it made: its keys outlived it until now.
    for (const key of [fg.key, viaToken.key, readOnly]) {
      expect((await t.request('GET', '/v1/whoami', { key })).status).toBe(200);
    }
    for (const id of [fg.id, viaToken.id])
      expect((await t.request('DELETE', `/v1/fine-grained-keys/${id}`, { key: admin })).status).toBe(204);
    await rotate('tenant-read-only', 'primary', admin);
    expect((await t.request('DELETE', `/v1/oidc/policies/${policy.id}`, { key: admin })).status).toBe(204);
    for (const key of [fg.key, viaToken.key, readOnly]) {
      expect((await t.request('GET', '/v1/whoami', { key })).status).toBe(401);
    }
  });

  it('a leaked fine-grained key or access token: each named by whoami, and ended', async () => {
    const fgRes = await t.request('POST', '/v1/fine-grained-keys', {
      key: tenantKey,
      json: { name: 'deploy-bot', expiration: '30d', permissions: ['audit-log:read'] },
    });
    const fg = (await fgRes.json()) as { id: string; key: string; hint: string };
    expect(fg.hint).toBe(`ssf_…${fg.key.slice(-4)}`);
    expect((await whoami(fg.key)).credential).toMatchObject({ kind: 'fine-grained', id: fg.id });
    const token = (
      (await (await t.request('POST', '/v1/tokens', { key: fg.key, json: {} })).json()) as {
        access_token: string;
      }
    ).access_token;
    const jti = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti as string;
    expect((await whoami(token)).credential).toMatchObject({ kind: 'access-token', id: jti });
    const introspected = await t.request('POST', '/v1/tokens/introspect', {
      key: tenantKey,
      body: new URLSearchParams({ token }).toString(),
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(await introspected.json()).toMatchObject({ active: true, jti, client_id: fg.id });
    // A leaked token is ended by whoever holds it, itself included.
    const revoked = await t.request('POST', '/v1/tokens/revoke', {
      key: token,
      body: new URLSearchParams({ token }).toString(),
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(revoked.status).toBe(200);
    expect((await t.request('GET', '/v1/whoami', { key: token })).status).toBe(401);
    expect((await t.request('DELETE', `/v1/fine-grained-keys/${fg.id}`, { key: tenantKey })).status).toBe(
      204,
    );
    expect((await t.request('GET', '/v1/whoami', { key: fg.key })).status).toBe(401);
  });
});

describe('a credential rotated or revoked while its request is in flight', () => {
  /**
   * Sends `request`, holds it once its credential has been looked up (authenticated), runs `withdraw` (rotating
   * or revoking that credential), then lets the request go on; resolves to its answer.
   */
  async function overlapping(request: () => Promise<Response>, withdraw: () => Promise<void>) {
    const { tenants, tokens } = t.broker.store;
    const byId = tenants.byId;
    const isRevoked = tokens.isRevoked;
    const authenticated = deferred();
    const proceed = deferred();
    let held = false;
    const hold = async () => {
      if (held) return;
      held = true;
      authenticated.resolve();
      await proceed.promise;
    };
    tenants.byId = async (id) => {
      await hold();
      return byId(id);
    };
    tokens.isRevoked = async (jti) => {
      const revoked = await isRevoked(jti);
      await hold();
      return revoked;
    };
    try {
      const answer = request();
      await authenticated.promise;
      tenants.byId = byId;
      tokens.isRevoked = isRevoked;
      await withdraw();
      proceed.resolve();
      return await answer;
    } finally {
      tenants.byId = byId;
      tokens.isRevoked = isRevoked;
    }
  }

  type Caller = { kind: string; key: string; withdraw: () => Promise<void> };
  const callers: Record<string, () => Promise<Caller>> = {
    'a Tenant API key rotated': async () => ({
      kind: 'tenant',
      key: await rotate('tenant', 'secondary'),
      withdraw: async () => void (await rotate('tenant', 'secondary')),
    }),
    'a fine-grained key revoked': async () => {
      const res = await t.request('POST', '/v1/fine-grained-keys', {
        key: tenantKey,
        json: {
          name: 'leaked',
          expiration: '7d',
          permissions: ['api-keys:write', 'oidc-federation:write', 'harden-runner:read'],
        },
      });
      const { id, key } = (await res.json()) as { id: string; key: string };
      return {
        kind: 'fine-grained',
        key,
        withdraw: async () =>
          expect((await t.request('DELETE', `/v1/fine-grained-keys/${id}`, { key: tenantKey })).status).toBe(
            204,
          ),
      };
    },
    'an access token revoked': async () => {
      const res = await t.request('POST', '/v1/tokens', {
        key: tenantKey,
        json: { permissions: ['oidc-federation:write', 'harden-runner:read'] },
      });
      const token = ((await res.json()) as { access_token: string }).access_token;
      return {
        kind: 'access-token',
        key: token,
        withdraw: async () => {
          const revoked = await t.request('POST', '/v1/tokens/revoke', {
            key: tenantKey,
            body: `token=${token}`,
            headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          });
          expect(revoked.status).toBe(200);
        },
      };
    },
  };

  const policy = (name: string) => ({
    name,
    claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
    permissions: ['harden-runner:read'],
  });
  const policyNames = async () =>
    (
      (await (await t.request('GET', '/v1/oidc/policies', { key: tenantKey })).json()) as {
        policies: { id: string; name: string }[];
      }
    ).policies.map((p) => p.name);
  const fineGrainedNames = async () =>
    (
      (await (await t.request('GET', '/v1/fine-grained-keys', { key: tenantKey })).json()) as {
        keys: { name: string }[];
      }
    ).keys.map((k) => k.name);
  const createPolicy = async (name: string) => {
    const res = await t.request('POST', '/v1/oidc/policies', { key: tenantKey, json: policy(name) });
    expect(res.status).toBe(201);
    return ((await res.json()) as { policy: { id: string } }).policy.id;
  };

  /**
   * Each change an API key or token can ask for: what it needs in place first (made with the Tenant API key),
   * the request, and a check that nothing changed.
   */
  interface Change {
    callers: string[];
    prepare?: () => Promise<string>;
    send: (key: string, id: string) => Promise<Response>;
    unchanged: (id: string) => Promise<void>;
  }
  const everyCaller = Object.keys(callers);
  const keyCallers = ['a Tenant API key rotated', 'a fine-grained key revoked'];
  const changes: Record<string, Change> = {
    'creating a fine-grained key': {
      callers: keyCallers,
      send: (key) =>
        t.request('POST', '/v1/fine-grained-keys', {
          key,
          json: { name: 'child', expiration: '1y', permissions: ['api-keys:write'] },
        }),
      unchanged: async () => expect(await fineGrainedNames()).not.toContain('child'),
    },
    'revoking a fine-grained key': {
      callers: keyCallers,
      prepare: async () => {
        const res = await t.request('POST', '/v1/fine-grained-keys', {
          key: tenantKey,
          json: { name: 'victim', expiration: '7d', permissions: ['audit-log:read'] },
        });
        return ((await res.json()) as { id: string }).id;
      },
      send: (key, id) => t.request('DELETE', `/v1/fine-grained-keys/${id}`, { key }),
      unchanged: async () => expect(await fineGrainedNames()).toContain('victim'),
    },
    'rotating another slot': {
      callers: ['a Tenant API key rotated'],
      send: (key) => t.request('POST', '/v1/api-keys/tenant/primary/rotate', { key }),
      unchanged: async () =>
        expect((await t.request('GET', '/v1/whoami', { key: tenantKey })).status).toBe(200),
    },
    'revoking an access token': {
      callers: keyCallers,
      prepare: async () => {
        const res = await t.request('POST', '/v1/tokens', { key: tenantKey, json: {} });
        return ((await res.json()) as { access_token: string }).access_token;
      },
      send: (key, token) =>
        t.request('POST', '/v1/tokens/revoke', {
          key,
          body: `token=${token}`,
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        }),
      unchanged: async (token) =>
        expect((await t.request('GET', '/v1/whoami', { key: token })).status).toBe(200),
    },
    'creating a trust policy': {
      callers: everyCaller,
      send: (key) => t.request('POST', '/v1/oidc/policies', { key, json: policy('intruder') }),
      unchanged: async () => expect(await policyNames()).toEqual([]),
    },
    'replacing a trust policy': {
      callers: everyCaller,
      prepare: () => createPolicy('deploy'),
      send: (key, id) => t.request('PUT', `/v1/oidc/policies/${id}`, { key, json: policy('replaced') }),
      unchanged: async () => expect(await policyNames()).toEqual(['deploy']),
    },
    'deleting a trust policy': {
      callers: everyCaller,
      prepare: () => createPolicy('deploy'),
      send: (key, id) => t.request('DELETE', `/v1/oidc/policies/${id}`, { key }),
      unchanged: async () => expect(await policyNames()).toEqual(['deploy']),
    },
  };

  it('a key may still rotate its own slot, or revoke itself', async () => {
    const secondary = await rotate('tenant', 'secondary');
    const replaced = await rotate('tenant', 'secondary', secondary);
    expect((await t.request('GET', '/v1/whoami', { key: secondary })).status).toBe(401);
    expect((await t.request('GET', '/v1/whoami', { key: replaced })).status).toBe(200);
    const res = await t.request('POST', '/v1/fine-grained-keys', {
      key: tenantKey,
      json: { name: 'self', expiration: '7d', permissions: ['api-keys:write'] },
    });
    const self = (await res.json()) as { id: string; key: string };
    expect((await t.request('DELETE', `/v1/fine-grained-keys/${self.id}`, { key: self.key })).status).toBe(
      204,
    );
    expect(await fineGrainedNames()).not.toContain('self');
  });

  const cases = Object.entries(changes).flatMap(([change, { callers: who }]) =>
    who.map((caller) => [change, caller] as const),
  );
  it.each(cases)('%s, with %s meanwhile, answers 401 and changes nothing', async (change, callerName) => {
    const caller = await callers[callerName]!();
    const callerId = (await whoami(caller.key)).credential.id;
    const { prepare, send, unchanged } = changes[change]!;
    const id = (await prepare?.()) ?? '';
    const res = await overlapping(() => send(caller.key, id), caller.withdraw);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({
      code: 'unauthenticated',
      detail: expect.stringMatching(/nothing/),
    });
    await unchanged(id);
    // Nor does the audit log say otherwise: no event has the withdrawn credential doing anything.
    const log = await t.request('GET', '/v1/audit-events?limit=200', { key: tenantKey });
    const { events } = (await log.json()) as { events: { type: string; actor: { id: string } }[] };
    expect(events.filter((e) => e.actor.id === callerId).map((e) => e.type)).toEqual([]);
  });
});

describe('a refused request in the audit log', () => {
  interface Event {
    type: string;
    target: { type: string; id: string } | null;
    details: Record<string, unknown>;
  }
  async function events(type: string): Promise<Event[]> {
    const res = await t.request('GET', `/v1/audit-events?type=${type}`, { key: tenantKey });
    return ((await res.json()) as { events: Event[] }).events;
  }

  it('names the slot, key or policy it was aimed at, as the events of their changes do, and the path', async () => {
    const readOnly = await rotate('tenant-read-only', 'primary');
    const created = await t.request('POST', '/v1/fine-grained-keys', {
      key: tenantKey,
      json: { name: 'deploy-bot', expiration: '7d', permissions: ['audit-log:read'] },
    });
    const victim = ((await created.json()) as { id: string }).id;
    const policyRes = await t.request('POST', '/v1/oidc/policies', {
      key: tenantKey,
      json: {
        name: 'p',
        claims: { repository: 'acme/x', ref: 'refs/heads/main' },
        permissions: ['audit-log:read'],
      },
    });
    const policy = ((await policyRes.json()) as { policy: { id: string } }).policy.id;
    const editor = await fineGrained(['oidc-federation:write', 'audit-log:read']);

    const refused = [
      await t.request('POST', '/v1/api-keys/tenant/primary/rotate', { key: readOnly }),
      // An id in upper case names the same key.
      await t.request('DELETE', `/v1/fine-grained-keys/${victim.toUpperCase()}`, { key: readOnly }),
      await t.request('DELETE', `/v1/oidc/policies/${policy}`, { key: readOnly }),
      // Refused by the route itself, after its checks: a grant beyond the editor's own permissions.
      await t.request('PUT', `/v1/oidc/policies/${policy}`, {
        key: editor,
        json: { name: 'p', claims: { repository: 'acme/x' }, permissions: ['harden-runner:write'] },
      }),
    ];
    expect(refused.map((r) => r.status)).toEqual([403, 403, 403, 403]);

    const keyCreated = (await events('fine_grained_key.created')).find((e) => e.target?.id === victim);
    const [policyCreated] = await events('policy.created');
    const keyTarget = { type: keyCreated!.target!.type, id: keyCreated!.target!.id };
    const policyTarget = { type: policyCreated!.target!.type, id: policyCreated!.target!.id };
    const denied = (await events('permission.denied')).reverse();
    expect(denied.map((e) => e.target)).toEqual([
      { type: 'api_key', id: 'tenant/primary' },
      keyTarget,
      policyTarget,
      policyTarget,
    ]);
    expect(denied.map((e) => [e.details.method, e.details.path, e.details.code])).toEqual([
      ['POST', '/v1/api-keys/tenant/primary/rotate', 'forbidden'],
      ['DELETE', `/v1/fine-grained-keys/${victim.toUpperCase()}`, 'forbidden'],
      ['DELETE', `/v1/oidc/policies/${policy}`, 'forbidden'],
      ['PUT', `/v1/oidc/policies/${policy}`, 'permission_escalation'],
    ]);
    expect(denied[1]!.details.route).toBe('/v1/fine-grained-keys/:id');
  });

  it('a refusal aimed at no resource has no target', async () => {
    const readOnly = await rotate('tenant-read-only', 'primary');
    const res = await t.request('POST', '/v1/oidc/policies', {
      key: readOnly,
      json: { name: 'p', claims: { repository: 'acme/x' }, permissions: ['audit-log:read'] },
    });
    expect(res.status).toBe(403);
    const [event] = await events('permission.denied');
    expect(event).toMatchObject({ target: null, details: { path: '/v1/oidc/policies' } });
  });

  it('records a key pasted into the path as its hint, and no target for what is not an id', async () => {
    const readOnly = await rotate('tenant-read-only', 'primary');
    const res = await t.request('DELETE', `/v1/fine-grained-keys/${tenantKey}`, { key: readOnly });
    expect(res.status).toBe(403);
    const [event] = await events('permission.denied');
    expect(JSON.stringify(event)).not.toContain(tenantKey.slice(4, 36));
    expect(event).toMatchObject({
      target: null,
      details: { path: `/v1/fine-grained-keys/ssa_…${tenantKey.slice(-4)}` },
    });
  });

  it('leaves an access token pasted into the path out of the record', async () => {
    const minted = await t.request('POST', '/v1/tokens', { key: tenantKey, json: {} });
    const token = ((await minted.json()) as { access_token: string }).access_token;
    const readOnly = await rotate('tenant-read-only', 'primary');
    const res = await t.request('DELETE', `/v1/fine-grained-keys/${token}`, { key: readOnly });
    expect(res.status).toBe(403);
    const [event] = await events('permission.denied');
    expect(JSON.stringify(event)).not.toContain(token.split('.')[1]);
    expect(event).toMatchObject({ target: null, details: { path: '/v1/fine-grained-keys/[a token]' } });
  });
});

describe('a secret sent where it does not belong', () => {
  it('is never echoed in an error body: keys show as their hint, tokens not at all', async () => {
    const minted = await t.request('POST', '/v1/tokens', { key: tenantKey, json: {} });
    const token = ((await minted.json()) as { access_token: string }).access_token;
    const hint = `ssa_…${tenantKey.slice(-4)}`;
    // A key cut short still holds its random part, from which the checksum, and so the key, can be rebuilt.
    const truncated = tenantKey.slice(0, -1);
    const res = await t.request('POST', '/v1/tokens', { key: tenantKey, json: { permissions: [truncated] } });
    expect(res.status).toBe(400);
    expect(await res.text()).not.toContain(tenantKey.slice(4, 36));
    for (const secret of [tenantKey, token]) {
      const responses = [
        await t.request('POST', '/v1/fine-grained-keys', {
          key: tenantKey,
          json: { name: 'x', expiration: '7d', permissions: [secret] },
        }),
        await t.request('POST', '/v1/tokens', { key: tenantKey, json: { permissions: [secret] } }),
        await t.request('GET', `/v1/fine-grained-keys/${secret}`, { key: tenantKey }),
        await t.request('GET', `/v1/nowhere/${secret}`),
      ];
      for (const res of responses) {
        expect(res.status).toBeGreaterThanOrEqual(400);
        const text = await res.text();
        expect(text).not.toContain(secret);
        for (const part of secret.split('.')) expect(text).not.toContain(part.slice(4, 36));
        if (secret === tenantKey) expect(text).toContain(hint);
      }
    }
  });
});
