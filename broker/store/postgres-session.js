// PostgreSQL connections and their write transactions, for this thread's pool (postgres.ts) and for the
// group-commit thread (postgres-write-worker.js) alike. Plain JavaScript so that the same file runs from source
// and from build/, in a worker thread as well.
import { createHash } from 'node:crypto';
import pg from 'pg';
import { steadyNow } from './steady-clock.js';

const INT8_OID = 20;

/**
 * A statement of the store's as PostgreSQL takes it: its `?` placeholders as `$n`, and, `named`, a name, so that a
 * connection parses it once rather than at every use: less work for the server and for the client on every
 * exchange, on this thread's connections and the group-commit thread's alike. Statement texts are constants of
 * the store's code, so they are few; past MAX_PREPARED, a text is converted at each use and goes unnamed, so
 * that a statement written with a value in its text could never grow them without bound. Statements name the
 * columns they read, never `*`: an older replica's prepared statement then goes on working when a newer one's
 * migration adds a column to its table, where PostgreSQL would refuse it ("cached plan must not change result
 * type"). A name is drawn from the text it stands for, so that it means the same statement on every thread, in
 * every process and version: through a pooler that shares server connections and does not keep each client's
 * statements apart, a name this connection never prepared on that server fails, rather than running another
 * statement prepared there under the same name. Such a pooler is noticed at start, and statements go unnamed
 * then (hasOwnSessions()).
 */
/** @type {Map<string, { text: string, name?: string }>} */
const preparedStatements = new Map();
const MAX_PREPARED = 1_000;
/**
 * @param {string} sql
 * @param {boolean} [named]
 * @returns {{ text: string, name?: string }}
 */
export function prepared(sql, named = true) {
  const known = preparedStatements.get(sql);
  if (known) return named ? known : { text: known.text };
  let n = 0;
  const text = sql.replace(/\?/g, () => `$${++n}`);
  if (preparedStatements.size >= MAX_PREPARED) return { text };
  const statement = {
    text,
    name: `oidc_broker_${createHash('sha256').update(text).digest('hex').slice(0, 32)}`,
  };
  preparedStatements.set(sql, statement);
  return named ? statement : { text };
}

/**
 * Whether connections to `url` have a server session of their own, as they do on the server itself and through
 * PgBouncer in session mode; not through a pooler that hands each transaction whichever server connection is
 * free (PgBouncer in transaction mode, and others like it). There, a statement prepared on one transaction's
 * server connection is unknown to the next's (unless the pooler keeps them, as PgBouncer does from 1.21 with
 * max_prepared_statements), and a setting made for the session is made for whichever client is served next. Two
 * connections each ask for their server process, in turns: on a server, or through a pooler in session mode, each
 * has one of its own, the same at every turn; through a pooler in transaction mode, the server connection one of
 * them just released is the next one's (PgBouncer hands out the last released first), or they change between
 * turns. No transaction is held, so a pooler with a single server connection answers too.
 * @param {string} url
 * @returns {Promise<boolean>}
 */
