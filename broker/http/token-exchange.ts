// POST /v1/oidc/token: swap a GitHub Actions OIDC token for an access token (JSON or RFC 8693 form).
import { createRoute, type Hook, type OpenAPIHono, z } from '@hono/zod-openapi';
import { createMiddleware } from 'hono/factory';
import { ACCESS_TOKEN_TYPE } from '../core/access-tokens.js';
import { type ExchangeDeps, type ExchangeRequest, exchangeToken } from '../core/exchange.js';
import { BrokerError } from '../errors.js';
import { type BrokerEnv, requestFieldErrors, UNKNOWN_FIELD } from './context.js';
import { bodyRequiredInDocument } from './media-types.js';
import {
  headers,
  IssuedToken,
  issuedToken,
  notReady,
  PermissionList,
  problem,
  SCOPE_PATTERN,
} from './schemas.js';
import { Duration, nameCharacters, PolicyName } from './text.js';

/** The token endpoint: its errors also speak OAuth (`problems.ts`). */
export const TOKEN_ENDPOINT = '/v1/oidc/token';
const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const SUBJECT_TOKEN_TYPES = [
  'urn:ietf:params:oauth:token-type:id_token',
  'urn:ietf:params:oauth:token-type:jwt',
] as const;

const Token = z.string().min(1).max(65_536);
/** A job token's start ({"alg":"RS256","typ":"JWT"}), for the examples: the reference prefills it to be pasted over. */
const JOB_TOKEN = 'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.…';
const TenantName = z
  .string()
  .min(1, { error: 'empty: name the tenant, or leave tenant out' })
  .max(63, { error: 'a tenant name is at most 63 characters' })
  .check(nameCharacters);

const JsonRequest = z
  .strictObject({
    oidc_token: Token.openapi({ description: "The job's GitHub OIDC token." }),
    tenant: TenantName.optional().openapi({
      description:
        "The tenant you mean; the token's audience must then be that tenant's (a clearer error when not).",
    }),
    permissions: PermissionList.optional().openapi({
      description: "Permissions to request (ids or shortcuts); omit for the policy's whole allowlist.",
    }),
    duration_seconds: Duration.optional().openapi({
      description: "Lifetime wanted; the policy's cap applies.",
    }),
    policy: PolicyName.optional().openapi({ description: 'Use this trust policy only.' }),
  })
  // What the reference prefills: the token alone, for the policy's whole allowlist and lifetime; a tenant, policy
  // or duration made up for the example would refuse the real token a user pastes in.
  .openapi('ExchangeRequest', { example: { oidc_token: JOB_TOKEN } });

// The reference fills a form's every field from the field's own example (not the form's), or else with "string",
// "1" or text made up from the pattern: each has one, from the document's running example (tenant acme, the policy
// the trust-policy example creates), so that the form as prefilled works with the job token pasted in.
const FormRequest = z
  .strictObject({
    grant_type: z.literal(GRANT_TYPE),
    subject_token: Token.openapi({ example: JOB_TOKEN }),
    subject_token_type: z.enum(SUBJECT_TOKEN_TYPES),
    requested_token_type: z
      .literal(ACCESS_TOKEN_TYPE, {
        error: `the broker issues access tokens only: send ${ACCESS_TOKEN_TYPE}, or leave requested_token_type out`,
      })
      .optional(),
    scope: z.string().max(4096).optional().openapi({
      description: "Space-separated permissions (ids or shortcuts); omit for the policy's whole allowlist.",
      pattern: SCOPE_PATTERN,
      example: 'harden-runner:read',
    }),
    // RFC 6749 §2.3, §3.2.1: a public client (token_endpoint_auth_methods_supported: none) may identify itself so.
    // There are no registered clients: the OIDC token alone says who asks.
    client_id: z
      .string()
      .max(255)
      .optional()
      .openapi({ description: 'Ignored; a public client may send it.', example: 'oidc-auth' }),
    tenant: TenantName.optional().openapi({ example: 'acme' }),
    policy: PolicyName.optional().openapi({ example: 'deploy-infra' }),
    duration_seconds: z
      .string()
      .regex(/^[0-9]{1,4}$/, 'must be a whole number of seconds from 1 to 3600')
      .transform(Number)
      .pipe(Duration)
      .optional()
      // Text on the wire, as every form field: documented as the number it carries, with the JSON body's limits.
      .openapi({
        type: 'integer',
        minimum: Duration.minValue ?? undefined,
        maximum: Duration.maxValue ?? undefined,
        description: "Lifetime wanted, in seconds; the policy's cap applies.",
        example: 3600,
      }),
  })
  .openapi('TokenExchangeForm');

const TokenResponse = IssuedToken.extend({
  policy: z.string().openapi({ description: 'The trust policy that granted the token.' }),
}).openapi('TokenResponse');

/**
 * RFC 8693 parameters the broker knows but does not act on, each refused saying why rather than as an unknown field:
 * taking them in silence would hand out a token other than the one asked for.
 */
const UNSUPPORTED: Record<string, string> = {
  audience:
    "not supported: the access token's audience is always its tenant's audience, the one the OIDC token carries in aud; leave audience out",
  resource:
    "not supported: the access token is for its tenant's API, whose audience the OIDC token carries in aud; leave resource out",
  actor_token: 'not supported: the broker does no delegation; leave actor_token and actor_token_type out',
  actor_token_type:
    'not supported: the broker does no delegation; leave actor_token and actor_token_type out',
};

