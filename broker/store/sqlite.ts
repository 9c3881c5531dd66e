// SQLite engine (better-sqlite3, WAL): synchronous calls behind the async SqlDriver surface.
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import {
  closingAfterWork,
  type Row,
  type SqlDriver,
  type SqlExecutor,
  type SqlValue,
  sqliteOutage,
  UniqueViolation,
} from './sql.js';
import { assertFilesUnchanged, databaseFiles, filesChanged } from './sqlite-files.js';
import { createWriteBatcher, inThreadFlush } from './write-batcher.js';
import { startWriteWorker } from './write-worker.js';

type Statement = Database.Statement<unknown[], unknown>;

/** How long a connection waits for another's write lock before it gives up (SQLITE_BUSY). */
const BUSY_TIMEOUT_MS = 5_000;
/** The longest pause between two tries of a statement the write lock held up, on the event loop's connection. */
const BUSY_RETRY_MAX_MS = 25;

const COMMON_PRAGMAS = [
  'journal_mode = WAL',
  // FULL: a commit is on disk before the call returns, so a token is never handed out ahead of its replay record.
  'synchronous = FULL',
  'foreign_keys = ON',
];
/** The writer thread waits for the write lock inside SQLite, blocking only itself. */
const WRITER_PRAGMAS = [...COMMON_PRAGMAS, `busy_timeout = ${BUSY_TIMEOUT_MS}`];
/**
 * The event loop's connection does not: SQLite's busy handler sleeps inside the call, which would stop every
 * request for as long as another process holds the lock. It is told SQLITE_BUSY at once and tries again between
 * other work (whenUnlocked), for as long in all.
 */
const EVENT_LOOP_PRAGMAS = [
  ...COMMON_PRAGMAS,
  'busy_timeout = 0',
  // Nor does it checkpoint the WAL, which SQLite otherwise does inside a commit that leaves 1,000 pages or more
  // there: some 20 ms, during which every request waits. The writer thread does, for both (checkpointWrites).
  'wal_autocheckpoint = 0',
];

/**
 * Batches sent to the writer thread ahead of its answers. It merges whatever has queued into one transaction,
 * so this only bounds how much the event loop hands over before the disk has caught up.
 */
const WRITER_QUEUE = 64;

/**
 * Runs a pragma, waiting out SQLITE_BUSY as busy_timeout would: switching a new file to WAL needs it alone, and
 * SQLite answers busy at once, without its busy handler, while another process opening it at the same moment holds
 * it. Only at open, so the short waits block nothing else.
 */
function pragmaWhenFree(db: Database.Database, pragma: string): void {
  for (let waited = 0; ; waited += PRAGMA_RETRY_MS) {
    try {
      db.pragma(pragma);
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== 'SQLITE_BUSY' || waited >= BUSY_TIMEOUT_MS) throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, PRAGMA_RETRY_MS);
    }
  }
}

const PRAGMA_RETRY_MS = 20;

/** An SQLite error as the store reports it: a unique violation, an outage (StoreUnavailable), or as it came. */
function storeError(error: unknown): unknown {
  const e = error as { code?: string; message?: string };
  if (e.code === 'SQLITE_CONSTRAINT_UNIQUE' || e.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    // "UNIQUE constraint failed: tenants.name" — the column list identifies the constraint.
    return new UniqueViolation(e.message?.split(': ')[1] ?? 'unknown');
  }
  return sqliteOutage(error);
}

