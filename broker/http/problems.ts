// The one place errors become responses: RFC 9457 problem+json, 5xx without internals.
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { withoutSecrets, withoutSecretsInJson } from '../core/keys.js';
import { UndecryptableSigningKey } from '../core/signing-keys.js';
import { BrokerError, ERROR_TABLE, type ErrorCode, type ProblemDocument, toProblem } from '../errors.js';
import { StoreUnavailable } from '../store/sql.js';
import type { BrokerEnv } from './context.js';
import { TOKEN_ENDPOINT } from './token-exchange.js';
import { INTROSPECTION_ENDPOINT, REVOCATION_ENDPOINT } from './tokens.js';

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

/**
 * Why a replica cannot sign (an UndecryptableSigningKey): oidc-broker signing-key replace moved the signing keys to
 * another key-encryption key while it ran.
 */
export const CANNOT_SIGN =
  'this replica cannot sign tokens: the signing key in use is stored under another key-encryption key than the ' +
  'one it was started with';

export function toBrokerError(error: unknown): BrokerError {
  if (error instanceof BrokerError) return error;
  if (error instanceof StoreUnavailable) {
    return new BrokerError('not_ready', 'the database does not answer right now; retry shortly');
  }
  if (error instanceof UndecryptableSigningKey) {
    return new BrokerError(
      'not_ready',
      `${CANNOT_SIGN}; retry (another replica may serve it), and have the operator restart this one with the new ` +
        'BROKER_KEY_ENCRYPTION_KEY',
    );
  }
  if (error instanceof HTTPException) return fromHttpException(error);
  return new BrokerError('internal_error', error instanceof Error ? error.message : String(error));
}

type OAuthError = 'invalid_request' | 'invalid_client' | 'invalid_scope' | 'unauthorized_client';
type OAuthErrors = Partial<Record<ErrorCode, OAuthError>>;

/** A request an OAuth endpoint cannot take at all, before any check of its own: `invalid_request`. */
const REQUEST_ERRORS: OAuthErrors = {
  invalid_request: 'invalid_request',
  method_not_allowed: 'invalid_request',
  payload_too_large: 'invalid_request',
  unsupported_media_type: 'invalid_request',
};

/**
 * The OAuth endpoints, and the OAuth error (RFC 6749 §5.2) each of their refusals carries. A 429 or 5xx has none:
 * an OAuth client takes it as the HTTP error it is.
 * - The token endpoint, RFC 8693 §2.2.2: a subject token that is invalid, or unacceptable by policy, is
 *   `invalid_request`; asking for more than may be granted is `invalid_scope`.
 * - Introspection (RFC 7662 §2.3) and revocation (RFC 7009 §2.2.1): a caller whose credential (its client
 *   authentication, here the bearer API key or access token) fails is `invalid_client`, 401. Revoking a token
 *   issued to another client, without the permission to, is `unauthorized_client`. An API key sent to be revoked
 *   stays `invalid_request` naming `token`: it is the client's credential, no token type (RFC 7009's
 *   `unsupported_token_type`) this server issues.
 */
const OAUTH_ENDPOINTS = new Map<string, OAuthErrors>([
  [
    TOKEN_ENDPOINT,
    {
      ...REQUEST_ERRORS,
      invalid_token: 'invalid_request',
      audience_mismatch: 'invalid_request',
      token_replayed: 'invalid_request',
      no_matching_policy: 'invalid_request',
      ambiguous_policy: 'invalid_request',
      permission_not_allowed: 'invalid_scope',
    },
  ],
  [INTROSPECTION_ENDPOINT, { ...REQUEST_ERRORS, unauthenticated: 'invalid_client' }],
  [
    REVOCATION_ENDPOINT,
    { ...REQUEST_ERRORS, unauthenticated: 'invalid_client', forbidden: 'unauthorized_client' },
  ],
]);

