// The broker's own HTTP server (createHttpServer, with its deadlines) on a loopback port, for tests that need a
// real socket rather than app.request().
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHttpServer } from '../../broker/http-server.js';

export interface Listening {
  server: Server;
  port: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** Drops every connection, then closes the server. */
  close(): Promise<void>;
}

export async function listening(
  fetch: Parameters<typeof createHttpServer>[0],
  options?: Parameters<typeof createHttpServer>[1],
): Promise<Listening> {
  const server = createHttpServer(fetch, options);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
