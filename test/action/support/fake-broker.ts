// A minimal token broker on a loopback socket, for running the bundled action as a process.
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export interface BrokerRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface FakeBroker {
  apiUrl: string;
  requests: BrokerRequest[];
  close(): Promise<void>;
}

/** An answer the fake broker gives as it is, e.g. a problem document. */
export interface ScriptedAnswer {
  status: number;
  headers?: Record<string, string>;
  body: string;
}

export interface FakeBrokerScript {
  /** The answers to the first exchanges, in order; later exchanges are granted. */
  exchanges?: ScriptedAnswer[];
  /** Fields of the token response to replace, e.g. a policy name. */
  grant?: Record<string, unknown>;
}

/**
 * Issues `accessToken` for any exchange and accepts any revocation. With `tls`, it serves HTTPS and its
 * `apiUrl` names `tls.host`, which the certificate must cover. `script` makes it answer otherwise.
 */
export async function startFakeBroker(
  accessToken: string,
  tls?: { cert: string; key: string; host: string },
  script: FakeBrokerScript = {},
): Promise<FakeBroker> {
  const requests: BrokerRequest[] = [];
  let exchanges = 0;
  const server = tls ? createTlsServer({ cert: tls.cert, key: tls.key }) : createServer();
  server.on('request', async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const path = req.url ?? '/';
    requests.push({ method: req.method ?? '', path, headers: req.headers, body });
    if (req.method === 'POST' && path === '/v1/oidc/token') {
      const scripted = script.exchanges?.[exchanges++];
      if (scripted) {
        res.writeHead(scripted.status, scripted.headers).end(scripted.body);
        return;
      }
      const { tenant, permissions } = JSON.parse(body) as { tenant: string; permissions?: string[] };
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          access_token: accessToken,
          token_type: 'Bearer',
          issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          expires_in: 900,
          expires_at: new Date(Date.now() + 900_000).toISOString(),
          scope: (permissions ?? []).join(' '),
          permissions: permissions ?? [],
          policy: 'process-test',
          tenant,
          ...script.grant,
        }),
      );
    } else if (req.method === 'POST' && path === '/v1/tokens/revoke') {
      res.writeHead(200).end();
    } else {
      res
        .writeHead(404, { 'content-type': 'application/problem+json' })
        .end('{"code":"not_found","status":404}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    apiUrl: tls ? `https://${tls.host}:${port}/v1` : `http://127.0.0.1:${port}/v1`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
