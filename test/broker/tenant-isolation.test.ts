// Tenant isolation: one tenant's credentials see and change nothing of another's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';

let t: TestBroker;
let a: string;
let b: string;
let aKeyId: string;
let aFineGrained: string;

beforeAll(async () => {
  t = await startTestBroker();
  a = (await t.createTenant('alpha')).key;
  b = (await t.createTenant('bravo')).key;
  const res = await t.request('POST', '/v1/fine-grained-keys', {
    key: a,
    json: { name: 'alpha-only', expiration: '7d', permissions: ['read-all'] },
  });
  ({ id: aKeyId, key: aFineGrained } = (await res.json()) as { id: string; key: string });
});
afterAll(() => t.close());

describe('tenant isolation', () => {
  it.each([
    ['GET', () => `/v1/fine-grained-keys/${aKeyId}`],
    ['DELETE', () => `/v1/fine-grained-keys/${aKeyId}`],
  ])("%s of another tenant's key is 404, as if it did not exist", async (method, path) => {
    const res = await t.request(method, path(), { key: b });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: 'not_found' });
    expect((await t.request('GET', `/v1/fine-grained-keys/${aKeyId}`, { key: a })).status).toBe(200);
  });

  it('listings show only the caller tenant', async () => {
    const keys = (await (await t.request('GET', '/v1/fine-grained-keys', { key: b })).json()) as {
      keys: unknown[];
    };
    expect(keys.keys).toEqual([]);
    const audit = (await (await t.request('GET', '/v1/audit-events', { key: b })).json()) as {
      events: { type: string; target: { name?: string } | null }[];
    };
    expect(audit.events.map((e) => e.target?.name)).toEqual(['bravo']);
    const slots = (await (await t.request('GET', '/v1/api-keys', { key: b })).json()) as {
      keys: { hint: string | null }[];
    };
    expect(slots.keys[0]?.hint).toBe(`ssa_…${b.slice(-4)}`);
  });

  it("rotating a slot changes only the caller's tenant", async () => {
    const res = await t.request('POST', '/v1/api-keys/tenant/secondary/rotate', { key: b });
    expect(res.status).toBe(200);
    const slots = (await (await t.request('GET', '/v1/api-keys', { key: a })).json()) as {
      keys: { kind: string; slot: string; hint: string | null }[];
    };
    expect(slots.keys.find((k) => k.kind === 'tenant' && k.slot === 'secondary')?.hint).toBeNull();
  });

  it("rotating a slot ends only its own tenant's tokens: another's, minted through its slot of that name, keep working", async () => {
    const mint = async (key: string) => {
      const res = await t.request('POST', '/v1/tokens', { key, json: {} });
      expect(res.status).toBe(201);
      return ((await res.json()) as { access_token: string }).access_token;
    };
    const [ours, theirs] = [await mint(a), await mint(b)];
    const res = await t.request('POST', '/v1/api-keys/tenant/primary/rotate', { key: a });
    expect(res.status).toBe(200);
    a = ((await res.json()) as { key: string }).key;
    expect((await t.request('GET', '/v1/whoami', { key: ours })).status).toBe(401);
    expect((await t.request('GET', '/v1/whoami', { key: theirs })).status).toBe(200);
  });

  it("a credential acts only in its own tenant: whoami names it, its listing shows only that tenant's keys", async () => {
    const me = (await (await t.request('GET', '/v1/whoami', { key: aFineGrained })).json()) as {
      tenant: { name: string };
    };
    expect(me.tenant.name).toBe('alpha');
    const their = (await (await t.request('GET', '/v1/fine-grained-keys', { key: aFineGrained })).json()) as {
      keys: { id: string }[];
    };
    expect(their.keys.map((k) => k.id)).toEqual([aKeyId]);
  });
});