export async function hasOwnSessions(url) {
  const clients = [0, 1].map(() => {
    const client = new pg.Client({
      connectionString: url,
      connectionTimeoutMillis: QUERY_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
    });
    client.on('error', () => {});
    return client;
  });
  try {
    await Promise.all(clients.map((c) => c.connect()));
    /** @type {Set<number>[]} */
    const seen = [new Set(), new Set()];
    for (let turn = 0; turn < 3; turn++)
      for (const [i, client] of clients.entries())
        seen[i].add((await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
    return seen.every((pids) => pids.size === 1) && !seen[1].has([...seen[0]][0]);
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  }
}

// SQLSTATEs of a server that cannot take work now: the connection failed or is gone (08000, 08001, 08003, 08004,
// 08006), shutting down or starting up (57P01–57P03), short of resources (class 53: too many connections, disk
// full, out of memory). And of a statement it stopped, which the next try may pass: a lock waited for past
// lock_timeout (55P03: the broker's own, below), a statement cancelled (57014: an operator's pg_cancel_backend, a
// statement_timeout), a transaction chosen to end a deadlock or a serialization conflict (40P01, 40001). And of a
// server that takes no writes now (25006): a hot standby, as the old primary is after a failover, or one set
// read-only, as managed services do when its storage runs out. Not 08P01, a protocol violation, which is a bug to
// fix rather than an outage to wait out; except from PgBouncer, which gives every error of its own that SQLSTATE:
// those saying that the server connection died under the request, that the server cannot be reached, or that no
// connection came free in time (POOLER_OUTAGE). And of credentials a new connection is refused with while the
// broker runs (class 28: a password rotated, a role locked or dropped; 3D000: its database gone): what the operator
// must fix, which /readyz says too, rather than a bug in the broker.
const UNAVAILABLE_SQLSTATE =
  /^(0800[01346]|57P0[123]|53[0-9A-Z]{3}|55P03|57014|40P01|40001|25006|28000|28P01|3D000)$/;
/** A write refused by a server that takes none (see above): its connection may lead to a standby. */
const READ_ONLY = '25006';
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
const POOLER_OUTAGE =
  /^(server conn crashed\?|pgbouncer cannot connect to server|server login has been failing|query_wait_timeout|client_login_timeout|no more connections allowed)/;
const CONNECTION_LOST =
  /^Connection terminated|^timeout exceeded when trying to connect|not queryable|^Query read timeout$/;

/**
 * An outage to wait out, not a bug: the server cannot be reached or cannot take work now, or it kept the
 * broker waiting past a deadline of its own (an error marked `unavailable`).
 * @param {unknown} error
 */
export function isUnavailable(error) {
  const e = /** @type {{ code?: string, syscall?: string, message?: string, unavailable?: boolean }} */ (
    error
  );
  return (
    e.unavailable === true ||
    (e.code !== undefined && (UNAVAILABLE_SQLSTATE.test(e.code) || UNREACHABLE.has(e.code))) ||
    // A Unix socket that is not there (DATABASE_URL's ?host=/dir): the server, or the Cloud SQL Auth Proxy, is
    // stopped and removed it.
    (e.code === 'ENOENT' && e.syscall === 'connect') ||
    (e.code === '08P01' && POOLER_OUTAGE.test(e.message ?? '')) ||
    CONNECTION_LOST.test(e.message ?? '')
  );
}

/** @param {string} message */
const unavailable = (message) => Object.assign(new Error(message), { unavailable: true });

/**
 * How long a statement outside a transaction (a read, mostly) may go unanswered before the database counts as
 * unavailable, as SQLite's busy timeout does: a server that keeps its connections but stops answering must not
 * hold requests forever. The connection is then discarded.
 */
export const QUERY_TIMEOUT_MS = 5_000;
/**
 * How long a write transaction may wait for any one answer on its way to COMMIT — its write turn, a statement,
 * a ROLLBACK — so that a slow batch that keeps getting answers goes on. Past it the connection is closed, which
 * rolls the transaction back on the server: nothing of it can commit later. COMMIT itself is waited for without
 * a limit, since a write answered "unavailable" must not have committed. Migrations run without it.
 */
export const ANSWER_DEADLINE_MS = 15_000;
/**
 * The server is told these deadlines too, as its lock_timeout: a connection the broker closes is noticed by the
 * server only once the statement in flight ends, and one waiting for a lock (a LOCK TABLE, an ALTER TABLE or a
 * VACUUM FULL in another session) would otherwise wait on, holding its server connection, the write turn and
 * its place in the lock's queue: under load, until the server has no connections left for anyone. Set on each
 * connection for reads; each transaction sets its own.
 * @param {'SESSION' | 'LOCAL'} scope
 * @param {number} ms
 */
const lockTimeout = (scope, ms) => `SET ${scope} lock_timeout = ${Math.ceil(ms)}`;

/** Advisory lock key of the write turn (7710002 guards the first signing key, 7710001 migrations). */
const WRITE_TURN_LOCK = 7710003;

/**
 * A pool of at most `max` connections to `url`, each told the read deadline as its lock_timeout if it has a server
 * session of its own (`ownSessions`, asked before each connection is used): through a pooler in transaction mode
 * the setting would stay with whichever server connection served it, for the clients served by it next. 64-bit
 * integers come back as numbers. `pipeline`: statements issued while others are in flight are sent at once,
 * rather than each once the answer to the one before has arrived.
 * @param {string} url
 * @param {number} max
 * @param {{ pipeline?: boolean, ownSessions: () => Promise<boolean> }} options
 */
export function openPool(url, max, { pipeline = false, ownSessions }) {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    pipeline,
    // A server that stops answering is noticed: connecting gives up, and TCP keep-alive finds a dead peer.
    connectionTimeoutMillis: QUERY_TIMEOUT_MS,
    keepAlive: true,
    onConnect: async (client) => {
      if (await ownSessions()) await client.query(lockTimeout('SESSION', QUERY_TIMEOUT_MS));
    },
    types: {
      getTypeParser: /** @type {never} */ (
        (/** @type {number} */ oid, /** @type {string | undefined} */ format) =>
          oid === INT8_OID
            ? (/** @type {string} */ v) => Number(v)
            : pg.types.getTypeParser(oid, /** @type {'text'} */ (format))
      ),
    },
  });
  // A client losing its connection must not crash the process, whenever that happens: idle in the pool (the
  // pool reports it here), checked out (transactionOn() hears it), or in between, as the pool hands it over. So
  // every client has a listener for its whole life; the next query reconnects.
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
  });
  return pool;
}

