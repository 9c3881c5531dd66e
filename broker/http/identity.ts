// GET /v1/whoami and GET /v1/permissions: what the caller is, and what the tenant can grant.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AuthenticateDeps } from '../core/authenticate.js';
import { ALL_PERMISSIONS, CATEGORIES, enabledPermissions } from '../core/permissions.js';
import { secured } from './auth.js';
import type { BrokerEnv } from './context.js';
import { authErrors, badRequest, isoOrNull, NoQuery, PermissionId, Timestamp } from './schemas.js';

const Whoami = z
  .object({
    tenant: z.object({ name: z.string(), audience: z.string() }),
    credential: z.object({
      kind: z.enum(['tenant', 'tenant-read-only', 'secure-registry', 'fine-grained', 'access-token']),
      id: z.string(),
      name: z.string().nullable(),
      slot: z.enum(['primary', 'secondary']).nullable(),
    }),
    permissions: z.array(PermissionId),
    expires_at: Timestamp.nullable(),
  })
  .openapi('Whoami');

const Catalogue = z
  .object({
    categories: z.array(
      z.object({
        id: z.string(),
        name: z.string(),
        enabled: z.boolean(),
        permissions: z.array(PermissionId),
      }),
    ),
    shortcuts: z.object({ 'read-all': z.array(PermissionId), 'read-write-all': z.array(PermissionId) }),
  })
  .openapi('PermissionCatalogue');

export function registerIdentityRoutes(app: OpenAPIHono<BrokerEnv>, auth: AuthenticateDeps): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/whoami',
      operationId: 'whoami',
      tags: ['Identity'],
      summary: 'Describe the calling credential',
      ...secured(auth),
      request: { query: NoQuery },
      responses: {
        200: {
          description: 'The tenant, credential and effective permissions.',
          content: { 'application/json': { schema: Whoami } },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    (c) => {
      const { tenant, credential, permissions, expiresAt } = c.get('principal');
      return c.json(
        {
          tenant: { name: tenant.name, audience: tenant.audience },
          credential: {
            kind: credential.kind,
            id: credential.id,
            name: credential.name ?? null,
            slot: credential.slot ?? null,
          },
          permissions,
          expires_at: isoOrNull(expiresAt),
        },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/permissions',
      operationId: 'listPermissions',
      tags: ['Identity'],
      summary: "List the tenant's permission catalogue and shortcuts",
      ...secured(auth),
      request: { query: NoQuery },
      responses: {
        200: {
          description: 'Categories, their permissions, and what each shortcut expands to.',
          content: { 'application/json': { schema: Catalogue } },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    (c) => {
      const { tenant } = c.get('principal');
      const enabled = enabledPermissions(tenant.disabledCategories);
      return c.json(
        {
          categories: CATEGORIES.map((category) => ({
            id: category.id,
            name: category.name,
            enabled: !tenant.disabledCategories.includes(category.id),
            permissions: ALL_PERMISSIONS.filter((p) => p.startsWith(`${category.id}:`)),
          })),
          shortcuts: { 'read-all': enabled.filter((p) => p.endsWith(':read')), 'read-write-all': enabled },
        },
        200,
      );
    },
  );
}
