// A database that stops taking work (PostgreSQL unreachable, SQLite's write lock held elsewhere) is an outage to
// retry, answered 503 not_ready, never a 500 that reads as a bug in the broker.

import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { migrate } from '../../broker/store/migrations.js';
import { openPostgres } from '../../broker/store/postgres.js';
import { StoreUnavailable } from '../../broker/store/sql.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import {
  createTestDatabase,
  type Engine,
  openDriver,
  requestedEngine,
  type TestDatabase,
} from '../support/database.js';

const engine = requestedEngine();
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A driver of its own on a fresh database of `kind`, closed and dropped after the test. */
async function scratchDriver(kind: Engine) {
  const db = await createTestDatabase(kind);
  cleanups.push(() => db.drop());
  const driver = openDriver(db);
  cleanups.push(() => driver.close());
  return { db, driver };
}

/**
 * A TCP relay to PostgreSQL that can be cut, as a network partition or a stopped server would, or stalled once
 * the broker sends a statement holding `marker`, as a server that keeps its connections but stops answering
 * (frozen, swapping, its disk hung) would.
 */
async function relayTo(
  target: URL,
  { socketDir }: { socketDir?: string } = {},
): Promise<{ url: (u: string) => string; cut(): Promise<void>; stallOn(marker: string): void }> {
  const sockets = new Set<Socket>();
  let marker: string | undefined;
  let stalled = false;
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (data: Buffer) => {
      if (marker !== undefined && data.includes(marker)) stalled = true;
      if (!stalled) upstream.write(data);
    });
    upstream.on('data', (data: Buffer) => {
      if (!stalled) client.write(data);
    });
    // A connection closed on one side is closed on the other, as it would be without the relay.
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  // `socketDir`: as a server's Unix socket there (or the Cloud SQL Auth Proxy's), which goes when it stops.
  if (socketDir)
    await new Promise<void>((resolve) => server.listen(join(socketDir, '.s.PGSQL.5432'), resolve));
  else await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = socketDir ? 0 : (server.address() as AddressInfo).port;
  return {
    url: (u) => {
      const url = new URL(u);
      if (!socketDir) return Object.assign(url, { hostname: '127.0.0.1', port: String(port) }).toString();
      return `postgres://${url.username}@${url.pathname}?host=${socketDir}`;
    },
    stallOn: (m) => {
      marker = m;
    },
    cut: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

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

/** A PostgreSQL session of the test's own, closed at its end. */
async function pgSession(url: string): Promise<pg.Client> {
  const session = new pg.Client({ connectionString: url });
  await session.connect();
  cleanups.push(() => session.end());
  return session;
}

/**
 * Another session holding advisory lock `key` (7710003 the write turn, 7710001 migrations) until released. The
 * release resolves once the lock is let go, or the session has been closed by the test's end.
 */
async function holdPgLock(url: string, key: number): Promise<() => Promise<void>> {
  const holder = await pgSession(url);
  await holder.query('BEGIN');
  await holder.query('SELECT pg_advisory_xact_lock($1)', [key]);
  return () =>
    holder.query('COMMIT').then(
      () => undefined,
      () => undefined,
    );
}

/** Another process holding SQLite's write lock until released, or the test ends. */
function holdSqliteWriteLock(file: string): () => void {
  const holder = new Database(file);
  holder.exec('BEGIN EXCLUSIVE');
  cleanups.push(() => {
    if (holder.inTransaction) holder.exec('ROLLBACK');
    holder.close();
  });
  return () => void holder.exec('COMMIT');
}

/** The write turn held elsewhere: by another replica's session (PostgreSQL) or another process (SQLite). */
const holdWriteTurn = (db: TestDatabase, relay: unknown) =>
  relay ? holdPgLock(db.url, 7710003) : Promise.resolve(holdSqliteWriteLock(db.file!));

describe(`a database outage (${engine})`, () => {
  it('answers 503 not_ready with Retry-After, which the action retries, and logs the cause for the operator', async () => {
    const { db, relay, t, key } = await brokerOnRelay();
    // PostgreSQL unreachable; SQLite's write lock held past the busy timeout (a long backup, a stuck replica).
    if (relay) await relay.cut();
    else holdSqliteWriteLock(db.file!);
    const res = await createKey(t, key);
    expect(res.status).toBe(503);
    expect(res.headers.get('Retry-After')).toBe('1');
    expect(await res.json()).toMatchObject({ code: 'not_ready', detail: expect.stringMatching(/retry/) });
    expect(t.logs.some((line) => line.includes('the database is unavailable'))).toBe(true);
    expect(t.logs.some((line) => line.includes('"internal_error"'))).toBe(false);
  }, 20_000);

  it('the JWKS keeps serving the keys as last read, marked no-cache, while the rest answers 503', async () => {
    const { relay, t, key } = await brokerOnRelay();
    const before = await t.request('GET', '/.well-known/jwks.json');
    expect(before.headers.get('cache-control')).toBe('public, max-age=300');
    const { keys } = (await before.json()) as { keys: unknown[] };
    // The minutely reload falls while the database does not answer.
    t.clock.now += 60_000;
    if (relay) await relay.cut();
    else await t.broker.store.close();
    const during = await t.request('GET', '/.well-known/jwks.json');
    expect(during.status).toBe(200);
    expect(during.headers.get('cache-control')).toBe('no-cache');
    expect(await during.json()).toEqual({ keys });
    expect(t.logs.some((line) => line.includes('JWKS served as last read'))).toBe(true);
    expect((await createKey(t, key)).status).toBe(503);
  }, 20_000);
});

const createKey = (t: TestBroker, key: string) =>
  t.request('POST', '/v1/fine-grained-keys', {
    key,
    json: { name: 'deploy', expiration: '7d', permissions: ['audit-log:read'] },
  });

describe(`a database lost in the middle of a write (${engine})`, () => {
  it('answers that write 503 not_ready and keeps serving: a dropped connection is an outage, not a crash', async () => {
    const { db, relay, t, key } = await brokerOnRelay();
    // The write will wait for its turn, held by another connection or process.
    await holdWriteTurn(db, relay);
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
  it('a write it stops answering halfway gets 503 not_ready, rather than hanging until the client gives up', async () => {
    const { db, relay, t, key } = await brokerOnRelay();
    // The key's row has reached the server; the answer to the statement after it (its audit event) never comes.
    // The event's type is one of that statement's parameters, sent every time, where its text is sent only the
    // first time a connection runs it (a prepared statement).
    if (relay) relay.stallOn('fine_grained_key.created');
    else holdSqliteWriteLock(db.file!);
    // Answered within this test's time limit: bounded by the 15 s a PostgreSQL transaction waits for an answer
    // (SQLite: its 5 s busy timeout), not by a client's patience.
    const res = await createKey(t, key);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ code: 'not_ready' });
    if (relay) {
      // Abandoned before its COMMIT (its connection closed), so nothing of it was committed.
      const direct = await pgSession(db.url);
      await vi.waitFor(
        async () => {
          const { rows } = await direct.query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()",
          );
          expect(Number(rows[0].n)).toBe(0);
        },
        { timeout: 10_000, interval: 100 },
      );
      expect((await direct.query('SELECT id FROM fine_grained_keys')).rows).toEqual([]);
    }
  }, 30_000);
});

