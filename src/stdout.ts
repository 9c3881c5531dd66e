// Writes the step's log and workflow commands to stdout synchronously, where the runner reads them line by line.
import { writeSync } from 'node:fs';

export interface Stream {
  write(chunk: Buffer): unknown;
}

/**
 * Writes straight to the file descriptor: setting up `process.stdout` on a pipe costs a step a millisecond or
 * two, and a synchronous write cannot be cut off when the process exits. If the descriptor refuses a write
 * (e.g. a full non-blocking pipe), that write and every later one go through `stream()`, which queues them.
 */
export function createStdoutWriter(stream: () => Stream, fd = 1): (text: string) => void {
  let useStream = false;
  return (text) => {
    let rest = Buffer.from(text, 'utf8');
    if (!useStream) {
      try {
        while (rest.length > 0) rest = rest.subarray(writeSync(fd, rest));
        return;
      } catch {
        useStream = true;
      }
    }
    stream().write(rest);
  };
}
