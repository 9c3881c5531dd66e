// How a batch of group commit runs as transactions: shared by this thread's flush (write-batcher.ts) and by
// PostgreSQL's group-commit thread (postgres-write-worker.js). Plain JavaScript so that the same file runs from
// source and from build/, in a worker thread as well.

/** @typedef {import('./sql.js').BatchedWrite} BatchedWrite */
/** @typedef {import('./sql.js').WriteOutcome} WriteOutcome */
/** @typedef {{ ok: true, value: WriteOutcome } | { ok: false, error: unknown }} Settled */
/** @typedef {{ run(sql: string, params?: readonly (string | number | null)[]): Promise<number> }} Runner */
/**
 * @typedef {<T>(fn: (tx: Runner) => Promise<T>, options: { since?: number }) => Promise<T>} Transaction
 */

/**
 * Runs a batch's writes: every probe first, then the statement after each (`onChange` when the probe changed a
 * row, else `onNoChange`), each step's statements issued at once. On a connection that pipelines (PostgreSQL's
 * group-commit thread) a batch is then two round trips to the server, however many writes it holds, rather
 * than two for each write; elsewhere they run one by one, in the same order. So no statement after a probe may
 * change what another write's probe finds: they write audit events, which no probe reads.
 * @param {Runner} tx
 * @param {BatchedWrite[]} writes
 * @returns {Promise<WriteOutcome[]>}
 */
export async function applyWrites(tx, writes) {
  const probes = await Promise.all(writes.map((write) => tx.run(write.probe.sql, write.probe.params)));
  const nexts = await Promise.all(
    writes.map((write, i) => {
      const next = /** @type {number} */ (probes[i]) > 0 ? write.onChange : write.onNoChange;
      return next ? tx.run(next.sql, next.params) : 0;
    }),
  );
  return probes.map((probe, i) => ({ probe, next: /** @type {number} */ (nexts[i]) }));
}

/**
 * A flush as transactions: one for the batch; if it fails, each write again in one of its own, so that one bad
 * write does not fail its neighbours — unless the database cannot take work now (`isOutage`), when trying each
 * again would only wait as long again, for each.
 * @param {Transaction} transaction
 * @param {(error: unknown) => boolean} isOutage
 * @returns {(writes: BatchedWrite[], since?: number) => Promise<Settled[]>}
 */
export function flushInTransactions(transaction, isOutage) {
  return async (writes, since) => {
    try {
      const values = await transaction((tx) => applyWrites(tx, writes), { since });
      return values.map((value) => ({ ok: /** @type {const} */ (true), value }));
    } catch (error) {
      if (isOutage(error)) return writes.map(() => ({ ok: /** @type {const} */ (false), error }));
      return Promise.all(
        writes.map((write) =>
          transaction((tx) => applyWrites(tx, [write]), { since }).then(
            ([value]) => ({ ok: /** @type {const} */ (true), value: /** @type {WriteOutcome} */ (value) }),
            (error) => ({ ok: /** @type {const} */ (false), error }),
          ),
        ),
      );
    }
  };
}
