// The broker's HTTP server: the app on Node's HTTP/1.1 server, with deadlines fit for a public endpoint.
import { randomUUID } from 'node:crypto';
import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { getRequestListener, RequestError } from '@hono/node-server';
import { MAX_BODY_BYTES, SECURITY_HEADERS } from './app.js';
import type { Logger } from './logger.js';
import { type Metrics, UNREAD_ROUTE } from './metrics.js';

/**
 * The app's env for a request Node parsed but whose target and Host make no URL (`Host: a b`, `OPTIONS *`): a
 * stand-in request, which the app refuses with `why`, so that it is answered, logged and counted like any other.
 */
export interface MalformedRequestEnv {
  incoming: IncomingMessage;
  malformed: string;
}

/** The stand-in for a request with no URL: its method, where a Request may have it (not TRACE), and no body. */
function standIn(incoming: IncomingMessage): Request {
  try {
    return new Request('http://broker.invalid/', { method: incoming.method });
  } catch {
    return new Request('http://broker.invalid/');
  }
}

/** The status of Node's own refusal of a request it could not read, by its error's code; any other is 400. */
const REFUSAL_STATUS: Record<string, number> = {
  ERR_HTTP_REQUEST_TIMEOUT: 408,
  HPE_HEADER_OVERFLOW: 431,
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
};
const SECURITY_HEAD = Object.entries(SECURITY_HEADERS)
  .map(([name, value]) => `${name}: ${value}\r\n`)
  .join('');

export interface HttpLimits {
  /** A connection must deliver a request's complete headers within this long of its first byte. */
  headersTimeoutMs: number;
  /** …and the whole request, body included (at most 64 KiB), within this long. */
  requestTimeoutMs: number;
  /** A connection on which nothing is read or written for this long is closed (a client not reading its answer). */
  idleTimeoutMs: number;
  /**
   * A kept-alive connection with no request on it is closed after this long: longer than a load balancer in front
   * keeps its idle connections to the broker, or it sends a request on one just as the broker closes it, and answers
   * that request 502.
   */
  keepAliveTimeoutMs: number;
  /** How often connections are checked against the first two deadlines. */
  checkIntervalMs: number;
}

/**
 * Node's own deadlines (60 s for headers, 300 s for a request, none for a client that stops reading, checked every
 * 30 s) let a few thousand slow or silent connections use up the broker's file descriptors and memory for minutes.
 * The idle deadline stays above the 15 s a database write may wait, so that no exchange is cut off while it waits.
 * Node's 5 s keep-alive is far below the 60 s idle timeout of AWS's load balancers and of nginx's upstream
 * connections; 65 s is above both.
 */
export const HTTP_LIMITS: HttpLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 60_000,
  keepAliveTimeoutMs: 65_000,
  checkIntervalMs: 1_000,
};

/**
 * Answers a request Node refused before the app saw it (headers not delivered in time, too large, malformed), as
 * Node would but with the headers of every answer, and counts and logs it: otherwise a flood of them, or a client
 * whose headers are too large, leaves no trace in the broker's metrics or log. Nothing is written once the
 * connection is gone or an answer on it has begun. A socket error of a client that went away is no request and is
 * not counted; nor is a request the app is already serving (its own line says how it ended).
 */
function refuseUnreadRequest(error: NodeJS.ErrnoException, socket: Duplex, observer?: HttpObserver): void {
  const code = error.code ?? '';
  const status = REFUSAL_STATUS[code] ?? 400;
  const inFlight = (socket as { _httpMessage?: ServerResponse })._httpMessage;
  if (socket.writable && !inFlight?.headersSent) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${SECURITY_HEAD}Content-Length: 0\r\nConnection: close\r\n\r\n`,
    );
  }
  socket.destroy(error);
  if (!observer || inFlight || !(code.startsWith('HPE_') || code === 'ERR_HTTP_REQUEST_TIMEOUT')) return;
  observer.metrics.observeUnreadRequest(status);
  observer.logger.info('request', {
    request_id: randomUUID(),
    method: 'unknown',
    route: UNREAD_ROUTE,
    status,
    reason: code,
  });
}

/** Where requests refused before the app saw them are told. */
export interface HttpObserver {
  logger: Logger;
  metrics: Metrics;
}

export function createHttpServer(
  fetch: (request: Request, env: unknown) => Response | Promise<Response>,
  options: { hostname?: string; limits?: HttpLimits; observer?: HttpObserver } = {},
): Server {
  const limits = options.limits ?? HTTP_LIMITS;
  // As a Host names it: an IPv6 address in brackets (`[::]`), or the URL built from it is none.
  const ownHost =
    options.hostname !== undefined && isIP(options.hostname) === 6
      ? `[${options.hostname}]`
      : options.hostname;
  // @hono/node-server answers a request whose URL it cannot build with an empty 400 of its own, unless given an
  // error handler; the handler is not told which request it was, but is called before the listener first awaits.
  let arriving: IncomingMessage | undefined;
  const listener = getRequestListener(fetch, {
    errorHandler: (error) => {
      const incoming = arriving;
      // Called later, it is for an app that failed to answer: Node's adapter answers that 500 when given no handler.
      if (incoming === undefined || !(error instanceof RequestError))
        return new Response(null, { status: 500 });
      const env: MalformedRequestEnv = { incoming, malformed: error.message };
      return fetch(standIn(incoming), env);
    },
  });
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      connectionsCheckingInterval: limits.checkIntervalMs,
      // Node refuses an HTTP/1.1 request without Host with an empty 400 of its own: the adapter refuses it instead.
      requireHostHeader: false,
    },
    (incoming, outgoing) => {
      // HTTP/1.0 needs no Host (a load balancer's health check may send none): its URL names the listening address.
      if (incoming.headers.host === undefined && incoming.httpVersion === '1.0' && ownHost)
        incoming.headers.host = ownHost;
      arriving = incoming;
      try {
        return listener(incoming, outgoing);
      } finally {
        arriving = undefined;
      }
    },
  );
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) =>
    refuseUnreadRequest(error, socket, options.observer),
  );
  // Without a 'timeout' listener on the server, Node destroys a socket idle this long.
  server.setTimeout(limits.idleTimeoutMs);
  // Between requests this replaces the idle deadline; answers tell clients of it (`Keep-Alive: timeout=65`).
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  // `Expect: 100-continue` asks whether to send the body: not one the broker would refuse as too large (413, at
  // once, and Node then closes the connection, whose body never comes). Node's own listener says yes to every one.
  server.on('checkContinue', (request, response) => {
    if (!(Number(request.headers['content-length']) > MAX_BODY_BYTES)) response.writeContinue();
    server.emit('request', request, response);
  });
  return server;
}

/**
 * From now on every answer says `Connection: close`, and its connection closes after it: a client that keeps
 * connections alive opens its next one anew, which a load balancer no longer sends to a broker shutting down.
 * Closed between requests instead, such a connection could take a request just as it closes, and fail it.
 */
export function closeConnectionsAfterAnswers(server: Server): void {
  server.prependListener('request', (_request: IncomingMessage, response: ServerResponse) => {
    response.setHeader('Connection', 'close');
  });
}