/** Each OAuth endpoint's path, with the statuses of its refusals that carry an OAuth error. */
export const OAUTH_ERROR_STATUSES: ReadonlyMap<string, ReadonlySet<number>> = new Map(
  [...OAUTH_ENDPOINTS].map(([path, errors]) => [
    path,
    new Set(Object.keys(errors).map((code) => ERROR_TABLE[code as ErrorCode].status)),
  ]),
);

/**
 * Whether an Accept header takes `application/json` but not `application/problem+json`. OAuth client libraries
 * (oauth4webapi, openid-client) ask so, and read an OAuth endpoint's `error` only from an answer in the type RFC 6749
 * §5.2 gives it: as problem+json, they report a response of the wrong type instead of the refusal. Any other client
 * (a wildcard Accept, or none) gets problem+json, the type of every error of the API.
 */
function acceptsJsonOnly(accept: string | undefined): boolean {
  const accepted = new Set<string>();
  for (const range of (accept ?? '').split(',')) {
    const [type = '', ...parameters] = range.split(';').map((part) => part.trim().toLowerCase());
    const q = parameters.find((p) => /^q\s*=/.test(p))?.replace(/^q\s*=\s*/, '');
    if (q === undefined || Number(q) > 0) accepted.add(type);
  }
  return accepted.has('application/json') && !accepted.has('application/problem+json');
}

/**
 * An OAuth client of an OAuth endpoint reads `error` and `error_description`, not the problem's `code` and
 * `detail`: the refusal carries both, the description in the characters RFC 6749 allows it. A character outside
 * them is written as its code point (`<U+00DF>`), so that a name or an example in the detail still says which.
 */
function withOAuthError(problem: ProblemDocument, error: string | undefined): ProblemDocument {
  if (!error) return problem;
  // Redacted before the characters are replaced: a code point in place of an invisible character inside a key
  // would hide the key from the redaction of the whole answer.
  const description = withoutSecrets(problem.detail)
    .replaceAll('"', "'")
    .replaceAll('…', '...')
    .replaceAll(
      /[^\x20\x21\x23-\x5B\x5D-\x7E]/gu,
      (c) => `<U+${(c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}>`,
    );
  return { ...problem, error, error_description: description };
}

/**
 * Retry-After of a `not_ready`, and of any 503 that does not say its own: a restarted server or a dropped
 * connection is back within about a second; the retries of a longer outage are spaced out by the client's own
 * backoff. (An `issuer_unavailable` says when the broker will next try the issuer.)
 */
export const NOT_READY_RETRY_AFTER_SECONDS = 1;

export function problemResponse(c: Context<BrokerEnv>, error: unknown): Response {
  const brokerError = toBrokerError(error);
  c.set('problemCode', brokerError.code);
  if (brokerError.code === 'internal_error') {
    c.get('log').error('request failed', { error, stack: error instanceof Error ? error.stack : undefined });
  } else if (error instanceof StoreUnavailable) {
    c.get('log').error('request failed: the database is unavailable', { error });
  } else if (error instanceof UndecryptableSigningKey) {
    c.get('log').error(
      'request failed: the signing key in use is stored under another key-encryption key; restart this replica with it',
      { error },
    );
  }
  const oauthError = OAUTH_ENDPOINTS.get(c.req.path)?.[brokerError.code];
  const body = withOAuthError(toProblem(brokerError, c.get('requestId')), oauthError);
  // The same document either way; its media type is the one the client takes, when it carries an OAuth error.
  const oauth = oauthError !== undefined;
  const json = oauth && acceptsJsonOnly(c.req.header('Accept'));
  // Through the context, so headers set earlier in the request (X-Request-Id) are kept.
  return c.body(withoutSecretsInJson(JSON.stringify(body)), brokerError.status as ContentfulStatusCode, {
    'Content-Type': json ? 'application/json' : 'application/problem+json',
    ...(oauth ? { Vary: 'Accept' } : {}),
    ...(brokerError.status === 503 ? { 'Retry-After': String(NOT_READY_RETRY_AFTER_SECONDS) } : {}),
    ...brokerError.headers,
  });
}
