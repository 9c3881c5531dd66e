// /v1/fine-grained-keys: create (shown once), list in pages, get, revoke; keys are immutable.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import {
  createFineGrainedKey,
  EXPIRATIONS,
  type Expiration,
  type KeyDeps,
  revokeFineGrainedKey,
} from '../core/api-keys.js';
import type { AuthenticateDeps } from '../core/authenticate.js';
import { BrokerError } from '../errors.js';
import type { FineGrainedKey } from '../store/store.js';
import { secured } from './auth.js';
import type { BrokerEnv } from './context.js';
import { refuseMethods } from './methods.js';
import {
  authErrors,
  badRequest,
  cursorParameter,
  headers,
  iso,
  isoOrNull,
  locationOf,
  NoQuery,
  notFound,
  PermissionId,
  PermissionList,
  pageLimit,
  placeText,
  queryParameters,
  Timestamp,
  tenantCursors,
} from './schemas.js';
import { IdParam, Name, unknownIdIsNotFound } from './text.js';

const PRESETS = 'one of 7d, 30d, 90d or 1y';
const DAYS = 'a whole number of days from 1 to 365';
/** The request is a JSON object: only then is it told which of the two lifetimes to give, beside its other faults. */
const isObject = ({ value }: { value: unknown }) =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const CreateRequest = z
  .strictObject({
    name: Name.openapi({ example: 'deploy-bot' }),
    expiration: z
      .enum(Object.keys(EXPIRATIONS) as [Expiration, ...Expiration[]], {
        error: `expiration must be ${PRESETS}; for another lifetime give expires_in_days (${DAYS}) instead`,
      })
      .optional()
      .openapi({ description: 'A preset lifetime. Give this or `expires_in_days`.' }),
    expires_in_days: z
      .number({ error: `expires_in_days must be ${DAYS}, or give expiration (${PRESETS}) instead` })
      .int()
      .min(1)
      .max(365)
      .optional()
      .openapi({ description: 'A custom lifetime in whole days, 1–365. Give this or `expiration`.' }),
    permissions: PermissionList.min(1, 'at least one permission is required'),
  })
  // Checked with the fields, so that a body missing several things is told all of them in one answer.
  .refine((body) => body.expiration !== undefined || body.expires_in_days !== undefined, {
    path: ['expiration'],
    message: `required: ${PRESETS} — or expires_in_days (${DAYS})`,
    when: isObject,
  })
  .refine((body) => body.expiration === undefined || body.expires_in_days === undefined, {
    path: ['expires_in_days'],
    message: 'give either expiration or expires_in_days, not both',
    when: isObject,
  })
  // The document states the same rule, for clients that check first; the example, which the reference prefills,
  // gives one of the two.
  .openapi('CreateFineGrainedKey', {
    oneOf: [{ required: ['expiration'] }, { required: ['expires_in_days'] }],
    example: { name: 'deploy-bot', expiration: '30d', permissions: ['harden-runner:read'] },
  });

const KeyView = z
  .object({
    id: z.string(),
    name: z.string(),
    hint: z.string(),
    permissions: z.array(PermissionId),
    created_by: z.string().openapi({
      description:
        "The credential that created the key, as the audit log's `actor.id` names it: a built-in slot such as " +
        "`tenant/primary`, a fine-grained key's id, or an access token's `jti`.",
    }),
    created_at: Timestamp,
    expires_at: Timestamp,
    last_used_at: Timestamp.nullable().openapi({
      description:
        'The last use of the key, to the minute: a use within a minute of the one recorded is not written again. ' +
        'Null until it is first used.',
    }),
    expired: z.boolean(),
  })
  .openapi('FineGrainedKey');

const CreatedKey = KeyView.extend({
  key: z.string().openapi({ description: 'The key itself. Shown only in this response; store it now.' }),
}).openapi('CreatedFineGrainedKey');

const ListKeysQuery = queryParameters({
  limit: pageLimit(500, 100, 'Keys per page, 1–500; 100 when left out.'),
  cursor: cursorParameter(
    "The `next_cursor` of the previous page, as returned; one of another tenant's keys is a `400`. The next page " +
      'starts after the key the previous one ended with, even if that key was revoked since.',
  ),
});

/** A page's place is the creation time and id of the key it ended with: the next page is the keys created before. */
const keyCursors = tenantCursors(
  'fine-grained keys',
  (place): place is [createdAt: number, id: string] =>
    place.length === 2 && Number.isSafeInteger(place[0]) && (place[0] as number) >= 0 && placeText(place[1]),
);

const notFoundError = (id: string) =>
  new BrokerError('not_found', `no fine-grained key with id "${id}" in this tenant`);
const idHook = unknownIdIsNotFound(notFoundError);