/** @typedef {(query: string | pg.QueryConfig, values?: readonly (string | number | null)[]) => Promise<pg.QueryResult>} Statement */

/**
 * Runs `fn` in one write transaction on a connection of `pool`, with the write turn; throws what failed as it
 * came (isUnavailable() tells an outage).
 *
 * `lockWaitEnds`: until when locks may be waited for — the deadline of the oldest work in it, which may have
 * waited for the writes before it (in a batch, or for a connection): a write queued behind one that waits for
 * a lock is answered within the deadline of its own arrival, not of its own start. `unbounded`: no deadline at
 * all (migrations).
 * @template T
 * @param {pg.Pool} pool
 * @param {(statement: Statement) => Promise<T>} fn
 * @param {{ unbounded?: boolean, lockWaitEnds: number, answerDeadlineMs: number }} options
 * @returns {Promise<T>}
 */
export async function transactionOn(pool, fn, { unbounded, lockWaitEnds, answerDeadlineMs }) {
  if (!unbounded && lockWaitEnds <= steadyNow()) {
    throw unavailable(`the writes before it kept it waiting ${answerDeadlineMs} ms`);
  }
  const client = await pool.connect();
  // The pool listens for errors only on idle clients. One checked out here that loses its connection emits
  // 'error' too: unheard, that would end the process; heard, the query in flight fails (an outage) and the
  // broken client is discarded rather than returned to the pool.
  /** @type {unknown} */
  let lost;
  const onError = (/** @type {unknown} */ error) => {
    lost ??= error;
  };
  client.on('error', onError);
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let watchdog;
  /** (Re)starts the wait for the next answer; every answer on the way to COMMIT calls it. */
  const awaitAnswer = () => {
    clearTimeout(watchdog);
    if (unbounded) return;
    watchdog = setTimeout(() => {
      lost ??= unavailable(`the database gave no answer within ${answerDeadlineMs} ms`);
      // Whatever statement is in flight fails with the connection, and the server rolls the transaction back.
      /** @type {{ connection: { stream: { destroy(): void } } }} */ (
        /** @type {unknown} */ (client)
      ).connection.stream.destroy();
    }, answerDeadlineMs);
  };
  /** @type {Statement} */
  const statement = async (query, values) => {
    awaitAnswer();
    try {
      return await client.query(query, /** @type {unknown[] | undefined} */ (values));
    } finally {
      awaitAnswer();
    }
  };
  try {
    // The lock timeout in one round trip with the BEGIN: 0 is no limit (migrations); 1 ms, no wait for a lock
    // once the wait for a connection has taken the rest. And the write turn: write transactions take turns,
    // each holding the turn until it has committed and become visible: audit event ids then follow commit
    // order, so a reader paging newest first (an exporter tailing the log) never passes an id that a
    // transaction still in flight will commit later. SQLite's single writer does the same. One statement failing
    // ends the string there, inside the transaction it began.
    const lockWait = unbounded ? 0 : Math.max(1, lockWaitEnds - steadyNow());
    await statement(
      `BEGIN; ${lockTimeout('LOCAL', lockWait)}; SELECT pg_advisory_xact_lock(${WRITE_TURN_LOCK})`,
    );
    const result = await fn(statement);
    clearTimeout(watchdog);
    if (lost !== undefined) throw lost;
    await client.query('COMMIT');
    return result;
  } catch (error) {
    // The ROLLBACK is bounded like any other answer: a server that stopped answering must not hold this.
    if (lost === undefined) await statement('ROLLBACK').catch(() => {});
    // A connection to a server that takes no writes is closed, so that the next write connects anew: after a
    // failover, to the server that the address names now. (The refusal may come as the store's StoreUnavailable.)
    const refused = /** @type {{ code?: unknown, cause?: { code?: unknown } }} */ (error);
    if (lost === undefined && (refused.code ?? refused.cause?.code) === READ_ONLY) lost = error;
    throw lost ?? error;
  } finally {
    clearTimeout(watchdog);
    client.off('error', onError);
    client.release(lost === undefined ? undefined : /** @type {Error} */ (lost));
  }
}
