// PostgreSQL engine (pg Pool): `?` placeholders become `$n`; 64-bit integers come back as numbers. Connections and
// write transactions are made in postgres-session.js, which the group-commit thread runs too.
import type pg from 'pg';
import {
  ANSWER_DEADLINE_MS,
  hasOwnSessions,
  isUnavailable,
  openPool,
  prepared,
  QUERY_TIMEOUT_MS,
  transactionOn,
} from './postgres-session.js';
import {
  closingAfterWork,
  type SqlDriver,
  type SqlExecutor,
  type SqlValue,
  StoreUnavailable,
  UniqueViolation,
} from './sql.js';
import { steadyNow } from './steady-clock.js';
import { createWriteBatcher } from './write-batcher.js';
import { startWriteWorker, type WriteWorker } from './write-worker.js';

/** The error as the store reports it: a unique violation, an unavailable database, or as it came. */
function storeError(error: unknown): unknown {
  if (error instanceof UniqueViolation || error instanceof StoreUnavailable) return error;
  const e = error as { code?: string; constraint?: string };
  if (e.code === '23505') return new UniqueViolation(e.constraint ?? 'unknown');
  return isUnavailable(error) ? new StoreUnavailable(error) : error;
}

function translate(error: unknown): never {
  throw storeError(error);
}

type Query = (query: pg.QueryConfig) => Promise<pg.QueryResult>;

/**
 * Statements through `query`, in the store's terms: `?` placeholders, its errors. Named once `ownSessions` has
 * found that each connection has a server session of its own.
 */
function executor(query: Query, ownSessions: () => Promise<boolean>): SqlExecutor {
  const run = async (sql: string, params: readonly SqlValue[] = []) => {
    try {
      return await query({ ...prepared(sql, await ownSessions()), values: params as SqlValue[] });
    } catch (error) {
      translate(error);
    }
  };
  return {
    all: async <T>(sql: string, params?: readonly SqlValue[]) => (await run(sql, params)).rows as T[],
    get: async <T>(sql: string, params?: readonly SqlValue[]) =>
      (await run(sql, params)).rows[0] as T | undefined,
    run: async (sql: string, params?: readonly SqlValue[]) => (await run(sql, params)).rowCount ?? 0,
  };
}

/**
 * Write transactions that hold a connection at once: the group-commit thread's and one on this thread, so that
 * the write turn passes between the two without a round trip, each already waiting for it on the server. More
 * would only wait for the turn as well, each holding a connection: with a table they write locked by another
 * session, writers would take the whole pool, and reads, /readyz's among them, would fail for want of a
 * connection. This thread's other writes wait here.
 */
export const WRITERS_CONNECTED = 2;
/** The group-commit thread's connection, one of the process's `maxConnections`. */
const GROUP_COMMIT_CONNECTIONS = 1;

/**
 * `maxConnections` (DATABASE_POOL_SIZE, 10 by default) bounds the connections this process opens, the
 * group-commit thread's included: requests past it wait for one, up to the 5 s a read waits. It must exceed
 * WRITERS_CONNECTED, which config.ts makes sure of.
 */
export function openPostgres(
  url: string,
  options: { maxConnections?: number; answerDeadlineMs?: number } = {},
): SqlDriver {
  const answerDeadlineMs = options.answerDeadlineMs ?? ANSWER_DEADLINE_MS;
  // Asked once, before the first statement (a pooler in between is not changed while the broker runs); again at
  // the next statement if the database could not be asked.
  let sessionsProbe: Promise<boolean> | undefined;
  const ownSessions = () => {
    sessionsProbe ??= hasOwnSessions(url).catch((error) => {
      sessionsProbe = undefined;
      throw error;
    });
    return sessionsProbe;
  };
  const pool = openPool(url, (options.maxConnections ?? 10) - GROUP_COMMIT_CONNECTIONS, { ownSessions });
  let writers = 0;
  const writerQueue: (() => void)[] = [];
  const writerTurn = async () => {
    if (writers < WRITERS_CONNECTED - GROUP_COMMIT_CONNECTIONS) writers++;
    else await new Promise<void>((resolve) => writerQueue.push(resolve));
  };
  // Handed straight to the next in line, if any.
  const writerDone = () => {
    const next = writerQueue.shift();
    if (next) next();
    else writers--;
  };
  const transaction = async <T>(
    fn: (tx: SqlExecutor) => Promise<T>,
    options: { unbounded?: boolean; since?: number } = {},
  ): Promise<T> => {
    // Locks are waited for until the deadline of the oldest work in it (see transactionOn).
    const lockWaitEnds = (options.since ?? steadyNow()) + answerDeadlineMs;
    await writerTurn();
    try {
      return await transactionOn(
        pool,
        (statement) => fn(executor((query) => statement(query), ownSessions)),
        {
          unbounded: options.unbounded,
          lockWaitEnds,
          answerDeadlineMs,
        },
      );
    } catch (error) {
      translate(error);
    } finally {
      writerDone();
    }
  };
  // Group commit on a thread of its own (postgres-write-worker.js): one batch in flight at a time, as 2, 4 or 8
  // concurrent commits measured no clear gain and a worse p99.
  // Started once the database has been asked whether its connections have sessions of their own.
  let writer: WriteWorker | undefined;
  const writeBatched = createWriteBatcher(async (writes, since) => {
    const own = await ownSessions().catch(translate);
    writer ??= startWriteWorker(
      new URL('./postgres-write-worker.js', import.meta.url),
      { url, answerDeadlineMs, ownSessions: own },
      ({ message, ...described }) => storeError(Object.assign(new Error(message), described)),
    );
    return writer.flush(writes, since);
  });
  return closingAfterWork({
    engine: 'postgres',
    ...executor(
      (query) => pool.query({ ...query, query_timeout: QUERY_TIMEOUT_MS } as pg.QueryConfig),
      ownSessions,
    ),
    transaction,
    writeBatched,
    async exec(sql: string) {
      await pool.query(sql);
    },
    async ping() {
      await pool.query('SELECT 1');
    },
    async close() {
      await writeBatched.drain();
      await writer?.close();
      await pool.end();
    },
  });
}
