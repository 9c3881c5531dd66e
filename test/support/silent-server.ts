// A TCP server on a loopback port that accepts connections and never answers: a proxy or server that hangs.
import { type AddressInfo, createServer, type Socket } from 'node:net';

export interface SilentServer {
  port: number;
  /** Every connection it accepted, in order. */
  accepted: Socket[];
  /** Drops every connection, then closes the server. */
  close(): Promise<void>;
}

export async function silentServer(): Promise<SilentServer> {
  const server = createServer();
  const accepted: Socket[] = [];
  server.on('connection', (socket: Socket) => {
    accepted.push(socket);
    socket.on('error', () => {}).resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    accepted,
    close() {
      for (const socket of accepted) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
