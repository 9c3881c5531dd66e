// A stand-in for the runner's OIDC token service (ACTIONS_ID_TOKEN_REQUEST_URL), on a loopback socket.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeGitHubOidc {
  /** The value for ACTIONS_ID_TOKEN_REQUEST_URL; like GitHub's, it already has a query string. */
  requestUrl: string;
  /** The value for ACTIONS_ID_TOKEN_REQUEST_TOKEN. */
  requestToken: string;
  /** The audience of every token issued, in order. */
  audiences: string[];
  /** The tokens issued, in order. */
  issued: string[];
  /** The audience of every request left without an answer, in order. */
  unanswered: string[];
  close(): Promise<void>;
}

/**
 * `mint` makes the OIDC token for an audience: a fixed string for a fake broker, a signed JWT for a real one.
 * `stall` leaves that many first requests without an answer, as a service in trouble can.
 */
export async function startFakeGitHubOidc(
  mint: (audience: string) => string | Promise<string>,
  options: { stall?: number } = {},
): Promise<FakeGitHubOidc> {
  const requestToken = 'runner-request-token';
  const audiences: string[] = [];
  const issued: string[] = [];
  const unanswered: string[] = [];
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.headers.authorization !== `Bearer ${requestToken}`) {
      res.writeHead(401).end();
      return;
    }
    const audience = url.searchParams.get('audience') ?? '';
    if (unanswered.length < (options.stall ?? 0)) {
      unanswered.push(audience);
      return;
    }
    const token = await mint(audience);
    audiences.push(audience);
    issued.push(token);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ value: token }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    requestUrl: `http://127.0.0.1:${port}/_apis/distributedtask/token?api-version=2.0`,
    requestToken,
    audiences,
    issued,
    unanswered,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
