// Log lines reach the runner in order, synchronously, and through the stream if the descriptor refuses them.
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createStdoutWriter } from '../../src/stdout.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oidc-auth-stdout-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

/** A stream that records what it is given. */
function recordingStream() {
  const chunks: string[] = [];
  return { chunks, stream: { write: (chunk: Buffer) => chunks.push(chunk.toString('utf8')) } };
}

describe('createStdoutWriter', () => {
  it('writes each line to the descriptor before returning, without touching the stream', () => {
    const file = join(dir, 'out');
    const fd = openSync(file, 'w');
    const { chunks, stream } = recordingStream();
    try {
      const write = createStdoutWriter(() => stream, fd);
      write('::add-mask::tøken\n');
      expect(readFileSync(file, 'utf8')).toBe('::add-mask::tøken\n');
      write('Issued a token.\n');
      expect(readFileSync(file, 'utf8')).toBe('::add-mask::tøken\nIssued a token.\n');
      expect(chunks).toEqual([]);
    } finally {
      closeSync(fd);
    }
  });

  it('sends the refused write and every later one through the stream, in order', () => {
    // A descriptor opened read-only stays ours and refuses every write (EBADF), unlike a closed, reusable one.
    const file = join(dir, 'out');
    writeFileSync(file, '');
    const fd = openSync(file, 'r');
    const { chunks, stream } = recordingStream();
    try {
      const write = createStdoutWriter(() => stream, fd);
      write('first\n');
      write('second\n');

      expect(chunks).toEqual(['first\n', 'second\n']);
      expect(readFileSync(file, 'utf8')).toBe('');
    } finally {
      closeSync(fd);
    }
  });
});
