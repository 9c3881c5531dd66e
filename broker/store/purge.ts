// Deleting rows the upkeep no longer needs, a batch at a time, so that requests go on meanwhile.
import { setTimeout as sleep } from 'node:timers/promises';
import type { SqlExecutor, SqlStatement } from './sql.js';

/** The most rows one statement of a purge deletes; each statement given to purgeInBatches deletes no more. */
export const PURGE_BATCH = 1_000;
const PURGE_REST_MIN_MS = 10;

/**
 * Runs `batch` (a DELETE of at most PURGE_BATCH rows) until it deletes fewer; returns how many rows went. In
 * batches, resting twice as long as each took: ten minutes of exchanges can be millions of rows, and on SQLite each
 * statement holds the event loop, and the write lock, for as long as it runs. So a purge takes at most a third of
 * either, and the exchanges go on meanwhile. Replicas purging at once are harmless: a row goes once, and a run
 * whose batch another took stops early, leaving the rest to the next.
 */
export async function purgeInBatches(db: SqlExecutor, batch: SqlStatement): Promise<number> {
  let purged = 0;
  for (;;) {
    const started = performance.now();
    const deleted = await db.run(batch.sql, batch.params);
    purged += deleted;
    if (deleted < PURGE_BATCH) return purged;
    await sleep(Math.max(PURGE_REST_MIN_MS, 2 * (performance.now() - started)));
  }
}
