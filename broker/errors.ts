// The broker's one error type: a closed set of codes, each with its status and title, turned into
// RFC 9457 problem+json in exactly one place (app.ts onError).

export const ERROR_TABLE = {
  invalid_request: { status: 400, title: 'Invalid request' },
  unauthenticated: { status: 401, title: 'Authentication required' },
  invalid_token: { status: 401, title: 'Invalid token' },
  audience_mismatch: { status: 401, title: 'Audience mismatch' },
  token_replayed: { status: 401, title: 'Token already used' },
  forbidden: { status: 403, title: 'Forbidden' },
  permission_escalation: { status: 403, title: 'Permission escalation' },
  no_matching_policy: { status: 403, title: 'No matching trust policy' },
  permission_not_allowed: { status: 403, title: 'Permission not allowed' },
  not_found: { status: 404, title: 'Not found' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  conflict: { status: 409, title: 'Conflict' },
  ambiguous_policy: { status: 409, title: 'Ambiguous trust policy' },
  precondition_failed: { status: 412, title: 'Precondition failed' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  unsupported_media_type: { status: 415, title: 'Unsupported media type' },
  invalid_policy: { status: 422, title: 'Invalid trust policy' },
  rate_limited: { status: 429, title: 'Too many requests' },
  internal_error: { status: 500, title: 'Internal server error' },
  not_implemented: { status: 501, title: 'Not implemented' },
  issuer_unavailable: { status: 503, title: 'Token issuer unavailable' },
  not_ready: { status: 503, title: 'Not ready' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERROR_TABLE;

/** A field-level complaint, named by a JSON-pointer-like dotted path (`permissions[1]`, `claims.ref`). */
export interface FieldError {
  field: string;
  message: string;
}

export interface BrokerErrorOptions {
  /** Extra members of the problem document (e.g. `errors`, `claims`, `policies`). Never secrets. */
  extensions?: Record<string, unknown>;
  /** Extra response headers (e.g. `Retry-After`, `Allow`, `WWW-Authenticate`). */
  headers?: Record<string, string>;
}

/** The options of a refusal that says when to retry, if it does. */
export function retryAfter(seconds: number | undefined): BrokerErrorOptions {
  return seconds === undefined ? {} : { headers: { 'Retry-After': String(seconds) } };
}

/** The most field errors one answer lists: more than any body within the routes' limits can honestly have. */
const MAX_LISTED_ERRORS = 100;

export class BrokerError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly extensions: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, detail: string, options: BrokerErrorOptions = {}) {
    // An expected outcome, not a bug: nobody reads its stack, and capturing one is most of the cost of a refusal.
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(detail);
    Error.stackTraceLimit = stackTraceLimit;
    this.name = 'BrokerError';
    this.code = code;
    this.status = ERROR_TABLE[code].status;
    this.extensions = options.extensions ?? {};
    this.headers = options.headers ?? {};
  }

  /**
   * A 4xx naming the fields that are wrong; `detail` lists them so a human reading one line can fix them. A body
   * of thousands of unknown fields gets the first hundred and a count, not an answer many times its own size.
   */
  static fields(code: 'invalid_request' | 'invalid_policy', errors: FieldError[]): BrokerError {
    const listed = errors.length > MAX_LISTED_ERRORS ? errors.slice(0, MAX_LISTED_ERRORS) : errors;
    const more = errors.length - listed.length;
    const detail =
      listed.map((e) => `${e.field}: ${e.message}`).join('; ') + (more > 0 ? `; and ${more} more` : '');
    return new BrokerError(code, detail, { extensions: { errors: listed } });
  }
}

export interface ProblemDocument {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  request_id: string;
  [extension: string]: unknown;
}

/** Builds the problem document; 5xx bodies never carry the internal message. */
export function toProblem(error: BrokerError, requestId: string): ProblemDocument {
  const { title } = ERROR_TABLE[error.code];
  const internal = error.status >= 500 && error.code === 'internal_error';
  return {
    type: `urn:oidc-auth:error:${error.code}`,
    title,
    status: error.status,
    detail: internal
      ? 'The broker failed to handle this request; the request id identifies it in the logs.'
      : error.message,
    code: error.code,
    request_id: requestId,
    ...(internal ? {} : error.extensions),
  };
}

/**
 * What went wrong, in words: an error's message, or, for an AggregateError without one, its errors' messages.
 * That is what Node's connect gives when every address of a host name refused (::1 and 127.0.0.1 for localhost,
 * as a container's /etc/hosts has it): its message is empty.
 */
export function messageOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error.message === '' && error instanceof AggregateError && error.errors.length > 0)
    return error.errors.map(messageOf).join('; ');
  return error.message;
}
