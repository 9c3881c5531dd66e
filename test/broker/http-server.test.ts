// The HTTP server's deadlines: slow, stalled or non-reading clients lose their connections; others are answered.
import { get, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer, HTTP_LIMITS } from '../../broker/http-server.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { type Listening, listening } from '../support/http-server.js';

let t: TestBroker;
let served: Listening;
let server: Server;
let port: number;
/** The server's side of each connection, in the order they were accepted. */
const accepted: Socket[] = [];

beforeAll(async () => {
  t = await startTestBroker();
  // Short deadlines, so that the tests wait for the server to act rather than for Node's minutes.
  served = await listening(t.broker.app.fetch, {
    limits: {
      headersTimeoutMs: 300,
      requestTimeoutMs: 600,
      idleTimeoutMs: 1_000,
      keepAliveTimeoutMs: 1_000,
      checkIntervalMs: 50,
    },
    observer: { logger: t.broker.deps.logger, metrics: t.broker.deps.metrics },
  });
  ({ server, port } = served);
  server.on('connection', (socket: Socket) => accepted.push(socket));
});
afterAll(async () => {
  await served.close();
  await t.close();
});

/** Opens a connection, writes `text` and nothing more; resolves to what it received once the server closed it. */
function sendAndStall(text: string): { closed: Promise<string> } {
  const socket = connect(port, '127.0.0.1', () => socket.write(text));
  let received = '';
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString();
  });
  socket.on('error', () => {});
  return { closed: new Promise((resolve) => socket.on('close', () => resolve(received))) };
}

/**
 * The status of a GET on a connection of its own: a kept-alive one could be closed by the short idle deadline
 * just as it is reused.
 */
function statusOf(path: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent: false }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode));
    }).on('error', reject);
  });
}

const healthz = () => statusOf('/healthz');

