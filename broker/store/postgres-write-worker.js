// PostgreSQL's group commit, on a thread of its own with a connection of its own. A batch is four round trips to
// the server: BEGIN with the write turn, every write's probe, the statement after each, COMMIT. On the event loop
// serving requests each answer would wait to be read until the loop's next poll, a turn's worth of other
// requests' work later; here it is read as soon as it comes. Plain JavaScript so the same file runs from source
// and from build/.
import { parentPort, workerData } from 'node:worker_threads';
import { flushInTransactions } from './batch-flush.js';
import { isUnavailable, openPool, prepared, transactionOn } from './postgres-session.js';
import { steadyNow } from './steady-clock.js';

/** @typedef {import('./sql.js').BatchedWrite} BatchedWrite */

/** @type {{ url: string, answerDeadlineMs: number, ownSessions: boolean }} */
const { url, answerDeadlineMs, ownSessions } = workerData;
// Pipelined: a batch's probes go to the server together, and then the statements after them (batch-flush.js).
const pool = openPool(url, 1, { pipeline: true, ownSessions: async () => ownSessions });

/** @type {Promise<unknown>} */
let previous = Promise.resolve();
/**
 * One transaction at a time on the one connection, a batch's writes retried each on its own included: they
 * wait here, not in the pool, whose wait for a connection gives up after 5 s.
 * @type {import('./batch-flush.js').Transaction}
 */
const transaction = (fn, { since }) => {
  const run = () =>
    transactionOn(
      pool,
      (statement) =>
        fn({
          run: async (sql, params) => {
            const values = /** @type {unknown[]} */ (params);
            return (await statement({ ...prepared(sql, ownSessions), values })).rowCount ?? 0;
          },
        }),
      { lockWaitEnds: (since ?? steadyNow()) + answerDeadlineMs, answerDeadlineMs },
    );
  const result = previous.then(run, run);
  previous = result.catch(() => {});
  return result;
};
const flush = flushInTransactions(transaction, isUnavailable);

/** @param {unknown} error */
const describe = (error) => {
  const e = /** @type {{ message?: string, code?: string, constraint?: string }} */ (error);
  return {
    message: e.message ?? String(error),
    code: e.code,
    constraint: e.constraint,
    unavailable: isUnavailable(error),
  };
};

/** @param {{ id: number, writes: BatchedWrite[], since?: number } | 'close'} message */
const onMessage = async (message) => {
  if (message === 'close') {
    // Sent once every batch has been answered.
    await pool.end();
    port.close();
    return;
  }
  const results = await flush(message.writes, message.since);
  port.postMessage([
    { id: message.id, results: results.map((r) => (r.ok ? r : { ok: false, error: describe(r.error) })) },
  ]);
};

if (!parentPort) throw new Error("PostgreSQL's group commit runs as a worker thread");
const port = parentPort;
port.on('message', (message) => void onMessage(message));
