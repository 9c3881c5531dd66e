// Group commit: which writes share a batch, how many batches may commit at once, and when each caller resolves.
import Database from 'better-sqlite3';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  type BatchedWrite,
  type SqlDriver,
  StoreUnavailable,
  UniqueViolation,
  type WriteOutcome,
} from '../../broker/store/sql.js';
import { openSqlite } from '../../broker/store/sqlite.js';
import {
  createWriteBatcher,
  type FlushBatch,
  inThreadFlush,
  type Settled,
} from '../../broker/store/write-batcher.js';
import { createTestDatabase, openDriver, requestedEngine, type TestDatabase } from '../support/database.js';

const engine = requestedEngine();
const write = (n: number): BatchedWrite => ({ probe: { sql: `w${n}`, params: [n] } });
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** A flush whose batches commit only when the test says so. */
function controlledFlush() {
  const batches: { writes: number[]; commit(): void; fail(error: Error): void }[] = [];
  const flush: FlushBatch = (writes) =>
    new Promise<Settled[]>((resolve, reject) => {
      batches.push({
        writes: writes.map((w) => w.probe.params[0] as number),
        commit: () =>
          resolve(writes.map((w) => ({ ok: true, value: { probe: w.probe.params[0] as number, next: 0 } }))),
        fail: reject,
      });
    });
  return { flush, batches };
}

describe('write batcher', () => {
  it('puts the writes of one turn in one batch and resolves each caller only when its batch commits', async () => {
    const { flush, batches } = controlledFlush();
    const batched = createWriteBatcher(flush);
    const settled: number[] = [];
    for (const n of [1, 2, 3]) void batched(write(n)).then((v) => settled.push(v.probe));
    await turn();
    expect(batches.map((b) => b.writes)).toEqual([[1, 2, 3]]);
    await turn();
    expect(settled).toEqual([]);
    batches[0]!.commit();
    await turn();
    expect(settled).toEqual([1, 2, 3]);
  });

  it('with one batch in flight, gathers the next while it commits', async () => {
    const { flush, batches } = controlledFlush();
    const batched = createWriteBatcher(flush);
    const all = [batched(write(1))];
    await turn();
    all.push(batched(write(2)));
    await turn();
    all.push(batched(write(3)));
    await turn();
    expect(batches.map((b) => b.writes)).toEqual([[1]]);
    batches[0]!.commit();
    await turn();
    await turn();
    expect(batches.map((b) => b.writes)).toEqual([[1], [2, 3]]);
    batches[1]!.commit();
    expect((await Promise.all(all)).map((o) => o.probe)).toEqual([1, 2, 3]);
  });

  it('hands over a batch per turn up to maxInFlight, in order, then waits for a commit', async () => {
    const { flush, batches } = controlledFlush();
    const batched = createWriteBatcher(flush, { maxInFlight: 2 });
    const all: Promise<WriteOutcome>[] = [];
    for (const n of [1, 2, 3, 4]) {
      all.push(batched(write(n)));
      await turn();
    }
    expect(batches.map((b) => b.writes)).toEqual([[1], [2]]);
    batches[1]!.commit();
    await turn();
    await turn();
    expect(batches.map((b) => b.writes)).toEqual([[1], [2], [3, 4]]);
    expect((await all[1])?.probe).toBe(2);
    batches[0]!.fail(new Error('disk full'));
    await expect(all[0]).rejects.toThrow('disk full');
    batches[2]!.commit();
    expect((await Promise.all(all.slice(2))).map((o) => o.probe)).toEqual([3, 4]);
  });

  it('splits a turn larger than maxBatch into several batches', async () => {
    const { flush, batches } = controlledFlush();
    const batched = createWriteBatcher(flush, { maxBatch: 2, maxInFlight: 8 });
    const all = [1, 2, 3, 4, 5].map((n) => batched(write(n)));
    await turn();
    await turn();
    await turn();
    expect(batches.map((b) => b.writes)).toEqual([[1, 2], [3, 4], [5]]);
    for (const b of batches) b.commit();
    expect((await Promise.all(all)).map((o) => o.probe)).toEqual([1, 2, 3, 4, 5]);
  });

  it('drains: resolves once every write handed over has been answered, and at once when idle', async () => {
    const { flush, batches } = controlledFlush();
    const batched = createWriteBatcher(flush);
    await batched.drain();
    const first = batched(write(1));
    await turn();
    const second = batched(write(2));
    let drained = false;
    const draining = batched.drain().then(() => {
      drained = true;
    });
    batches[0]!.commit();
    await first;
    await turn();
    expect(drained).toBe(false);
    await turn();
    batches[1]!.commit();
    await second;
    await draining;
    expect(drained).toBe(true);
  });
});