describe(`a write that waits 6 s for another's (${engine})`, () => {
  it('PostgreSQL waits for its turn (busy replicas) and commits; SQLite gives up at its 5 s busy timeout', async () => {
    const { db, relay, t, key } = await brokerOnRelay();
    const release = await holdWriteTurn(db, relay);
    const timer = setTimeout(() => release(), 6_000);
    cleanups.push(() => clearTimeout(timer));
    const res = await createKey(t, key);
    expect(res.status).toBe(relay ? 201 : 503);
  }, 30_000);
});

describe(`a fine-grained key used while writes wait (${engine})`, () => {
  it('its request answers at once, and its use is recorded once the write can go', async () => {
    const { db, relay, t, key } = await brokerOnRelay();
    const { id, key: fineGrained } = (await (await createKey(t, key)).json()) as { id: string; key: string };
    const release = await holdWriteTurn(db, relay);
    // A read: before, it waited for the key's last use to be written, and failed with that write (503).
    const read = await t.request('GET', '/v1/audit-events', { key: fineGrained });
    expect(read.status).toBe(200);
    release();
    await vi.waitFor(
      async () => {
        const got = await t.request('GET', `/v1/fine-grained-keys/${id}`, { key });
        expect(((await got.json()) as { last_used_at: string | null }).last_used_at).not.toBeNull();
      },
      { timeout: 10_000, interval: 100 },
    );
  }, 30_000);
});

