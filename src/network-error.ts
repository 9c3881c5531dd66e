// What a request that got no answer failed with: the socket's error code and message, and whether TLS failed.

export interface NetworkError {
  code?: string;
  /** The error's message on one line, without trailing punctuation. */
  message: string;
  /** The TLS handshake failed, usually a certificate the runner cannot verify: retrying cannot help. */
  tls: boolean;
  /** The request's time limit ran out (an abort signal's TimeoutError or AbortError). */
  timedOut: boolean;
}

const TLS_CODES =
  /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|EPROTO$)|_CERT|HOSTNAME_MISMATCH/;

export function describeNetworkError(error: unknown): NetworkError {
  const top = error instanceof Error ? error : new Error(String(error));
  const timedOut = top.name === 'TimeoutError' || top.name === 'AbortError';
  // The global fetch reports "fetch failed" and keeps the socket's error as its cause; the bundle's client
  // (http-fetch.ts) rejects with the socket's error itself. When every address of a host name failed (localhost on
  // ::1 and 127.0.0.1, a broker with IPv6 and IPv4 addresses), that is an AggregateError with one error per
  // address and no message of its own: the message then names each, and the code is the first address's.
  const cause: unknown = top.cause ?? top;
  const each = cause instanceof AggregateError ? cause.errors.filter((e) => e instanceof Error) : [];
  const code = codeOf(cause) ?? codeOf(each[0]);
  const message =
    (cause instanceof Error && cause.message) || each.map((e) => e.message).join('; ') || top.message;
  return {
    code,
    message: message.replace(/\s+/g, ' ').replace(/[\s:.]+$/, ''),
    tls: code !== undefined && TLS_CODES.test(code),
    timedOut,
  };
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}