describe('a batch the database cannot take', () => {
  it('in-thread: an outage fails every write of the batch at once, without trying each again', async () => {
    let transactions = 0;
    const outage = new StoreUnavailable(new Error('connection lost'));
    const flush = inThreadFlush({
      transaction: async () => {
        transactions++;
        throw outage;
      },
    });
    const settled = await flush([write(1), write(2), write(3)]);
    expect(settled).toEqual([1, 2, 3].map(() => ({ ok: false, error: outage })));
    expect(transactions).toBe(1);
  });

  it('in-thread: one bad write still fails alone, its neighbours committed', async () => {
    const flush = inThreadFlush({
      transaction: async (fn) =>
        fn({
          all: async () => [],
          get: async () => undefined,
          run: async (sql) => {
            if (sql === 'w2') throw new Error('bad write');
            return 1;
          },
        }),
    });
    const settled = await flush([write(1), write(2), write(3)]);
    expect(settled.map((s) => s.ok)).toEqual([true, false, true]);
  });

  it("SQLite's writer thread: a write lock held elsewhere fails the batch once, not each write again after it", async () => {
    const db = await createTestDatabase('sqlite');
    const driver = openSqlite(db.file!);
    try {
      await driver.exec('CREATE TABLE t (v INTEGER)');
      const holder = new Database(db.file!);
      holder.exec('BEGIN EXCLUSIVE');
      const started = Date.now();
      const outcomes = await Promise.allSettled(
        [1, 2, 3, 4].map((v) =>
          driver.writeBatched({ probe: { sql: 'INSERT INTO t VALUES (?)', params: [v] } }),
        ),
      );
      const waited = Date.now() - started;
      holder.exec('ROLLBACK');
      holder.close();
      expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
      expect((outcomes[0] as PromiseRejectedResult).reason).toBeInstanceOf(StoreUnavailable);
      // One busy timeout (5 s) for the batch, not one more for each of its four writes.
      expect(waited).toBeLessThan(10_000);
    } finally {
      await driver.close();
      await db.drop();
    }
  }, 30_000);
});

/** Runs `fn` with a driver of its own on a fresh database of the engine under test, then closes and drops both. */
async function onFreshDriver(fn: (driver: SqlDriver, db: TestDatabase) => Promise<void>) {
  const db = await createTestDatabase();
  const driver = openDriver(db);
  try {
    await fn(driver, db);
  } finally {
    await driver.close();
    await db.drop();
  }
}

