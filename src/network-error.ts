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
  // The global fetch reports "fetch failed" and keeps the socket's error (sometimes an AggregateError) as its
  // cause; the bundle's client (http-fetch.ts) rejects with the socket's error itself.
  let cause: unknown = top.cause ?? top;
  if (cause instanceof AggregateError && cause.errors.length > 0 && !(cause as { code?: string }).code) {
    cause = cause.errors[0];
  }
  const code =
    typeof (cause as { code?: unknown }).code === 'string' ? (cause as { code: string }).code : undefined;
  const message = cause instanceof Error ? cause.message : top.message;
  return {
    code,
    message: message.replace(/\s+/g, ' ').replace(/[\s:.]+$/, ''),
    tls: code !== undefined && TLS_CODES.test(code),
    timedOut,
  };
}
