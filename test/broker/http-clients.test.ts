// The broker's HTTP server as clients of every kind meet it: load balancers that keep connections open, old and odd
// clients, and requests shaped to be read two ways.
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SECURITY_HEADERS } from '../../broker/app.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { type Listening, listening } from '../support/http-server.js';

let t: TestBroker;
let served: Listening;
let port: number;

beforeAll(async () => {
  t = await startTestBroker();
  // The deadlines the broker runs with: these tests are about them.
  served = await listening(t.broker.app.fetch);
  port = served.port;
});
afterAll(async () => {
  await served.close();
  await t.close();
});

/** A raw connection: `send` writes; `received(pattern)` waits until what arrived matches, or the connection closed. */
function rawConnection() {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  let text = '';
  let closed = false;
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
  });
  const ended = new Promise<void>((resolve) =>
    socket.on('close', () => {
      closed = true;
      resolve();
    }),
  );
  return {
    send: (data: string) => socket.write(data),
    /** Everything received, once it matches `pattern` or the connection closed. */
    async received(pattern: RegExp): Promise<string> {
      await expect.poll(() => closed || pattern.test(text), { timeout: 5_000 }).toBe(true);
      return text;
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
    const first = await lb.received(/\{"status":"ok"\}$/);
    const advertised = Number(/^Keep-Alive: timeout=(\d+)/im.exec(first)?.[1]);
    expect(advertised).toBeGreaterThan(60);
    await new Promise((resolve) => setTimeout(resolve, 6_500));
    expect(lb.isClosed()).toBe(false);
    lb.send(GET_HEALTHZ);
    expect(await lb.received(/ok"\}HTTP[\s\S]*ok"\}$/)).toMatch(/\{"status":"ok"\}HTTP\/1\.1 200 OK\r\n/);
    lb.destroy();
  }, 15_000);
});

describe('a client that compresses its request body', () => {
  /** POSTs `body` over a real socket with `headers`; resolves to the status, the Accept-Encoding and the problem. */
  async function post(path: string, headers: Record<string, string>, body: Uint8Array) {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers, body });
    return {
      status: response.status,
      acceptEncoding: response.headers.get('Accept-Encoding'),
      problem: (await response.json()) as { code: string; detail: string },
    };
  }

  it('is told the broker takes bodies uncompressed (415), on the exchange and the admin API', async () => {
    const { key } = await t.createTenant('gzip-client');
    const cases: { path: string; type: string; body: string; headers: Record<string, string> }[] = [
      {
        path: '/v1/oidc/token',
        type: 'application/json',
        body: JSON.stringify({ oidc_token: 'a.b.c' }),
        headers: {},
      },
      {
        path: '/v1/oidc/token',
        type: 'application/x-www-form-urlencoded',
        body: 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c',
        headers: {},
      },
      {
        path: '/v1/fine-grained-keys',
        type: 'application/json',
        body: JSON.stringify({ name: 'bot', expiration: '7d', permissions: ['audit-log:read'] }),
        headers: { Authorization: `Bearer ${key}` },
      },
    ];
    for (const { path, type, body, headers } of cases) {
      const answer = await post(
        path,
        { ...headers, 'Content-Type': type, 'Content-Encoding': 'gzip' },
        gzipSync(body),
      );
      expect(answer, `${path} ${type}`).toMatchObject({
        status: 415,
        acceptEncoding: 'identity',
        problem: { code: 'unsupported_media_type', detail: expect.stringMatching(/Content-Encoding/) },
      });
    }
    // Nothing was created from the bytes of a compressed body.
    const listed = await t.request('GET', '/v1/fine-grained-keys', { key });
    expect(((await listed.json()) as { keys: unknown[] }).keys).toEqual([]);
  });

  it('may say Content-Encoding: identity, which is no coding at all', async () => {
    const answer = await post(
      '/v1/oidc/token',
      { 'Content-Type': 'application/json', 'Content-Encoding': 'identity' },
      new TextEncoder().encode(JSON.stringify({ oidc_token: 'a.b.c' })),
    );
    expect(answer).toMatchObject({ status: 401, problem: { code: 'invalid_token' } });
  });
});

describe('a client that asks before it sends its body (Expect: 100-continue)', () => {
  const head = (length: number) =>
    'POST /v1/oidc/token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n' +
    `Expect: 100-continue\r\nContent-Length: ${length}\r\n\r\n`;

  it('is refused a body over 64 KiB at once (413), never asked to send it', async () => {
    const client = rawConnection();
    client.send(head(10 * 1024 * 1024));
    const received = await client.received(/\r\n\r\n\{[\s\S]*\}$/);
    expect(received).toMatch(/^HTTP\/1\.1 413 /);
    expect(received).not.toMatch(/100 Continue/);
    // It sent no body, so the broker does not wait on this connection for one.
    expect(received).toMatch(/^Connection: close\r$/im);
    await client.ended;
  });

  it('is asked to go on with a body within the limit, and answered', async () => {
    const body = JSON.stringify({ oidc_token: 'a.b.c' });
    const client = rawConnection();
    client.send(head(body.length));
    expect(await client.received(/\r\n\r\n$/)).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    client.send(body);
    expect(await client.received(/\}$/)).toMatch(/HTTP\/1\.1 401 [\s\S]*"code":"invalid_token"/);
    client.destroy();
  });
});