describe(`group commit on a thread of its own (${engine})`, () => {
  it('commits a batch while the event loop is busy with other work, rather than a statement each time it polls', () =>
    onFreshDriver(async (driver) => {
      // When each row was written, by the database's clock (the same machine's as Date.now()), in ms.
      const now =
        engine === 'postgres'
          ? 'extract(epoch from clock_timestamp()) * 1000'
          : "(julianday('now') - 2440587.5) * 86400000";
      await driver.exec('CREATE TABLE t (v INTEGER PRIMARY KEY, at DOUBLE PRECISION NOT NULL)');
      const insert = (v: number) =>
        driver.writeBatched({ probe: { sql: `INSERT INTO t VALUES (?, ${now})`, params: [v] } });
      await insert(0);
      const writes = Array.from({ length: 20 }, (_, i) => insert(i + 1));
      // The batch is handed over at the end of this turn; then the event loop stays busy, as a loaded broker's
      // is with other requests. A commit driven from the event loop would send at most its first statement.
      await turn();
      const busyUntil = Date.now() + 500;
      while (Date.now() < busyUntil);
      expect((await Promise.all(writes)).map((w) => w.probe)).toEqual(writes.map(() => 1));
      const rows = await driver.all<{ v: number; at: number }>('SELECT v, at FROM t WHERE v > 0');
      expect(rows).toHaveLength(20);
      for (const row of rows) expect(row.at).toBeLessThan(busyUntil);
    }));

  it('batches handed over while one waits for the write turn are each answered with their own writes', () =>
    onFreshDriver(async (driver, db) => {
      await driver.exec('CREATE TABLE t (v INTEGER PRIMARY KEY)');
      const insertIfNew = (v: number) =>
        driver.writeBatched({
          probe: { sql: 'INSERT INTO t VALUES (?) ON CONFLICT (v) DO NOTHING', params: [v] },
        });
      await insertIfNew(0);
      // Another replica's (PostgreSQL) or process's (SQLite) write holds the turn meanwhile.
      let release: () => Promise<unknown>;
      if (engine === 'postgres') {
        const holder = new pg.Client({ connectionString: db.url });
        await holder.connect();
        await holder.query('BEGIN');
        await holder.query('SELECT pg_advisory_xact_lock(7710003)');
        release = async () => {
          await holder.query('COMMIT');
          await holder.end();
        };
      } else {
        const holder = new Database(db.file!);
        holder.exec('BEGIN EXCLUSIVE');
        release = async () => {
          holder.exec('COMMIT');
          holder.close();
        };
      }
      // One batch per turn, each a new value and one already there.
      const writes: Promise<WriteOutcome>[] = [];
      for (let v = 1; v <= 5; v++) {
        writes.push(insertIfNew(v), insertIfNew(0));
        await turn();
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
      await release();
      expect((await Promise.all(writes)).map((w) => w.probe)).toEqual([1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
      expect(await driver.all('SELECT v FROM t ORDER BY v')).toEqual([0, 1, 2, 3, 4, 5].map((v) => ({ v })));
    }));

  it('a write that breaks a constraint fails alone; the others of its batch commit, each with the statement its probe chose', () =>
    onFreshDriver(async (driver) => {
      await driver.exec('CREATE TABLE t (v INTEGER PRIMARY KEY)');
      await driver.exec('CREATE TABLE seen (v INTEGER NOT NULL, outcome TEXT NOT NULL)');
      await driver.exec('INSERT INTO t VALUES (3)');
      const insertIfNew = (v: number) =>
        driver.writeBatched({
          probe: { sql: 'INSERT INTO t VALUES (?) ON CONFLICT (v) DO NOTHING', params: [v] },
          onChange: { sql: "INSERT INTO seen VALUES (?, 'new')", params: [v] },
          onNoChange: { sql: "INSERT INTO seen VALUES (?, 'again')", params: [v] },
        });
      // Handed over in one turn: one batch, whose transaction the bad write makes fail.
      const writes = [
        insertIfNew(1),
        insertIfNew(2),
        driver.writeBatched({ probe: { sql: 'INSERT INTO t VALUES (?)', params: [3] } }),
        insertIfNew(3),
        insertIfNew(4),
      ].map((w) => w.catch((e: unknown) => e));
      const [one, two, bad, three, four] = await Promise.all(writes);
      expect(bad).toBeInstanceOf(UniqueViolation);
      expect([one, two, three, four]).toEqual([
        { probe: 1, next: 1 },
        { probe: 1, next: 1 },
        { probe: 0, next: 1 },
        { probe: 1, next: 1 },
      ]);
      expect(await driver.all('SELECT v, outcome FROM seen ORDER BY v')).toEqual([
        { v: 1, outcome: 'new' },
        { v: 2, outcome: 'new' },
        { v: 3, outcome: 'again' },
        { v: 4, outcome: 'new' },
      ]);
      expect(await driver.all('SELECT v FROM t ORDER BY v')).toEqual([1, 2, 3, 4].map((v) => ({ v })));
    }));
});
