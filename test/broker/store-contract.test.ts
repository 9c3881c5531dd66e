// One contract suite for the Store interface, run on whichever engine TEST_DB names (SQLite by default).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBroker } from '../../broker/broker.js';
import { loadConfig } from '../../broker/config.js';
import { createLogger } from '../../broker/logger.js';
import { appendAudit, auditPage } from '../../broker/store/audit-rows.js';
import { fineGrainedKeyPage } from '../../broker/store/key-rows.js';
import { migrate } from '../../broker/store/migrations.js';
import { openStore, storeOn } from '../../broker/store/open-store.js';
import { policyPage } from '../../broker/store/policy-rows.js';
import { nextPurgeBatch } from '../../broker/store/purge.js';
import type { SqlDriver, SqlValue } from '../../broker/store/sql.js';
import {
  type AuditEventInput,
  type AuditQuery,
  type FineGrainedKey,
  GrantingPolicyChanged,
  PreconditionFailed,
  type Store,
  type Tenant,
} from '../../broker/store/store.js';
import { TEST_KEK } from '../support/broker.js';
import { createTestDatabase, openDriver, requestedEngine, type TestDatabase } from '../support/database.js';
import { deferred } from '../support/deferred.js';

const actor = { kind: 'tenant', id: 'tenant/primary' };
const audit = (tenantId: string, type = 'test.event'): AuditEventInput => ({
  tenantId,
  type,
  outcome: 'success',
  actor,
});

let db: TestDatabase;

/** A valid policy for one repository, as the admin API would store it. */
const policyInput = (name: string) => ({
  name,
  description: null,
  issuer: 'https://token.actions.githubusercontent.com',
  claims: { repository: 'acme/infra' },
  max_session_duration_seconds: 0,
  permissions: ['harden-runner:read' as const],
  allow_pull_request_target: false,
});

/** The policy that grants the exchanges these tests record (created in beforeAll, never changed). */
let granting: { id: string; updatedAt: number };

/** Records exchanges of tenant `tenantId` by tokens of `issuer`, with the audit events the exchange writes. */
const exchangesOf =
  (tenantId: string, issuer: string) =>
  (jti: string, details: Record<string, unknown> = {}, grantedBy = granting) =>
    store.tokens.recordExchange(
      { issuer, jti, expiresAt: 5000 },
      {
        fresh: { ...audit(tenantId, 'token.exchanged'), details },
        replayed: { ...audit(tenantId, 'token.exchange_denied'), outcome: 'denied' },
      },
      10,
      grantedBy,
    );

/** Records (issuer, jti) as used by an exchange of tenant `t`; false when it already was. */
const use = (issuer: string, jti: string, expiresAt: number) =>
  store.tokens.recordExchange(
    { issuer, jti, expiresAt },
    {
      fresh: audit('t', 'token.exchanged'),
      replayed: { ...audit('t', 'token.exchange_denied'), outcome: 'denied' },
    },
    1,
    granting,
  );
let store: Store;

/** A tenant created at time 0, before every event the tests record: the audit log lists by the time recorded. */
const newTenant = (name: string): Tenant => ({
  id: randomUUID(),
  name,
  audience: `${name}.api.example.io`,
  disabledCategories: ['apps-and-pats'],
  createdAt: 0,
});

/** The plan either engine makes for a statement, one line per step. */
async function planOf(
  raw: SqlDriver,
  { sql, params }: { sql: string; params: readonly SqlValue[] },
): Promise<string> {
  if (raw.engine === 'sqlite')
    return (await raw.all<{ detail: string }>(`EXPLAIN QUERY PLAN ${sql}`, params))
      .map((r) => r.detail)
      .join('\n');
  return raw.transaction(async (tx) => {
    // However small the table, a plan that can read the index in order takes it over any other.
    for (const setting of ['enable_seqscan', 'enable_bitmapscan', 'enable_sort'])
      await tx.run(`SET LOCAL ${setting} = off`);
    return (await tx.all<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, params))
      .map((r) => r['QUERY PLAN'])
      .join('\n');
  });
}

/** The names of a table's indexes, as either engine lists them, less those of its primary key. */
async function indexesOf(raw: SqlDriver, table: string): Promise<string[]> {
  const rows =
    raw.engine === 'sqlite'
      ? await raw.all<{ name: string }>(
          "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name NOT LIKE 'sqlite_%' ORDER BY name",
          [table],
        )
      : await raw.all<{ name: string }>(
          'SELECT indexname AS name FROM pg_indexes WHERE tablename = ? AND indexname <> ? ORDER BY indexname',
          [table, `${table}_pkey`],
        );
  return rows.map((r) => r.name);
}

async function tenant(name: string): Promise<Tenant> {
  const t = newTenant(name);
  const created = await store.tenants.create(
    t,
    { digest: `digest-${name}`, hint: 'ssa_…abcd' },
    audit(t.id, 'tenant.created'),
  );
  if (!created.ok) throw new Error(created.conflict);
  return t;
}

beforeAll(async () => {
  db = await createTestDatabase();
  store = await openStore(
    loadConfig({ DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: '22'.repeat(32) }).database,
  );
  const t = await tenant('grants');
  const created = await store.policies.create(t.id, 'p-grants', policyInput('grants'), 1, audit(t.id));
  if (!created.ok) throw new Error('the granting policy was not created');
  granting = { id: created.value.id, updatedAt: created.value.updatedAt };
});
afterAll(async () => {
  await store?.close();
  await db?.drop();
});

