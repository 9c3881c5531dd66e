// DATABASE_POOL_SIZE bounds the PostgreSQL connections a broker opens, group commit's included, however many
// requests wait for one.
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startTestBroker } from '../support/broker.js';
import { createTestDatabase, requestedEngine } from '../support/database.js';

const engine = requestedEngine();
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A PostgreSQL session of the test's own, closed at its end. */
async function pgSession(url: string): Promise<pg.Client> {
  const session = new pg.Client({ connectionString: url });
  await session.connect();
  cleanups.push(() => session.end());
  return session;
}

// On SQLite there is no pool to size (the setting is refused there: config.test.ts). A PostgreSQL run that cannot
// connect fails in createTestDatabase, it never skips.
describe.runIf(engine === 'postgres')('the PostgreSQL pool (DATABASE_POOL_SIZE)', () => {
  it('never holds more connections than configured, with many more requests waiting for one', async () => {
    const poolSize = 4;
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const t = await startTestBroker({ db, env: { DATABASE_POOL_SIZE: String(poolSize) } });
    cleanups.push(() => t.broker.close());
    const { key } = await t.createTenant('acme');
    // Minting a token commits through group commit, whose thread holds one of the pool's connections.
    expect((await t.request('POST', '/v1/tokens', { key, json: { duration_seconds: 600 } })).status).toBe(
      201,
    );

    const monitor = await pgSession(db.url);
    // Every authenticated request reads its key from builtin_keys: with that table locked, each read holds its
    // connection while it waits, so 20 requests would take 20 connections, or the default pool's 10.
    const holder = await pgSession(db.url);
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE builtin_keys IN ACCESS EXCLUSIVE MODE');
    const pid = async (session: pg.Client) =>
      (await session.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const others = [await pid(monitor), await pid(holder)];
    const brokerConnections = async () => {
      const { rows } = await monitor.query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND NOT pid = ANY($1)",
        [others],
      );
      return Number(rows[0].n);
    };

    const requests = Array.from({ length: 20 }, () => t.request('GET', '/v1/whoami', { key }));
    const seen: number[] = [];
    // The pool fills up: group commit's connection, and all the others waiting for the lock; the other requests
    // wait for a connection.
    await vi.waitFor(
      async () => {
        seen.push(await brokerConnections());
        expect(seen.at(-1)).toBe(poolSize);
      },
      { timeout: 3_000, interval: 20 },
    );
    // And stays full, no more, while they wait (well within the 5 s a read waits for a lock or a connection).
    for (let i = 0; i < 20; i++) {
      seen.push(await brokerConnections());
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await holder.query('COMMIT');
    const statuses = await Promise.all(requests.map(async (r) => (await r).status));

    expect(Math.max(...seen)).toBe(poolSize);
    // Every request was served once the lock was released: they waited for a connection, none was refused.
    expect(statuses).toEqual(requests.map(() => 200));
    expect(await brokerConnections()).toBeLessThanOrEqual(poolSize);
  }, 20_000);
});