describe(`a database closing while requests run (${engine})`, () => {
  it('each request under way when the broker stops completes or gets 503 not_ready, and every write answered is kept', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const t = await startTestBroker({ db });
    const { key } = await t.createTenant('acme');
    // Fine-grained keys are created in a transaction of their own; minted tokens are recorded by group commit.
    const burst = (from: number) =>
      Array.from({ length: 20 }, (_, i) => from + i).map(async (n) => {
        const name = `key-${n}`;
        const res =
          n % 2 === 0
            ? await t.request('POST', '/v1/fine-grained-keys', {
                key,
                json: { name, expiration: '7d', permissions: ['audit-log:read'] },
              })
            : await t.request('POST', '/v1/tokens', { key, json: {} });
        const body = (await res.json()) as { code?: string };
        return { kind: n % 2 === 0 ? 'key' : 'token', name, status: res.status, code: body.code };
      });
    // The process closes the database once its connections are gone, but a request can outlive its connection
    // (its client gave up, or the grace period ran out). Here writes are committing and others queued behind them
    // when the database starts closing, and more arrive after.
    const early = burst(0);
    await Promise.race(early);
    const late = burst(20);
    const closed = t.broker.close();
    const answers = await Promise.all([...early, ...late]);
    await closed;

    const refused = answers.filter((a) => a.status !== 201);
    expect(refused.map((a) => `${a.status} ${a.code}`)).toEqual(refused.map(() => '503 not_ready'));
    // Those that reached the database after it began closing.
    expect(refused.length).toBeGreaterThan(0);
    expect(t.logs.some((line) => line.includes('"status":500'))).toBe(false);
    // After a restart, every key and token that was answered 201 is there.
    const restarted = await startTestBroker({ db });
    cleanups.push(() => restarted.broker.close());
    const created = (await (await restarted.request('GET', '/v1/fine-grained-keys', { key })).json()) as {
      keys: { name: string }[];
    };
    const minted = (await (
      await restarted.request('GET', '/v1/audit-events?type=token.minted', { key })
    ).json()) as { events: unknown[] };
    const answered = (kind: string) => answers.filter((a) => a.kind === kind && a.status === 201);
    const names = answered('key').map((a) => a.name);
    expect(created.keys.map((k) => k.name).sort()).toEqual(names.sort());
    expect(minted.events).toHaveLength(answered('token').length);
  });
});

