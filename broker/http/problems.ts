// The one place errors become responses: RFC 9457 problem+json, 5xx without internals.
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { withoutSecretsInJson } from '../core/keys.js';
import { BrokerError, toProblem } from '../errors.js';
import { StoreUnavailable } from '../store/sql.js';
import type { BrokerEnv } from './context.js';

/** The 415 for a body in another media type than the route takes, naming the ones it does. */
export function unsupportedMediaType(accepted: string[]): BrokerError {
  const types = accepted.length > 0 ? accepted.join(' or ') : 'application/json';
  return new BrokerError('unsupported_media_type', `send the body as Content-Type: ${types}`);
}

function fromHttpException(error: HTTPException): BrokerError {
  switch (error.status) {
    case 400:
      return /json/i.test(error.message)
        ? new BrokerError('invalid_request', 'the request body is not valid JSON')
        : new BrokerError('invalid_request', error.message || 'the request is malformed');
    case 413:
      return new BrokerError('payload_too_large', error.message);
    case 415:
      return unsupportedMediaType([]);
    default:
      return new BrokerError('internal_error', error.message);
  }
}

export function toBrokerError(error: unknown): BrokerError {
  if (error instanceof BrokerError) return error;
  if (error instanceof StoreUnavailable) {
    return new BrokerError('not_ready', 'the database does not answer right now; retry shortly');
  }
  if (error instanceof HTTPException) return fromHttpException(error);
  return new BrokerError('internal_error', error instanceof Error ? error.message : String(error));
}

/**
 * Retry-After of a `not_ready`: a restarted server or a dropped connection is back within about a second; the
 * retries of a longer outage are spaced out by the client's own backoff.
 */
export const NOT_READY_RETRY_AFTER_SECONDS = 1;

export function problemResponse(c: Context<BrokerEnv>, error: unknown): Response {
  const brokerError = toBrokerError(error);
  if (brokerError.code === 'internal_error') {
    c.get('log').error('request failed', { error, stack: error instanceof Error ? error.stack : undefined });
  } else if (error instanceof StoreUnavailable) {
    c.get('log').error('request failed: the database is unavailable', { error });
  }
  const body = toProblem(brokerError, c.get('requestId'));
  // Through the context, so headers set earlier in the request (X-Request-Id) are kept.
  return c.body(withoutSecretsInJson(JSON.stringify(body)), brokerError.status as ContentfulStatusCode, {
    'Content-Type': 'application/problem+json',
    ...(brokerError.code === 'not_ready' ? { 'Retry-After': String(NOT_READY_RETRY_AFTER_SECONDS) } : {}),
    ...brokerError.headers,
  });
}
