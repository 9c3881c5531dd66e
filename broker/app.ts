// Builds the broker's HTTP application from its collaborators; no sockets, no process — tests call app.request().
import { randomUUID } from 'node:crypto';
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { routePath } from 'hono/route';
import type { BrokerConfig } from './config.js';
import type { AccessTokens } from './core/access-tokens.js';
import { type AuthenticateDeps, unauthenticated } from './core/authenticate.js';
import type { IssuerKeys } from './core/issuer-keys.js';
import type { KeyDigester } from './core/keys.js';
import type { RateLimiter } from './core/rate-limit.js';
import type { SigningKeys } from './core/signing-keys.js';
import type { TenantDirectory } from './core/tenant-directory.js';
import { BrokerError } from './errors.js';
import { registerApiKeyRoutes } from './http/api-keys.js';
import { registerAuditRoutes } from './http/audit.js';
import { auditRefusal } from './http/auth.js';
import { type BrokerEnv, validationHook } from './http/context.js';
import { upstreamIds } from './http/correlation.js';
import { registerDocRoutes } from './http/docs.js';
import { registerFineGrainedKeyRoutes } from './http/fine-grained-keys.js';
import { registerIdentityRoutes } from './http/identity.js';
import { bodyMediaTypes } from './http/media-types.js';
import { allowedMethods, routeOfPath } from './http/methods.js';
import { registerOperationRoutes } from './http/operations.js';
import { registerPolicyRoutes } from './http/policies.js';
import { problemResponse, unsupportedMediaType } from './http/problems.js';
import { bodyRefusal, bufferBody, strictRequestBody } from './http/request-body.js';
import { registerTokenExchangeRoute } from './http/token-exchange.js';
import { registerTokenRoutes } from './http/tokens.js';
import { registerWellKnownRoutes } from './http/well-known.js';
import type { MalformedRequestEnv } from './http-server.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { RequesterWithdrawn, type Store } from './store/store.js';

export const MAX_BODY_BYTES = 64 * 1024;

/**
 * On every answer, for a browser that meets one (Try it out, a URL opened in a tab): read it as the type it says it
 * is, never inside another site's frame, run nothing in it, and tell no other site where its links came from. The
 * reference page, the one HTML document, replaces the policy with its own (see docs.ts).
 */
export const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
  'Referrer-Policy': 'no-referrer',
} as const;
// Listed once: every request, the exchange's included, sets them, and needs no array of its own to do it.
const SECURITY_HEADER_ENTRIES = Object.entries(SECURITY_HEADERS);

export interface AppDeps {
  config: BrokerConfig;
  store: Store;
  /** Signing keys of the trusted OIDC issuers (GitHub), cached. */
  issuerKeys: IssuerKeys;
  /** The broker's own token-signing keys. */
  signingKeys: SigningKeys;
  accessTokens: AccessTokens;
  exchangeRateLimiter: RateLimiter;
  tenants: TenantDirectory;
  logger: Logger;
  metrics: Metrics;
  digest: KeyDigester;
  now: () => number;
  /** Whether the broker is shutting down: /readyz then answers 503, for load balancers to send it nothing new. */
  draining: () => boolean;
}

export type BrokerApp = OpenAPIHono<BrokerEnv>;