describe('a request whose target and Host make no URL', () => {
  /** `http_requests_total` of `method` on unmatched routes answered 400, from /metrics. */
  async function unmatched400(method: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const prefix = `http_requests_total{method="${method}",route="unmatched",status="400"} `;
    const line = text.split('\n').find((l) => l.startsWith(prefix));
    return line === undefined ? 0 : Number(line.slice(prefix.length));
  }

  it.each([
    ['a Host with a space', 'GET', 'GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n'],
    ['a Host with a path', 'GET', 'GET /healthz HTTP/1.1\r\nHost: x/y?z\r\n\r\n'],
    ['no Host', 'GET', 'GET /healthz HTTP/1.1\r\n\r\n'],
    ['the whole server as target', 'OPTIONS', 'OPTIONS * HTTP/1.1\r\nHost: broker\r\n\r\n'],
    [
      'a body it never reads',
      'POST',
      'POST /v1/oidc/token HTTP/1.1\r\nHost: a b\r\nContent-Length: 5\r\n\r\n{"a":',
    ],
  ])(
    '(%s) is answered 400 invalid_request as any other refusal, logged and counted',
    async (_, method, text) => {
      const before = await unmatched400(method);
      const logged = t.logs.length;
      const client = rawConnection();
      client.send(text);
      const received = await client.received(/\r\n\r\n\{[\s\S]*\}$/);
      const [head = '', body = ''] = received.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 400 /);
      expect(head).toMatch(/^Content-Type: application\/problem\+json/im);
      expect(head).toMatch(/^X-Content-Type-Options: nosniff\r?$/im);
      expect(head).toMatch(/^X-Frame-Options: DENY\r?$/im);
      expect(head).toMatch(/^Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r?$/im);
      expect(head).toMatch(/^Referrer-Policy: no-referrer\r?$/im);
      // Whatever body it sent is not waited for.
      expect(head).toMatch(/^Connection: close\r?$/im);
      await client.ended;
      const requestId = /^X-Request-Id: (\S+)\r?$/im.exec(head)?.[1];
      expect(JSON.parse(body)).toMatchObject({
        code: 'invalid_request',
        detail: expect.stringMatching(/Host/),
        request_id: requestId,
      });
      const lines = t.logs.slice(logged).map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines).toContainEqual(
        expect.objectContaining({
          msg: 'request',
          request_id: requestId,
          method,
          route: 'unmatched',
          status: 400,
        }),
      );
      expect(await unmatched400(method)).toBe(before + 1);
    },
  );
});

describe('an HTTP/1.0 client that sends no Host (a load balancer’s health check)', () => {
  it.each(['0.0.0.0', '::', '127.0.0.1'])('is served by a broker listening on %s', async (hostname) => {
    const own = await listening(t.broker.app.fetch, { hostname });
    const socket = connect(own.port, '127.0.0.1');
    socket.on('error', () => {});
    let received = '';
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
    });
    socket.write('GET /healthz HTTP/1.0\r\n\r\n');
    await new Promise((resolve) => socket.on('close', resolve));
    await own.close();
    expect(received).toMatch(/^HTTP\/1\.1 200 [\s\S]*\{"status":"ok"\}$/);
  });
});

describe('a client that compresses its body as a transfer coding (Transfer-Encoding: gzip, chunked)', () => {
  it.each(['gzip, chunked', 'deflate,chunked', 'GZIP , Chunked'])(
    '(%s) is told the broker does not implement it (501), its body unread',
    async (coding) => {
      const body = gzipSync(JSON.stringify({ oidc_token: 'a.b.c' }));
      const client = rawConnection();
      client.send(
        'POST /v1/oidc/token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n' +
          `Transfer-Encoding: ${coding}\r\n\r\n${body.length.toString(16)}\r\n`,
      );
      client.send(`${body.toString('latin1')}\r\n0\r\n\r\n`);
      const received = await client.received(/\r\n\r\n\{[\s\S]*\}$/);
      expect(received).toMatch(/^HTTP\/1\.1 501 /);
      expect(received).toMatch(/^Connection: close\r$/im);
      expect(JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4))).toMatchObject({
        code: 'not_implemented',
        detail: expect.stringMatching(/Transfer-Encoding/),
      });
      await client.ended;
    },
  );

  it('may send its body in chunks alone', async () => {
    const body = JSON.stringify({ oidc_token: 'a.b.c' });
    const client = rawConnection();
    client.send(
      'POST /v1/oidc/token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n' +
        `Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
    );
    expect(await client.received(/\}$/)).toMatch(/^HTTP\/1\.1 401 [\s\S]*"code":"invalid_token"/);
    client.destroy();
  });
});

describe('a request Node cannot parse', () => {
  it.each([
    ['a malformed request line', 'GARBAGE\r\n\r\n', 400],
    ['a header line with no colon', 'GET /healthz HTTP/1.1\r\nHost: broker\r\nnonsense\r\n\r\n', 400],
    [
      'headers over 16 KiB',
      `GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`,
      431,
    ],
  ])('(%s) is refused by Node, with the headers of every answer', async (_, text, status) => {
    const client = rawConnection();
    client.send(text);
    await client.ended;
    const received = await client.received(/$/);
    expect(received).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    for (const [name, value] of Object.entries(SECURITY_HEADERS))
      expect(received).toContain(`\r\n${name}: ${value}\r\n`);
    expect(received).toMatch(/^Connection: close\r$/im);
  });
});
