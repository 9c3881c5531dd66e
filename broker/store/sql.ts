// The small SQL surface both engines provide; the store is written once against it with `?` placeholders.

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
 * insert-if-new and the audit event of its outcome commit together.
 */
export interface BatchedWrite {
  probe: SqlStatement;
  onChange?: SqlStatement;
  onNoChange?: SqlStatement;
}

/**
 * What a transaction's SELECT adds to lock the rows it is about to change, so that a concurrent change waits
 * and then reads the result. PostgreSQL needs `FOR UPDATE` (READ COMMITTED); SQLite's transactions
 * already take the write lock when they begin.
 */
export function forUpdate(db: Pick<SqlDriver, 'engine'>): string {
  return db.engine === 'postgres' ? ' FOR UPDATE' : '';
}

export interface SqlDriver extends SqlExecutor {
  readonly engine: 'sqlite' | 'postgres';
  /**
   * Group commit: writes issued close together share one transaction (one fsync), each resolving with the
   * number of rows its probe changed once that transaction is durable. A write that fails fails alone.
   */
  writeBatched(write: BatchedWrite): Promise<number>;
  /** Runs `fn` in one transaction: all of it commits, or none of it. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** Runs schema DDL (several statements). */
  exec(sql: string): Promise<void>;
  /** Rejects unless the database answers, and is still the one this driver opened. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** A unique constraint was violated; `constraint` names the index so callers can say which field clashed. */
export class UniqueViolation extends Error {
  constructor(readonly constraint: string) {
    super(`unique constraint ${constraint} violated`);
    this.name = 'UniqueViolation';
  }
}
