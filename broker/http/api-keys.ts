// GET /v1/api-keys and POST /v1/api-keys/{kind}/{slot}/rotate: the six built-in key slots.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { type KeyDeps, rotateBuiltinKey } from '../core/api-keys.js';
import type { AuthenticateDeps } from '../core/authenticate.js';
import { changedBy } from '../core/principal.js';
import { BUILTIN_KINDS, type BuiltinKeySlot, SLOTS } from '../store/store.js';
import { refusal, secured } from './auth.js';
import type { BrokerEnv } from './context.js';
import { authErrors, badRequest, headers, isoOrNull, NoQuery, Timestamp } from './schemas.js';

const Kind = z.enum(BUILTIN_KINDS);
const SlotName = z.enum(SLOTS);

const KeySlot = z
  .object({
    kind: Kind,
    slot: SlotName,
    hint: z
      .string()
      .nullable()
      .openapi({ description: 'Prefix and last four characters; null while the slot is empty.' }),
    last_rotated_at: Timestamp.nullable(),
    last_used_at: Timestamp.nullable().openapi({
      description:
        "The last use of the slot's current key, to the minute: a use within a minute of the one recorded is not " +
        'written again. Null until that key is first used; a rotation sets it back to null. A key issued before ' +
        'the broker began recording it (migration 7) is null until its first use since. Check it on the slot you ' +
        'are about to rotate: a key still in use shows a recent time.',
    }),
  })
  .openapi('BuiltinKeySlot');

const RotatedKey = z
  .object({
    kind: Kind,
    slot: SlotName,
    key: z.string().openapi({ description: 'The new key. Shown only in this response; store it now.' }),
    last_rotated_at: Timestamp,
  })
  .openapi('RotatedKey');

const slotBody = (s: BuiltinKeySlot) => ({
  kind: s.kind,
  slot: s.slot,
  hint: s.hint,
  last_rotated_at: isoOrNull(s.lastRotatedAt),
  last_used_at: isoOrNull(s.lastUsedAt),
});

export function registerApiKeyRoutes(
  app: OpenAPIHono<BrokerEnv>,
  auth: AuthenticateDeps,
  deps: KeyDeps,
): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/api-keys',
      operationId: 'listApiKeys',
      tags: ['API keys'],
      summary: 'List the built-in key slots',
      description:
        'Tenant, Tenant read-only and Secure Registry keys, each with a primary and a secondary slot, with when ' +
        "each slot's key was issued (`last_rotated_at`) and last used (`last_used_at`, to the minute).",
      ...secured(auth, 'api-keys:read'),
      request: { query: NoQuery },
      responses: {
        200: {
          description: 'The six slots, without secrets.',
          content: { 'application/json': { schema: z.object({ keys: z.array(KeySlot) }) } },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    async (c) => {
      const slots = await deps.store.keys.listBuiltin(c.get('principal').tenant.id);
      return c.json({ keys: slots.map(slotBody) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/api-keys/{kind}/{slot}/rotate',
      operationId: 'rotateApiKey',
      tags: ['API keys'],
      summary: 'Rotate a built-in key slot',
      description:
        'Generates a new key for the slot; the previous value stops working at once, on every replica, and so do ' +
        'the access tokens minted from the slot (`POST /v1/tokens`). ' +
        'Only a Tenant API key may rotate. The other slot of the same kind is unaffected, so rotate the slot your ' +
        'systems are not using, switch them over, then rotate the other.',
      // No permission check first: every other credential is refused for its kind, which is what to change.
      ...secured(auth),
      request: { params: z.object({ kind: Kind, slot: SlotName }), query: NoQuery },
      responses: {
        200: {
          description: 'The new key, shown once.',
          headers: z.object(headers.noStore),
          content: { 'application/json': { schema: RotatedKey } },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    async (c) => {
      const { kind, slot } = c.req.valid('param');
      if (c.get('principal').credential.kind !== 'tenant') {
        throw refusal({ credential: 'tenant' }, 'only a Tenant API key (ssa_…) may rotate built-in keys');
      }
      const principal = c.get('principal');
      const rotated = await rotateBuiltinKey(
        { tenantId: principal.tenant.id, ...changedBy(principal) },
        kind,
        slot,
        deps,
      );
      c.header('Cache-Control', 'no-store');
      return c.json(
        { kind, slot, key: rotated.key, last_rotated_at: isoOrNull(rotated.slot.lastRotatedAt)! },
        200,
      );
    },
  );
}