export function registerFineGrainedKeyRoutes(
  app: OpenAPIHono<BrokerEnv>,
  auth: AuthenticateDeps,
  deps: KeyDeps & { config: { publicUrl: string } },
): void {
  const view = (k: FineGrainedKey) => ({
    id: k.id,
    name: k.name,
    hint: k.hint,
    permissions: k.permissions,
    created_by: k.createdBy,
    created_at: iso(k.createdAt),
    expires_at: iso(k.expiresAt),
    last_used_at: isoOrNull(k.lastUsedAt),
    expired: k.expiresAt <= deps.now(),
  });

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/fine-grained-keys',
      operationId: 'createFineGrainedKey',
      tags: ['Fine-grained keys'],
      summary: 'Create a fine-grained key',
      description:
        'Creates a scoped, expiring key. The key is in this response only. Permissions must be a subset of the ' +
        "caller's own (`403 permission_escalation` otherwise).",
      ...secured(auth, 'api-keys:write'),
      request: {
        query: NoQuery,
        body: { required: true, content: { 'application/json': { schema: CreateRequest } } },
      },
      responses: {
        201: {
          description: 'Created; `key` is shown once.',
          headers: z.object({
            ...headers.noStore,
            ...headers.location('/v1/fine-grained-keys/7f1c5a4e-2b8d-4c1e-9a3f-5d6e7f809a1b'),
          }),
          content: { 'application/json': { schema: CreatedKey } },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const expiresInDays = body.expires_in_days ?? EXPIRATIONS[body.expiration!];
      const created = await createFineGrainedKey(
        c.get('principal'),
        { name: body.name, expiresInDays, permissions: body.permissions },
        deps,
      );
      c.header('Cache-Control', 'no-store');
      c.header('Location', locationOf(deps.config.publicUrl, `/v1/fine-grained-keys/${created.key.id}`));
      return c.json({ ...view(created.key), key: created.secret }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/fine-grained-keys',
      operationId: 'listFineGrainedKeys',
      tags: ['Fine-grained keys'],
      summary: 'List fine-grained keys',
      description:
        'Newest first (keys created in the same millisecond by id, the greater first), `limit` at a time. Pass ' +
        '`next_cursor` back as `cursor` for the next page; it is null on the last page.',
      ...secured(auth, 'api-keys:read'),
      request: { query: ListKeysQuery },
      responses: {
        200: {
          description: "A page of the tenant's fine-grained keys, newest first, without secrets.",
          content: {
            'application/json': {
              schema: z.object({ keys: z.array(KeyView), next_cursor: z.string().nullable() }),
            },
          },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    async (c) => {
      const tenantId = c.get('principal').tenant.id;
      const { limit, cursor } = c.req.valid('query');
      const after = cursor === undefined ? undefined : keyCursors.decode(cursor, tenantId);
      // One more than the page, read along the index: whether another page follows, without counting them.
      const filed = await deps.store.keys.pageFineGrained(tenantId, {
        after: after && { createdAt: after[0], id: after[1] },
        limit: limit + 1,
      });
      const page = filed.slice(0, limit);
      const last = page[page.length - 1];
      const next =
        filed.length > limit && last ? keyCursors.encode(tenantId, [last.createdAt, last.id]) : null;
      return c.json({ keys: page.map(view), next_cursor: next }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/fine-grained-keys/{id}',
      operationId: 'getFineGrainedKey',
      tags: ['Fine-grained keys'],
      summary: 'Get a fine-grained key',
      ...secured(auth, 'api-keys:read'),
      request: { params: IdParam, query: NoQuery },
      responses: {
        200: {
          description: 'The key, without its secret.',
          content: { 'application/json': { schema: KeyView } },
        },
        ...badRequest,
        ...authErrors,
        ...notFound,
      },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const key = await deps.store.keys.getFineGrained(c.get('principal').tenant.id, id);
      if (!key) throw notFoundError(id);
      return c.json(view(key), 200);
    },
    idHook,
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/fine-grained-keys/{id}',
      operationId: 'revokeFineGrainedKey',
      tags: ['Fine-grained keys'],
      summary: 'Revoke a fine-grained key',
      description:
        'Deletes the key; the next request that uses it, or an access token it minted, is refused, on every replica.',
      ...secured(auth, 'api-keys:write'),
      request: { params: IdParam, query: NoQuery },
      responses: { 204: { description: 'Revoked.' }, ...badRequest, ...authErrors, ...notFound },
    }),
    async (c) => {
      await revokeFineGrainedKey(c.get('principal'), c.req.valid('param').id, deps);
      return c.body(null, 204);
    },
    idHook,
  );

  refuseMethods(
    app,
    ['PUT', 'PATCH'],
    '/v1/fine-grained-keys/:id',
    'fine-grained keys are immutable: revoke this key (DELETE) and create a new one with the name, lifetime and permissions you want',
  );
}