export function openSqlite(path: string): SqlDriver {
  if (path !== ':memory:') {
    // The audit log, the policies and the key digests are for the operator alone, as a PostgreSQL data directory
    // is: a directory or file the broker creates is the user's only. SQLite gives its WAL the file's mode.
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    closeSync(openSync(path, 'a', 0o600));
  }
  const db = new Database(path);
  for (const pragma of EVENT_LOOP_PRAGMAS) pragmaWhenFree(db, pragma);
  // A file deleted, moved or replaced while the broker runs: what a write commits there is lost, so none commits.
  const opened = path === ':memory:' ? undefined : databaseFiles(path);

  const statements = new Map<string, Statement>();
  const prepare = (sql: string): Statement => {
    let stmt = statements.get(sql);
    if (!stmt) {
      stmt = db.prepare(sql);
      statements.set(sql, stmt);
    }
    return stmt;
  };
  const translate = (error: unknown): never => {
    throw storeError(error);
  };
  // One connection: while an async transaction is open, other callers wait so their statements never land
  // inside it (and get rolled back with it). Each try checks that and runs in one synchronous stretch, so no
  // statement of another caller can slip in between.
  let current: Promise<void> | undefined;

  /**
   * Runs `fn` (a statement, or BEGIN with what must follow it at once) when the connection is free of another
   * caller's transaction (`owner`: this caller holds it); while another process holds the write lock, tries
   * again between other work, up to the busy timeout.
   */
  const whenUnlocked = async <T>(fn: () => T, owner = false): Promise<T> => {
    // On the monotonic clock: a wall clock set back meanwhile (NTP, a restored VM) would hold the request for as long.
    const deadline = performance.now() + BUSY_TIMEOUT_MS;
    for (let pause = 1; ; pause = Math.min(pause * 2, BUSY_RETRY_MAX_MS)) {
      if (!owner) while (current) await current;
      try {
        return fn();
      } catch (error) {
        if ((error as { code?: string }).code !== 'SQLITE_BUSY' || performance.now() >= deadline)
          translate(error);
      }
      await sleep(pause);
    }
  };
  /** Whether this connection has written since it last had the writer thread checkpoint the WAL. */
  let written = false;
  /**
   * Once what this connection wrote is committed, has the writer thread checkpoint it: on its own, the writer
   * checkpoints only after its own commits, and a long purge while no exchange comes would grow the WAL without end.
   */
  const checkpointWrites = () => {
    if (!written || db.inTransaction) return;
    written = false;
    writer?.post('checkpoint');
  };
  const executor = (owner: boolean): SqlExecutor => ({
    all: <T = Row>(sql: string, params: readonly SqlValue[] = []) =>
      whenUnlocked(() => prepare(sql).all(...params) as T[], owner),
    get: <T = Row>(sql: string, params: readonly SqlValue[] = []) =>
      whenUnlocked(() => prepare(sql).get(...params) as T | undefined, owner),
    run: async (sql: string, params: readonly SqlValue[] = []) => {
      const changes = await whenUnlocked(() => prepare(sql).run(...params).changes, owner);
      if (changes > 0) written = true;
      checkpointWrites();
      return changes;
    },
  });
  /** For the transaction's own statements. */
  const inside = executor(true);
  const outside = executor(false);

  // A file database commits batches on a writer thread; an in-memory one (no second connection) on this one.
  const writer =
    path === ':memory:'
      ? undefined
      : startWriteWorker(
          new URL('./sqlite-write-worker.js', import.meta.url),
          { path, pragmas: WRITER_PRAGMAS, opened },
          ({ message, code }) => storeError(Object.assign(new Error(message), { code })),
        );
  const writeBatched = writer
    ? createWriteBatcher(writer.flush, { maxInFlight: WRITER_QUEUE })
    : createWriteBatcher(inThreadFlush({ transaction }));

  async function transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    let release!: () => void;
    // BEGIN and the claim on the connection in one stretch: until BEGIN succeeds, others' statements go on.
    await whenUnlocked(() => {
      db.exec('BEGIN IMMEDIATE');
      current = new Promise<void>((resolve) => {
        release = resolve;
      });
    });
    try {
      const result = await fn(inside);
      await whenUnlocked(() => {
        if (opened) assertFilesUnchanged(path, opened);
        db.exec('COMMIT');
      }, true);
      return result;
    } catch (error) {
      if (db.inTransaction) db.exec('ROLLBACK');
      // Nothing of it is left to checkpoint.
      written = false;
      throw error;
    } finally {
      current = undefined;
      release();
      checkpointWrites();
    }
  }

  return closingAfterWork({
    engine: 'sqlite',
    ...outside,
    writeBatched,
    transaction,
    async exec(sql: string) {
      while (current) await current;
      db.exec(sql);
      written = true;
      checkpointWrites();
    },
    async ping() {
      await outside.get('SELECT 1 AS ok');
      // A deleted or replaced file still answers through the open handle, but what is written to it is lost.
      const changed = opened && filesChanged(path, opened);
      if (changed) throw new Error(changed);
    },
    async close() {
      while (current) await current;
      await writeBatched.drain();
      await writer?.close();
      db.close();
    },
  });
}
