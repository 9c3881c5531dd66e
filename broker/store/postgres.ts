// PostgreSQL engine (pg Pool): `?` placeholders become `$n`; 64-bit integers come back as numbers.
import pg from 'pg';
import {
  closingAfterWork,
  type SqlDriver,
  type SqlExecutor,
  type SqlValue,
  StoreUnavailable,
  UniqueViolation,
} from './sql.js';
import { createWriteBatcher, inThreadFlush } from './write-batcher.js';

const INT8_OID = 20;

const placeholderCache = new Map<string, string>();
function toPostgres(sql: string): string {
  let out = placeholderCache.get(sql);
  if (out === undefined) {
    let n = 0;
    out = sql.replace(/\?/g, () => `$${++n}`);
    placeholderCache.set(sql, out);
  }
  return out;
}

// SQLSTATEs of a server that cannot take work now: the connection failed or is gone (08000, 08001, 08003, 08004,
// 08006), shutting down or starting up (57P01–57P03), short of resources (class 53: too many connections, disk
// full, out of memory). And of a statement it stopped, which the next try may pass: a lock waited for past
// lock_timeout (55P03: the broker's own, below), a statement cancelled (57014: an operator's pg_cancel_backend, a
// statement_timeout), a transaction chosen to end a deadlock or a serialization conflict (40P01, 40001). Not
// 08P01, a protocol violation, which is a bug to fix rather than an outage to wait out.
const UNAVAILABLE_SQLSTATE = /^(0800[01346]|57P0[123]|53[0-9A-Z]{3}|55P03|57014|40P01|40001)$/;
// What Node and pg report when the server cannot be reached or the connection drops.
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
const CONNECTION_LOST =
  /^Connection terminated|^timeout exceeded when trying to connect|not queryable|^Query read timeout$/;
/**
 * How long a statement outside a transaction (a read, mostly) may go unanswered before the database counts as
 * unavailable, as SQLite's busy timeout does: a server that keeps its connections but stops answering must not
 * hold requests forever. The connection is then discarded.
 */
const QUERY_TIMEOUT_MS = 5_000;
/**
 * How long a write transaction may wait for any one answer on its way to COMMIT — its write turn, a statement,
 * a ROLLBACK — so that a slow batch that keeps getting answers goes on. Past it the connection is closed, which
 * rolls the transaction back on the server: nothing of it can commit later. COMMIT itself is waited for without
 * a limit, since a write answered "unavailable" must not have committed. Migrations run without it.
 */
const ANSWER_DEADLINE_MS = 15_000;
/**
 * The server is told these deadlines too, as its lock_timeout: a connection the broker closes is noticed by the
 * server only once the statement in flight ends, and one waiting for a lock (a LOCK TABLE, an ALTER TABLE or a
 * VACUUM FULL in another session) would otherwise wait on, holding its server connection, the write turn and
 * its place in the lock's queue: under load, until the server has no connections left for anyone. Set on each
 * connection for reads; each transaction sets its own.
 */
const lockTimeout = (scope: 'SESSION' | 'LOCAL', ms: number) =>
  `SET ${scope} lock_timeout = ${Math.ceil(ms)}`;

/** Throws the error as the store reports it: a unique violation, an unavailable database, or as it came. */
function translate(error: unknown): never {
  if (error instanceof UniqueViolation || error instanceof StoreUnavailable) throw error;
  const e = error as { code?: string; constraint?: string; message?: string };
  if (e.code === '23505') throw new UniqueViolation(e.constraint ?? 'unknown');
  const unavailable =
    (e.code !== undefined && (UNAVAILABLE_SQLSTATE.test(e.code) || UNREACHABLE.has(e.code))) ||
    CONNECTION_LOST.test(e.message ?? '');
  throw unavailable ? new StoreUnavailable(error) : error;
}

type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>;

/** Statements on `q`; with `timeoutMs`, one unanswered that long fails as unavailable (pg then drops its client). */
function executor(q: Queryable, timeoutMs?: number): SqlExecutor {
  const query = async (sql: string, params: readonly SqlValue[] = []) => {
    try {
      return await q.query({
        text: toPostgres(sql),
        values: params as SqlValue[],
        ...(timeoutMs === undefined ? {} : { query_timeout: timeoutMs }),
      } as pg.QueryConfig);
    } catch (error) {
      translate(error);
    }
  };
  return {
    all: async <T>(sql: string, params?: readonly SqlValue[]) => (await query(sql, params)).rows as T[],
    get: async <T>(sql: string, params?: readonly SqlValue[]) =>
      (await query(sql, params)).rows[0] as T | undefined,
    run: async (sql: string, params?: readonly SqlValue[]) => (await query(sql, params)).rowCount ?? 0,
  };
}

/** Advisory lock key of the write turn (7710002 guards the first signing key, 7710001 migrations). */
const WRITE_TURN_LOCK = 7710003;
/**
 * Write transactions that hold a connection at once: the one with the write turn and the next, already waiting
 * for it on the server so that the turn passes on without a round trip. More would only wait for the turn as
 * well, each holding a connection: with a table they write locked by another session, writers would take the
 * whole pool, and reads, /readyz's among them, would fail for want of a connection. The others wait here.
 */
