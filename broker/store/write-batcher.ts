// Group commit: writes arriving in the same turn of the event loop share one transaction, so the hot path
// pays for one durable commit (one fsync) per batch instead of one per request — and each caller still
// resolves only after its own write is committed.
import type { SqlDriver, SqlExecutor } from './sql.js';

interface Pending<I, O> {
  item: I;
  resolve(value: O): void;
  reject(error: unknown): void;
}

export type Apply<I, O> = (tx: SqlExecutor, item: I) => Promise<O>;

export function createWriteBatcher<I, O>(
  db: SqlDriver,
  apply: Apply<I, O>,
  maxBatch = 512,
): (item: I) => Promise<O> {
  const queue: Pending<I, O>[] = [];
  let scheduled = false;

  const settleAlone = (p: Pending<I, O>) =>
    db.transaction((tx) => apply(tx, p.item)).then(p.resolve, p.reject);

  const flush = async () => {
    scheduled = false;
    const batch = queue.splice(0, maxBatch);
    if (queue.length > 0) schedule();
    try {
      const results = await db.transaction(async (tx) => {
        const out: O[] = [];
        for (const p of batch) out.push(await apply(tx, p.item));
        return out;
      });
      for (const [i, p] of batch.entries()) p.resolve(results[i]!);
    } catch {
      // One bad write must not fail its neighbours: retry each on its own, so only it sees its error.
      await Promise.all(batch.map(settleAlone));
    }
  };

  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => void flush());
  };

  return (item) =>
    new Promise<O>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      schedule();
    });
}