/** The form's own parameters, which a JSON body does not take: RFC 8693 sends them as a form. */
const FORM_ONLY = new Set(
  Object.keys(FormRequest.shape).filter((key) => !Object.hasOwn(JsonRequest.shape, key)),
);
const FORM_PARAMETER =
  'an RFC 8693 parameter, sent as a form (Content-Type: application/x-www-form-urlencoded); a JSON body takes oidc_token instead';

/**
 * The route's validation failures, with the RFC 8693 parameters the broker does not support named as such, and the
 * form's parameters sent as JSON told where they go.
 */
function exchangeHook<I, P extends string>(
  ...[result]: Parameters<Hook<I, BrokerEnv, P, undefined>>
): undefined {
  if (result.success) return undefined;
  const errors = requestFieldErrors(result).map((e) => {
    if (e.message !== UNKNOWN_FIELD) return e;
    if (result.target === 'form' && Object.hasOwn(UNSUPPORTED, e.field))
      return { field: e.field, message: UNSUPPORTED[e.field]! };
    if (result.target === 'json' && FORM_ONLY.has(e.field))
      return { field: e.field, message: FORM_PARAMETER };
    return e;
  });
  throw BrokerError.fields('invalid_request', errors);
}

/** SECURITY-CASES H8/H9: the token travels in the body only — never in a header or the URL. */
const bodyOnly = createMiddleware<BrokerEnv>(async (c, next) => {
  if (c.req.header('Authorization') !== undefined) {
    throw new BrokerError(
      'invalid_request',
      'send the OIDC token in the body only; remove the Authorization header',
    );
  }
  if (c.req.url.includes('?')) {
    throw new BrokerError(
      'invalid_request',
      'this endpoint takes no query parameters; send everything in the body',
    );
  }
  await next();
});

function fromForm(form: z.infer<typeof FormRequest>): ExchangeRequest {
  return {
    oidcToken: form.subject_token,
    tenant: form.tenant,
    permissions: form.scope?.split(' ').filter(Boolean),
    permissionsField: 'scope',
    durationSeconds: form.duration_seconds,
    policy: form.policy,
  };
}

export function registerTokenExchangeRoute(
  app: OpenAPIHono<BrokerEnv>,
  deps: Omit<ExchangeDeps, 'log' | 'requestId'>,
): void {
  app.openapi(
    bodyRequiredInDocument(
      app,
      createRoute({
        method: 'post',
        path: TOKEN_ENDPOINT,
        operationId: 'exchangeToken',
        tags: ['OIDC federation'],
        summary: 'Exchange a GitHub Actions OIDC token for an access token',
        description:
          'Verifies the token, finds the tenant whose audience it carries, selects the trust policy and mints a ' +
          'short-lived access token. Each OIDC token can be exchanged once. Accepts JSON or an RFC 8693 form. ' +
          'A 4xx other than 429 also carries the OAuth `error` (`invalid_request`, or `invalid_scope` for ' +
          '`permission_not_allowed`) and `error_description` (RFC 6749 §5.2), for OAuth client libraries; to a ' +
          'client that accepts `application/json` but not `application/problem+json`, as they do, it comes as ' +
          '`application/json`, the media type RFC 6749 gives it.',
        middleware: [bodyOnly] as const,
        request: {
          // Served as optional, so that each media type's validator runs for its own content type; an empty request
          // is refused in the handler, and the document says the body is required.
          body: {
            required: false,
            content: {
              'application/json': { schema: JsonRequest },
              'application/x-www-form-urlencoded': { schema: FormRequest },
            },
          },
        },
        responses: {
          200: {
            description: 'The access token.',
            headers: z.object(headers.noStore),
            content: { 'application/json': { schema: TokenResponse } },
          },
          400: problem('Malformed request (`invalid_request`).'),
          401: problem('`invalid_token`, `audience_mismatch` or `token_replayed`.'),
          403: problem('`no_matching_policy` (echoes your own claims) or `permission_not_allowed`.'),
          409: problem('`ambiguous_policy`: name one of `policies` in the request.'),
          429: {
            ...problem('`rate_limited`: retry after `Retry-After` seconds.'),
            headers: z.object(headers.retryAfter),
          },
          503: notReady(
            "`issuer_unavailable`: the issuer's signing keys cannot be fetched; `not_ready`: the database does not " +
              'answer, or the trust policies kept changing while the exchange was decided, with `Retry-After`. Retry.',
          ),
        },
      }),
    ),
    async (c) => {
      const json = c.req.valid('json') as Partial<z.infer<typeof JsonRequest>>;
      const form = c.req.valid('form') as Partial<z.infer<typeof FormRequest>>;
      let request: ExchangeRequest;
      if (json.oidc_token !== undefined) {
        request = {
          oidcToken: json.oidc_token,
          tenant: json.tenant,
          permissions: json.permissions,
          durationSeconds: json.duration_seconds,
          policy: json.policy,
        };
      } else if (form.subject_token !== undefined) {
        request = fromForm(form as z.infer<typeof FormRequest>);
      } else {
        throw new BrokerError(
          'invalid_request',
          'send {"oidc_token": ...} as application/json, or an RFC 8693 form with subject_token',
        );
      }
      const result = await exchangeToken(request, {
        ...deps,
        log: c.get('log'),
        requestId: c.get('requestId'),
      });
      c.header('Cache-Control', 'no-store');
      return c.json({ ...issuedToken(result), policy: result.policy }, 200);
    },
    exchangeHook,
  );
}
