// GET /v1/fine-grained-keys in pages: `limit`, the cursor, its refusals, and paging while keys come and go.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';

let t: TestBroker;
let tenants = 0;

beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(() => t.close());

type Listed = { id: string; name: string; created_at: string };
type Page = { keys: Listed[]; next_cursor: string | null };

async function tenant() {
  const { tenant, key } = await t.createTenant(`key-pages-${++tenants}`);
  return { tenantId: tenant.id, key };
}

/** A key created at the broker's clock, a millisecond after the one before unless `at` says when. */
async function create(key: string, name: string, at = ++t.clock.now): Promise<Listed> {
  const now = t.clock.now;
  t.clock.now = at;
  const res = await t.request('POST', '/v1/fine-grained-keys', {
    key,
    json: { name, expiration: '30d', permissions: ['harden-runner:read'] },
  });
  t.clock.now = Math.max(now, at);
  expect(res.status).toBe(201);
  return (await res.json()) as Listed;
}

/** A tenant with a key of each name, created in the order given: the last one is the newest. */
async function tenantWith(names: string[]) {
  const owner = await tenant();
  const ids = new Map<string, string>();
  for (const name of names) ids.set(name, (await create(owner.key, name)).id);
  return { ...owner, ids };
}

async function remove(key: string, id: string) {
  expect((await t.request('DELETE', `/v1/fine-grained-keys/${id}`, { key })).status).toBe(204);
}

async function page(key: string, query: string): Promise<Page> {
  const res = await t.request('GET', `/v1/fine-grained-keys${query}`, { key });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as Page;
}

/** Every page from the first, `limit` at a time, calling `between` after each page but the last. */
async function pageThrough(key: string, limit: number, between: (p: Page) => Promise<void> = async () => {}) {
  const seen: Listed[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const p: Page = await page(key, `?limit=${limit}${cursorParam(cursor)}`);
    seen.push(...p.keys);
    cursor = p.next_cursor;
    pages++;
    if (cursor) await between(p);
  } while (cursor);
  return { seen, pages };
}