export function createApp(deps: AppDeps): BrokerApp {
  const app = new OpenAPIHono<BrokerEnv>({ defaultHook: validationHook() });
  const auth: AuthenticateDeps = {
    store: deps.store,
    digest: deps.digest,
    now: deps.now,
    accessTokens: deps.accessTokens,
    logger: deps.logger,
  };

  app.use('*', async (c, next) => {
    const started = performance.now();
    const requestId = randomUUID();
    c.set('requestId', requestId);
    // The broker's own id is the one answers and audit events carry; a proxy's, if well-formed, is logged beside it.
    c.set('log', deps.logger.child({ request_id: requestId, ...upstreamIds((name) => c.req.header(name)) }));
    // Set before the response exists: a header added to a finished response makes Hono rebuild it from a stream.
    c.header('X-Request-Id', requestId);
    for (const [name, value] of SECURITY_HEADER_ENTRIES) c.header(name, value);
    await next();
    const seconds = (performance.now() - started) / 1000;
    // Answered by middleware (a body too large, a 404): counted under the route the request was for, if any. A 405
    // is counted under the route that serves its path with other methods; only a path no route serves is unmatched.
    const path = c.req.routePath === '/*' ? routePath(c, -1) : c.req.routePath;
    const route = path === '/*' ? (routeOfPath(app, c.req.path) ?? 'unmatched') : path;
    deps.metrics.observeRequest(c.req.method, route, c.res.status, seconds);
    // A refusal's code says why, as its answer did: the detail stays in the answer, as it may echo the request.
    const code = c.get('problemCode');
    if (code !== undefined) deps.metrics.observeError(route, code);
    c.get('log').info('request', {
      method: c.req.method,
      route,
      status: c.res.status,
      duration_ms: Math.round(seconds * 10_000) / 10,
      ...(code === undefined ? {} : { code }),
    });
  });
  app.use('*', async (c, next) => {
    // A request whose target and Host make no URL reaches the app as a stand-in with no body (http-server.ts). What
    // body it has is never read: the connection closes after the answer rather than wait for it.
    const malformed = (c.env as Partial<MalformedRequestEnv> | undefined)?.malformed;
    if (malformed === undefined) return next();
    throw new BrokerError(
      'invalid_request',
      `the request target and Host header make no URL (${malformed.toLowerCase()}): send a path, and a host name in Host`,
      { headers: { Connection: 'close' } },
    );
  });
  const tooLarge = () => {
    throw new BrokerError('payload_too_large', `the request body is larger than ${MAX_BODY_BYTES} bytes`);
  };
  app.use('*', async (c, next) => {
    // From Node's HTTP server without Transfer-Encoding, Content-Length decides (HTTP/1.1: no length, no body)
    // and the body is later read straight from the socket. A chunked body — or a Request handed to
    // app.request() — is read here, counting, through a web stream (measurably slower).
    const fromSocket = (c.env as { incoming?: unknown } | undefined)?.incoming !== undefined;
    const transferCoding = c.req.header('Transfer-Encoding');
    // RFC 9112 §6.1: Node takes the body out of its chunks and leaves any other coding (gzip, chunked) on it, for
    // the app to undo, which the broker does not: a transfer coding it does not implement is 501, unread.
    if (transferCoding?.split(',').some((coding) => coding.trim().toLowerCase() !== 'chunked'))
      throw new BrokerError(
        'not_implemented',
        `the broker implements no transfer coding but chunked (Transfer-Encoding: ${transferCoding}): send the body without it`,
        { headers: { Connection: 'close' } },
      );
    if (!fromSocket || transferCoding !== undefined)
      return (await bufferBody(c.req, MAX_BODY_BYTES)) ? next() : tooLarge();
    const length = c.req.header('Content-Length');
    return length !== undefined && Number(length) > MAX_BODY_BYTES ? tooLarge() : next();
  });
  app.use('*', strictRequestBody);
  const mediaTypesOf = bodyMediaTypes(app);
  // Hono's validators throw bare HTTPExceptions: say which types the route takes, or why its body was refused.
  const explained = (thrown: Error, c: Context<BrokerEnv>): unknown => {
    if (thrown instanceof RequesterWithdrawn) {
      return unauthenticated(
        'the API key or token was rotated or revoked, or the trust policy that granted the token deleted, while ' +
          'this request was in flight; nothing was changed',
        'invalid_token',
      );
    }
    if (!(thrown instanceof HTTPException)) return thrown;
    if (thrown.status === 415) return unsupportedMediaType(mediaTypesOf(c.req.method, c.req.routePath));
    return bodyRefusal(c) ?? thrown;
  };
  app.onError(async (thrown, c) => {
    const error = explained(thrown, c);
    try {
      await auditRefusal(c, error, deps);
    } catch (auditFailure) {
      return problemResponse(c, auditFailure);
    }
    return problemResponse(c, error);
  });
  app.notFound((c) => {
    const allow = allowedMethods(app, c.req.path);
    if (allow.length === 0)
      return problemResponse(c, new BrokerError('not_found', `no route for ${c.req.path}`));
    return problemResponse(
      c,
      new BrokerError(
        'method_not_allowed',
        `${c.req.method} is not supported here; use ${allow.join(', ')}`,
        {
          headers: { Allow: allow.join(', ') },
        },
      ),
    );
  });

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API key (ssa_, ssr_, ssg_, ssf_) or an access token minted by the broker.',
  });
  registerOperationRoutes(app, deps);
  registerWellKnownRoutes(app, { signingKeys: deps.signingKeys, publicUrl: deps.config.publicUrl });
  registerTokenExchangeRoute(app, {
    store: deps.store,
    tenants: deps.tenants,
    issuerKeys: deps.issuerKeys,
    accessTokens: deps.accessTokens,
    rateLimiter: deps.exchangeRateLimiter,
    defaultSessionSeconds: deps.config.defaultSessionSeconds,
    now: deps.now,
  });
  registerIdentityRoutes(app, auth);
  registerApiKeyRoutes(app, auth, deps);
  registerFineGrainedKeyRoutes(app, auth, deps);
  registerAuditRoutes(app, auth);
  registerPolicyRoutes(app, auth, deps);
  registerTokenRoutes(app, auth, deps);
  registerDocRoutes(app, deps.config.publicUrl);
  return app;
}
