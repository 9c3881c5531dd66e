// The bundle's HTTP client on real loopback sockets: what goes out, what comes back, and every way it fails.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, connect, createServer as createTcpServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { proxyFor } from '../../broker/core/proxy-settings.js';
import { ProxyRefusedError, ProxyUnreachableError } from '../../broker/core/proxy-tunnel.js';
import { createBrokerClient } from '../../src/broker-client.js';
import { createHttpFetch } from '../../src/http-fetch.js';
import { silentServer } from '../support/silent-server.js';
import { selfSignedCertificate } from './support/tls-cert.js';

interface Received {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections?.();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A loopback server that records each request and its socket's closing, and answers with `handler`. */
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void, server = createServer()) {
  const received: Received[] = [];
  const closed: Promise<void>[] = [];
  server.on('connection', (socket: Socket) => {
    closed.push(new Promise((resolve) => socket.once('close', () => resolve())));
  });
  server.on('request', async (req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    received.push({ method: req.method!, url: req.url!, headers: req.headers, body });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  const { port } = server.address() as AddressInfo;
  return { port, received, closed };
}

const httpFetch = createHttpFetch();

describe('createHttpFetch', () => {
  it('sends the method, path, headers and body, asks to close, and returns status, headers and text', async () => {
    const { port, received, closed } = await serve((_req, res) =>
      res.writeHead(201, { 'Content-Type': 'application/json', 'Retry-After': '3' }).end('{"ok":"ünï"}'),
    );

    const response = await httpFetch(`http://127.0.0.1:${port}/v1/oidc/token?x=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer t' },
      body: '{"tenant":"acme"}',
      redirect: 'manual',
    });

    expect(received).toEqual([
      {
        method: 'POST',
        url: '/v1/oidc/token?x=1',
        headers: {
          host: `127.0.0.1:${port}`,
          'content-type': 'application/json',
          authorization: 'Bearer t',
          'content-length': '17',
          connection: 'close',
        },
        body: '{"tenant":"acme"}',
      },
    ]);
    expect(response.status).toBe(201);
    expect(response.headers.get('Content-Type')).toBe('application/json');
    expect(response.headers.get('retry-after')).toBe('3');
    expect(response.headers.get('location')).toBeNull();
    expect(await response.text()).toBe('{"ok":"ünï"}');
    // The connection is gone once the answer is read: nothing is left to keep the step's process alive.
    await Promise.all(closed);
  });

  it('reads a chunked answer', async () => {
    const { port } = await serve((_req, res) => {
      res.write('{"a":');
      setTimeout(() => res.end('1}'), 5);
    });

    const response = await httpFetch(`http://127.0.0.1:${port}/`, {
      method: 'GET',
      headers: {},
      redirect: 'manual',
    });

    expect(await response.text()).toBe('{"a":1}');
  });

  it('returns a redirect as it is, without following it', async () => {
    const { port, received } = await serve((_req, res) =>
      res.writeHead(307, { Location: 'https://elsewhere.example/v1/oidc/token' }).end(),
    );

    const response = await httpFetch(`http://127.0.0.1:${port}/v1/oidc/token`, {
      method: 'POST',
      headers: { authorization: 'Bearer t' },
      body: 'x',
      redirect: 'manual',
    });

    expect(response.status).toBe(307);
    expect(response.headers.get('location')).toBe('https://elsewhere.example/v1/oidc/token');
    expect(received).toHaveLength(1);
  });

  it('rejects with the socket error when nothing listens, which the broker client names', async () => {
    const { port } = await serve(() => {});
    await new Promise((resolve) => servers.pop()!.close(resolve));

    await expect(
      httpFetch(`http://127.0.0.1:${port}/`, { method: 'GET', headers: {}, redirect: 'manual' }),
    ).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const answer = await createBrokerClient(httpFetch, `http://127.0.0.1:${port}/v1`).revoke('t', 1000);
    expect(answer).toMatchObject({ kind: 'network', code: 'ECONNREFUSED', tls: false, timedOut: false });
  });

  it('rejects with the signal reason at the time limit, and closes the connection', async () => {
    const { port, closed } = await serve(() => {});

    const sent = httpFetch(`http://127.0.0.1:${port}/`, {
      method: 'GET',
      headers: {},
      redirect: 'manual',
      signal: AbortSignal.timeout(50),
    });

    await expect(sent).rejects.toMatchObject({ name: 'TimeoutError' });
    await Promise.all(closed);
  });

  it('rejects when the server closes before the answer is complete', async () => {
    const { port } = await serve((_req, res) => {
      res.writeHead(200, { 'Content-Length': '100' }).write('partial');
      setTimeout(() => res.destroy(), 5);
    });

    await expect(
      httpFetch(`http://127.0.0.1:${port}/`, { method: 'GET', headers: {}, redirect: 'manual' }),
    ).rejects.toThrow('closed before the answer was complete');
  });

  it('refuses a URL that is not http or https', async () => {
    await expect(
      httpFetch('ftp://127.0.0.1/', { method: 'GET', headers: {}, redirect: 'manual' }),
    ).rejects.toThrow('Cannot send a request to a ftp: URL.');
  });
});

describe('createHttpFetch over TLS', () => {
  it('refuses a certificate it cannot verify, which the broker client reports as a TLS failure', async () => {
    const { cert, key } = selfSignedCertificate('localhost', { dns: ['localhost'], ip: ['127.0.0.1'] });
    const { port, received } = await serve(
      (_req, res) => res.end('{}'),
      createHttpsServer({ cert, key }) as unknown as Server,
    );

    const answer = await createBrokerClient(httpFetch, `https://127.0.0.1:${port}/v1`).revoke('secret', 1000);

    expect(answer).toMatchObject({ kind: 'network', code: 'DEPTH_ZERO_SELF_SIGNED_CERT', tls: true });
    expect(received).toEqual([]);
  });

  it('reports a plain-HTTP server at an https:// URL as a TLS failure', async () => {
    const { port } = await serve((_req, res) => res.end('not TLS'));

    const answer = await createBrokerClient(httpFetch, `https://127.0.0.1:${port}/v1`).revoke('secret', 1000);

    expect(answer).toMatchObject({
      kind: 'network',
      code: 'EPROTO',
      tls: true,
      message: expect.stringContaining('wrong version number'),
    });
  });
});

describe('createHttpFetch through a proxy', () => {
  /** The client sending every request through the proxy at `url`, read as HTTPS_PROXY by the action's rules. */
  function throughProxy(url: string) {
    // Asked for another host: the targets here are on loopback, which the rules never send through a proxy.
    const setting = proxyFor(new URL('https://target.example/'), { HTTPS_PROXY: url });
    return createHttpFetch({ proxyFor: () => setting });
  }

  /** An HTTP proxy that tunnels CONNECT requests, or refuses them with `refuse`. */
  async function startProxy(refuse?: number) {
    const connects: { target: string; authorization?: string }[] = [];
    const closed: Promise<void>[] = [];
    const proxy = createServer((_req, res) => res.writeHead(405).end());
    proxy.on('connection', (socket: Socket) => {
      closed.push(new Promise((resolve) => socket.once('close', () => resolve())));
    });
    proxy.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
      connects.push({ target: req.url!, authorization: req.headers['proxy-authorization'] });
      if (refuse) {
        client.end(`HTTP/1.1 ${refuse} Refused\r\nContent-Length: 0\r\n\r\n`);
        return;
      }
      const [host, port] = req.url!.split(':');
      const upstream = connect(Number(port), host, () => {
        client.write('HTTP/1.1 200 Connection established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    servers.push(proxy);
    const { port } = proxy.address() as AddressInfo;
    return { url: `http://user%40corp:p%3Ass@127.0.0.1:${port}`, connects, closed };
  }

  it('tunnels the request with CONNECT and the proxy credentials, decoded from the setting', async () => {
    const proxy = await startProxy();
    const { port, received, closed } = await serve((_req, res) => res.end('{"value":"oidc"}'));
    const viaProxy = throughProxy(proxy.url);

    const response = await viaProxy(`http://127.0.0.1:${port}/token?api-version=2.0`, {
      method: 'GET',
      headers: { authorization: 'Bearer runner' },
      redirect: 'manual',
    });

    expect(await response.text()).toBe('{"value":"oidc"}');
    expect(proxy.connects).toEqual([
      {
        target: `127.0.0.1:${port}`,
        authorization: `Basic ${Buffer.from('user@corp:p:ss').toString('base64')}`,
      },
    ]);
    expect(received.map((r) => [r.url, r.headers.authorization])).toEqual([
      ['/token?api-version=2.0', 'Bearer runner'],
    ]);
    // One connection reached the target, the proxy's: the request went through the tunnel, not around it.
    expect(closed).toHaveLength(1);
    await Promise.all(proxy.closed);
  });

  it('speaks TLS to the target through the tunnel, verifying its certificate', async () => {
    const proxy = await startProxy();
    const { cert, key } = selfSignedCertificate('localhost', { dns: ['localhost'] });
    const { port, closed } = await serve(
      (_req, res) => res.end('{}'),
      createHttpsServer({ cert, key }) as unknown as Server,
    );
    const viaProxy = throughProxy(proxy.url);

    await expect(
      viaProxy(`https://localhost:${port}/`, { method: 'GET', headers: {}, redirect: 'manual' }),
    ).rejects.toMatchObject({ code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    expect(proxy.connects.map((c) => c.target)).toEqual([`localhost:${port}`]);
    expect(closed).toHaveLength(1);
    await Promise.all(proxy.closed);
  });

  it('stops at the time limit when the target never completes the TLS handshake', async () => {
    const proxy = await startProxy();
    // A target that accepts the tunnelled connection, reads the client hello and never answers it.
    const target = await silentServer();
    const { port, accepted } = target;
    const viaProxy = throughProxy(proxy.url);

    const started = Date.now();
    try {
      await expect(
        viaProxy(`https://localhost:${port}/`, {
          method: 'GET',
          headers: {},
          redirect: 'manual',
          signal: AbortSignal.timeout(200),
        }),
      ).rejects.toMatchObject({ name: 'TimeoutError' });
      expect(Date.now() - started).toBeLessThan(2000);
      expect(proxy.connects.map((c) => c.target)).toEqual([`localhost:${port}`]);
      expect(accepted).toHaveLength(1);
      // The tunnel is closed, not left open behind the rejection.
      await Promise.all(proxy.closed);
    } finally {
      await target.close();
    }
  });

  it('fails with the proxy status when the proxy refuses the tunnel, naming the proxy without credentials', async () => {
    const proxy = await startProxy(407);
    const viaProxy = throughProxy(proxy.url);

    const error = await viaProxy('https://token.actions.example/', {
      method: 'GET',
      headers: {},
      redirect: 'manual',
    }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(ProxyRefusedError);
    expect(error).toMatchObject({
      message: expect.stringMatching(/refused a tunnel to token\.actions\.example:443 \(HTTP 407\)/),
      refusal: {
        variable: 'HTTPS_PROXY',
        proxy: `http://${new URL(proxy.url).host}`,
        target: 'token.actions.example:443',
        status: 407,
        withCredentials: true,
      },
    });
    expect((error as Error).message).not.toContain('p%3Ass');
    await Promise.all(proxy.closed);
  });

  it('fails with the socket error, naming the proxy without credentials, when the proxy cannot be reached', async () => {
    const nothing = createTcpServer();
    await new Promise<void>((resolve) => nothing.listen(0, '127.0.0.1', resolve));
    const { port } = nothing.address() as AddressInfo;
    await new Promise((resolve) => nothing.close(resolve));
    const viaProxy = throughProxy(`http://user:s3cret@127.0.0.1:${port}`);

    const error = await viaProxy('https://token.actions.example/', {
      method: 'GET',
      headers: {},
      redirect: 'manual',
    }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(ProxyUnreachableError);
    expect(error).toMatchObject({
      unreachable: {
        variable: 'HTTPS_PROXY',
        proxy: `http://127.0.0.1:${port}`,
        target: 'token.actions.example:443',
      },
      cause: { code: 'ECONNREFUSED' },
    });
    expect((error as Error).message).not.toContain('s3cret');
  });

  it('stops at the time limit, as a timeout, when the proxy never answers CONNECT', async () => {
    const silent = await silentServer();
    const viaProxy = throughProxy(`http://127.0.0.1:${silent.port}`);

    try {
      await expect(
        viaProxy('https://token.actions.example/', {
          method: 'GET',
          headers: {},
          redirect: 'manual',
          signal: AbortSignal.timeout(200),
        }),
      ).rejects.toMatchObject({ name: 'TimeoutError' });
    } finally {
      await silent.close();
    }
  });
});
