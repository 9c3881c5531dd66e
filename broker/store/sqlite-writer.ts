// The main thread's side of SQLite's writer thread: sends each batch, resolves it with the thread's answer.
// Batches need not wait for each other: the thread merges all that have queued into its next transaction.
import { Worker } from 'node:worker_threads';
import { type BatchedWrite, sqliteOutage, type WriteOutcome } from './sql.js';
import type { FlushBatch, Settled } from './write-batcher.js';

/** The writer's answer to every batch its last transaction committed. */
type WorkerAnswers = {
  id: number;
  results: ({ ok: true; value: WriteOutcome } | { ok: false; error: { message: string; code?: string } })[];
}[];

export interface WriteWorker {
  flush: FlushBatch;
  /** Finishes the batches in flight, then closes the writer's connection; later batches are refused. */
  close(): Promise<void>;
}

function toError(error: { message: string; code?: string }): unknown {
  return sqliteOutage(Object.assign(new Error(error.message), { code: error.code }));
}

export function startWriteWorker(path: string, pragmas: string[]): WriteWorker {
  let worker: Worker | undefined;
  let nextId = 0;
  let closed = false;
  const pending = new Map<number, { resolve(results: Settled[]): void; reject(error: unknown): void }>();

  const failAll = (error: unknown) => {
    for (const p of pending.values()) p.reject(error);
    pending.clear();
    worker = undefined;
  };
  // Started on first use, and again after a crash; it holds the process open only while a batch is in flight.
  const ensure = (): Worker => {
    if (worker) return worker;
    const w = new Worker(new URL('./sqlite-write-worker.js', import.meta.url), {
      workerData: { path, pragmas },
    });
    w.on('message', (answers: WorkerAnswers) => {
      for (const answer of answers) {
        const p = pending.get(answer.id);
        pending.delete(answer.id);
        p?.resolve(answer.results.map((r): Settled => (r.ok ? r : { ok: false, error: toError(r.error) })));
      }
      if (pending.size === 0) w.unref();
    });
    w.on('error', failAll);
    w.on('exit', (code) => {
      if (worker === w) failAll(new Error(`the SQLite writer thread exited (code ${code})`));
    });
    w.unref();
    worker = w;
    return w;
  };

  return {
    flush: (writes: BatchedWrite[]) =>
      new Promise<Settled[]>((resolve, reject) => {
        if (closed) throw new Error('the SQLite writer is closed');
        const w = ensure();
        const id = ++nextId;
        pending.set(id, { resolve, reject });
        w.ref();
        w.postMessage({ id, writes });
      }),
    async close() {
      // The thread commits and answers every batch queued before 'close', then closes its connection.
      closed = true;
      const w = worker;
      worker = undefined;
      if (!w) return;
      const exited = new Promise((resolve) => w.once('exit', resolve));
      w.ref();
      w.postMessage('close');
      await exited;
    },
  };
}
