// A forward proxy on a loopback socket, as a corporate network puts between the runner and the internet.
import { createServer, type IncomingMessage } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';

export interface FakeProxy {
  /** The proxy's address as a URL, e.g. `http://127.0.0.1:3128`. */
  url: string;
  port: number;
  /** The `host:port` of every CONNECT request, in order. */
  connects: string[];
  close(): Promise<void>;
}

/**
 * Tunnels every CONNECT request to the requested port on 127.0.0.1, whatever the host name: it resolves names
 * the runner cannot (such as `broker.invalid`), so only a request sent through the proxy reaches the target.
 * With `refuse`, it answers every CONNECT with that status instead, as a proxy does that wants credentials
 * (407), does not allow the host (403) or cannot reach it (502).
 */
export async function startFakeProxy(options: { refuse?: number } = {}): Promise<FakeProxy> {
  const connects: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((_req, res) => res.writeHead(405).end());
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    connects.push(req.url!);
    if (options.refuse) {
      const challenge = options.refuse === 407 ? 'Proxy-Authenticate: Basic realm="corp"\r\n' : '';
      client.end(`HTTP/1.1 ${options.refuse} Refused\r\n${challenge}Content-Length: 0\r\n\r\n`);
      return;
    }
    const port = Number(req.url!.slice(req.url!.lastIndexOf(':') + 1));
    const upstream = connect(port, '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client).pipe(upstream);
    });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    }
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    connects,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
