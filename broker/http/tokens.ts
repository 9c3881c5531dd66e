// /v1/tokens: mint an access token from an API key, and introspect (RFC 7662) or revoke (RFC 7009) tokens.
import { createRoute, type Hook, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AccessTokens } from '../core/access-tokens.js';
import { grantablePermissions, keyRevocation } from '../core/api-keys.js';
import { type AuthenticateDeps, unauthenticated } from '../core/authenticate.js';
import { keyHint, keyKindOf } from '../core/keys.js';
import { withImplied } from '../core/permissions.js';
import { actorOf, changedBy } from '../core/principal.js';
import { CLOCK_SKEW_MS } from '../core/signing-keys.js';
import { BrokerError } from '../errors.js';
import type { Store } from '../store/store.js';
import { refusal, secured } from './auth.js';
import { type BrokerEnv, validationHook } from './context.js';
import { bodyRequiredInDocument } from './media-types.js';
import {
  authErrors,
  badRequest,
  headers,
  IssuedToken,
  iso,
  issuedToken,
  NoQuery,
  PermissionList,
} from './schemas.js';

export const INTROSPECTION_ENDPOINT = '/v1/tokens/introspect';
export const REVOCATION_ENDPOINT = '/v1/tokens/revoke';

export const MAX_MINTED_SECONDS = 12 * 3600;
const DEFAULT_MINTED_SECONDS = 3600;

const MintRequest = z
  .strictObject({
    permissions: PermissionList.min(1, 'at least one permission is required').optional().openapi({
      description: "Defaults to all of the key's permissions.",
    }),
    // The default is applied in the handler: a request without a body reaches it unparsed, as {}.
    duration_seconds: z
      .number({
        error: `duration_seconds must be a whole number of seconds from 1 to ${MAX_MINTED_SECONDS} (12 h)`,
      })
      .int()
      .min(1)
      .max(MAX_MINTED_SECONDS)
      .optional()
      .openapi({
        default: DEFAULT_MINTED_SECONDS,
        description: 'Lifetime, 1 s to 12 h (default 1 h); never beyond the expiry of the key that mints it.',
      }),
  })
  .openapi('MintTokenRequest');

// Each field's example is what the reference prefills: an access token's start ({"alg":"ES256","typ":"at+jwt"}) to
// paste over, and the hint for it (RFC 7662, RFC 7009), in place of "string".
const TokenForm = z.object({
  token: z.string().min(1).max(16_384).openapi({ example: 'eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.…' }),
  token_type_hint: z.string().max(64).optional().openapi({ example: 'access_token' }),
});
const tokenBody = {
  required: true,
  content: {
    'application/x-www-form-urlencoded': { schema: TokenForm },
    'application/json': { schema: TokenForm },
  },
};

const Introspection = z
  .looseObject({
    active: z.boolean(),
    scope: z.string().optional(),
    client_id: z.string().optional(),
    sub: z.string().optional(),
    exp: z.number().optional(),
    iat: z.number().optional(),
    iss: z.string().optional(),
    aud: z.string().optional(),
    jti: z.string().optional(),
    token_type: z.string().optional(),
  })
  .openapi('Introspection');

/**
 * The token from whichever body the client sent (RFC 7662/7009 use a form; JSON is accepted too). One token with
 * white space around it, or as its Authorization header's value (`Bearer …`), is that token all the same: a revoke
 * answered 200 as if unknown would leave it in use while its holder took it for revoked.
 */
function tokenFrom(inUrl: boolean, ...bodies: Partial<z.infer<typeof TokenForm>>[]): string {
  const token = bodies
    .find((body) => body.token !== undefined)
    ?.token?.trim()
    .replace(/^Bearer\s+/i, '');
  if (token) return token;
  throw tokenMissing(inUrl);
}

/**
 * A body without a token. One sent in the URL is not read (proxies and logs keep URLs): told so, rather than
 * "required" of a token sent.
 */
function tokenMissing(inUrl: boolean): BrokerError {
  const message = inUrl
    ? 'required in the request body (a form token=…, or JSON {"token": …}); a token in the URL is not read, as proxies and logs keep URLs'
    : 'required';
  return BrokerError.fields('invalid_request', [{ field: 'token', message }]);
}

const requestHook = validationHook();

/**
 * A body the schema refuses, told as the API tells it; but one that lacks only the token the URL holds (a form with
 * just `token_type_hint`, an empty JSON object) is told where the token goes, as a request without a body is.
 */
