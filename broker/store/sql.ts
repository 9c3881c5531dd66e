// The small SQL surface both engines provide; the store is written once against it with `?` placeholders.
import { messageOf } from '../errors.js';

export type SqlValue = string | number | null;
export type Row = Record<string, unknown>;

export interface SqlExecutor {
  all<T = Row>(sql: string, params?: readonly SqlValue[]): Promise<T[]>;
  get<T = Row>(sql: string, params?: readonly SqlValue[]): Promise<T | undefined>;
  /** Runs a statement; resolves to the number of rows it changed. */
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
}

export interface SqlStatement {
  sql: string;
  params: readonly SqlValue[];
}

/**
 * One write of a group commit: `probe` runs, then `onChange` when it changed a row, else `onNoChange` — so an
 * insert-if-new and the audit event of its outcome commit together. A batch runs every write's probe first, then
 * the statement after each, so no write's statement after its probe may change what another's probe finds.
 */
export interface BatchedWrite {
  probe: SqlStatement;
  onChange?: SqlStatement;
  onNoChange?: SqlStatement;
}

/** Rows the probe of a batched write changed, and rows the statement run after it changed (0 if none ran). */
export interface WriteOutcome {
  probe: number;
  next: number;
}

/**
 * What a transaction's SELECT adds to lock the rows it is about to change, so that a concurrent change waits
 * and then reads the result. PostgreSQL needs `FOR UPDATE` (READ COMMITTED); SQLite's transactions
 * already take the write lock when they begin.
 */
export function forUpdate(db: Pick<SqlDriver, 'engine'>): string {
  return db.engine === 'postgres' ? ' FOR UPDATE' : '';
}

/**
 * `column` compared byte by byte, so listings come in the same order on both engines whatever collation a
 * PostgreSQL database was created with (an ICU or en_US one orders `a_pol` before `a-pol2`); SQLite's default
 * BINARY already compares bytes.
 */
export function bytewise(db: Pick<SqlDriver, 'engine'>, column: string): string {
  return db.engine === 'postgres' ? `${column} COLLATE "C"` : column;
}

export interface SqlDriver extends SqlExecutor {
  readonly engine: 'sqlite' | 'postgres';
  /**
   * Group commit: writes issued close together share one transaction (one fsync), each resolving with the
   * rows its probe and the statement after it changed, once that transaction is durable. A write that fails
   * fails alone.
   */
  writeBatched(write: BatchedWrite): Promise<WriteOutcome>;
  /**
   * Runs `fn` in one transaction: all of it commits, or none of it. `unbounded`: no deadline for reaching the
   * COMMIT (migrations), where the engine has one. `since`: when the work was asked for, if earlier than now (a
   * batch of writes that waited for the one before it), from which that deadline's wait for locks runs.
   */
  transaction<T>(
    fn: (tx: SqlExecutor) => Promise<T>,
    options?: { unbounded?: boolean; since?: number },
  ): Promise<T>;
  /** Runs schema DDL (several statements). */
  exec(sql: string): Promise<void>;
  /** Rejects unless the database answers, and is still the one this driver opened. */
  ping(): Promise<void>;
  /**
   * Lets the work begun before it finish, then closes the database; work begun once it has been called is
   * refused as StoreUnavailable.
   */
  close(): Promise<void>;
}

/**
 * The database cannot take the request now: the connection is lost or refused, the server is shutting down, or
 * another process holds the write lock past the busy timeout. Answered 503 `not_ready`, to retry, not as a bug.
 */
export class StoreUnavailable extends Error {
  constructor(cause: unknown) {
    super(`the database is unavailable: ${messageOf(cause)}`, {
      cause,
    });
    this.name = 'StoreUnavailable';
  }
}

// SQLite's answers when it cannot take work now: another connection held the write lock past the busy timeout,
// the disk (or the file's allowed size) is full, reading or writing the file failed, or the file (or its WAL) is no
// longer at its path (sqlite-files.js).
const SQLITE_OUTAGE = /^SQLITE_(BUSY|FULL|IOERR|READONLY_DBMOVED)/;

/** An SQLite error that is an outage to wait out, as StoreUnavailable; any other as it came. */
export function sqliteOutage(error: unknown): unknown {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && SQLITE_OUTAGE.test(code) ? new StoreUnavailable(error) : error;
}

/**
 * `driver`, closing only once the work begun before close() has finished, and refusing what comes after it as
 * StoreUnavailable (503 not_ready, to retry on another replica): a request that outlived its connection while
 * the broker stops meets a database that is closing, never one already closed, which would be a 500.
 */
export function closingAfterWork(driver: SqlDriver): SqlDriver {
  let closing: Promise<void> | undefined;
  let working = 0;
  let idle: (() => void) | undefined;
  const admit = async <T>(work: () => Promise<T>): Promise<T> => {
    if (closing) throw new StoreUnavailable(new Error('the database is closing'));
    working++;
    try {
      return await work();
    } finally {
      if (--working === 0) idle?.();
    }
  };
  return {
    engine: driver.engine,
    all: <T = Row>(sql: string, params?: readonly SqlValue[]) => admit(() => driver.all<T>(sql, params)),
    get: <T = Row>(sql: string, params?: readonly SqlValue[]) => admit(() => driver.get<T>(sql, params)),
    run: (sql, params) => admit(() => driver.run(sql, params)),
    writeBatched: (write) => admit(() => driver.writeBatched(write)),
    transaction: (fn, options) => admit(() => driver.transaction(fn, options)),
    exec: (sql) => admit(() => driver.exec(sql)),
    ping: () => admit(() => driver.ping()),
    close: () =>
      (closing ??= (async () => {
        if (working > 0) await new Promise<void>((resolve) => (idle = resolve));
        await driver.close();
      })()),
  };
}

/** A unique constraint was violated; `constraint` names the index so callers can say which field clashed. */
export class UniqueViolation extends Error {
  constructor(readonly constraint: string) {
    super(`unique constraint ${constraint} violated`);
    this.name = 'UniqueViolation';
  }
}