const cursorParam = (cursor: string | null) => (cursor ? `&cursor=${cursor}` : '');
const names = (keys: Listed[]) => keys.map((k) => k.name);
/** A cursor as the broker writes one, for cursors a client could make up. */
const cursorOf = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('GET /v1/fine-grained-keys in pages', () => {
  it('pages newest first, `limit` at a time, passing next_cursor back as cursor until it is null', async () => {
    const { key } = await tenantWith(['a', 'b', 'c', 'd', 'e']);
    const first = await page(key, '?limit=2');
    expect(names(first.keys)).toEqual(['e', 'd']);
    const second = await page(key, `?limit=2${cursorParam(first.next_cursor)}`);
    expect(names(second.keys)).toEqual(['c', 'b']);
    const last = await page(key, `?limit=2${cursorParam(second.next_cursor)}`);
    expect(last).toEqual({ keys: [expect.objectContaining({ name: 'a' })], next_cursor: null });
    // A page that holds the last key is the last: no empty page after it.
    expect((await page(key, '?limit=5')).next_cursor).toBeNull();
    // Empty, as a URL template leaves them, the parameters count as absent: a client that reads only `keys` of a
    // tenant under the page size gets every key, as before.
    expect(await page(key, '?limit=&cursor=')).toEqual({
      keys: names(first.keys.concat(second.keys, last.keys)).map((name) => expect.objectContaining({ name })),
      next_cursor: null,
    });
    expect(names((await page(key, '')).keys)).toEqual(['e', 'd', 'c', 'b', 'a']);
  });

  it('answers 100 keys when limit is left out, and up to 500 when asked', async () => {
    const all = Array.from({ length: 101 }, (_, i) => `key-${String(i).padStart(3, '0')}`);
    const { key } = await tenantWith(all);
    const newestFirst = [...all].reverse();
    const first = await page(key, '');
    expect(names(first.keys)).toEqual(newestFirst.slice(0, 100));
    expect(first.next_cursor).not.toBeNull();
    expect(await page(key, `?${cursorParam(first.next_cursor).slice(1)}`)).toMatchObject({
      keys: [{ name: 'key-000' }],
      next_cursor: null,
    });
    expect(await page(key, '?limit=500')).toMatchObject({ keys: newestFirst.map((name) => ({ name })) });
  });

  it('keys created in the same millisecond are each listed once, in a page boundary among them too', async () => {
    const { key } = await tenant();
    const at = ++t.clock.now;
    const same = [];
    for (let i = 0; i < 7; i++) same.push(await create(key, `same-${i}`, at));
    const before = await create(key, 'older', at - 1);
    const after = await create(key, 'newer', at + 1);
    const whole = (await page(key, '?limit=500')).keys;
    expect(
      whole
        .map((k) => k.id)
        .slice(1, 8)
        .sort(),
    ).toEqual(same.map((k) => k.id).sort());
    expect(whole.map((k) => k.id)).toEqual([after.id, ...whole.slice(1, 8).map((k) => k.id), before.id]);
    for (const limit of [1, 2, 3, 4]) {
      const { seen } = await pageThrough(key, limit);
      expect(
        seen.map((k) => k.id),
        `limit=${limit}`,
      ).toEqual(whole.map((k) => k.id));
    }
  });

  it('a tenant with several pages gets every key exactly once, while keys are created and deleted between pages', async () => {
    const initial = Array.from({ length: 30 }, (_, i) => `m-${String(i).padStart(2, '0')}`);
    const { key, ids } = await tenantWith(initial);
    const oldest = t.clock.now - 30;
    const deleted = new Set<string>();
    const createdBehind: string[] = [];
    let round = 0;
    const { seen, pages } = await pageThrough(key, 4, async (p) => {
      round++;
      // Between pages: the key the cursor ends with goes, one already read goes, one not yet read goes; a key is
      // created now (newer than the pages read: not listed) and one is created by a clock behind the others
      // (older than every key: listed at the end).
      const last = p.keys.at(-1)!;
      await remove(key, last.id);
      deleted.add(last.name);
      const read = p.keys[0]!;
      if (read.id !== last.id && !deleted.has(read.name)) {
        await remove(key, read.id);
        deleted.add(read.name);
      }
      const ahead = initial.find((name) => name < last.name && !deleted.has(name) && name.endsWith('3'));
      if (ahead) {
        await remove(key, ids.get(ahead)!);
        deleted.add(ahead);
      }
      await create(key, `new-${round}`);
      createdBehind.push(`behind-${round}`);
      await create(key, `behind-${round}`, oldest - round);
    });
    expect(pages).toBeGreaterThan(5);
    const counted = new Map<string, number>();
    for (const { id } of seen) counted.set(id, (counted.get(id) ?? 0) + 1);
    expect([...counted.values()].every((n) => n === 1)).toBe(true);
    // Every key that existed throughout is there once, newest first; those created behind the cursor's place too.
    const throughout = initial.filter((name) => !deleted.has(name)).reverse();
    expect(throughout.length).toBeGreaterThan(10);
    expect(names(seen).filter((n) => throughout.includes(n))).toEqual(throughout);
    expect(names(seen).filter((n) => n.startsWith('behind-'))).toEqual(createdBehind);
    expect(names(seen).some((n) => n.startsWith('new-'))).toBe(false);
  });

  it('a cursor whose key was revoked meanwhile still continues after it', async () => {
    const { key, ids } = await tenantWith(['one', 'two', 'three', 'four']);
    const first = await page(key, '?limit=2');
    expect(names(first.keys)).toEqual(['four', 'three']);
    await remove(key, ids.get('three')!);
    await remove(key, ids.get('two')!);
    expect(await page(key, `?limit=2${cursorParam(first.next_cursor)}`)).toMatchObject({
      keys: [{ name: 'one' }],
      next_cursor: null,
    });
  });

  it("a cursor of another tenant's keys, or one made up, is a 400 naming cursor, showing nothing of theirs", async () => {
    const theirs = await tenantWith(['their-deploy-bot', 'their-release-bot']);
    const { tenantId, key, ids } = await tenantWith(['mine', 'mine-too', 'mine-three']);
    const theirCursor = (await page(theirs.key, '?limit=1')).next_cursor!;
    const own = (await page(key, '?limit=1')).next_cursor!;
    const foreign = await t.request('GET', `/v1/fine-grained-keys?cursor=${theirCursor}`, { key });
    expect(foreign.status).toBe(400);
    const problem = await foreign.text();
    expect(JSON.parse(problem)).toMatchObject({
      code: 'invalid_request',
      errors: [
        {
          field: 'cursor',
          message: expect.stringContaining("not a cursor of this tenant's fine-grained keys"),
        },
      ],
    });
    expect(problem).not.toContain('their-');
    expect(problem).not.toContain(theirs.tenantId);
    for (const id of theirs.ids.values()) expect(problem).not.toContain(id);
    const someId = ids.get('mine')!;
    for (const cursor of [
      'bm9wZQ',
      `${own}=`,
      `${own}!`,
      'x'.repeat(2049),
      cursorOf([tenantId]),
      // A trust policy cursor of this tenant: a name, not a place among keys.
      cursorOf([tenantId, 'mine']),
      cursorOf({ tenant: tenantId, created_at: 5, id: someId }),
      cursorOf([tenantId, '5', someId]),
      cursorOf([tenantId, 5, 7]),
      cursorOf([tenantId, -1, someId]),
      cursorOf([tenantId, 1.5, someId]),
      cursorOf([tenantId, 2 ** 53, someId]),
      cursorOf([tenantId, 5, someId, 'extra']),
      cursorOf([tenantId, 5, 'a\u0000b']),
      cursorOf([tenantId, 5, '\ud800']),
    ]) {
      const res = await t.request('GET', `/v1/fine-grained-keys?cursor=${encodeURIComponent(cursor)}`, {
        key,
      });
      expect(res.status, cursor).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [
          { field: 'cursor', message: expect.stringContaining('not a cursor this endpoint returned') },
        ],
      });
    }
    // One of this tenant's, written as the broker writes them, is a place in its own list and nothing more.
    const listed = (await page(key, '')).keys;
    const middle = listed[1]!;
    expect(
      names(
        (await page(key, `?cursor=${cursorOf([tenantId, Date.parse(middle.created_at), middle.id])}`)).keys,
      ),
    ).toEqual(['mine']);
  });

  it.each([
    ['?limit=0', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=501', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=abc', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=2.5', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=1e2', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=+5', 'limit', 'must be a whole number from 1 to 500'],
    ['?limit=2&limit=3', 'limit', 'sent more than once: send each parameter once'],
    ['?cursor=a&cursor=b', 'cursor', 'sent more than once: send each parameter once'],
    ['?name=deploy-bot', 'name', 'unknown query parameter; this operation takes limit, cursor'],
  ])('%s is a 400 naming %s: %s', async (query, field, message) => {
    const { key } = await tenantWith(['only']);
    const res = await t.request('GET', `/v1/fine-grained-keys${query}`, { key });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      errors: [{ field, message: expect.stringContaining(message) }],
    });
  });
});
