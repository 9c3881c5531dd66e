// A group-commit thread for write-worker tests: it answers each batch with its own thread id as every write's
// probe count, and crashes on a write whose probe is `crash` — by throwing, or by exiting with code 3 for
// `exit`. Plain JavaScript, as the store's own threads are.
import { parentPort, threadId } from 'node:worker_threads';

if (!parentPort) throw new Error('runs as a worker thread');
const port = parentPort;
port.on('message', (message) => {
  if (message === 'close') {
    port.close();
    return;
  }
  for (const write of message.writes) {
    if (write.probe.sql === 'crash') throw new Error('the thread broke');
    if (write.probe.sql === 'exit') process.exit(3);
  }
  port.postMessage([
    {
      id: message.id,
      results: message.writes.map(() => ({ ok: true, value: { probe: threadId, next: 0 } })),
    },
  ]);
});
