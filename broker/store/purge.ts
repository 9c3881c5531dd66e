// Deleting rows the upkeep no longer needs, a batch at a time, so that requests go on meanwhile.
import { setTimeout as sleep } from 'node:timers/promises';
import type { SqlExecutor, SqlStatement } from './sql.js';

/** The most rows one statement of a purge deletes, and how many the first of a run may. */
export const PURGE_BATCH = 1_000;
/** The fewest rows a batch may delete, however slow the one before: a purge must still get through the backlog. */
export const PURGE_BATCH_MIN = 50;
/** How long a batch should hold the event loop, at most. */
export const PURGE_TARGET_MS = 20;
const PURGE_REST_MIN_MS = 10;

/**
 * The most rows the batch after one of `limit` rows that took `tookMs` may delete: half as many after one slower
 * than PURGE_TARGET_MS, a quarter more after one faster than half of it, as many otherwise; from PURGE_BATCH_MIN to
 * PURGE_BATCH. Doubling after a fast batch went straight back to the size that was too slow; growing by a quarter
 * comes back to it slowly. (On SQLite the batch's commit no longer checkpoints the WAL, the writer thread does:
 * a batch takes as long as its statement.)
 */
export function nextPurgeBatch(limit: number, tookMs: number): number {
  if (tookMs > PURGE_TARGET_MS) return Math.max(PURGE_BATCH_MIN, Math.floor(limit / 2));
  if (tookMs < PURGE_TARGET_MS / 2) return Math.min(PURGE_BATCH, Math.ceil(limit * 1.25));
  return limit;
}

/**
 * Runs `batch(limit)` (a DELETE of at most `limit` rows) until it deletes fewer; returns how many rows went. In
 * batches sized by the time the one before took (see nextPurgeBatch), resting twice as long as each took: ten
 * minutes of exchanges can be millions of rows, and on SQLite each statement holds the event loop, and the write
 * lock, for as long as it runs. So a batch holds either about PURGE_TARGET_MS, a purge at most a third of the
 * time, and the exchanges go on meanwhile. Replicas purging at once are harmless: a row goes once, and a run
 * whose batch another took stops early, leaving the rest to the next.
 */
export async function purgeInBatches(
  db: SqlExecutor,
  batch: (limit: number) => SqlStatement,
): Promise<number> {
  let purged = 0;
  let limit = PURGE_BATCH;
  for (;;) {
    const started = performance.now();
    const { sql, params } = batch(limit);
    const deleted = await db.run(sql, params);
    const took = performance.now() - started;
    purged += deleted;
    if (deleted < limit) return purged;
    limit = nextPurgeBatch(limit, took);
    await sleep(Math.max(PURGE_REST_MIN_MS, 2 * took));
  }
}
