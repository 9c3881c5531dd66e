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
import { checkKeyFormat, generateKey, type KeyDigester, type KeyKind, keyHint } from './keys.js';
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
    throw BrokerError.fields(
      'invalid_request',
      expanded.problems.map(({ index, message }) => ({ field: `${field}[${index}]`, message })),
    );
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

/**
 * How an API key of `kind` is revoked, for a caller of `tenantId` who sent it where only access tokens are revoked:
 * the very request when the key is one of that tenant's, else the form of that request, naming nothing of another
 * tenant. A malformed key is looked up nowhere.
 */
export async function keyRevocation(
  key: string,
  kind: KeyKind,
  tenantId: string,
  deps: Pick<KeyDeps, 'store' | 'digest'>,
): Promise<string> {
  const wellFormed = checkKeyFormat(key).ok;
  if (kind === 'fine-grained') {
    const found = wellFormed ? await deps.store.keys.fineGrainedByDigest(deps.digest(key)) : undefined;
    return `revoke it with DELETE /v1/fine-grained-keys/${found?.tenantId === tenantId ? found.id : '{id}'}`;
  }
  const found = wellFormed ? await deps.store.keys.builtinByDigest(deps.digest(key)) : undefined;
  const slot = found?.tenantId === tenantId && found.kind === kind ? found.slot : '{slot}';
  return `replace it by rotating its slot with a Tenant API key: POST /v1/api-keys/${kind}/${slot}/rotate`;
}
