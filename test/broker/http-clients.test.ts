// The broker's HTTP server as clients of every kind meet it: load balancers that keep connections open, old and odd
// clients, and requests shaped to be read two ways.
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../broker/http-server.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

let t: TestBroker;
let server: Server;
let port: number;

beforeAll(async () => {
  t = await startTestBroker();
  // The deadlines the broker runs with: these tests are about them.
  server = createHttpServer(t.broker.app.fetch);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await t.close();
});

/** A raw connection: `send` writes; `answers(n)` waits until `n` answers have begun, or the connection closed. */
function rawConnection() {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  let received = '';
  let closed = false;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
  });
  const ended = new Promise<void>((resolve) =>
    socket.on('close', () => {
      closed = true;
      resolve();
    }),
  );
  return {
    send: (text: string) => socket.write(text),
    /** Everything received, once `count` answers have begun arriving or the connection closed. */
    async answers(count: number): Promise<string> {
      await expect
        .poll(() => closed || (received.match(/HTTP\/1\.1 \d{3} /g) ?? []).length >= count, {
          timeout: 5_000,
        })
        .toBe(true);
      return received;
    },
    isClosed: () => closed,
    ended,
    destroy: () => socket.destroy(),
  };
}

const GET_HEALTHZ = 'GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n';

describe('a load balancer that keeps connections to the broker open', () => {
  it('finds an idle connection still open after Node’s 5 s, and is told it may keep it longer than 60 s', async () => {
    // AWS ALB and nginx reuse an idle connection for up to 60 s: a broker that closed it sooner would race their next
    // request on it, which they answer 502.
    const lb = rawConnection();
    lb.send(GET_HEALTHZ);
    const first = await lb.answers(1);
    const advertised = Number(/^Keep-Alive: timeout=(\d+)/im.exec(first)?.[1]);
    expect(advertised).toBeGreaterThan(60);
    await new Promise((resolve) => setTimeout(resolve, 6_500));
    expect(lb.isClosed()).toBe(false);
    lb.send(GET_HEALTHZ);
    expect(await lb.answers(2)).toMatch(/\{"status":"ok"\}HTTP\/1\.1 200 OK\r\n/);
    lb.destroy();
  }, 15_000);
});