export const WRITERS_CONNECTED = 2;

/**
 * `maxConnections` (DATABASE_POOL_SIZE, 10 by default) bounds the connections this process opens: requests past it
 * wait for one, up to the 5 s a read waits. It must exceed WRITERS_CONNECTED, which config.ts makes sure of.
 */
export function openPostgres(
  url: string,
  options: { maxConnections?: number; answerDeadlineMs?: number } = {},
): SqlDriver {
  const answerDeadlineMs = options.answerDeadlineMs ?? ANSWER_DEADLINE_MS;
  const pool = new pg.Pool({
    connectionString: url,
    max: options.maxConnections ?? 10,
    // A server that stops answering is noticed: connecting gives up, and TCP keep-alive finds a dead peer.
    connectionTimeoutMillis: QUERY_TIMEOUT_MS,
    keepAlive: true,
    onConnect: (client) => client.query(lockTimeout('SESSION', QUERY_TIMEOUT_MS)),
    types: {
      getTypeParser: ((oid: number, format?: string) =>
        oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as never,
    },
  });
  // A client losing its connection must not crash the process, whenever that happens: idle in the pool (the
  // pool reports it here), checked out (transaction() hears it), or in between, as the pool hands it over. So
  // every client has a listener for its whole life; the next query reconnects.
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
  });
  let writers = 0;
  const writerQueue: (() => void)[] = [];
  const writerTurn = async () => {
    if (writers < WRITERS_CONNECTED) writers++;
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
    // Locks are waited for until the deadline of the oldest work in it, which may have waited for the writes
    // before it (in a batch, or here for a connection): a write queued behind one that waits for a lock is
    // answered within the deadline of its own arrival, not of its own start.
    const lockWaitEnds = (options.since ?? Date.now()) + answerDeadlineMs;
    await writerTurn();
    try {
      return await transactionOnConnection(fn, options, lockWaitEnds);
    } finally {
      writerDone();
    }
  };
  const transactionOnConnection = async <T>(
    fn: (tx: SqlExecutor) => Promise<T>,
    options: { unbounded?: boolean },
    lockWaitEnds: number,
  ): Promise<T> => {
    if (!options.unbounded && lockWaitEnds <= Date.now()) {
      throw new StoreUnavailable(new Error(`the writes before it kept it waiting ${answerDeadlineMs} ms`));
    }
    const client = await pool.connect().catch(translate);
    // The pool listens for errors only on idle clients. One checked out here that loses its connection emits
    // 'error' too: unheard, that would end the process; heard, the query in flight fails (StoreUnavailable) and
    // the broken client is discarded rather than returned to the pool.
    let lost: unknown;
    const onError = (error: unknown) => {
      lost ??= error;
    };
    client.on('error', onError);
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    /** (Re)starts the wait for the next answer; every answer on the way to COMMIT calls it. */
    const awaitAnswer = () => {
      clearTimeout(watchdog);
      if (options.unbounded) return;
      watchdog = setTimeout(() => {
        lost ??= new StoreUnavailable(new Error(`the database gave no answer within ${answerDeadlineMs} ms`));
        // Whatever statement is in flight fails with the connection, and the server rolls the transaction back.
        (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
      }, answerDeadlineMs);
    };
    const statement = async (query: string | pg.QueryConfig, values?: SqlValue[]) => {
      awaitAnswer();
      try {
        return await client.query(query, values);
      } finally {
        awaitAnswer();
      }
    };
    try {
      // In one round trip with the BEGIN. 0 is no limit (migrations); 1 ms, no wait for a lock once the wait for
      // a connection has taken the rest.
      const lockWait = options.unbounded ? 0 : Math.max(1, lockWaitEnds - Date.now());
      await statement(`BEGIN; ${lockTimeout('LOCAL', lockWait)}`);
      // Write transactions take turns, each holding the turn until it has committed and become visible: audit
      // event ids then follow commit order, so a reader paging newest first (an exporter tailing the log) never
      // passes an id that a transaction still in flight will commit later. SQLite's single writer does the same.
      await statement('SELECT pg_advisory_xact_lock($1)', [WRITE_TURN_LOCK]);
      const result = await fn(executor({ query: statement } as Queryable));
      clearTimeout(watchdog);
      if (lost !== undefined) throw lost;
      await client.query('COMMIT');
      return result;
    } catch (error) {
      // The ROLLBACK is bounded like any other answer: a server that stopped answering must not hold this.
      if (lost === undefined) await statement('ROLLBACK').catch(() => {});
      translate(lost ?? error);
    } finally {
      clearTimeout(watchdog);
      client.off('error', onError);
      client.release(lost === undefined ? undefined : (lost as Error));
    }
  };
  const writeBatched = createWriteBatcher(inThreadFlush({ transaction }));
  return closingAfterWork({
    engine: 'postgres',
    ...executor(pool, QUERY_TIMEOUT_MS),
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
      await pool.end();
    },
  });
}
