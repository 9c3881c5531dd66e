// A fetch-shaped HTTP client on node:http and node:https: one request per connection, closed with its answer.
import type { IncomingMessage, RequestOptions } from 'node:http';
import { type ProxySetting, portOf, proxyFor } from '../broker/core/proxy-settings.js';
import { bareHost as bare, openTunnel, serverName } from '../broker/core/proxy-tunnel.js';
import type { Fetch, FetchResponse } from './deps.js';

export interface HttpFetchOptions {
  /** The proxy to reach a URL through, if any; the request then goes through a CONNECT tunnel. */
  proxyFor?(url: URL): ProxySetting | undefined;
}

/**
 * HTTP as the Actions toolkit sends it from a runner: every request, to GitHub or to the broker, goes through
 * the proxy that https_proxy / http_proxy name for its URL, unless no_proxy exempts it. A setting that names no
 * usable proxy rejects the request with ProxySettingError.
 */
export function createRunnerFetch(env: Record<string, string | undefined>): Fetch {
  return createHttpFetch({ proxyFor: (url) => proxyFor(url, env) });
}

/**
 * Sends each request without keep-alive (`Connection: close`), so no socket keeps the process alive
 * afterwards; the global fetch would load undici, which costs the step tens of milliseconds. Redirects are
 * returned, never followed. TLS verifies the certificate and host name (node:https). An abort (e.g. a timeout
 * signal) rejects with the signal's reason, as fetch does. The answer is read in full before it resolves.
 */
export function createHttpFetch(options: HttpFetchOptions = {}): Fetch {
  return async (url, init) => {
    const target = new URL(url);
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      throw new TypeError(`Cannot send a request to a ${target.protocol} URL.`);
    }
    init.signal?.throwIfAborted();
    const proxy = options.proxyFor?.(target);
    const tunnelSocket = proxy ? await openTunnel(proxy, target, init.signal) : undefined;
    const body = init.body === undefined ? undefined : Buffer.from(init.body, 'utf8');
    const headers: Record<string, string> = { ...init.headers, connection: 'close' };
    if (body) headers['content-length'] = String(body.length);
    const request: RequestOptions = {
      method: init.method,
      host: bare(target.hostname),
      port: portOf(target),
      path: `${target.pathname}${target.search}`,
      headers,
      // Node uses createConnection only without an agent (an agent, even `agent: false`, opens its own socket).
      ...(tunnelSocket ? { createConnection: () => tunnelSocket } : { agent: false }),
    };
    if (tunnelSocket && target.protocol === 'https:') {
      // Inside the tunnel the TLS session is with the target itself, verified like a direct connection. The
      // handshake runs as part of the request, so an abort stops a target that never completes it.
      const tls = await import('node:tls');
      request.createConnection = () =>
        // host: the name the certificate is checked against when there is no server name (an IP address).
        tls.connect({ socket: tunnelSocket, host: bare(target.hostname), servername: serverName(target) });
    }
    try {
      const answer = await send(target, request, body, init.signal);
      return answer;
    } finally {
      tunnelSocket?.destroy();
    }
  };
}

async function send(target: URL, request: RequestOptions, body: Buffer | undefined, signal?: AbortSignal) {
  const client =
    target.protocol === 'https:'
      ? (await import('node:https')).request({ ...request, servername: serverName(target) })
      : (await import('node:http')).request(request);
  return new Promise<FetchResponse>((resolve, reject) => {
    const onAbort = () => client.destroy(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = () => signal?.removeEventListener('abort', onAbort);
    client.once('error', (error) => {
      done();
      reject(error);
    });
    client.once('response', (response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.once('end', () => {
        done();
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({
          status: response.statusCode ?? 0,
          headers: { get: (name) => header(response, name) },
          text: async () => text,
        });
      });
      response.once('error', (error) => {
        done();
        reject(
          error.message === 'aborted'
            ? new Error('The connection closed before the answer was complete.')
            : error,
        );
      });
    });
    client.end(body);
  });
}

function header(response: IncomingMessage, name: string): string | null {
  const value = response.headers[name.toLowerCase()];
  if (value === undefined) return null;
  return Array.isArray(value) ? value.join(', ') : value;
}