// What only PostgreSQL has: a COMMIT the server takes long to answer, a migration lock held by another replica.
describe.runIf(engine === 'postgres')('PostgreSQL only', () => {
  /** A driver that gives up on an answer after 1 s instead of 15, so that tests can wait past it quickly. */
  async function quickDriver() {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const driver = openPostgres(db.url, { answerDeadlineMs: 1_000 });
    cleanups.push(() => driver.close());
    await driver.exec('CREATE TABLE t (v INTEGER PRIMARY KEY)');
    return { db, driver };
  }

  it('a batch longer than the deadline commits while each of its statements is answered in time', async () => {
    const { driver } = await quickDriver();
    // Each insert takes 50 ms on the server: 40 of them in one transaction take 2 s, twice the deadline.
    await driver.exec(
      'CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$',
    );
    await driver.exec('CREATE TRIGGER slow_insert BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION slow()');
    const writes = Array.from({ length: 40 }, (_, v) =>
      driver.writeBatched({ probe: { sql: 'INSERT INTO t VALUES (?)', params: [v] } }),
    );
    expect((await Promise.all(writes)).map((w) => w.probe)).toEqual(writes.map(() => 1));
  }, 30_000);

  it('a COMMIT slower than the deadline is waited for, and a ROLLBACK that gets no answer is not', async () => {
    const { db, driver } = await quickDriver();
    await driver.exec(
      'CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$',
    );
    await driver.exec(
      'CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()',
    );
    await driver.transaction((tx) => tx.run('INSERT INTO t VALUES (1)'));
    expect(await driver.all('SELECT v FROM t')).toEqual([{ v: 1 }]);

    // Through a relay that stops answering at the ROLLBACK after a unique violation.
    const relay = await relayTo(new URL(db.url));
    cleanups.push(() => relay.cut());
    const relayed = openPostgres(relay.url(db.url), { answerDeadlineMs: 1_000 });
    cleanups.push(() => relayed.close().catch(() => {}));
    relay.stallOn('ROLLBACK');
    const error = await relayed
      .transaction((tx) => tx.run('INSERT INTO t VALUES (1)'))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailable);
  }, 30_000);

  it('migrations wait past the deadline for another replica holding their lock', async () => {
    const { db } = await quickDriver();
    const release = await holdPgLock(db.url, 7710001);
    const timer = setTimeout(release, 3_000);
    cleanups.push(() => clearTimeout(timer));
    const migrating = openPostgres(db.url, { answerDeadlineMs: 1_000 });
    cleanups.push(() => migrating.close());
    expect(await migrate(migrating)).toMatchObject({ unknown: [] });
  }, 30_000);

  it('connections killed over and over under writes: each write is done or 503, and the process lives on', async () => {
    const { db, t, key } = await brokerOnRelay();
    const admin = await pgSession(db.url);
    let killing = true;
    const killer = (async () => {
      while (killing) {
        await admin.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()",
        );
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const statuses = new Set<number>();
    const until = Date.now() + 3_000;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (Date.now() < until) statuses.add((await createKey(t, key)).status);
      }),
    );
    killing = false;
    await killer;
    expect([...statuses].every((s) => s === 201 || s === 503)).toBe(true);
    // An uncaught 'error' from a client would have ended this test run; the broker still answers.
    await vi.waitFor(async () => expect((await createKey(t, key)).status).toBe(201));
  }, 30_000);

  it('a server that takes no writes (a standby after a failover, one made read-only) is 503 not_ready, and writes connect anew', async () => {
    const { db, t, key } = await brokerOnRelay();
    const admin = await pgSession(db.url);
    const database = new URL(db.url).pathname.slice(1);
    const reconnect = () =>
      admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()",
      );
    // The broker's connections now reach a server that refuses every write, as a hot standby does.
    await admin.query(`ALTER DATABASE ${database} SET default_transaction_read_only = on`);
    await reconnect();
    await vi.waitFor(async () => expect((await t.request('GET', '/readyz')).status).toBe(200));
    const refused = await createKey(t, key);
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ code: 'not_ready' });
    expect(t.logs.some((line) => line.includes('"internal_error"'))).toBe(false);
    // The primary is back under the same address. Each connection a write found refusing is closed, so writes soon
    // succeed again; kept, the connections opened to the standby would refuse them on and on.
    await admin.query(`ALTER DATABASE ${database} RESET default_transaction_read_only`);
    await vi.waitFor(async () => expect((await createKey(t, key)).status).toBe(201), { timeout: 3_000 });
  }, 30_000);

  /** Backends of this database, other than the caller's, waiting for a lock. */
  async function waitingForLocks(session: pg.Client): Promise<number> {
    const { rows } = await session.query(
      "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
    );
    return Number(rows[0].n);
  }

  /** Another session holding an ACCESS EXCLUSIVE lock on `table` (a LOCK TABLE, an ALTER TABLE, a VACUUM FULL). */
  async function lockTable(url: string, table: string): Promise<pg.Client> {
    const holder = await pgSession(url);
    await holder.query('BEGIN');
    await holder.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
    return holder;
  }

  it('through a Unix socket, a server stopped (its socket gone) is 503 not_ready, and the next request after it is back succeeds', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const socketDir = mkdtempSync(join(tmpdir(), 'broker-socket-'));
    cleanups.push(() => rmSync(socketDir, { recursive: true, force: true }));
    let relay = await relayTo(new URL(db.url), { socketDir });
    const t = await startTestBroker({ db: { ...db, url: relay.url(db.url) } });
    cleanups.push(() => t.broker.close().catch(() => {}));
    cleanups.push(() => relay.cut());
    const { key } = await t.createTenant('acme');
    await relay.cut();
    // Idle connections are the pool's until they time out; these need new ones.
    for (const res of [await t.request('GET', '/v1/whoami', { key }), await createKey(t, key)]) {
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ code: 'not_ready' });
    }
    expect(t.logs.some((line) => line.includes('"internal_error"'))).toBe(false);
    relay = await relayTo(new URL(db.url), { socketDir });
    expect((await t.request('GET', '/v1/whoami', { key })).status).toBe(200);
  }, 20_000);

  it('credentials the server stops taking (a password rotated, a role locked) are 503 not_ready, not a 500', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const admin = await pgSession(db.url);
    const role = `broker_rotating_${process.pid}`;
    await admin.query(`CREATE ROLE ${role} LOGIN`);
    cleanups.push(async () => {
      await admin.query(`DROP OWNED BY ${role}`);
      await admin.query(`DROP ROLE ${role}`);
    });
    await admin.query(`GRANT USAGE, CREATE ON SCHEMA public TO ${role}`);
    const url = new URL(db.url);
    url.username = role;
    const t = await startTestBroker({ db: { ...db, url: url.toString() } });
    cleanups.push(() => t.broker.close().catch(() => {}));
    const { key } = await t.createTenant('acme');
    // Every new connection is now refused at login (SQLSTATE 28000; a rotated password gives 28P01), and the
    // broker's own are closed, as the pool's idle ones are after 10 s.
    await admin.query(`ALTER ROLE ${role} NOLOGIN`);
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role]);
    for (const res of [await t.request('GET', '/v1/whoami', { key }), await createKey(t, key)]) {
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ code: 'not_ready' });
    }
    expect((await t.request('GET', '/readyz')).status).toBe(503);
    expect(t.logs.some((line) => line.includes('"internal_error"'))).toBe(false);
    await admin.query(`ALTER ROLE ${role} LOGIN`);
    await vi.waitFor(async () => expect((await t.request('GET', '/v1/whoami', { key })).status).toBe(200));
  }, 20_000);

  it("a statement the server cancels (an operator's pg_cancel_backend) is 503 not_ready, not a 500", async () => {
    const { db, t, key } = await brokerOnRelay();
    // Authentication reads the key's row; that read waits for the lock until an operator cancels it.
    const holder = await lockTable(db.url, 'builtin_keys');
    const waiting = t.request('GET', '/v1/whoami', { key });
    const admin = await pgSession(db.url);
    await vi.waitFor(async () => expect(await waitingForLocks(admin)).toBe(1), {
      timeout: 4_000,
      interval: 50,
    });
    await admin.query(
      "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    );
    const res = await waiting;
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ code: 'not_ready' });
    await holder.query('COMMIT');
    expect((await t.request('GET', '/v1/whoami', { key })).status).toBe(200);
  }, 20_000);

  it('requests that give up on a locked table leave no server connection waiting behind them', async () => {
    const { db, t, key } = await brokerOnRelay();
    const holder = await lockTable(db.url, 'builtin_keys');
    // Each gives up after the 5 s a read may wait. Were the server not told, each would keep a connection (and
    // its place in the lock's queue) until the lock is released: under load, until max_connections is reached.
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => t.request('GET', '/v1/whoami', { key })),
    );
    expect(answers.map((r) => r.status)).toEqual([503, 503, 503, 503]);
    const admin = await pgSession(db.url);
    await vi.waitFor(async () => expect(await waitingForLocks(admin)).toBe(0), {
      timeout: 1_000,
      interval: 50,
    });
    await holder.query('COMMIT');
  }, 20_000);

  it('a write that gives up on a locked table lets go of the write turn at once, for writes to other tables', async () => {
    const { db, driver } = await quickDriver();
    await driver.exec('CREATE TABLE u (v INTEGER PRIMARY KEY)');
    const holder = await lockTable(db.url, 't');
    const error = await driver
      .transaction((tx) => tx.run('INSERT INTO t VALUES (1)'))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailable);
    // Were its statement still waiting on the server, it would hold the write turn of every replica until the lock
    // is released.
    expect(await driver.transaction((tx) => tx.run('INSERT INTO u VALUES (1)'))).toBe(1);
    expect(await waitingForLocks(holder)).toBe(0);
    await holder.query('COMMIT');
    expect(await driver.all('SELECT v FROM t')).toEqual([]);
  }, 20_000);

  it('writes waiting behind a locked table do not take every connection: reads and readiness still answer', async () => {
    const { db, driver } = await quickDriver();
    const holder = await lockTable(db.url, 't');
    // More writes than the pool has connections (10), each its own transaction (key and policy changes, revocations).
    const writes = Array.from({ length: 12 }, (_, v) =>
      driver.transaction((tx) => tx.run('INSERT INTO t VALUES (?)', [v])).catch((e: unknown) => e),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const started = Date.now();
    await driver.ping();
    expect(await driver.get('SELECT 1 AS one')).toEqual({ one: 1 });
    // At once, not once the writes have given up (1 s) or the wait for a connection has (5 s).
    expect(Date.now() - started).toBeLessThan(500);
    for (const error of await Promise.all(writes)) expect(error).toBeInstanceOf(StoreUnavailable);
    await holder.query('COMMIT');
  }, 20_000);

  it('a write is neither failed early nor waited for past its deadline when the wall clock is stepped (NTP, a resumed VM)', async () => {
    const { db, driver } = await quickDriver();
    const wallClock = Date.now;
    // The clock stepped between the write's hand-over and the writer thread's start on it: forward, as a VM
    // resumed from suspend steps it, the write must not count as having waited an hour already.
    const behind = vi.spyOn(Date, 'now').mockImplementation(() => wallClock() - 3_600_000);
    const write = driver.writeBatched({ probe: { sql: 'INSERT INTO t VALUES (?)', params: [1] } });
    behind.mockRestore();
    expect(await write).toMatchObject({ probe: 1 });
    // Back, while the write turn is held elsewhere: it still gives up at its 1 s deadline, not an hour later.
    const release = await holdPgLock(db.url, 7710003);
    const started = performance.now();
    const ahead = vi.spyOn(Date, 'now').mockImplementation(() => wallClock() + 3_600_000);
    const waiting = driver
      .writeBatched({ probe: { sql: 'INSERT INTO t VALUES (?)', params: [2] } })
      .catch((e: unknown) => e);
    ahead.mockRestore();
    expect(await waiting).toBeInstanceOf(StoreUnavailable);
    // The 1 s deadline, and room for a busy machine.
    expect(performance.now() - started).toBeLessThan(5_000);
    await release();
    expect(await driver.all('SELECT v FROM t')).toEqual([{ v: 1 }]);
  }, 20_000);

  it('a write queued behind one that waits for a lock is answered within the deadline of its own arrival', async () => {
    const { db, driver } = await quickDriver();
    const holder = await lockTable(db.url, 't');
    const first = driver.writeBatched({ probe: { sql: 'INSERT INTO t VALUES (?)', params: [1] } });
    first.catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Handed over while the first one's batch waits: its own batch starts only once that one has given up.
    const handedOver = Date.now();
    const second = await driver
      .writeBatched({ probe: { sql: 'INSERT INTO t VALUES (?)', params: [2] } })
      .catch((e: unknown) => e);
    const waited = Date.now() - handedOver;
    expect(second).toBeInstanceOf(StoreUnavailable);
    expect(await first.catch((e: unknown) => e)).toBeInstanceOf(StoreUnavailable);
    // The 1 s deadline, and some room for a busy machine; not the 1.9 s of the first one's wait and then its own.
    expect(waited).toBeLessThan(1_500);
    await holder.query('COMMIT');
  }, 20_000);
});