function tokenBodyHook<I, P extends string>(
  ...[result, c]: Parameters<Hook<I, BrokerEnv, P, undefined>>
): undefined {
  if (!result.success && (result.target === 'form' || result.target === 'json')) {
    const sent = (result as { data?: unknown }).data;
    const token = typeof sent === 'object' && sent !== null ? (sent as { token?: unknown }).token : undefined;
    const absent = token === undefined || (typeof token === 'string' && token.trim() === '');
    if (absent && c.req.query('token') !== undefined) throw tokenMissing(true);
  }
  return requestHook(result as never, c as never);
}

export function registerTokenRoutes(
  app: OpenAPIHono<BrokerEnv>,
  auth: AuthenticateDeps,
  deps: { store: Store; accessTokens: AccessTokens; now: () => number },
): void {
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/tokens',
      operationId: 'mintToken',
      tags: ['Tokens'],
      summary: 'Mint an access token from an API key',
      description:
        "The token carries a subset of the key's permissions (`403 permission_escalation` otherwise). Only an API key " +
        'mints: an access token cannot mint another (`403 forbidden`, `required_credential: api-key`).',
      ...secured(auth),
      // Every field has a default, so a request without a body mints with them, as `{}` does.
      // A lifetime or permissions sent in the query would otherwise be ignored, for a token of every permission
      // for an hour.
      request: {
        query: NoQuery,
        body: { required: false, content: { 'application/json': { schema: MintRequest } } },
      },
      responses: {
        201: {
          description: 'The token.',
          headers: z.object(headers.noStore),
          content: { 'application/json': { schema: IssuedToken } },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    async (c) => {
      const principal = c.get('principal');
      if (principal.credential.kind === 'access-token') {
        throw refusal(
          { credential: 'api-key' },
          'mint tokens with an API key; an access token cannot mint another',
        );
      }
      const body = c.req.valid('json');
      // Written out as the broker honours them (write implies read): a resource server authorises by `scope` as it
      // reads, and a token granted a write would otherwise be refused the read that comes with it.
      const permissions = withImplied(
        body.permissions ? grantablePermissions(principal, body.permissions) : principal.permissions,
      );
      if (permissions.length === 0) {
        // E.g. a Secure Registry key while its category is disabled: as `permissions: []` is refused, so is this.
        throw BrokerError.fields('invalid_request', [
          {
            field: 'permissions',
            message: `API key "${principal.credential.name}" holds no permission enabled for this tenant, so a token from it could do nothing`,
          },
        ]);
      }
      const at = deps.now();
      // Less than a second left: any token would be expired as it is issued.
      const tooLate = () =>
        unauthenticated(
          `API key "${principal.credential.name}" expires at ${iso(principal.expiresAt!)}: too late to mint a token`,
          'invalid_token',
        );
      const remaining =
        principal.expiresAt === null
          ? Number.POSITIVE_INFINITY
          : Math.floor((principal.expiresAt - at) / 1000);
      if (remaining < 1) throw tooLate();
      const lifetime = Math.min(body.duration_seconds ?? DEFAULT_MINTED_SECONDS, remaining);
      // The key's expiry bounds the token again as it is signed, by the clock of that moment.
      const minted = await deps.accessTokens.mint({
        tenant: principal.tenant,
        permissions,
        lifetimeSeconds: lifetime,
        subject: principal.credential.id,
        clientId: principal.credential.id,
        notAfter: principal.expiresAt ?? undefined,
      });
      if (minted.expiresIn < 1) throw tooLate();
      // Recorded with its credential, so that rotating or revoking that key revokes the token too; a key rotated
      // or revoked since it was checked above gets no token.
      const recorded = await deps.store.tokens.recordMinted(
        {
          jti: minted.jti,
          tenantId: principal.tenant.id,
          credentialId: principal.credential.id,
          expiresAt: minted.expiresAt,
        },
        principal.keyDigest!,
        {
          tenantId: principal.tenant.id,
          type: 'token.minted',
          outcome: 'success',
          actor: actorOf(principal),
          ...(principal.requestId === undefined ? {} : { requestId: principal.requestId }),
          target: { type: 'access_token', id: minted.jti },
          details: { permissions, expires_at: iso(minted.expiresAt) },
        },
        at,
      );
      if (!recorded) {
        throw unauthenticated(
          'the API key was rotated or revoked while the token was being minted',
          'invalid_token',
        );
      }
      c.header('Cache-Control', 'no-store');
      return c.json(
        issuedToken({
          accessToken: minted.token,
          expiresIn: minted.expiresIn,
          expiresAt: minted.expiresAt,
          permissions,
          tenant: principal.tenant.name,
        }),
        201,
      );
    },
  );

  app.openapi(
    bodyRequiredInDocument(
      app,
      createRoute({
        method: 'post',
        path: INTROSPECTION_ENDPOINT,
        operationId: 'introspectToken',
        tags: ['Tokens'],
        summary: 'Introspect an access token (RFC 7662)',
        description:
          'Any credential of the same tenant may ask. Tokens of other tenants are reported inactive, and so is an API ' +
          'key, which is no access token (`GET /v1/whoami` describes a key).',
        ...secured(auth),
        request: { body: { ...tokenBody, required: false } },
        responses: {
          200: {
            description:
              '`active` and, when active, the claims, with `scope` and `permissions` what the token may do now: each ' +
              '`:write` with the `:read` it implies, and for an exchanged token, less what its trust policy no longer ' +
              'allows.',
            headers: z.object(headers.noStore),
            content: { 'application/json': { schema: Introspection } },
          },
          ...authErrors,
        },
      }),
    ),
    async (c) => {
      const result = await deps.accessTokens.verify(
        tokenFrom(c.req.query('token') !== undefined, c.req.valid('form'), c.req.valid('json')),
      );
      c.header('Cache-Control', 'no-store');
      if (!result.ok || result.tenant.id !== c.get('principal').tenant.id)
        return c.json({ active: false }, 200);
      return c.json({ active: true, ...result.claims, token_type: 'Bearer' }, 200);
    },
    tokenBodyHook,
  );

  app.openapi(
    bodyRequiredInDocument(
      app,
      createRoute({
        method: 'post',
        path: REVOCATION_ENDPOINT,
        operationId: 'revokeToken',
        tags: ['Tokens'],
        summary: 'Revoke an access token (RFC 7009)',
        description:
          'A token may revoke itself, and an API key the tokens it minted; revoking another token of the tenant needs ' +
          '`api-keys:write`. Every replica ' +
          'refuses it from the next request on. Unknown, expired or foreign tokens are answered 200, as RFC 7009 says; ' +
          'an API key is refused (`400`, naming the request that revokes or rotates it), since it is not revoked here.',
        ...secured(auth),
        request: { body: { ...tokenBody, required: false } },
        responses: { 200: { description: 'Revoked, or nothing to revoke.' }, ...authErrors },
      }),
    ),
    async (c) => {
      const principal = c.get('principal');
      const token = tokenFrom(c.req.query('token') !== undefined, c.req.valid('form'), c.req.valid('json'));
      const keyKind = keyKindOf(token);
      if (keyKind) {
        // Not answered 200, as RFC 7009 answers a token it does not know: the key's holder would take the key for
        // revoked while it still works.
        const how = await keyRevocation(token, keyKind, principal.tenant.id, auth);
        throw BrokerError.fields('invalid_request', [
          {
            field: 'token',
            message: `${keyHint(token)} is an API key, and this endpoint revokes access tokens only: ${how}`,
          },
        ]);
      }
      // A token that has just expired by this replica's clock is still revoked: one whose clock runs behind by up
      // to CLOCK_SKEW_MS still takes it. So is one a replica with another BROKER_PUBLIC_URL issued, which that
      // replica takes: answered 200 unrevoked, its holder would take it for revoked.
      const result = await deps.accessTokens.verify(token, {
        expiredWithinMs: CLOCK_SKEW_MS,
        anyIssuer: true,
      });
      if (!result.ok || result.tenant.id !== principal.tenant.id) return c.body(null, 200);
      // RFC 7009 §2.1: a token may be revoked by itself, or by the client it was issued to (the API key that
      // minted it, its client_id).
      const own =
        principal.credential.kind === 'access-token'
          ? principal.credential.id === result.claims.jti
          : principal.credential.id === result.claims.client_id;
      if (!own && !principal.permissions.includes('api-keys:write')) {
        throw refusal(
          { permission: 'api-keys:write' },
          'revoking a token that another credential minted, or an exchanged one, needs the api-keys:write permission',
        );
      }
      const at = deps.now();
      await deps.store.tokens.revoke(result.claims.jti, principal.tenant.id, result.claims.exp * 1000, at, {
        tenantId: principal.tenant.id,
        type: 'token.revoked',
        outcome: 'success',
        ...changedBy(principal),
        target: {
          type: 'access_token',
          id: result.claims.jti,
          name: result.claims.policy ?? result.claims.client_id,
        },
      });
      return c.body(null, 200);
    },
    tokenBodyHook,
  );
}
