// Behind a pooler that hands each transaction whichever server connection is free (PgBouncer in transaction
// mode, TEST_PGBOUNCER_URL, which .ci/run starts): the broker notices at start that its connections have no server
// session of their own, names no statement then, and two replicas work through it as on the server itself.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../broker/store/migrations.js';
import { openPostgres } from '../../broker/store/postgres.js';
import { hasOwnSessions } from '../../broker/store/postgres-session.js';
import { type SqlDriver, StoreUnavailable } from '../../broker/store/sql.js';
import { createTestDatabase, requestedEngine, type TestDatabase } from '../support/database.js';

const bouncer = process.env.TEST_PGBOUNCER_URL;

/** `db`'s URL through the pooler, which passes every database through. */
function throughBouncer(db: TestDatabase): string {
  const url = new URL(bouncer!);
  url.pathname = new URL(db.url).pathname;
  return url.toString();
}

describe.runIf(requestedEngine() === 'postgres' && bouncer)('behind PgBouncer in transaction mode', () => {
  let db: TestDatabase;
  const drivers: SqlDriver[] = [];
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    for (const d of drivers) await d.close();
    await db?.drop();
  });

  it('tells connections that share server sessions from connections to the server itself', async () => {
    expect(await hasOwnSessions(throughBouncer(db))).toBe(false);
    expect(await hasOwnSessions(db.url)).toBe(true);
  });

  it('serves two replicas: migrations, reads, write transactions and group commits, none failing', async () => {
    const [a, b] = [openPostgres(throughBouncer(db)), openPostgres(throughBouncer(db))];
    drivers.push(a, b);
    await Promise.all([migrate(a), migrate(b)]);
    await a.exec('CREATE TABLE pooled (n INTEGER PRIMARY KEY, via TEXT NOT NULL)');
    // The same statements from both replicas and from both threads of each (group commit runs on its own), many at
    // once, so that each server connection sees statements of several of them.
    const work = Array.from({ length: 120 }, (_, i) => {
      const d = i % 2 ? a : b;
      switch (i % 3) {
        case 0:
          return d.get<{ n: number }>('SELECT count(*) AS n FROM pooled WHERE n >= ?', [0]);
        case 1:
          return d.transaction(async (tx) => {
            await tx.get<{ n: number }>('SELECT count(*) AS n FROM pooled WHERE n >= ?', [0]);
            return tx.run('INSERT INTO pooled (n, via) VALUES (?, ?)', [i, 'transaction']);
          });
        default:
          return d.writeBatched({
            probe: {
              sql: 'INSERT INTO pooled (n, via) VALUES (?, ?) ON CONFLICT DO NOTHING',
              params: [i, 'batch'],
            },
          });
      }
    });
    await Promise.all(work);
    const rows = await a.all<{ via: string; n: number }>(
      'SELECT via, count(*) AS n FROM pooled GROUP BY via ORDER BY via',
    );
    expect(rows).toEqual([
      { via: 'batch', n: 40 },
      { via: 'transaction', n: 40 },
    ]);
  });

  it('a server connection that dies under a write transaction is an outage, as the pooler reports it', async () => {
    const d = openPostgres(throughBouncer(db));
    drivers.push(d);
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      const failed = d.transaction((tx) => tx.get('SELECT pg_sleep(2) AS slept')).catch((error) => error);
      // PgBouncer answers "server conn crashed?" (SQLSTATE 08P01, a protocol violation on a server itself).
      await new Promise((resolve) => setTimeout(resolve, 500));
      await admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' AND pid <> pg_backend_pid()",
      );
      expect(await failed).toBeInstanceOf(StoreUnavailable);
      expect(await d.get<{ n: number }>('SELECT 1 AS n')).toEqual({ n: 1 });
    } finally {
      await admin.end();
    }
  });
});
