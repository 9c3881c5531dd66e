// The event loop's side of a group-commit thread: what the writes in flight see when the thread crashes, and
// that the writes after them are committed by a new one, so one broken batch never stops the broker writing.
import { describe, expect, it } from 'vitest';
import type { BatchedWrite } from '../../broker/store/sql.js';
import { startWriteWorker } from '../../broker/store/write-worker.js';

const SCRIPT = new URL('../support/crashing-write-worker.js', import.meta.url);
const write = (sql: string): BatchedWrite => ({ probe: { sql, params: [] } });
/** The id of the thread that committed the batch (see crashing-write-worker.js). */
const committedBy = async (pending: Promise<{ ok: boolean; value?: { probe: number } }[]>) => {
  const [result] = await pending;
  expect(result?.ok).toBe(true);
  return result?.value?.probe;
};

describe('a group-commit thread that crashes', () => {
  it('fails every batch in flight with its error, and the next batch starts a new thread', async () => {
    const writer = startWriteWorker(SCRIPT, {}, (e) => e);
    try {
      const first = await committedBy(writer.flush([write('ok')]));
      // Both are sent before the thread reads either; the first breaks it.
      const broken = writer.flush([write('crash'), write('ok')]);
      const queued = writer.flush([write('ok')]);
      await expect(broken).rejects.toThrow('the thread broke');
      await expect(queued).rejects.toThrow('the thread broke');
      const next = await committedBy(writer.flush([write('ok')]));
      expect(next).not.toBe(first);
      expect(await committedBy(writer.flush([write('ok')]))).toBe(next);
    } finally {
      await writer.close();
    }
  });

  it('says with what code the thread exited, then carries on with a new one', async () => {
    const writer = startWriteWorker(SCRIPT, {}, (e) => e);
    try {
      await expect(writer.flush([write('exit')])).rejects.toThrow('the group-commit thread exited (code 3)');
      await committedBy(writer.flush([write('ok')]));
    } finally {
      await writer.close();
    }
  });

  it('closes after a crash, and refuses batches once closed', async () => {
    const writer = startWriteWorker(SCRIPT, {}, (e) => e);
    await expect(writer.flush([write('crash')])).rejects.toThrow('the thread broke');
    await writer.close();
    await expect(writer.flush([write('ok')])).rejects.toThrow('the group-commit thread is closed');
  });
});