describe('SQLite, whatever engine the suite runs', () => {
  it("a statement that waited out another process's lock never lands in a transaction begun meanwhile", async () => {
    const { db, driver } = await scratchDriver('sqlite');
    await driver.exec('CREATE TABLE t (v TEXT)');
    // The outside write has been retrying for a while (its pauses grown long) when the transaction starts and
    // the lock goes: the transaction begins first and stays open while the outside write tries again.
    for (let round = 0; round < 5; round++) {
      const holder = new Database(db.file!);
      holder.exec('BEGIN EXCLUSIVE');
      const outsideWrite = driver.run('INSERT INTO t VALUES (?)', [`outside-${round}`]);
      await new Promise((resolve) => setTimeout(resolve, 110));
      const failing = driver
        .transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES ('inside')");
          await new Promise((resolve) => setTimeout(resolve, 60));
          throw new Error('rolled back');
        })
        .catch((e: Error) => e.message);
      await new Promise((resolve) => setTimeout(resolve, 2));
      holder.exec('ROLLBACK');
      holder.close();
      expect(await outsideWrite).toBe(1);
      expect(await failing).toBe('rolled back');
    }
    // Every statement outside the transaction kept its effect; nothing of the transaction did.
    expect((await driver.all<{ v: string }>('SELECT v FROM t')).map((r) => r.v).sort()).toEqual([
      'outside-0',
      'outside-1',
      'outside-2',
      'outside-3',
      'outside-4',
    ]);
  });

  it('a full disk is an outage (503 not_ready, StoreUnavailable), not a bug', async () => {
    const { driver } = await scratchDriver('sqlite');
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

  /** A SQLite broker with a tenant, whose write lock another process holds. */
  async function sqliteBrokerWithWriteLockHeld() {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    const t = await startTestBroker({ db });
    cleanups.push(() => t.broker.close());
    const { key } = await t.createTenant('acme');
    holdSqliteWriteLock(db.file!);
    return { t, key };
  }

  it("another process's write lock holds up only the write, not the requests that read", async () => {
    const { t, key } = await sqliteBrokerWithWriteLockHeld();
    const answered: string[] = [];
    const note = (what: string) => (res: Response) => {
      answered.push(`${what} ${res.status}`);
    };
    const write = createKey(t, key).then(note('write'));
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Each of these reads the database: authentication, readiness.
    const reads = [
      t.request('GET', '/v1/whoami', { key }).then(note('whoami')),
      t.request('GET', '/readyz').then(note('readyz')),
    ];
    await Promise.all([write, ...reads]);
    // The write waited out the busy timeout; the reads, sent after it, did not wait behind it.
    expect(answered.slice(0, 2).sort()).toEqual(['readyz 200', 'whoami 200']);
    expect(answered[2]).toBe('write 503');
  }, 20_000);

  it('gives up at the 5 s busy timeout even when the wall clock is set back meanwhile (NTP, a restored VM)', async () => {
    const { t, key } = await sqliteBrokerWithWriteLockHeld();
    const started = performance.now();
    const write = createKey(t, key);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const wallClock = Date.now;
    const setBack = vi.spyOn(Date, 'now').mockImplementation(() => wallClock() - 3_600_000);
    cleanups.push(() => setBack.mockRestore());
    expect((await write).status).toBe(503);
    expect(performance.now() - started).toBeLessThan(10_000);
  }, 20_000);
});

describe(`a mistake in a query (${engine})`, () => {
  it('a wrong number of parameters is the error it is, not an outage to wait out (503)', async () => {
    const { driver } = await scratchDriver(engine);
    const error = await driver.get('SELECT ? AS a, ? AS b', [1]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(StoreUnavailable);
  });
});
