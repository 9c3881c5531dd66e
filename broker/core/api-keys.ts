// Built-in key rotation and fine-grained keys (DESIGN §3): shown once, stored as digests, no escalation.
import { randomUUID } from 'node:crypto';
import { BrokerError } from '../errors.js';
import type {
  AuditEventInput,
  BuiltinKeySlot,
  BuiltinKind,
  FineGrainedKey,
  Slot,
  Store,
} from '../store/store.js';
import { generateKey, type KeyDigester, keyHint } from './keys.js';
import { enabledPermissions, expandPermissions, missingFrom, type Permission } from './permissions.js';
import { changedBy, type Principal } from './principal.js';
import { CLOCK_SKEW_MS } from './signing-keys.js';

export interface KeyDeps {
  store: Store;
  digest: KeyDigester;
  now: () => number;
}

const DAY_MS = 86_400_000;
export const EXPIRATIONS = { '7d': 7, '30d': 30, '90d': 90, '1y': 365 } as const;
export type Expiration = keyof typeof EXPIRATIONS;
/**
 * Which of a credential's tokens its rotation or deletion revokes: the unexpired by any replica's clock, so also
 * those this clock sees as just expired, which one running behind by up to CLOCK_SKEW_MS still takes.
 */
const REVOKING = { expiredWithinMs: CLOCK_SKEW_MS };

/**
 * Rotates a slot of `tenantId` for `actor`: a Tenant API key's holder (the route refuses, and audits, any other
 * credential) or the operator CLI.
 */
export async function rotateBuiltinKey(
  { tenantId, ...by }: { tenantId: string } & Pick<AuditEventInput, 'actor' | 'requester'>,
  kind: BuiltinKind,
  slot: Slot,
  deps: KeyDeps,
): Promise<{ slot: BuiltinKeySlot; key: string }> {
  const key = generateKey(kind);
  const at = deps.now();
  const rotated = await deps.store.keys.rotate(
    tenantId,
    kind,
    slot,
    { digest: deps.digest(key), hint: keyHint(key) },
    at,
    {
      tenantId,
      type: 'api_key.rotated',
      outcome: 'success',
      ...by,
      target: { type: 'api_key', id: `${kind}/${slot}` },
      details: { hint: keyHint(key) },
    },
    REVOKING,
  );
  return { slot: rotated, key };
}

export interface FineGrainedKeyRequest {
  /** Already validated at the boundary: 1–100 characters. */
  name: string;
  /** 1–365, resolved from `expiration` or `expires_in_days`. */
  expiresInDays: number;
  permissions: string[];
}

/** Checks a grant against the tenant's catalogue and the caller's own permissions. */
export function grantablePermissions(
  principal: Principal,
  requested: readonly string[],
  field = 'permissions',
): Permission[] {
  if (requested.length === 0)
    throw BrokerError.fields('invalid_request', [{ field, message: 'at least one permission is required' }]);
  const expanded = expandPermissions(requested, enabledPermissions(principal.tenant.disabledCategories));
  if (!expanded.ok) {
    const message =
      expanded.reason === 'unknown'
        ? `unknown permission "${expanded.value}" (GET /v1/permissions lists the valid ids)`
        : `"${expanded.value}" belongs to a category that is disabled for this tenant`;
    throw BrokerError.fields('invalid_request', [{ field: `${field}[${expanded.index}]`, message }]);
  }
  const missing = missingFrom(principal.permissions, expanded.permissions);
  if (missing.length > 0) {
    throw new BrokerError(
      'permission_escalation',
      `you cannot grant permissions you do not hold: ${missing.join(', ')}`,
      { extensions: { missing } },
    );
  }
  return expanded.permissions;
}

export async function createFineGrainedKey(
  principal: Principal,
  request: FineGrainedKeyRequest,
  deps: KeyDeps,
): Promise<{ key: FineGrainedKey; secret: string }> {
  const { name } = request;
  const permissions = grantablePermissions(principal, request.permissions);
  const secret = generateKey('fine-grained');
  const createdAt = deps.now();
  const id = randomUUID();
  const key: FineGrainedKey = {
    id,
    tenantId: principal.tenant.id,
    name,
    hint: keyHint(secret),
    permissions,
    createdBy: principal.credential.id,
    createdAt,
    expiresAt: createdAt + request.expiresInDays * DAY_MS,
    lastUsedAt: null,
  };
  const stored = await deps.store.keys.createFineGrained(
    key,
    { digest: deps.digest(secret), hint: key.hint },
    {
      tenantId: key.tenantId,
      type: 'fine_grained_key.created',
      outcome: 'success',
      ...changedBy(principal),
      target: { type: 'fine_grained_key', id, name },
      details: { permissions, expires_at: new Date(key.expiresAt).toISOString(), hint: key.hint },
    },
  );
  return { key: stored, secret };
}

export async function revokeFineGrainedKey(principal: Principal, id: string, deps: KeyDeps): Promise<void> {
  const deleted = await deps.store.keys.deleteFineGrained(
    principal.tenant.id,
    id,
    deps.now(),
    (key) => ({
      tenantId: principal.tenant.id,
      type: 'fine_grained_key.revoked',
      outcome: 'success',
      ...changedBy(principal),
      target: { type: 'fine_grained_key', id, name: key.name },
    }),
    REVOKING,
  );
  if (!deleted) throw new BrokerError('not_found', `no fine-grained key with id "${id}" in this tenant`);
}