describe('requests refused before the app reads them', () => {
  it('are logged and counted in /metrics by status: headers too large, too slow or malformed', async () => {
    const before = t.logs.length;
    const tooLarge = sendAndStall(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    const tooSlow = sendAndStall('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const malformed = sendAndStall('GET /a b HTTP/1.1\r\nHost: x\r\n\r\n');
    // One whose body the deadline cut off the app was serving: its own line tells it, once.
    const cutOff = sendAndStall(
      'POST /v1/oidc/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{',
    );
    expect(await tooLarge.closed).toMatch(/^HTTP\/1\.1 431 /);
    expect(await tooSlow.closed).toMatch(/^HTTP\/1\.1 408 /);
    expect(await malformed.closed).toMatch(/^HTTP\/1\.1 400 /);
    expect(await cutOff.closed).toMatch(/^HTTP\/1\.1 408 /);
    // A client that connects and goes away sent no request: nothing to count.
    const gone = connect(port, '127.0.0.1', () => gone.resetAndDestroy());
    await new Promise((resolve) => gone.on('close', resolve));

    const lines = t.logs
      .slice(before)
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.route === 'unread');
    expect(lines.map((l) => [l.status, l.reason]).sort()).toEqual([
      [400, expect.stringMatching(/^HPE_/)],
      [408, 'ERR_HTTP_REQUEST_TIMEOUT'],
      [431, 'HPE_HEADER_OVERFLOW'],
    ]);
    for (const line of lines) {
      expect(line).toMatchObject({ level: 'info', msg: 'request', method: 'unknown' });
      expect(line.request_id).toMatch(/^[0-9a-f-]{36}$/);
    }
    const metrics = await (await t.request('GET', '/metrics')).text();
    for (const status of [400, 408, 431])
      expect(metrics).toContain(
        `http_requests_total{method="unknown",route="unread",status="${status}"} 1\n`,
      );
  });
});

describe('HTTP server deadlines', () => {
  it('answers 408 and closes a connection whose headers never end, answering other clients meanwhile', async () => {
    const slow = Array.from({ length: 20 }, () =>
      sendAndStall('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: '),
    );
    expect(await healthz()).toBe(200);
    for (const { closed } of slow) {
      const received = await closed;
      expect(received).toMatch(/^HTTP\/1\.1 408 /);
      expect(received).toMatch(/^X-Content-Type-Options: nosniff\r$/m);
    }
  });

  it('closes a connection whose body stops short of its Content-Length', async () => {
    const stalled = sendAndStall(
      'POST /v1/oidc/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{',
    );
    expect(await stalled.closed).toMatch(/^HTTP\/1\.1 408 /);
    expect(await healthz()).toBe(200);
  });

  it('closes a connection whose client does not read its answers', async () => {
    const before = accepted.length;
    // Ten pipelined answers of 1.7 MB each: more than the kernel's socket buffers take, so Node holds the rest.
    const asset = 'GET /v1/reference/assets/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n';
    const client = connect(port, '127.0.0.1', () => client.write(asset.repeat(10)));
    client.pause();
    client.on('error', () => {});
    await new Promise((resolve) => client.once('connect', resolve));
    await expect.poll(() => accepted.length).toBeGreaterThan(before);
    const serverSide = accepted[before] as Socket;
    await new Promise((resolve) =>
      serverSide.destroyed ? resolve(undefined) : serverSide.on('close', resolve),
    );
    expect(serverSide.destroyed).toBe(true);
    client.destroy();
  });

  it('by default gives headers 10 s, a request 30 s, an idle connection 60 s and one between requests 65 s', () => {
    const defaults = createHttpServer(t.broker.app.fetch);
    expect(defaults.headersTimeout).toBe(HTTP_LIMITS.headersTimeoutMs);
    expect(defaults.requestTimeout).toBe(HTTP_LIMITS.requestTimeoutMs);
    expect(defaults.timeout).toBe(HTTP_LIMITS.idleTimeoutMs);
    expect(defaults.keepAliveTimeout).toBe(HTTP_LIMITS.keepAliveTimeoutMs);
    expect(HTTP_LIMITS).toEqual({
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      idleTimeoutMs: 60_000,
      keepAliveTimeoutMs: 65_000,
      checkIntervalMs: 1_000,
    });
  });
});

describe('a client that closes its connection before its body has arrived', () => {
  // A broker of its own: the requests the deadline tests cut off are counted once their reads fail, which may be
  // after they are done.
  let own: TestBroker;
  let ownServer: Listening;
  let ownPort: number;
  beforeAll(async () => {
    own = await startTestBroker();
    ownServer = await listening(own.broker.app.fetch);
    ownPort = ownServer.port;
  });
  afterAll(async () => {
    await ownServer.close();
    await own.close();
  });

  /** The count of `http_requests_total` of POST /v1/oidc/token with `status`, from /metrics. */
  async function counted(status: number): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${ownPort}/metrics`)).text();
    const prefix = `http_requests_total{method="POST",route="/v1/oidc/token",status="${status}"} `;
    const line = text.split('\n').find((l) => l.startsWith(prefix));
    return line === undefined ? 0 : Number(line.slice(prefix.length));
  }

  const head = (type: string, framing: string) =>
    `POST /v1/oidc/token HTTP/1.1\r\nHost: x\r\nContent-Type: ${type}\r\n${framing}\r\n\r\n`;
  const cutOff = {
    'JSON, chunked': `${head('application/json', 'Transfer-Encoding: chunked')}5\r\n{"oid\r\n`,
    'JSON, with Content-Length': `${head('application/json', 'Content-Length: 100')}{"oid`,
    'a form, chunked': `${head('application/x-www-form-urlencoded', 'Transfer-Encoding: chunked')}5\r\nsubje\r\n`,
    'a form, with Content-Length': `${head('application/x-www-form-urlencoded', 'Content-Length: 100')}subje`,
  };

  it.each(Object.entries(cutOff))(
    'is a refused body (%s): 400, never a 500 or an error in the log',
    async (_, text) => {
      const [refusedBefore, failedBefore] = [await counted(400), await counted(500)];
      const logged = own.logs.length;
      const socket = connect(ownPort, '127.0.0.1', () => socket.write(text));
      socket.on('error', () => {});
      // Time for the server to read what was sent: it answers nothing before the body's end.
      await new Promise((resolve) => setTimeout(resolve, 100));
      socket.destroy();
      await expect
        .poll(async () => (await counted(400)) + (await counted(500)))
        .toBe(refusedBefore + failedBefore + 1);
      expect(await counted(500)).toBe(failedBefore);
      const lines = own.logs.slice(logged).map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines.filter((line) => line.level === 'error')).toEqual([]);
      expect(lines).toContainEqual(
        expect.objectContaining({ msg: 'request', route: '/v1/oidc/token', status: 400 }),
      );
    },
  );
});

describe('answers held for clients that do not read them', () => {
  it('share one copy of a reference asset, however many are waiting', async () => {
    const asset = 'GET /v1/reference/assets/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n';
    expect(await statusOf('/v1/reference/assets/swagger-ui-bundle.js')).toBe(200);
    const before = process.memoryUsage().arrayBuffers;
    const clients = Array.from({ length: 4 }, () => {
      const client = connect(port, '127.0.0.1', () => client.write(asset.repeat(20)));
      client.pause();
      client.on('error', () => {});
      return client;
    });
    // Each connection has answers waiting that its kernel buffers do not take; the server holds them.
    await expect
      .poll(() => accepted.filter((s) => !s.destroyed && s.writableLength > 0).length, {
        timeout: 5_000,
      })
      .toBeGreaterThanOrEqual(4);
    const held = process.memoryUsage().arrayBuffers - before;
    for (const client of clients) client.destroy();
    // The bundle is 1.7 MB: a copy per answer would hold dozens of them.
    expect(held).toBeLessThan(20 * 1024 * 1024);
  });
});