describe(`store contract (${requestedEngine()})`, () => {
  it('runs on the engine the suite was asked for', () => {
    expect(store.engine).toBe(requestedEngine());
  });

  it('creates tenants with six built-in slots, only the Tenant primary filled', async () => {
    const t = await tenant('alpha');
    expect(await store.tenants.byName('alpha')).toEqual(t);
    expect(await store.tenants.byAudience('alpha.api.example.io')).toEqual(t);
    const slots = await store.keys.listBuiltin(t.id);
    expect(slots.map((s) => `${s.kind}/${s.slot}:${s.hint ?? '-'}`)).toEqual([
      'tenant/primary:ssa_…abcd',
      'tenant/secondary:-',
      'tenant-read-only/primary:-',
      'tenant-read-only/secondary:-',
      'secure-registry/primary:-',
      'secure-registry/secondary:-',
    ]);
    expect(await store.keys.builtinByDigest('digest-alpha')).toMatchObject({
      tenantId: t.id,
      kind: 'tenant',
      slot: 'primary',
    });
  });

  it('refuses a duplicate tenant name or audience and writes nothing', async () => {
    await tenant('bravo');
    const sameName = await store.tenants.create(
      { ...newTenant('bravo'), audience: 'b2' },
      { digest: 'd-b2', hint: 'h' },
      audit('x'),
    );
    expect(sameName).toEqual({ ok: false, conflict: 'name' });
    const other = { ...newTenant('charlie'), audience: 'bravo.api.example.io' };
    expect(await store.tenants.create(other, { digest: 'd-c', hint: 'h' }, audit(other.id))).toEqual({
      ok: false,
      conflict: 'audience',
    });
    expect(await store.tenants.byName('charlie')).toBeUndefined();
    expect(await store.keys.builtinByDigest('d-c')).toBeUndefined();
  });

  it('lists tenants by name, byte by byte, and finds each by id', async () => {
    const made = [];
    for (const name of ['list-b', 'list-a1', 'list-a-2']) made.push(await tenant(name));
    const listed = (await store.tenants.list()).filter((t) => t.name.startsWith('list-'));
    expect(listed.map((t) => t.name)).toEqual(['list-a-2', 'list-a1', 'list-b']);
    for (const t of made) expect(await store.tenants.byId(t.id)).toEqual(t);
    expect(await store.tenants.byId(randomUUID())).toBeUndefined();
    await expect(store.ping()).resolves.toBeUndefined();
  });

  it('rotates one slot: the old digest no longer resolves, the new one does, the others are untouched', async () => {
    const t = await tenant('delta');
    const rotated = await store.keys.rotate(
      t.id,
      'tenant',
      'primary',
      { digest: 'new-delta', hint: 'ssa_…new1' },
      5,
      audit(t.id),
      { expiredWithinMs: 0 },
    );
    expect(rotated).toEqual({
      tenantId: t.id,
      kind: 'tenant',
      slot: 'primary',
      hint: 'ssa_…new1',
      lastRotatedAt: 5,
      lastUsedAt: null,
    });
    expect(await store.keys.builtinByDigest('digest-delta')).toBeUndefined();
    expect(await store.keys.builtinByDigest('new-delta')).toMatchObject({ slot: 'primary' });
    const secondary = (await store.keys.listBuiltin(t.id)).find(
      (s) => s.kind === 'tenant' && s.slot === 'secondary',
    );
    expect(secondary).toMatchObject({ hint: null, lastRotatedAt: null });
  });

  it("records a slot's last use by its key's digest; a rotation clears it, and the old key's use no longer lands", async () => {
    const t = await tenant('delta-used');
    const slotOf = async (kind: string, slot: string) =>
      (await store.keys.listBuiltin(t.id)).find((s) => s.kind === kind && s.slot === slot);
    expect(await slotOf('tenant', 'primary')).toMatchObject({ lastUsedAt: null });
    await store.keys.touchBuiltin('digest-delta-used', 40);
    expect(await slotOf('tenant', 'primary')).toMatchObject({ lastUsedAt: 40 });
    expect(await store.keys.builtinByDigest('digest-delta-used')).toMatchObject({ lastUsedAt: 40 });
    expect(await slotOf('tenant', 'secondary')).toMatchObject({ lastUsedAt: null });
    const rotated = await store.keys.rotate(
      t.id,
      'tenant',
      'primary',
      { digest: 'new-delta-used', hint: 'ssa_…new3' },
      50,
      audit(t.id),
      { expiredWithinMs: 0 },
    );
    expect(rotated).toMatchObject({ lastRotatedAt: 50, lastUsedAt: null });
    // A use of the previous key recorded late (its write was batched before the rotation) is not the new key's.
    await store.keys.touchBuiltin('digest-delta-used', 60);
    expect(await slotOf('tenant', 'primary')).toMatchObject({ hint: 'ssa_…new3', lastUsedAt: null });
    await store.keys.touchBuiltin('new-delta-used', 70);
    expect(await slotOf('tenant', 'primary')).toMatchObject({ lastUsedAt: 70 });
  });

  it('stores fine-grained keys by digest, lists newest first, touches and deletes them', async () => {
    const t = await tenant('echo');
    const key = (id: string, createdAt: number): FineGrainedKey => ({
      id,
      tenantId: t.id,
      name: `key ${id}`,
      hint: 'ssf_…zzzz',
      permissions: ['harden-runner:read'],
      createdBy: 'tenant/primary',
      createdAt,
      expiresAt: createdAt + 1000,
      lastUsedAt: null,
    });
    await store.keys.createFineGrained(key('k1', 10), { digest: 'fg-1', hint: 'ssf_…0001' }, audit(t.id));
    await store.keys.createFineGrained(key('k2', 20), { digest: 'fg-2', hint: 'ssf_…0002' }, audit(t.id));
    await store.keys.createFineGrained(key('k0', 20), { digest: 'fg-0', hint: 'ssf_…0000' }, audit(t.id));
    const listed = (page?: { after?: FineGrainedKey; limit: number }) =>
      store.keys.pageFineGrained(t.id, page ?? { limit: 10 }).then((keys) => keys.map((k) => k.id));
    // Newest first; of two created in one millisecond, the greater id first.
    expect(await listed()).toEqual(['k2', 'k0', 'k1']);
    expect(await listed({ limit: 1 })).toEqual(['k2']);
    const [, k0] = await store.keys.pageFineGrained(t.id, { limit: 2 });
    expect(await listed({ after: k0, limit: 1 })).toEqual(['k1']);
    // After a place no key holds: the keys filed after it.
    expect(await listed({ after: { ...k0!, id: 'k1' }, limit: 5 })).toEqual(['k0', 'k1']);
    expect(await store.keys.pageFineGrained('another-tenant', { limit: 5 })).toEqual([]);
    await store.keys.deleteFineGrained(t.id, 'k0', 80, () => audit(t.id), { expiredWithinMs: 0 });
    expect(await store.keys.fineGrainedByDigest('fg-1')).toMatchObject({ id: 'k1', hint: 'ssf_…0001' });
    await store.keys.touchFineGrained('k1', 77);
    expect((await store.keys.getFineGrained(t.id, 'k1'))?.lastUsedAt).toBe(77);
    expect(
      await store.keys.deleteFineGrained('another-tenant', 'k1', 80, () => audit(t.id), {
        expiredWithinMs: 0,
      }),
    ).toBeUndefined();
    // The audit event is built from the row the delete itself read.
    const revokedEvent = (k: FineGrainedKey) => ({
      ...audit(t.id, 'fine_grained_key.revoked'),
      target: { type: 'fine_grained_key', id: k.id, name: k.name },
    });
    expect(
      await store.keys.deleteFineGrained(t.id, 'k1', 80, revokedEvent, { expiredWithinMs: 0 }),
    ).toMatchObject({ id: 'k1' });
    expect(await store.keys.fineGrainedByDigest('fg-1')).toBeUndefined();
    const [revoked] = await store.audit.list(t.id, { type: 'fine_grained_key.revoked', limit: 5 });
    expect(revoked?.target).toEqual({ type: 'fine_grained_key', id: 'k1', name: 'key k1' });
  });

  it('rotating a slot or deleting a key revokes the tokens it minted that expire after `at` less the margin given', async () => {
    // Later than the other tests' records, so that what they purge is only their own.
    const at = 1_000_000;
    const t = await tenant('november');
    const mint = (jti: string, credentialId: string, digest: string, expiresAt: number) =>
      store.tokens.recordMinted(
        { jti, tenantId: t.id, credentialId, expiresAt },
        digest,
        audit(t.id, 'token.minted'),
        1,
      );
    expect(await mint('slot-expired-before-margin', 'tenant/primary', 'digest-november', at - 60)).toBe(true);
    expect(await mint('slot-expired-within-margin', 'tenant/primary', 'digest-november', at - 59)).toBe(true);
    expect(await mint('slot-unexpired', 'tenant/primary', 'digest-november', at + 1)).toBe(true);
    await store.keys.rotate(
      t.id,
      'tenant',
      'primary',
      { digest: 'new-november', hint: 'ssa_…new2' },
      at,
      audit(t.id, 'api_key.rotated'),
      { expiredWithinMs: 60 },
    );
    expect(await store.tokens.isRevoked('slot-expired-before-margin')).toBe(false);
    expect(await store.tokens.isRevoked('slot-expired-within-margin')).toBe(true);
    expect(await store.tokens.isRevoked('slot-unexpired')).toBe(true);
    const [rotated] = await store.audit.list(t.id, { type: 'api_key.rotated', limit: 1 });
    expect(rotated?.details).toMatchObject({ access_tokens_revoked: 2 });

    const key: FineGrainedKey = {
      id: 'november-key',
      tenantId: t.id,
      name: 'bot',
      hint: 'ssf_…nov1',
      permissions: ['audit-log:read'],
      createdBy: 'tenant/primary',
      createdAt: 1,
      expiresAt: 2 * at,
      lastUsedAt: null,
    };
    await store.keys.createFineGrained(key, { digest: 'fg-november', hint: key.hint }, audit(t.id));
    expect(await mint('key-expired', key.id, 'fg-november', at)).toBe(true);
    expect(await mint('key-unexpired', key.id, 'fg-november', at + 1)).toBe(true);
    const revokedEvent = () => audit(t.id, 'fine_grained_key.revoked');
    await store.keys.deleteFineGrained(t.id, key.id, at, revokedEvent, { expiredWithinMs: 0 });
    expect(await store.tokens.isRevoked('key-expired')).toBe(false);
    expect(await store.tokens.isRevoked('key-unexpired')).toBe(true);
  });

  it('pages audit events newest first, filtered by type, per tenant', async () => {
    const t = await tenant('foxtrot');
    // All in one millisecond, as a busy tenant's are: their order and the pages are the ids'.
    for (let i = 0; i < 5; i++)
      await store.audit.append({ ...audit(t.id, i % 2 ? 'odd' : 'even'), details: { i } }, 2e12);
    const first = await store.audit.list(t.id, { limit: 2 });
    expect(first.map((e) => e.details.i)).toEqual([4, 3]);
    const second = await store.audit.list(t.id, { limit: 2, before: first[1]! });
    expect(second.map((e) => e.details.i)).toEqual([2, 1]);
    expect((await store.audit.list(t.id, { type: 'odd', limit: 10 })).map((e) => e.details.i)).toEqual([
      3, 1,
    ]);
    expect(await store.audit.list('nobody', { limit: 10 })).toEqual([]);
  });

  it('lists audit events newest first by the time recorded, whatever order they were written in', async () => {
    const t = await tenant('foxtrot-clock');
    await store.audit.append(audit(t.id, 'at-3'), 2e12 + 3_000);
    // Written after the event above by a replica whose clock runs behind, or by a request slow to commit.
    await store.audit.append(audit(t.id, 'at-1'), 2e12 + 1_000);
    await store.audit.append(audit(t.id, 'at-2'), 2e12 + 2_000);
    await store.audit.append(audit(t.id, 'at-2-too'), 2e12 + 2_000);
    const types = async (query: Partial<AuditQuery> = {}) =>
      (await store.audit.list(t.id, { limit: 10, ...query })).map((e) => e.type);
    expect(await types()).toEqual(['at-3', 'at-2-too', 'at-2', 'at-1', 'tenant.created']);
    const [, second] = await store.audit.list(t.id, { limit: 2 });
    expect(await types({ before: second! })).toEqual(['at-2', 'at-1', 'tenant.created']);
    expect(await types({ since: 2e12 + 1_000, until: 2e12 + 2_000 })).toEqual(['at-2-too', 'at-2', 'at-1']);
  });

  it("knows which events are a tenant's, and when each was recorded, so that a cursor names one of its own", async () => {
    const t = await tenant('foxtrot-own');
    const other = await tenant('foxtrot-other');
    await store.audit.append(audit(t.id, 'mine'), 2e12 + 1);
    await store.audit.append(audit(other.id, 'theirs'), 2e12 + 2);
    const [mine] = await store.audit.list(t.id, { limit: 1 });
    const [theirs] = await store.audit.list(other.id, { limit: 1 });
    expect(await store.audit.recordedAt(t.id, mine!.id)).toBe(2e12 + 1);
    expect(await store.audit.recordedAt(t.id, theirs!.id)).toBeUndefined();
    expect(await store.audit.recordedAt(t.id, theirs!.id + 1_000_000)).toBeUndefined();
  });

  describe('the query of a page of the audit log', () => {
    const cursor = { at: 2e12, id: 10 };
    // Per filter: the index it reads and the constraints that index serves as a range (SQLite's plan words them).
    const cases: [string, Omit<AuditQuery, 'limit'>, string, string[]][] = [
      ['no filter', {}, 'audit_events_tenant_at', []],
      ['type', { type: 'token.exchanged' }, 'audit_events_tenant_type_at', ['type=?']],
      ['outcome', { outcome: 'denied' }, 'audit_events_tenant_outcome_at', ['outcome=?']],
      ['since', { since: 2e12 }, 'audit_events_tenant_at', ['at>?']],
      ['until', { until: 2e12 }, 'audit_events_tenant_at', ['at<?']],
      ['since and until', { since: 2e12 - 9, until: 2e12 }, 'audit_events_tenant_at', ['at>?', 'at<?']],
      [
        'outcome since',
        { outcome: 'denied', since: 2e12 },
        'audit_events_tenant_outcome_at',
        ['outcome=?', 'at>?'],
      ],
      [
        'type since until',
        { type: 'token.exchanged', since: 2e12 - 9, until: 2e12 },
        'audit_events_tenant_type_at',
        ['type=?', 'at>?', 'at<?'],
      ],
      [
        'type and outcome',
        { type: 'token.exchange_denied', outcome: 'denied' },
        'audit_events_tenant_type_at',
        ['type=?'],
      ],
    ];
    // PostgreSQL's planner weighs a type against an outcome by its statistics: either index is a range.
    const onPostgres = (index: string, filters: Omit<AuditQuery, 'limit'>) =>
      filters.type && filters.outcome ? 'audit_events_tenant_(type|outcome)_at' : index;
    const plan = (query: AuditQuery) => planOf(raw, auditPage(store, 'some-tenant', query));
    let raw: SqlDriver;
    beforeAll(() => {
      raw = openDriver(db);
    });
    afterAll(() => raw?.close());

    it('bounds a page by the lower of until and the cursor only, which implies the other', () => {
      const bounds = (until: number) =>
        auditPage(store, 'some-tenant', { until, before: cursor, limit: 51 }).params.slice(1, -1);
      expect(bounds(cursor.at)).toEqual([cursor.at, cursor.id]);
      expect(bounds(cursor.at + 1)).toEqual([cursor.at, cursor.id]);
      expect(bounds(cursor.at - 1)).toEqual([cursor.at - 1]);
    });

    it.each(cases)(
      '%s: reads the range of its index the filters bound, newest first, sorting nothing',
      async (_, filters, index, ranges) => {
        for (const before of [undefined, cursor]) {
          const found = await plan({ ...filters, before, limit: 51 });
          if (db.engine === 'sqlite') {
            // The constraints the search uses, as "(tenant_id=? AND type=? AND at>? AND at<?)".
            const search = new RegExp(`^SEARCH audit_events USING INDEX ${index} \\((.*)\\)$`).exec(found);
            expect(search, found).not.toBeNull();
            const used = search![1]!.split(' AND ');
            expect(used[0]).toBe('tenant_id=?');
            for (const range of [...ranges, ...(before ? ['at<?'] : [])])
              expect(used, found).toContain(range);
          } else {
            expect(found).toMatch(
              new RegExp(`Index Scan Backward using ${onPostgres(index, filters)} on audit_events`),
            );
            if (before) expect(found).toMatch(/Index Cond: .*\(ROW\(at, id\) < ROW\(/);
          }
          expect(found).not.toMatch(/Sort|TEMP B-TREE/);
        }
      },
    );
  });

  describe('audit retention', () => {
    /** A store of its own, on a database of its own: purging by time would otherwise take the other tests' events. */
    let log: TestDatabase;
    let trimmed: Store;
    const open = () =>
      openStore(loadConfig({ DATABASE_URL: log.url, BROKER_KEY_ENCRYPTION_KEY: '22'.repeat(32) }).database);
    const appendAll = (tenantId: string, at: number, count: number) =>
      Promise.all(
        Array.from({ length: count }, (_, i) =>
          trimmed.audit.append({ ...audit(tenantId, 'test.event'), details: { i, at } }, at),
        ),
      );
    const times = async (tenantId: string) =>
      (await trimmed.audit.list(tenantId, { limit: 200 })).map((e) => e.at);

    beforeAll(async () => {
      log = await createTestDatabase(store.engine);
      trimmed = await open();
    });
    afterAll(async () => {
      await trimmed?.close();
      await log?.drop();
    });

    it('knows no oldest event in an empty log', async () => {
      expect(await trimmed.audit.oldestKept()).toBeUndefined();
      expect(await trimmed.audit.purgeOlderThan(1_000)).toBe(0);
    });

    it('forgets events older than a time, of every tenant, in batches, and keeps the newer', async () => {
      await appendAll('t-a', 100, 1_100);
      await appendAll('t-b', 100, 1_100);
      await appendAll('t-a', 9_000, 3);
      const oldest = (await trimmed.audit.list('t-a', { limit: 3 })).at(-1)!.id;
      expect(await trimmed.audit.purgeOlderThan(5_000)).toBe(2_200);
      expect(await times('t-a')).toEqual([9_000, 9_000, 9_000]);
      expect(await times('t-b')).toEqual([]);
      expect(await trimmed.audit.oldestKept()).toBe(oldest);
      expect(await trimmed.audit.purgeOlderThan(5_000)).toBe(0);
    });

    it('deletes only below the oldest event it keeps: every event kept is newer, by id, than every one deleted', async () => {
      // Recorded out of order, as a replica whose clock runs behind, or a request that took long to commit,
      // records them: the older ones after the newer stay until the newer are old enough to go too.
      await appendAll('t-c', 12_000, 2);
      await appendAll('t-c', 11_000, 2);
      await appendAll('t-c', 20_000, 1);
      expect(await trimmed.audit.purgeOlderThan(11_500)).toBe(3);
      expect(await times('t-c')).toEqual([20_000, 12_000, 12_000, 11_000, 11_000]);
      expect(await times('t-a')).toEqual([]);
      expect(await trimmed.audit.purgeOlderThan(12_500)).toBe(4);
      expect(await times('t-c')).toEqual([20_000]);
    });

    it('takes purges run at once by several replicas: each event is deleted once, none of them fails', async () => {
      const replica = await open();
      try {
        await appendAll('t-d', 30_000, 2_500);
        await appendAll('t-d', 50_000, 2);
        const counts = await Promise.all([
          trimmed.audit.purgeOlderThan(40_000),
          replica.audit.purgeOlderThan(40_000),
          replica.audit.purgeOlderThan(40_000),
        ]);
        // A run that found its batch taken by another stops there; what it left goes at its next run.
        counts.push(await trimmed.audit.purgeOlderThan(40_000));
        expect(counts.reduce((a, b) => a + b)).toBe(2_501);
        expect(await times('t-d')).toEqual([50_000, 50_000]);
      } finally {
        await replica.close();
      }
    });
  });

  it('gives audit events ids in commit order: one committed after a read has a greater id than all that read saw', async () => {
    const t = await tenant('foxtrot-two');
    await store.audit.append(audit(t.id, 'before'), 1);
    // A second connection (another replica, or another of this one's) commits a change slowly.
    const other = openDriver(db);
    try {
      const gate = deferred();
      const appended = deferred();
      const slow = other.transaction(async (tx) => {
        await appendAudit(tx, audit(t.id, 'slow'), 2);
        appended.resolve();
        await gate.promise;
      });
      await appended.promise;
      // Meanwhile this connection records more through group commit (on SQLite its writer thread waits for the
      // lock the slow transaction holds; a transaction on the event loop's connection would block the test).
      const later = Promise.all([
        store.audit.append(audit(t.id, 'later'), 3),
        store.audit.append(audit(t.id, 'later'), 4),
      ]);
      // Given time to commit if nothing holds them back, then read as an exporter tailing the log would.
      await Promise.race([later, new Promise((resolve) => setTimeout(resolve, 300))]);
      const seen = await store.audit.list(t.id, { limit: 100 });
      gate.resolve();
      await slow;
      await later;
      const all = await store.audit.list(t.id, { limit: 100 });
      expect(all.map((e) => e.type).sort()).toEqual(['before', 'later', 'later', 'slow', 'tenant.created']);
      const newestSeen = Math.max(...seen.map((e) => e.id));
      for (const event of all.filter((e) => !seen.some((s) => s.id === e.id))) {
        expect(
          event.id,
          `${event.type} was committed after the reader had seen id ${newestSeen}`,
        ).toBeGreaterThan(newestSeen);
      }
    } finally {
      await other.close();
    }
  });

  it('records each (issuer, jti) once and keeps revocations until they expire', async () => {
    expect(await store.tokens.wasExchanged('https://issuer', 'jti-1')).toBe(false);
    expect(await use('https://issuer', 'jti-1', 1000)).toBe(true);
    expect(await store.tokens.wasExchanged('https://issuer', 'jti-1')).toBe(true);
    expect(await use('https://issuer', 'jti-1', 1000)).toBe(false);
    expect(await store.tokens.wasExchanged('https://other', 'jti-1')).toBe(false);
    expect(await use('https://other', 'jti-1', 1000)).toBe(true);
    const t = await tenant('golf');
    await store.tokens.revoke('tok-1', t.id, 2000, 1, audit(t.id, 'token.revoked'));
    await store.tokens.revoke('tok-1', t.id, 2000, 2, audit(t.id, 'token.revoked'));
    expect(await store.tokens.isRevoked('tok-1')).toBe(true);
    expect(await store.tokens.isRevoked('tok-2')).toBe(false);
    expect(await store.tokens.purgeExpired(1500)).toBe(2);
    expect(await store.tokens.wasExchanged('https://issuer', 'jti-1')).toBe(false);
    expect(await use('https://issuer', 'jti-1', 1000)).toBe(true);
    expect(await store.tokens.isRevoked('tok-1')).toBe(true);
  });

  it('purges expired records of any number, in batches, and keeps the unexpired', async () => {
    const expired = Array.from({ length: 2_100 }, (_, i) => use('https://purge', `old-${i}`, 100));
    expect(await Promise.all(expired)).toEqual(expired.map(() => true));
    expect(await use('https://purge', 'current', 10_000)).toBe(true);
    expect(await store.tokens.purgeExpired(5_000)).toBeGreaterThanOrEqual(2_100);
    expect(await store.tokens.wasExchanged('https://purge', 'old-0')).toBe(false);
    expect(await store.tokens.wasExchanged('https://purge', 'old-2099')).toBe(false);
    expect(await store.tokens.wasExchanged('https://purge', 'current')).toBe(true);
  });

  it('a purge whose batch was slow goes on in smaller ones, never over a thousand rows, and purges everything expired', async () => {
    const rows = 1_000 + 500 + 625 + 782 + 978 + 1_000 + 400;
    const expired = Array.from({ length: rows }, (_, i) => use('https://paced', `old-${i}`, 200));
    expect(await Promise.all(expired)).toEqual(expired.map(() => true));
    expect(await use('https://paced', 'current', 10_000)).toBe(true);
    const raw = openDriver(db);
    // The first batch takes 40 ms, over the 20 ms a batch is meant to take; the others as long as they take.
    const limits: number[] = [];
    const run: SqlDriver['run'] = async (sql, params = []) => {
      if (!sql.startsWith('DELETE FROM used_jtis')) return raw.run(sql, params);
      limits.push(Number(params.at(-1)));
      const deleted = await raw.run(sql, params);
      if (limits.length === 1) await new Promise((resolve) => setTimeout(resolve, 40));
      return deleted;
    };
    const paced = new Proxy(raw, {
      get: (driver, name) => (name === 'run' ? run : Reflect.get(driver, name, driver)),
    });
    try {
      expect(await storeOn(paced).tokens.purgeExpired(5_000)).toBeGreaterThanOrEqual(rows);
      // The batches after the second take as long as they take here: only their bounds are certain.
      expect(limits.slice(0, 2)).toEqual([1_000, 500]);
      expect(Math.max(...limits)).toBeLessThanOrEqual(1_000);
      expect(Math.min(...limits)).toBeGreaterThanOrEqual(50);
      const left = await raw.get<{ n: number | string }>(
        'SELECT COUNT(*) AS n FROM used_jtis WHERE issuer = ?',
        ['https://paced'],
      );
      expect(Number(left?.n)).toBe(1);
      expect(await store.tokens.wasExchanged('https://paced', 'current')).toBe(true);
    } finally {
      await raw.close();
    }
  });

  it('the size of the next purge batch: half after a slow one (not below 50), a quarter more after a fast one (not above 1,000)', () => {
    expect(nextPurgeBatch(1_000, 40)).toBe(500);
    expect(nextPurgeBatch(80, 40)).toBe(50);
    expect(nextPurgeBatch(500, 2)).toBe(625);
    expect(nextPurgeBatch(900, 2)).toBe(1_000);
    expect(nextPurgeBatch(500, 15)).toBe(500);
  });

  it('records exchanges in group commits: one fresh use per (issuer, jti), every outcome audited, failures isolated', async () => {
    const t = await tenant('juliet');
    const record = exchangesOf(t.id, 'https://issuer');
    // Issued in one turn of the event loop, so they share a batch; the broken one must fail alone.
    const results = await Promise.allSettled([
      record('same'),
      record('same'),
      record('other'),
      record('broken', { n: 1n }),
    ]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : 'rejected'))).toEqual([
      true,
      false,
      true,
      'rejected',
    ]);
    const events = await store.audit.list(t.id, { limit: 10 });
    expect(events.map((e) => e.type).sort()).toEqual([
      'tenant.created',
      'token.exchange_denied',
      'token.exchanged',
      'token.exchanged',
    ]);
    expect(await use('https://issuer', 'broken', 5000)).toBe(true);
  });

  it('records exchanges issued over many turns while earlier batches commit: each (issuer, jti) fresh exactly once', async () => {
    const t = await tenant('kilo');
    const record = exchangesOf(t.id, 'https://issuer.kilo');
    // 20 turns of 10 writes; every jti is sent three times, in three different turns.
    const pending: Promise<boolean>[] = [];
    const jtis: string[] = [];
    for (let turn = 0; turn < 20; turn++) {
      for (let k = 0; k < 10; k++) {
        const jti = `jti-${(turn * 10 + k) % 70}`;
        jtis.push(jti);
        pending.push(record(jti));
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    const fresh = await Promise.all(pending);
    expect(fresh).toEqual(jtis.map((jti, i) => jtis.indexOf(jti) === i));
    const events = await store.audit.list(t.id, { limit: 500 });
    expect(events.filter((e) => e.type === 'token.exchanged')).toHaveLength(70);
    expect(events.filter((e) => e.type === 'token.exchange_denied')).toHaveLength(130);
  });

  it('records an exchange only while its granting policy is as it was read; a replay is a replay either way', async () => {
    const t = await tenant('oscar');
    const exchange = exchangesOf(t.id, 'https://issuer.oscar');
    const record = (jti: string, grantedBy: { id: string; updatedAt: number }) =>
      exchange(jti, {}, grantedBy);
    const v1 = await store.policies.create(t.id, 'p-oscar', policyInput('oscar'), 100, audit(t.id));
    if (!v1.ok) throw new Error('create');
    // Replaced within the same millisecond: its updated_at still moves forward.
    const changed = { ...policyInput('oscar'), description: 'changed' };
    const v2 = await store.policies.replace(t.id, 'p-oscar', changed, 100, () => audit(t.id));
    if (!v2?.ok) throw new Error('replace');
    expect(v2.value.updatedAt).toBeGreaterThan(v1.value.updatedAt);
    const read = (v: typeof v1) => ({ id: v.value.id, updatedAt: v.value.updatedAt });

    await expect(record('a', read(v1))).rejects.toBeInstanceOf(GrantingPolicyChanged);
    expect(await record('a', read(v2))).toBe(true);
    // Used meanwhile: a replay, audited, whatever became of the policy the decision read.
    expect(await record('a', read(v1))).toBe(false);
    await store.policies.delete(t.id, 'p-oscar', 200, () => audit(t.id, 'policy.deleted'));
    await expect(record('b', read(v2))).rejects.toBeInstanceOf(GrantingPolicyChanged);
    const types = (await store.audit.list(t.id, { limit: 20 })).map((e) => e.type);
    expect(types.filter((type) => type.startsWith('token.'))).toEqual([
      'token.exchange_denied',
      'token.exchanged',
    ]);
  });

  it('commits on close the exchanges still gathering for a batch, and takes none after', async () => {
    const t = await tenant('lima');
    const other = await openStore(
      loadConfig({ DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: '22'.repeat(32) }).database,
    );
    const recorded = other.tokens.recordExchange(
      { issuer: 'https://issuer.lima', jti: 'on-close', expiresAt: 5000 },
      {
        fresh: audit(t.id, 'token.exchanged'),
        replayed: { ...audit(t.id, 'token.exchange_denied'), outcome: 'denied' },
      },
      10,
      granting,
    );
    await other.close();
    expect(await recorded).toBe(true);
    expect((await store.audit.list(t.id, { limit: 10 })).map((e) => e.type)).toContain('token.exchanged');
    // A closed store takes no more writes (it must not quietly reopen the database behind its owner).
    await expect(
      other.tokens.recordExchange(
        { issuer: 'https://issuer.lima', jti: 'after-close', expiresAt: 5000 },
        { fresh: audit(t.id, 'token.exchanged'), replayed: audit(t.id, 'token.exchange_denied') },
        11,
        granting,
      ),
    ).rejects.toThrow();
    expect(await use('https://issuer.lima', 'after-close', 5000)).toBe(true);
  });

  it('serialises concurrent changes of one policy: each audit event names the state it replaced or removed', async () => {
    const t = await tenant('mike');
    const policy = (description: string) => ({
      name: 'deploy',
      description,
      issuer: 'https://token.actions.githubusercontent.com',
      claims: { repository: 'acme/infra' },
      max_session_duration_seconds: 0,
      permissions: ['harden-runner:read' as const],
      allow_pull_request_target: false,
    });
    await store.policies.create(t.id, 'p-m', policy('v0'), 1, audit(t.id));
    const replaced = (previous: { description: string | null }) => ({
      ...audit(t.id, 'policy.replaced'),
      details: { previous: previous.description },
    });
    await Promise.all(
      ['v1', 'v2', 'v3', 'v4'].map((v, i) => store.policies.replace(t.id, 'p-m', policy(v), 2 + i, replaced)),
    );
    const deletions = await Promise.all(
      [1, 2, 3].map(() => store.policies.delete(t.id, 'p-m', 10, () => audit(t.id, 'policy.deleted'))),
    );
    expect(deletions.filter(Boolean)).toHaveLength(1);
    const events = (await store.audit.list(t.id, { limit: 20 })).reverse();
    expect(events.filter((e) => e.type === 'policy.deleted')).toHaveLength(1);
    // Each replacement saw the one before it: the chain of previous descriptions has no repeat.
    const previous = events.filter((e) => e.type === 'policy.replaced').map((e) => e.details?.previous);
    expect(new Set(previous).size).toBe(4);
    expect(previous).toContain('v0');
  });

  it('changes a policy only while its precondition holds on the row it locked: of two stores racing with one version, one changes it', async () => {
    const t = await tenant('conditional');
    const created = await store.policies.create(t.id, 'p-i', policyInput('conditional'), 1, audit(t.id));
    if (!created.ok) throw new Error('create');
    const read = created.value.updatedAt;
    const unchangedSince = (current: { updatedAt: number }) => current.updatedAt === read;
    const second = await openStore(
      loadConfig({ DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: '22'.repeat(32) }).database,
    );
    try {
      const outcomes = await Promise.allSettled(
        [store, second].map((writer, i) =>
          writer.policies.replace(
            t.id,
            'p-i',
            { ...policyInput('conditional'), description: `writer ${i}` },
            2,
            () => audit(t.id, 'policy.updated'),
            unchangedSince,
          ),
        ),
      );
      const won = outcomes.filter((o) => o.status === 'fulfilled');
      const lost = outcomes.filter((o) => o.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost.map((o) => o.reason)).toEqual([expect.any(PreconditionFailed)]);
    } finally {
      await second.close();
    }
    const after = await store.policies.get(t.id, 'p-i');
    expect(after?.updatedAt).toBeGreaterThan(read);
    // Refused before the shortcut of a replacement that changes nothing, and for a deletion alike: nothing written.
    const asStored = { ...policyInput('conditional'), description: after?.description ?? null };
    for (const change of [
      () =>
        store.policies.replace(t.id, 'p-i', asStored, 3, () => audit(t.id, 'policy.updated'), unchangedSince),
      () => store.policies.delete(t.id, 'p-i', 3, () => audit(t.id, 'policy.deleted'), unchangedSince),
    ])
      await expect(change()).rejects.toBeInstanceOf(PreconditionFailed);
    expect(await store.policies.get(t.id, 'p-i')).toEqual(after);
    // A policy that is not there is undefined, whatever the condition.
    const never = () => false;
    expect(
      await store.policies.replace(t.id, 'p-none', asStored, 4, () => audit(t.id), never),
    ).toBeUndefined();
    expect(await store.policies.delete(t.id, 'p-none', 4, () => audit(t.id), never)).toBeUndefined();
    const holding = (current: { updatedAt: number }) => current.updatedAt === after?.updatedAt;
    expect(await store.policies.delete(t.id, 'p-i', 5, () => audit(t.id, 'policy.deleted'), holding)).toEqual(
      after,
    );
    expect((await store.audit.list(t.id, { limit: 20 })).map((e) => e.type)).toEqual([
      'policy.deleted',
      'policy.updated',
      'test.event',
      'tenant.created',
    ]);
  });

  it('a replacement that changes nothing writes nothing: no event, the same updated_at', async () => {
    const t = await tenant('no-change');
    const created = await store.policies.create(t.id, 'p-n', policyInput('same'), 1, audit(t.id));
    if (!created.ok) throw new Error('create');
    const same = await store.policies.replace(t.id, 'p-n', policyInput('same'), 5, () =>
      audit(t.id, 'policy.updated'),
    );
    expect(same).toEqual(created);
    expect((await store.policies.get(t.id, 'p-n'))?.updatedAt).toBe(1);
    expect((await store.audit.list(t.id, { limit: 20 })).map((e) => e.type)).toEqual([
      'test.event',
      'tenant.created',
    ]);
  });

  it('keeps policy names unique per tenant, case-insensitively, and finds candidates by owner and repository', async () => {
    const t = await tenant('hotel');
    const input = (name: string, claims: Record<string, string>) => ({
      name,
      description: null,
      issuer: 'https://token.actions.githubusercontent.com',
      claims,
      max_session_duration_seconds: 0,
      permissions: ['harden-runner:read' as const],
      allow_pull_request_target: false,
    });
    const a = await store.policies.create(
      t.id,
      'p-a',
      input('Deploy', { repository: 'Acme/Infra' }),
      1,
      audit(t.id),
    );
    expect(a.ok).toBe(true);
    expect(
      await store.policies.create(t.id, 'p-b', input('deploy', { repository_owner: 'acme' }), 1, audit(t.id)),
    ).toEqual({
      ok: false,
      conflict: 'name',
    });
    await store.policies.create(
      t.id,
      'p-c',
      input('owner-wide', { repository_owner: 'ACME' }),
      2,
      audit(t.id),
    );
    await store.policies.create(t.id, 'p-d', input('other repo', { repository: 'acme/web' }), 3, audit(t.id));
    const found = await store.policies.candidates(
      t.id,
      'https://token.actions.githubusercontent.com',
      'acme',
      'acme/infra',
    );
    expect(found.map((p) => p.id).sort()).toEqual(['p-a', 'p-c']);
    expect(await store.policies.candidates(t.id, 'https://elsewhere', 'acme', 'acme/infra')).toEqual([]);
    // By name, whatever the policy matches; only in its own tenant.
    expect((await store.policies.named(t.id, 'other repo')).map((p) => p.id)).toEqual(['p-d']);
    expect((await store.policies.named(t.id, 'deploy')).map((p) => p.id)).toEqual(['p-a']);
    expect(await store.policies.named('other', 'deploy')).toEqual([]);
    const previous: unknown[] = [];
    const replaced = await store.policies.replace(
      t.id,
      'p-a',
      input('Deploy', { repository: 'acme/web' }),
      9,
      (before) => {
        previous.push(before.claims);
        return audit(t.id);
      },
    );
    expect(replaced).toMatchObject({ ok: true, value: { createdAt: 1, updatedAt: 9 } });
    expect(previous).toEqual([{ repository: 'Acme/Infra' }]);
    expect((await store.policies.get(t.id, 'p-a'))?.claims).toEqual({ repository: 'acme/web' });
    expect(
      await store.policies.replace('other', 'p-a', input('x', { repository: 'a/b' }), 9, () => audit(t.id)),
    ).toBeUndefined();
    expect(await store.policies.delete(t.id, 'p-a', 10, () => audit(t.id))).toMatchObject({ name: 'Deploy' });
    expect((await store.policies.list(t.id)).map((p) => p.name)).toEqual(['other repo', 'owner-wide']);
  });

  it("pages a tenant's policies by name key, byte by byte, continuing after a key no policy has any more", async () => {
    const t = await tenant('sierra');
    const other = await tenant('sierra-other');
    // Case-folded keys in byte order: '-' (0x2D) < '.' (0x2E) < '_' (0x5F) < letters < 'é' (0xC3 0xA9).
    const names = ['zulu', 'a_pol', 'Éclair', 'a-pol2', 'B-pol', 'a.pol', 'Mike'];
    for (const [i, name] of names.entries())
      await store.policies.create(t.id, `s-${i}`, policyInput(name), 1, audit(t.id));
    await store.policies.create(other.id, 'o-1', policyInput('a-theirs'), 1, audit(other.id));
    const page = async (after: string | undefined, limit: number) =>
      (await store.policies.page(t.id, { after, limit })).map((p) => p.policy.name);
    expect(await store.policies.page(t.id, { limit: 2 })).toEqual([
      { policy: await store.policies.get(t.id, 's-3'), nameKey: 'a-pol2' },
      { policy: await store.policies.get(t.id, 's-5'), nameKey: 'a.pol' },
    ]);
    expect(await page(undefined, 3)).toEqual(['a-pol2', 'a.pol', 'a_pol']);
    expect(await page('a_pol', 3)).toEqual(['B-pol', 'Mike', 'zulu']);
    expect(await page('zulu', 3)).toEqual(['Éclair']);
    expect(await page('éclair', 3)).toEqual([]);
    // The key of a policy deleted meanwhile, or of none at all, still marks a place in the order.
    await store.policies.delete(t.id, 's-5', 2, () => audit(t.id));
    expect(await page('a.pol', 2)).toEqual(['a_pol', 'B-pol']);
    expect(await page('c', 1)).toEqual(['Mike']);
    expect((await store.policies.list(t.id)).map((p) => p.name)).toEqual([
      'a-pol2',
      'a_pol',
      'B-pol',
      'Mike',
      'zulu',
      'Éclair',
    ]);
    expect(await store.policies.page('nobody', { limit: 5 })).toEqual([]);
  });

  it('reads a page of policies along the name index, sorting nothing, once a database of the previous version is upgraded', async () => {
    // As managed PostgreSQL databases often are: an ICU collation, whose order is not the listing's.
    const older = await createTestDatabase(store.engine, { icuLocale: 'en-US' });
    const raw = openDriver(older);
    try {
      await migrate(raw);
      if (raw.engine === 'postgres')
        await raw.exec('ALTER TABLE trust_policies ALTER COLUMN name_key TYPE TEXT COLLATE "default"');
      await raw.run('DELETE FROM schema_migrations WHERE version = 6');
      expect(await migrate(raw)).toEqual({ applied: [6], unknown: [], namesakes: [] });
      const plan = await planOf(raw, policyPage(raw, 'some-tenant', { after: 'deploy', limit: 100 }));
      expect(plan).toContain('trust_policies_name');
      expect(plan).not.toMatch(/Sort|TEMP B-TREE/);
    } finally {
      await raw.close();
      await older.drop();
    }
  });

  it('compares policy names by Unicode caseless matching, the same on both engines', async () => {
    const t = await tenant('papa');
    const create = (id: string, name: string) =>
      store.policies.create(t.id, id, policyInput(name), 1, audit(t.id));
    // The same name: differing only in case (final sigma, sharp s, long s, ligature, Kelvin sign, dotted İ) or in
    // how an accent is encoded (one code point, or a letter and a combining accent).
    const namesakes = [
      ['ΟΔΟΣ', 'οδοσ'],
      ['STRASSE', 'straße'],
      ['Grüße', 'GRÜẞE'],
      ['ſecrets', 'SECRETS'],
      ['ﬁle', 'FILE'],
      ['caf\u00e9', 'CAFE\u0301'],
      ['\u212Aeys', 'keys'],
      ['İzmir', 'i\u0307zmir'],
      // Or in characters that show as nothing: a pasted zero-width space, a word joiner, a variation selector.
      ['deploy\u200b', 'DEPLOY'],
      ['ro\u2060llout', 'rollout'],
      ['\u2764\ufe0f ops', '\u2764 ops'],
    ];
    for (const [i, [first, second]] of namesakes.entries()) {
      expect((await create(`n-${i}`, first!)).ok, first).toBe(true);
      expect(await create(`n-${i}-again`, second!), `${first} / ${second}`).toEqual({
        ok: false,
        conflict: 'name',
      });
    }
    // Different names: the dotless ı is a letter of its own (Unicode's default folding is not Turkish).
    for (const [i, name] of ['dış', 'DIŞ', 'İstanbul', 'istanbul'].entries())
      expect((await create(`d-${i}`, name)).ok, name).toBe(true);
  });

  it('rolls a failed transaction back completely', async () => {
    const t = newTenant('india');
    // The audit insert violates NOT NULL (no actor) after the tenant rows went in: nothing may remain.
    const broken = { ...audit(t.id), actor: undefined } as unknown as AuditEventInput;
    await expect(store.tenants.create(t, { digest: 'd-india', hint: 'h' }, broken)).rejects.toThrow();
    expect(await store.tenants.byName('india')).toBeUndefined();
    expect(await store.keys.builtinByDigest('d-india')).toBeUndefined();
  });

  it('stores signing keys and rotates them: racing first keys or rotations leave one key signing', async () => {
    const key = (kid: string, at: number) => ({
      kid,
      publicJwk: '{}',
      privateKey: 'enc',
      createdAt: at,
      activeFrom: at,
      retiredAt: null,
    });
    const raced = await Promise.all([
      store.signingKeys.insertFirst(key('k-1', 1)),
      store.signingKeys.insertFirst(key('k-2', 1)),
    ]);
    expect(raced.filter(Boolean)).toHaveLength(1);
    const first = raced[0] ? 'k-1' : 'k-2';
    expect(await store.signingKeys.rotateTo(key('k-3', 50))).toEqual([first]);
    expect(await store.signingKeys.list()).toEqual([{ ...key(first, 1), retiredAt: 50 }, key('k-3', 50)]);
    // Two rotations at once: each retires what was signing before it, and one key is left to sign.
    const rotations = await Promise.all([
      store.signingKeys.rotateTo(key('k-4', 90)),
      store.signingKeys.rotateTo(key('k-5', 90)),
    ]);
    expect(rotations.flat().sort()).toEqual(['k-3', rotations[0]!.includes('k-3') ? 'k-4' : 'k-5'].sort());
    expect((await store.signingKeys.list()).filter((k) => k.retiredAt === null)).toHaveLength(1);
  });

  it('keeps the first value stored under a setting: of racing first values exactly one, until it is replaced', async () => {
    const raced = await Promise.all(['a', 'b', 'c', 'd'].map((value) => store.settings.first('race', value)));
    expect(new Set(raced).size).toBe(1);
    expect(['a', 'b', 'c', 'd']).toContain(raced[0]);
    expect(await store.settings.first('race', 'e')).toBe(raced[0]);
    await store.settings.replace('race', 'f');
    expect(await store.settings.first('race', 'g')).toBe('f');
    expect(await store.settings.get('race')).toBe('f');
    expect(await store.settings.get('never')).toBeUndefined();
    // A name never stored takes the value given.
    await store.settings.replace('other', 'h');
    expect(await store.settings.first('other', 'i')).toBe('h');
  });

  it('an upgrade adds the settings table to a database without it', async () => {
    const older = await createTestDatabase(store.engine);
    const raw = openDriver(older);
    try {
      await migrate(raw);
      await raw.exec('DROP TABLE broker_settings');
      await raw.run('DELETE FROM schema_migrations WHERE version = 5');
      expect(await migrate(raw)).toEqual({ applied: [5], unknown: [], namesakes: [] });
      expect(await storeOn(raw).settings.first('after-upgrade', 'v')).toBe('v');
    } finally {
      await raw.close();
      await older.drop();
    }
  });

  it('an upgrade gives the built-in slots of a database without it a last use, null until their keys are used', async () => {
    const older = await createTestDatabase(store.engine);
    const raw = openDriver(older);
    try {
      await migrate(raw);
      const upgraded = storeOn(raw);
      const t = newTenant('mike');
      await upgraded.tenants.create(t, { digest: 'digest-mike', hint: 'ssa_…mike' }, audit(t.id));
      await raw.exec('ALTER TABLE builtin_keys DROP COLUMN last_used_at');
      await raw.run('DELETE FROM schema_migrations WHERE version = 7');
      expect(await migrate(raw)).toEqual({ applied: [7], unknown: [], namesakes: [] });
      expect((await upgraded.keys.listBuiltin(t.id)).map((s) => s.lastUsedAt)).toEqual(Array(6).fill(null));
      await upgraded.keys.touchBuiltin('digest-mike', 90);
      expect(await upgraded.keys.builtinByDigest('digest-mike')).toMatchObject({ lastUsedAt: 90 });
    } finally {
      await raw.close();
      await older.drop();
    }
  });

  it("an upgrade gives a database's audit log the indexes that list it by the time recorded", async () => {
    const older = await createTestDatabase(store.engine);
    const raw = openDriver(older);
    const indexes = () => indexesOf(raw, 'audit_events');
    try {
      await migrate(raw);
      const upgraded = storeOn(raw);
      await upgraded.audit.append(audit('t-upgraded', 'later'), 2_000);
      await upgraded.audit.append(audit('t-upgraded', 'earlier'), 1_000);
      // As the previous version left it: the log indexed by id, and migration 8 not yet applied.
      for (const index of await indexes()) await raw.exec(`DROP INDEX ${index}`);
      await raw.exec('CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id)');
      await raw.exec('CREATE INDEX audit_events_tenant_type ON audit_events (tenant_id, type, id)');
      await raw.run('DELETE FROM schema_migrations WHERE version = 8');
      expect(await migrate(raw)).toEqual({ applied: [8], unknown: [], namesakes: [] });
      expect(await indexes()).toEqual([
        'audit_events_tenant_at',
        'audit_events_tenant_outcome_at',
        'audit_events_tenant_type_at',
      ]);
      const listed = await upgraded.audit.list('t-upgraded', { limit: 5 });
      expect(listed.map((e) => e.type)).toEqual(['later', 'earlier']);
      expect(
        (await upgraded.audit.list('t-upgraded', { before: listed[0]!, limit: 5 })).map((e) => e.type),
      ).toEqual(['earlier']);
    } finally {
      await raw.close();
      await older.drop();
    }
  });

  it('an upgrade gives fine-grained keys the index their pages are read along, sorting nothing', async () => {
    const older = await createTestDatabase(store.engine);
    const raw = openDriver(older);
    const indexes = () => indexesOf(raw, 'fine_grained_keys');
    try {
      await migrate(raw);
      // As the previous version left it: the keys indexed by (tenant_id, created_at), migration 9 not yet applied.
      await raw.exec('DROP INDEX fine_grained_keys_tenant_created');
      await raw.exec('CREATE INDEX fine_grained_keys_tenant ON fine_grained_keys (tenant_id, created_at)');
      await raw.run('DELETE FROM schema_migrations WHERE version = 9');
      expect(await migrate(raw)).toEqual({ applied: [9], unknown: [], namesakes: [] });
      expect(await indexes()).toEqual(['fine_grained_keys_digest', 'fine_grained_keys_tenant_created']);
      const plan = await planOf(
        raw,
        fineGrainedKeyPage('some-tenant', { after: { createdAt: 1_000, id: 'some-key' }, limit: 101 }),
      );
      expect(plan).toContain('fine_grained_keys_tenant_created');
      expect(plan).not.toMatch(/Sort|TEMP B-TREE/);
    } finally {
      await raw.close();
      await older.drop();
    }
  });

  it('an upgrade keeps the signing keys stored before keys had an activation time signing as they did', async () => {
    // A database as the previous version left it: without active_from, and migration 3 not yet applied.
    const older = await createTestDatabase(store.engine);
    const raw = openDriver(older);
    try {
      await migrate(raw);
      await raw.exec('ALTER TABLE signing_keys DROP COLUMN active_from');
      await raw.run('DELETE FROM schema_migrations WHERE version = 3');
      await raw.run(
        'INSERT INTO signing_keys (kid, public_jwk, private_key, created_at, retired_at) VALUES (?, ?, ?, ?, ?)',
        ['k-old', '{}', 'enc', 1_000, 2_000],
      );
      await raw.run(
        'INSERT INTO signing_keys (kid, public_jwk, private_key, created_at, retired_at) VALUES (?, ?, ?, ?, ?)',
        ['k-current', '{}', 'enc', 2_000, null],
      );
      expect(await migrate(raw)).toEqual({ applied: [3], unknown: [], namesakes: [] });
      expect(await storeOn(raw).signingKeys.list()).toEqual([
        {
          kid: 'k-old',
          publicJwk: '{}',
          privateKey: 'enc',
          createdAt: 1_000,
          activeFrom: 1_000,
          retiredAt: 2_000,
        },
        {
          kid: 'k-current',
          publicJwk: '{}',
          privateKey: 'enc',
          createdAt: 2_000,
          activeFrom: 2_000,
          retiredAt: null,
        },
      ]);
    } finally {
      await raw.close();
      await older.drop();
    }
  });

  it('an upgrade files policy names under the new comparison, keeping every policy', async () => {
    // A database as the previous version left it: names keyed by toLowerCase(), migrations 4 and 6 not yet applied.
    const older = await createTestDatabase(store.engine);
    const raw = openDriver(older);
    try {
      await migrate(raw);
      await raw.run('DELETE FROM schema_migrations WHERE version IN (4, 6)');
      if (raw.engine === 'postgres')
        await raw.exec('ALTER TABLE trust_policies ALTER COLUMN name_key TYPE TEXT COLLATE "default"');
      const previous = storeOn(raw);
      const t = newTenant('quebec');
      await previous.tenants.create(t, { digest: 'digest-quebec', hint: 'ssa_…abcd' }, audit(t.id));
      const names = ['STRASSE', 'Straße', 'Cafe\u0301', 'ſecrets', 'plain'];
      for (const [i, name] of names.entries()) {
        await previous.policies.create(t.id, `p-${i}`, policyInput(`seed-${i}`), 1, audit(t.id));
        await raw.run('UPDATE trust_policies SET name = ?, name_key = ? WHERE id = ?', [
          name,
          name.toLowerCase(),
          `p-${i}`,
        ]);
      }
      const namesakes = [
        {
          tenantId: t.id,
          policies: [
            { id: 'p-0', name: 'STRASSE' },
            { id: 'p-1', name: 'Straße' },
          ],
        },
      ];
      expect(await migrate(raw)).toEqual({ applied: [4, 6], unknown: [], namesakes });
      // A broker starting on it names them, for the operator to rename, for as long as they are namesakes.
      const logs: string[] = [];
      const broker = await createBroker(
        loadConfig({ DATABASE_URL: older.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK }),
        { logger: createLogger({ write: (line: string) => logs.push(line) }, 'info') },
      );
      await broker.close();
      expect(logs.join('\n')).toContain(
        `now one name (compared ignoring case, accent encoding and invisible characters): rename all but one of each group","policies":["tenant ${t.id}: \\"STRASSE\\" (p-0), \\"Straße\\" (p-1)"]`,
      );
      const upgraded = storeOn(raw);
      // Every policy is still there, as it was: the two that are now namesakes included.
      expect((await upgraded.policies.list(t.id)).map((p) => p.name).sort()).toEqual([...names].sort());
      // A page gives each the key it is filed under, so that the next one starts after it: not Straße's new key,
      // "strasse", which STRASSE has, and after which Straße would come again.
      const keys = (await upgraded.policies.page(t.id, { limit: 10 })).map((p) => [p.policy.name, p.nameKey]);
      expect(keys).toContainEqual(['Straße', 'straße']);
      expect(keys).toContainEqual(['STRASSE', 'strasse']);
      const create = (id: string, name: string) =>
        upgraded.policies.create(t.id, id, policyInput(name), 2, audit(t.id));
      expect(await create('q-1', 'CAF\u00c9')).toEqual({ ok: false, conflict: 'name' });
      expect(await create('q-2', 'SECRETS')).toEqual({ ok: false, conflict: 'name' });
      expect(await create('q-3', 'strasse')).toEqual({ ok: false, conflict: 'name' });
      expect((await create('q-4', 'Plain-2')).ok).toBe(true);
      // Of the namesakes, the one renamed to the other's name is refused; the one renamed to a new name is refiled.
      expect(
        await upgraded.policies.replace(t.id, 'p-1', policyInput('Strasse'), 3, () => audit(t.id)),
      ).toEqual({
        ok: false,
        conflict: 'name',
      });
      expect(
        await upgraded.policies.replace(t.id, 'p-1', policyInput('Straße (old)'), 3, () => audit(t.id)),
      ).toMatchObject({ ok: true });
      expect(await create('q-5', 'STRASSE (OLD)')).toEqual({ ok: false, conflict: 'name' });
      // A policy the previous version saves after a rollback (filed by lower-casing) is refiled at the next start.
      await previous.policies.create(t.id, 'p-rollback', policyInput('seed-rollback'), 4, audit(t.id));
      await raw.run('UPDATE trust_policies SET name = ?, name_key = ? WHERE id = ?', [
        'ſecrets (2)',
        'ſecrets (2)',
        'p-rollback',
      ]);
      expect(await create('q-6', 'SECRETS (2)')).toMatchObject({ ok: true });
      // Until one of them goes, the next start names the two, the one in plain ASCII included.
      expect(await migrate(raw)).toEqual({
        applied: [],
        unknown: [],
        namesakes: [
          {
            tenantId: t.id,
            policies: [
              { id: 'p-rollback', name: 'ſecrets (2)' },
              { id: 'q-6', name: 'SECRETS (2)' },
            ],
          },
        ],
      });
      await upgraded.policies.delete(t.id, 'q-6', 5, () => audit(t.id));
      expect(await migrate(raw)).toEqual({ applied: [], unknown: [], namesakes: [] });
      expect(await create('q-7', 'SECRETS (2)')).toEqual({ ok: false, conflict: 'name' });
    } finally {
      await raw.close();
      await older.drop();
    }
  });

  it('a database a newer version migrated still opens, and says which migrations this version does not know', async () => {
    const newer = await createTestDatabase(store.engine);
    const raw = openDriver(newer);
    try {
      await migrate(raw);
      await raw.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [
        99,
        'later',
        1,
      ]);
      // Names it filed are left as it filed them: this version does not know its rules.
      const t = newTenant('romeo');
      await storeOn(raw).tenants.create(t, { digest: 'digest-romeo', hint: 'ssa_…abcd' }, audit(t.id));
      await storeOn(raw).policies.create(t.id, 'p-newer', policyInput('Straße'), 1, audit(t.id));
      await raw.run("UPDATE trust_policies SET name_key = 'filed by a newer rule' WHERE id = 'p-newer'");
      expect(await migrate(raw)).toEqual({ applied: [], unknown: [99], namesakes: [] });
      expect(await raw.get("SELECT name_key FROM trust_policies WHERE id = 'p-newer'")).toEqual({
        name_key: 'filed by a newer rule',
      });
      const logs: string[] = [];
      const broker = await createBroker(
        loadConfig({ DATABASE_URL: newer.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK }),
        {
          logger: createLogger({ write: (line: string) => logs.push(line) }, 'info'),
        },
      );
      await broker.close();
      expect(logs.join('\n')).toMatch(/migrated by a newer version of the broker.*"migrations":\[99\]/);
    } finally {
      await raw.close();
      await newer.drop();
    }
  });
});

// The schema the broker's tables go to, and the privileges migrations need there, are the database's, not the
// store's: PostgreSQL only. A PostgreSQL run that cannot connect fails in createTestDatabase, it never skips.
// On a connection to the server itself: PgBouncer refuses the `options` startup parameter (README says to set the
// search_path on the role there), so .ci/run's step through it (TEST_POOLER) leaves these to its direct step.
describe.runIf(requestedEngine() === 'postgres' && !process.env.TEST_POOLER)(
  'the schema DATABASE_URL chooses (PostgreSQL)',
  () => {
    let schemaDb: TestDatabase;
    let admin: ReturnType<typeof openDriver>;
    const role = `broker_limited_${process.pid}`;
    beforeAll(async () => {
      schemaDb = await createTestDatabase();
      admin = openDriver(schemaDb);
      await admin.exec(`CREATE SCHEMA oidc; CREATE SCHEMA locked; CREATE ROLE ${role} LOGIN`);
      await admin.exec(`GRANT USAGE ON SCHEMA locked TO ${role}; REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
    });
    afterAll(async () => {
      await admin?.close();
      await schemaDb?.drop();
      const other = openDriver({ ...schemaDb, url: process.env.TEST_DATABASE_URL! });
      await other.exec(`DROP ROLE IF EXISTS ${role}`).finally(() => other.close());
    });
    const withOptions = (options: string, user?: string) => {
      const url = new URL(schemaDb.url);
      if (user) url.username = user;
      url.searchParams.set('options', options);
      return loadConfig({ DATABASE_URL: url.toString(), BROKER_KEY_ENCRYPTION_KEY: TEST_KEK }).database;
    };
    const failure = (options: string, user?: string) =>
      openStore(withOptions(options, user)).then(
        async (s) => {
          await s.close();
          return 'opened';
        },
        (error: Error) => error.message,
      );

    it('keeps the tables in the schema options=-c search_path names', async () => {
      const opened = await openStore(withOptions('-c search_path=oidc'));
      await opened.close();
      const tables = await admin.all<{ schema: string }>(
        "SELECT DISTINCT table_schema AS schema FROM information_schema.tables WHERE table_name = 'tenants'",
      );
      expect(tables).toEqual([{ schema: 'oidc' }]);
    });

    it('stops at a search_path naming no schema it may use, saying where the search_path is set', async () => {
      expect(await failure('-c search_path=nosuch')).toMatch(
        /cannot be opened: no schema has been selected to create in: the search_path \(options=-c search_path=… in DATABASE_URL, or set on the role or database\) names no schema that exists and the role may use; create it, or grant the role USAGE and CREATE on it$/,
      );
    });

    it('stops on a schema its role may not create tables in, saying which privilege migrations need', async () => {
      expect(await failure('-c search_path=locked', role)).toMatch(
        /cannot be opened: permission denied for schema locked: the broker creates and alters its tables at start, so its role needs USAGE and CREATE on the schema, and to own the tables$/,
      );
    });
  },
);
