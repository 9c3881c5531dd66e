// Group commit: writes arriving close together share one transaction, so the hot path pays for one durable
// commit (one fsync) per batch instead of one per request — and each caller still resolves only after its own
// write is committed.
import { flushInTransactions, type Settled } from './batch-flush.js';
import { type BatchedWrite, type SqlDriver, StoreUnavailable, type WriteOutcome } from './sql.js';
import { steadyNow } from './steady-clock.js';

export type { Settled };

/**
 * Runs a batch; resolves with one outcome per write, in order. `since`: when the oldest of them was handed over, from
 * which its deadline runs, where the engine has one (steady-clock.js).
 */
export type FlushBatch = (writes: BatchedWrite[], since?: number) => Promise<Settled[]>;

interface Pending {
  write: BatchedWrite;
  handedOverAt: number;
  resolve(value: WriteOutcome): void;
  reject(error: unknown): void;
}

/** A flush on this thread: one transaction for the batch; if it fails, each write again on its own. */
export function inThreadFlush(db: Pick<SqlDriver, 'transaction'>): FlushBatch {
  return flushInTransactions(db.transaction, (error) => error instanceof StoreUnavailable);
}

export interface BatcherOptions {
  /** Writes per batch at most. */
  maxBatch?: number;
  /**
   * Batches handed to `flush` before the first of them has committed. 1 (the default) for a flush that runs
   * on this thread's only connection; more for a flush that queues (the SQLite writer thread, which merges
   * whatever has queued into its next transaction). PostgreSQL keeps 1: 2, 4 or 8 concurrent commits on its
   * pool measured no clear gain and a worse p99.
   */
  maxInFlight?: number;
}

/** Hands a write to group commit; resolves with its row counts once the batch holding it has committed. */
export type WriteBatcher = ((write: BatchedWrite) => Promise<WriteOutcome>) & {
  /** Resolves once every write handed over so far has been flushed and answered. */
  drain(): Promise<void>;
};

/**
 * Collects the writes of one turn of the event loop and flushes them together. While up to `maxInFlight`
 * batches commit, the next one gathers, so the busier the broker the fewer commits per write; each caller
 * resolves only once the batch holding its write has committed.
 */
export function createWriteBatcher(
  flush: FlushBatch,
  { maxBatch = 1024, maxInFlight = 1 }: BatcherOptions = {},
): WriteBatcher {
  let queue: Pending[] = [];
  let scheduled = false;
  let inFlight = 0;
  let drained: (() => void)[] = [];
  const settleDrains = () => {
    if (queue.length > 0 || inFlight > 0 || scheduled) return;
    for (const resolve of drained) resolve();
    drained = [];
  };

  const run = async () => {
    scheduled = false;
    inFlight++;
    const batch = queue.length > maxBatch ? queue.splice(0, maxBatch) : queue;
    if (batch === queue) queue = [];
    else schedule();
    let outcomes: Settled[];
    try {
      outcomes = await flush(
        batch.map((p) => p.write),
        batch[0]!.handedOverAt,
      );
    } catch (error) {
      outcomes = batch.map(() => ({ ok: false, error }));
    }
    inFlight--;
    for (const [i, p] of batch.entries()) {
      const outcome = outcomes[i]!;
      if (outcome.ok) p.resolve(outcome.value);
      else p.reject(outcome.error);
    }
    if (queue.length > 0) schedule();
    settleDrains();
  };

  const schedule = () => {
    if (scheduled || inFlight >= maxInFlight || queue.length === 0) return;
    scheduled = true;
    setImmediate(() => void run());
  };

  const batched = (write: BatchedWrite) =>
    new Promise<WriteOutcome>((resolve, reject) => {
      queue.push({ write, handedOverAt: steadyNow(), resolve, reject });
      schedule();
    });
  return Object.assign(batched, {
    drain: () =>
      new Promise<void>((resolve) => {
        drained.push(resolve);
        settleDrains();
      }),
  });
}
