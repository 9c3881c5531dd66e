// GET /v1/oidc/policies in pages: `limit`, the cursor, its refusals, and paging while policies come and go.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';

let t: TestBroker;
let tenants = 0;

beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(() => t.close());

type Page = { policies: { id: string; name: string }[]; next_cursor: string | null };

/** A tenant with a policy of each name, created in the order given. */
async function tenantWith(names: string[]) {
  const { tenant, key } = await t.createTenant(`pages-${++tenants}`);
  const ids = new Map<string, string>();
  for (const name of names) ids.set(name, await create(key, name));
  return { tenantId: tenant.id, key, ids };
}

async function create(key: string, name: string): Promise<string> {
  const res = await t.request('POST', '/v1/oidc/policies', {
    key,
    json: {
      name,
      claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
      permissions: ['harden-runner:read'],
    },
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { policy: { id: string } }).policy.id;
}

async function remove(key: string, id: string) {
  expect((await t.request('DELETE', `/v1/oidc/policies/${id}`, { key })).status).toBe(204);
}

async function page(key: string, query: string): Promise<Page> {
  const res = await t.request('GET', `/v1/oidc/policies${query}`, { key });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as Page;
}

const cursorParam = (cursor: string | null) => (cursor ? `&cursor=${cursor}` : '');
const names = (p: Page) => p.policies.map((policy) => policy.name);
/** A cursor as the broker writes one, for cursors a client could make up. */
const cursorOf = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('GET /v1/oidc/policies in pages', () => {
  it('pages by name, `limit` at a time, passing next_cursor back as cursor until it is null', async () => {
    const { key } = await tenantWith(['echo', 'Alpha', 'delta', 'Charlie', 'bravo']);
    const first = await page(key, '?limit=2');
    expect(names(first)).toEqual(['Alpha', 'bravo']);
    const second = await page(key, `?limit=2${cursorParam(first.next_cursor)}`);
    expect(names(second)).toEqual(['Charlie', 'delta']);
    const last = await page(key, `?limit=2${cursorParam(second.next_cursor)}`);
    expect(last).toEqual({ policies: [expect.objectContaining({ name: 'echo' })], next_cursor: null });
    // A page that holds the last policy is the last: no empty page after it.
    expect((await page(key, '?limit=5')).next_cursor).toBeNull();
    // Empty, as a URL template leaves them, the parameters count as absent.
    expect(names(await page(key, '?limit=&cursor='))).toEqual(['Alpha', 'bravo', 'Charlie', 'delta', 'echo']);
  });

  it('answers 100 policies when limit is left out, and up to 500 when asked', async () => {
    const all = Array.from({ length: 101 }, (_, i) => `policy-${String(i).padStart(3, '0')}`);
    const { key } = await tenantWith(all);
    const first = await page(key, '');
    expect(names(first)).toEqual(all.slice(0, 100));
    expect(first.next_cursor).not.toBeNull();
    expect(await page(key, `?${cursorParam(first.next_cursor).slice(1)}`)).toMatchObject({
      policies: [{ name: 'policy-100' }],
      next_cursor: null,
    });
    expect(names(await page(key, '?limit=500'))).toEqual(all);
  });

  it('a tenant with several pages gets every policy exactly once, while policies are created and deleted between pages', async () => {
    const initial = Array.from({ length: 30 }, (_, i) => `m-${String(i).padStart(2, '0')}`);
    const { key, ids } = await tenantWith(initial);
    const deleted = new Set<string>();
    const createdAhead: string[] = [];
    const seen: Page['policies'] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const p: Page = await page(key, `?limit=4${cursorParam(cursor)}`);
      seen.push(...p.policies);
      cursor = p.next_cursor;
      pages++;
      if (!cursor) break;
      // Between pages: the policy the cursor ends with goes, one already read goes, one not yet read goes,
      // and policies are created before the cursor's place (read no more) and after it (read later).
      const last = p.policies.at(-1)!;
      await remove(key, last.id);
      deleted.add(last.name);
      const read = p.policies[0]!;
      if (read.id !== last.id && !deleted.has(read.name)) {
        await remove(key, read.id);
        deleted.add(read.name);
      }
      const ahead = initial.find((name) => name > last.name && !deleted.has(name) && name.endsWith('7'));
      if (ahead) {
        await remove(key, ids.get(ahead)!);
        deleted.add(ahead);
      }
      await create(key, `a-before-${pages}`);
      createdAhead.push(`z-after-${pages}`);
      await create(key, `z-after-${pages}`);
    } while (cursor);
    expect(pages).toBeGreaterThan(5);
    const counted = new Map<string, number>();
    for (const { id } of seen) counted.set(id, (counted.get(id) ?? 0) + 1);
    expect([...counted.values()].every((n) => n === 1)).toBe(true);
    // Every policy that existed throughout is there once, and in order; those created after the cursor's place too.
    const throughout = initial.filter((name) => !deleted.has(name));
    expect(throughout.length).toBeGreaterThan(10);
    expect(names({ policies: seen, next_cursor: null }).filter((n) => throughout.includes(n))).toEqual(
      throughout,
    );
    expect(names({ policies: seen, next_cursor: null }).filter((n) => n.startsWith('z-after-'))).toEqual(
      createdAhead,
    );
    expect(names({ policies: seen, next_cursor: null }).some((n) => n.startsWith('a-before-'))).toBe(false);
  });

  it('a cursor whose policy was deleted, or renamed, meanwhile still continues after its name', async () => {
    const { key, ids } = await tenantWith(['one', 'two', 'three', 'four']);
    const first = await page(key, '?limit=2');
    expect(names(first)).toEqual(['four', 'one']);
    await remove(key, ids.get('one')!);
    await remove(key, ids.get('three')!);
    expect(await page(key, `?limit=2${cursorParam(first.next_cursor)}`)).toMatchObject({
      policies: [{ name: 'two' }],
      next_cursor: null,
    });
    // Renamed to a name before the cursor's, it is not listed again; the name the cursor holds is the place.
    const renamed = await t.request('PUT', `/v1/oidc/policies/${ids.get('two')}`, {
      key,
      json: {
        name: 'aaa',
        claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
        permissions: ['harden-runner:read'],
      },
    });
    expect(renamed.status).toBe(200);
    expect(await page(key, `?limit=2${cursorParam(first.next_cursor)}`)).toEqual({
      policies: [],
      next_cursor: null,
    });
  });

  it("a cursor of another tenant's policies, or one made up, is a 400 naming cursor, showing nothing of theirs", async () => {
    const theirs = await tenantWith(['their-secret-project', 'their-other-project']);
    const { tenantId, key } = await tenantWith(['mine', 'mine-too', 'mine-three']);
    const theirCursor = (await page(theirs.key, '?limit=1')).next_cursor!;
    const own = (await page(key, '?limit=1')).next_cursor!;
    const foreign = await t.request('GET', `/v1/oidc/policies?cursor=${theirCursor}`, { key });
    expect(foreign.status).toBe(400);
    const problem = await foreign.text();
    expect(JSON.parse(problem)).toMatchObject({
      code: 'invalid_request',
      errors: [
        { field: 'cursor', message: expect.stringContaining("not a cursor of this tenant's trust policies") },
      ],
    });
    expect(problem).not.toContain('their-');
    expect(problem).not.toContain(theirs.tenantId);
    for (const cursor of [
      'bm9wZQ',
      `${own}=`,
      `${own}!`,
      'x'.repeat(2049),
      cursorOf([tenantId]),
      cursorOf({ tenant: tenantId, after: 'mine' }),
      cursorOf([tenantId, 7]),
      cursorOf([tenantId, 'a\u0000b']),
      cursorOf([tenantId, '\ud800']),
    ]) {
      const res = await t.request('GET', `/v1/oidc/policies?cursor=${encodeURIComponent(cursor)}`, { key });
      expect(res.status, cursor).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [
          { field: 'cursor', message: expect.stringContaining('not a cursor this endpoint returned') },
        ],
      });
    }
    // One of this tenant's, written as the broker writes them, is a place in its own list and nothing more.
    expect(names(await page(key, `?cursor=${cursorOf([tenantId, 'mine-three'])}`))).toEqual(['mine-too']);
  });

  it.each([
    ['?limit=0', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=501', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=abc', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=2.5', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=0x10', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=1e2', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=+5', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=%205', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=2&limit=3', 'limit', 'sent more than once: send each parameter once'],
    ['?cursor=a&cursor=b', 'cursor', 'sent more than once: send each parameter once'],
    ['?limits=2', 'limits', 'unknown query parameter; this operation takes name, limit, cursor'],
  ])('%s is a 400 naming %s: %s', async (query, field, message) => {
    const { key } = await tenantWith(['only']);
    const res = await t.request('GET', `/v1/oidc/policies${query}`, { key });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      errors: [{ field, message: expect.stringContaining(message) }],
    });
  });

  it('?name= answers one page, next_cursor null whatever the limit; a made-up cursor beside it is still a 400', async () => {
    const { key } = await tenantWith(['Deploy', 'other', 'zeta']);
    expect(await page(key, '?name=DEPLOY&limit=1')).toEqual({
      policies: [expect.objectContaining({ name: 'Deploy' })],
      next_cursor: null,
    });
    expect(await page(key, '?name=nope&limit=1')).toEqual({ policies: [], next_cursor: null });
    const res = await t.request('GET', '/v1/oidc/policies?name=Deploy&cursor=bm9wZQ', { key });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ errors: [{ field: 'cursor' }] });
  });
});
