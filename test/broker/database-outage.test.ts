// A database that stops taking work (PostgreSQL unreachable, SQLite's write lock held elsewhere) is an outage to
// retry, answered 503 not_ready, never a 500 that reads as a bug in the broker.

import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server, type Socket } from 'node:net';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { openPostgres } from '../../broker/store/postgres.js';
import { StoreUnavailable } from '../../broker/store/sql.js';
import { openSqlite } from '../../broker/store/sqlite.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { createTestDatabase, requestedEngine } from '../support/database.js';

const engine = requestedEngine();
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * A TCP relay to PostgreSQL that can be cut, as a network partition or a stopped server would, or stalled, as a
 * server that keeps its connections but stops answering (frozen, swapping, its disk hung) would.
 */
async function relayTo(
  target: URL,
): Promise<{ url: (u: string) => string; cut(): Promise<void>; stall(): void }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (u) => Object.assign(new URL(u), { hostname: '127.0.0.1', port: String(port) }).toString(),
    stall: () => {
      for (const s of sockets) {
        s.unpipe();
        s.pause();
      }
    },
    cut: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A broker whose database will stop taking work when `fail()` is called. */
async function brokerWithOutage(): Promise<{ t: TestBroker; fail(): Promise<void> }> {
  const db = await createTestDatabase();
  cleanups.push(() => db.drop());
  if (engine === 'postgres') {
    const relay = await relayTo(new URL(db.url));
    const t = await startTestBroker({ db: { ...db, url: relay.url(db.url) } });
    cleanups.push(() => t.broker.close().catch(() => {}));
    cleanups.push(() => relay.cut());
    return { t, fail: () => relay.cut() };
  }
  const t = await startTestBroker({ db });
  cleanups.push(() => t.broker.close());
  return {
    t,
    // Another process holding the write lock past the busy timeout (a long backup, a stuck replica).
    async fail() {
      const holder = new Database(db.file!);
      holder.exec('BEGIN EXCLUSIVE');
      cleanups.push(() => {
        holder.exec('ROLLBACK');
        holder.close();
      });
    },
  };
}

describe(`a database outage (${engine})`, () => {
  it('answers 503 not_ready, which the action retries, and logs the cause for the operator', async () => {
    const { t, fail } = await brokerWithOutage();
    const { key } = await t.createTenant('acme');
    await fail();
    const res = await t.request('POST', '/v1/fine-grained-keys', {
      key,
      json: { name: 'deploy', expiration: '7d', permissions: ['audit-log:read'] },
    });
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ code: 'not_ready', detail: expect.stringMatching(/retry/) });
    expect(t.logs.some((line) => line.includes('the database is unavailable'))).toBe(true);
    expect(t.logs.some((line) => line.includes('"internal_error"'))).toBe(false);
  }, 20_000);
});

/** A broker with a tenant, on PostgreSQL through a relay (returned) that can be cut or stalled, or on SQLite. */
async function brokerOnRelay() {
  const db = await createTestDatabase();
  cleanups.push(() => db.drop());
  const relay = engine === 'postgres' ? await relayTo(new URL(db.url)) : undefined;
  const t = await startTestBroker({ db: relay ? { ...db, url: relay.url(db.url) } : db });
  cleanups.push(() => t.broker.close().catch(() => {}));
  cleanups.push(() => relay?.cut());
  const { key } = await t.createTenant('acme');
  return { db, relay, t, key };
}

/** Another process holding SQLite's write lock until the test ends. */
function holdSqliteWriteLock(file: string): void {
  const holder = new Database(file);
  holder.exec('BEGIN EXCLUSIVE');
  cleanups.push(() => {
    holder.exec('ROLLBACK');
    holder.close();
  });
}

const createKey = (t: TestBroker, key: string) =>
  t.request('POST', '/v1/fine-grained-keys', {
    key,
    json: { name: 'deploy', expiration: '7d', permissions: ['audit-log:read'] },
  });

describe(`a database lost in the middle of a write (${engine})`, () => {
  it('answers that write 503 not_ready and keeps serving: a dropped connection is an outage, not a crash', async () => {
    const { db, relay, t, key } = await brokerOnRelay();
    // The write will wait for its turn, held by another connection or process.
    if (relay) {
      const holder = new pg.Client({ connectionString: db.url });
      await holder.connect();
      await holder.query('BEGIN');
      await holder.query('SELECT pg_advisory_xact_lock(7710003)');
      cleanups.push(() => holder.end());
    } else {
      holdSqliteWriteLock(db.file!);
    }
    const write = createKey(t, key);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Then the network to PostgreSQL goes; SQLite, which has no connection to lose, gives up after its busy timeout.
    await relay?.cut();
    const res = await write;
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ code: 'not_ready' });
    // Still serving: the process did not die of the lost connection (an uncaught error fails this test too).
    expect((await t.request('GET', '/healthz')).status).toBe(200);
  }, 20_000);
});

describe(`a database that stops answering (${engine})`, () => {
  it('a write gets 503 not_ready after a few seconds, rather than hanging until the client gives up', async () => {
    const { db, relay, t, key } = await brokerOnRelay();
    if (relay) relay.stall();
    else holdSqliteWriteLock(db.file!);
    // Answered within this test's time limit: bounded by the 5 s a statement may take (SQLite: its busy
    // timeout), not by a client's patience.
    const res = await createKey(t, key);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ code: 'not_ready' });
  }, 20_000);
});

describe('SQLite, whatever engine the suite runs', () => {
  it('a full disk is an outage (503 not_ready, StoreUnavailable), not a bug', async () => {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    const driver = openSqlite(db.file!);
    cleanups.push(() => driver.close());
    await driver.exec('CREATE TABLE filler (x TEXT)');
    // The file may grow no further: SQLite answers as it does when the disk is full.
    const { pages } = (await driver.get<{ pages: number }>(
      'SELECT page_count AS pages FROM pragma_page_count()',
    ))!;
    await driver.exec(`PRAGMA max_page_count = ${pages}`);
    const error = await driver
      .run('INSERT INTO filler VALUES (?)', ['x'.repeat(1_000_000)])
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailable);
  });

  it("another process's write lock holds up only the write, not every other request", async () => {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    const t = await startTestBroker({ db });
    cleanups.push(() => t.broker.close());
    const { key } = await t.createTenant('acme');
    holdSqliteWriteLock(db.file!);
    const answered: string[] = [];
    const write = createKey(t, key).then((res) => {
      answered.push(`write ${res.status}`);
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const health = t.request('GET', '/healthz').then((res) => {
      answered.push(`healthz ${res.status}`);
    });
    await Promise.all([write, health]);
    // The write waited out the busy timeout; the health check, sent after it, did not wait behind it.
    expect(answered).toEqual(['healthz 200', 'write 503']);
  }, 20_000);
});

describe(`a mistake in a query (${engine})`, () => {
  it('a wrong number of parameters is the error it is, not an outage to wait out (503)', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const driver = db.engine === 'sqlite' ? openSqlite(db.file!) : openPostgres(db.url);
    cleanups.push(() => driver.close());
    const error = await driver.get('SELECT ? AS a, ? AS b', [1]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(StoreUnavailable);
  });
});
