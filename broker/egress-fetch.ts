// The broker's outbound fetches (issuers' discovery documents and keys), through the egress proxy that
// https_proxy / http_proxy name unless no_proxy exempts the host: the rules the action follows (proxy-settings.ts).
import { type IncomingMessage, request } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { connect as connectTls } from 'node:tls';
import { type ProxyRoutes, type ProxySetting, portOf, routeFor } from './core/proxy-settings.js';
import { bareHost, openTunnel, serverName } from './core/proxy-tunnel.js';

export interface EgressFetchOptions {
  /** How a URL no proxy applies to is fetched; the global fetch by default. */
  direct?: typeof fetch;
  /** The certificates a target reached through the proxy is verified against, instead of Node's (tests). */
  ca?: string;
}

/**
 * A fetch that sends a URL a proxy applies to through a CONNECT tunnel (TLS to the target inside it, verified as a
 * direct connection is), and any other URL directly. Through the tunnel, redirects are answered, never followed,
 * and only requests without a body are sent (GET, HEAD). The proxy's own failures reject with the errors of
 * proxy-tunnel.ts, which name the proxy and its variable but never its credentials; the target's, as fetch does
 * (a TypeError whose `cause` is the system's error); an abort, with the signal's reason.
 */
export function createEgressFetch(routes: ProxyRoutes, options: EgressFetchOptions = {}): typeof fetch {
  const direct = options.direct ?? fetch;
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : input);
    const proxy = routeFor(url, routes);
    if (!proxy) return direct(input, init);
    if (input instanceof Request || init?.body != null) {
      throw new TypeError('Only requests without a body are sent through the proxy.');
    }
    return throughTunnel(proxy, url, init ?? {}, options.ca);
  }) as typeof fetch;
}

async function throughTunnel(
  proxy: ProxySetting,
  url: URL,
  init: RequestInit,
  ca: string | undefined,
): Promise<Response> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TypeError(`Cannot send a request to a ${url.protocol} URL.`);
  }
  const signal = init.signal ?? undefined;
  signal?.throwIfAborted();
  const tunnel = await openTunnel(proxy, url, signal);
  const host = bareHost(url.hostname);
  const socket: Socket =
    url.protocol === 'https:'
      ? connectTls({ socket: tunnel, host, servername: serverName(url), ...(ca ? { ca } : {}) })
      : tunnel;
  const client = request({
    method: init.method ?? 'GET',
    host,
    port: portOf(url),
    path: `${url.pathname}${url.search}`,
    // The target's host as a URL writes it (no default port, brackets around IPv6), whatever the scheme's port.
    headers: { ...Object.fromEntries(new Headers(init.headers)), host: url.host, connection: 'close' },
    // Without an agent Node writes the request to this socket; the TLS handshake is part of sending it.
    createConnection: () => socket,
  });
  const closeAll = () => {
    socket.destroy();
    tunnel.destroy();
  };
  return new Promise<Response>((resolve, reject) => {
    const onAbort = () => {
      client.destroy(signal?.reason);
      closeAll();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = () => signal?.removeEventListener('abort', onAbort);
    client.on('error', (error) => {
      done();
      closeAll();
      // Settled already when the answer had begun: its body then fails, as a fetch's body does.
      reject(
        signal?.aborted && error === signal.reason ? error : new TypeError('fetch failed', { cause: error }),
      );
    });
    client.once('response', (message: IncomingMessage) => {
      message.once('close', () => {
        done();
        closeAll();
      });
      try {
        resolve(answer(message));
      } catch (error) {
        message.destroy();
        reject(new TypeError('fetch failed', { cause: error }));
      }
    });
    client.end();
  });
}

/** Statuses whose answer has no body; a Response refuses one for them. */
const NULL_BODY_STATUSES: ReadonlySet<number> = new Set([204, 205, 304]);

/** The answer as fetch gives it, its body streamed as it arrives. Throws for a status a Response cannot hold. */
function answer(message: IncomingMessage): Response {
  const status = message.statusCode ?? 0;
  const headers = new Headers();
  for (let i = 0; i + 1 < message.rawHeaders.length; i += 2) {
    headers.append(message.rawHeaders[i]!, message.rawHeaders[i + 1]!);
  }
  if (NULL_BODY_STATUSES.has(status)) {
    message.resume();
    return new Response(null, { status, headers });
  }
  const body = Readable.toWeb(message) as unknown as ReadableStream<Uint8Array>;
  return new Response(body, { status, headers });
}
