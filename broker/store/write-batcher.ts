// Group commit: writes arriving close together share one transaction, so the hot path pays for one durable
// commit (one fsync) per batch instead of one per request — and each caller still resolves only after its own
// write is committed.
import type { BatchedWrite, SqlDriver, SqlExecutor } from './sql.js';

export type Settled = { ok: true; value: number } | { ok: false; error: unknown };

/** Runs a batch; resolves with one outcome per write, in order. */
export type FlushBatch = (writes: BatchedWrite[]) => Promise<Settled[]>;

interface Pending {
  write: BatchedWrite;
  resolve(value: number): void;
  reject(error: unknown): void;
}

export async function applyWrite(tx: SqlExecutor, write: BatchedWrite): Promise<number> {
  const changes = await tx.run(write.probe.sql, write.probe.params);
  const next = changes > 0 ? write.onChange : write.onNoChange;
  if (next) await tx.run(next.sql, next.params);
  return changes;
}

/** A flush on this thread: one transaction for the batch; if it fails, each write again on its own. */
export function inThreadFlush(db: Pick<SqlDriver, 'transaction'>): FlushBatch {
  return async (writes) => {
    try {
      const values = await db.transaction(async (tx) => {
        const out: number[] = [];
        for (const write of writes) out.push(await applyWrite(tx, write));
        return out;
      });
      return values.map((value) => ({ ok: true, value }));
    } catch {
      return Promise.all(
        writes.map((write) =>
          db
            .transaction((tx) => applyWrite(tx, write))
            .then(
              (value): Settled => ({ ok: true, value }),
              (error): Settled => ({ ok: false, error }),
            ),
        ),
      );
    }
  };
}

/**
 * Collects writes and flushes them together (at most `maxBatch` at a time), one batch in flight: while a batch
 * commits, the next one gathers, so the busier the broker the fewer commits per write.
 */
export function createWriteBatcher(
  flush: FlushBatch,
  maxBatch = 1024,
): (write: BatchedWrite) => Promise<number> {
  let queue: Pending[] = [];
  let scheduled = false;
  let flushing = false;

  const run = async () => {
    scheduled = false;
    flushing = true;
    const batch = queue.length > maxBatch ? queue.splice(0, maxBatch) : queue;
    if (batch === queue) queue = [];
    let outcomes: Settled[];
    try {
      outcomes = await flush(batch.map((p) => p.write));
    } catch (error) {
      outcomes = batch.map(() => ({ ok: false, error }));
    }
    flushing = false;
    for (const [i, p] of batch.entries()) {
      const outcome = outcomes[i]!;
      if (outcome.ok) p.resolve(outcome.value);
      else p.reject(outcome.error);
    }
    if (queue.length > 0) schedule();
  };

  const schedule = () => {
    if (scheduled || flushing) return;
    scheduled = true;
    setImmediate(() => void run());
  };

  return (write) =>
    new Promise<number>((resolve, reject) => {
      queue.push({ write, resolve, reject });
      schedule();
    });
}
