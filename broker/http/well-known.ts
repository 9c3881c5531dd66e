// Public discovery: the broker's token-signing keys (JWKS) and RFC 8414 authorization-server metadata.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { tryDecodeURI } from 'hono/utils/url';
import { ALL_PERMISSIONS } from '../core/permissions.js';
import { JWKS_MAX_AGE_SECONDS, type SigningKeys } from '../core/signing-keys.js';
import { BrokerError } from '../errors.js';
import type { BrokerEnv } from './context.js';
import { publicPath } from './schemas.js';

const METADATA_PATH = '/.well-known/oauth-authorization-server';

const Jwks = z
  .object({ keys: z.array(z.record(z.string(), z.string())) })
  .openapi('JsonWebKeySet', { description: 'Public ES256 keys; `kid` is the RFC 7638 thumbprint.' });

const urls = z.string();
const AuthorizationServerMetadata = z
  .looseObject({
    issuer: urls.openapi({ description: "`BROKER_PUBLIC_URL`: the access tokens' `iss`, exactly." }),
    token_endpoint: urls,
    jwks_uri: urls,
    introspection_endpoint: urls,
    revocation_endpoint: urls,
    grant_types_supported: z.array(z.string()),
    response_types_supported: z.array(z.string()),
    token_endpoint_auth_methods_supported: z.array(z.string()),
    introspection_endpoint_auth_methods_supported: z.array(z.string()),
    revocation_endpoint_auth_methods_supported: z.array(z.string()),
    scopes_supported: z.array(z.string()),
    service_documentation: urls,
  })
  .openapi('AuthorizationServerMetadata', { description: 'RFC 8414 authorization server metadata.' });

export function registerWellKnownRoutes(
  app: OpenAPIHono<BrokerEnv>,
  deps: { signingKeys: SigningKeys; publicUrl: string },
): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/.well-known/jwks.json',
      operationId: 'getJwks',
      tags: ['Discovery'],
      summary: "The broker's token-signing keys",
      responses: {
        200: {
          description:
            'A JWKS. The keys are read again from the database every minute, so that every replica publishes a ' +
            'rotation; while the database does not answer, the keys as last read are served, with `no-cache`.',
          headers: z.object({
            'Cache-Control': z.string().openapi({
              description:
                `How long a verifier may keep the keys: \`public, max-age=${JWKS_MAX_AGE_SECONDS}\`; ` +
                '`no-cache` (ask again before reusing them) when they are the keys as last read.',
              example: `public, max-age=${JWKS_MAX_AGE_SECONDS}`,
            }),
          }),
          content: { 'application/json': { schema: Jwks } },
        },
      },
    }),
    async (c) => {
      const { keys, current } = await deps.signingKeys.jwks();
      if (!current) c.get('log').warn('JWKS served as last read: the database does not answer');
      c.header('Cache-Control', current ? `public, max-age=${JWKS_MAX_AGE_SECONDS}` : 'no-cache');
      return c.json({ keys } as z.infer<typeof Jwks>, 200);
    },
  );

  const base = deps.publicUrl;
  const metadata: z.infer<typeof AuthorizationServerMetadata> = {
    issuer: base,
    token_endpoint: `${base}/v1/oidc/token`,
    jwks_uri: `${base}/.well-known/jwks.json`,
    introspection_endpoint: `${base}/v1/tokens/introspect`,
    revocation_endpoint: `${base}/v1/tokens/revoke`,
    grant_types_supported: ['urn:ietf:params:oauth:grant-type:token-exchange'],
    response_types_supported: [],
    token_endpoint_auth_methods_supported: ['none'],
    // RFC 8414 §2 takes a token type here too. Left out, revocation would default to client_secret_basic, which
    // neither endpoint takes: both want an API key or access token as `Authorization: Bearer`.
    introspection_endpoint_auth_methods_supported: ['Bearer'],
    revocation_endpoint_auth_methods_supported: ['Bearer'],
    scopes_supported: [...ALL_PERMISSIONS],
    service_documentation: `${base}/v1/reference`,
  };
  app.openapi(
    createRoute({
      method: 'get',
      path: METADATA_PATH,
      operationId: 'getAuthorizationServerMetadata',
      tags: ['Discovery'],
      summary: 'Authorization server metadata (RFC 8414)',
      description:
        'Behind a path prefix (`BROKER_PUBLIC_URL=https://host/broker`) the same document is also answered at the ' +
        'path RFC 8414 §3 gives that issuer, `/.well-known/oauth-authorization-server/broker` at the root of the ' +
        'host, for a proxy that forwards it unchanged; no other path below this one is.',
      responses: {
        200: {
          description: 'Endpoints, grant types and scopes.',
          content: { 'application/json': { schema: AuthorizationServerMetadata } },
        },
      },
    }),
    (c) => c.json(metadata, 200),
  );
  // RFC 8414 §3: the metadata of an issuer with a path (BROKER_PUBLIC_URL=https://host/broker) is at the well-known
  // path followed by that path, at the host's root, where a proxy that forwards /.well-known/ sends it unchanged. The
  // path is compared whole, as the router decodes it (a `%` that begins no escape stays as it is): a prefix segment
  // such as `:id` is no route parameter here.
  const prefix = publicPath(base);
  if (prefix) {
    const issuerPath = `${METADATA_PATH}${tryDecodeURI(prefix)}`;
    app.get(issuerPath, (c) => {
      if (c.req.path !== issuerPath) throw new BrokerError('not_found', `no route for ${c.req.path}`);
      return c.json(metadata, 200);
    });
  }
}
