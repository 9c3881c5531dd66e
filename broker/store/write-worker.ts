// The main thread's side of a group-commit thread (SQLite's writer, PostgreSQL's): sends each batch, resolves it
// with the thread's answer.
import { Worker } from 'node:worker_threads';
import type { BatchedWrite, WriteOutcome } from './sql.js';
import type { FlushBatch, Settled } from './write-batcher.js';

/** A write's error as the thread describes it: `unavailable` where the thread tells an outage itself. */
export interface WorkerError {
  message: string;
  code?: string;
  constraint?: string;
  unavailable?: boolean;
}

/** The thread's answer to every batch its last transaction committed. */
type WorkerAnswers = {
  id: number;
  results: ({ ok: true; value: WriteOutcome } | { ok: false; error: WorkerError })[];
}[];

export interface WriteWorker {
  flush: FlushBatch;
  /**
   * Sends the thread a message it acts on after the batches sent before it and does not answer (SQLite's writer:
   * 'checkpoint'), starting the thread if it is not running; nothing once closed.
   */
  post(message: string): void;
  /** Finishes the batches in flight, then closes the writer's connection; later batches are refused. */
  close(): Promise<void>;
}

/**
 * Starts `script` as a thread that commits the batches it is sent (`{ id, writes, since }`), with `workerData`;
 * `toError` makes each error it describes the store's.
 */
export function startWriteWorker(
  script: URL,
  workerData: unknown,
  toError: (error: WorkerError) => unknown,
): WriteWorker {
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
    const w = new Worker(script, { workerData });
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
      if (worker === w) failAll(new Error(`the group-commit thread exited (code ${code})`));
    });
    w.unref();
    worker = w;
    return w;
  };

  return {
    flush: (writes: BatchedWrite[], since?: number) =>
      new Promise<Settled[]>((resolve, reject) => {
        if (closed) throw new Error('the group-commit thread is closed');
        const w = ensure();
        const id = ++nextId;
        pending.set(id, { resolve, reject });
        w.ref();
        w.postMessage({ id, writes, since });
      }),
    post(message: string) {
      if (!closed) ensure().postMessage(message);
    },
    async close() {
      // The thread commits and answers every batch sent before 'close', then closes its connection.
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
