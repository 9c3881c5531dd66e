// Turns a bearer credential (API key or access token) into a Principal, or refuses with 401.
import { BrokerError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Store } from '../store/store.js';
import { checkKeyFormat, type KeyDigester, keyKindOf } from './keys.js';
import { effectivePermissions, type Principal } from './principal.js';

export interface AuthenticateDeps {
  store: Store;
  digest: KeyDigester;
  now: () => number;
  /** Verifies a broker-minted access token; absent when tokens are not enabled. */
  accessTokens?: { authenticate(token: string): Promise<Principal> };
  /** Where an API key's use that could not be recorded is reported. */
  logger?: Pick<Logger, 'warn'>;
}

/**
 * An API key's `last_used_at` (a fine-grained key's, a built-in slot's) is kept to the minute: a use within a minute
 * of the last one recorded is not written.
 */
export const LAST_USED_PRECISION_MS = 60_000;

const BUILTIN_NAMES = {
  tenant: 'Tenant API key',
  'tenant-read-only': 'Tenant read-only key',
  'secure-registry': 'Secure Registry key',
} as const;

const CHALLENGE = { 'WWW-Authenticate': 'Bearer realm="oidc-auth"' };

export function unauthenticated(detail: string, error?: 'invalid_token'): BrokerError {
  const challenge = error ? `Bearer realm="oidc-auth", error="${error}"` : CHALLENGE['WWW-Authenticate'];
  return new BrokerError('unauthenticated', detail, { headers: { 'WWW-Authenticate': challenge } });
}

/** Extracts the credential from `Authorization: Bearer <credential>`, exactly one space, nothing else. */
export function bearerCredential(header: string | undefined): string {
  if (!header)
    throw unauthenticated('send an API key or access token as "Authorization: Bearer <credential>"');
  const match = /^Bearer ([^\s,]+)$/.exec(header);
  if (!match)
    throw unauthenticated('the Authorization header must be "Bearer <credential>" with a single credential');
  return match[1]!;
}

export async function authenticate(credential: string, deps: AuthenticateDeps): Promise<Principal> {
  if (!keyKindOf(credential)) {
    if (deps.accessTokens && credential.split('.').length === 3)
      return deps.accessTokens.authenticate(credential);
    throw unauthenticated(
      'the credential is neither an API key (ssa_, ssr_, ssg_, ssf_) nor an access token',
      'invalid_token',
    );
  }
  const format = checkKeyFormat(credential);
  if (!format.ok) throw unauthenticated(format.reason, 'invalid_token');
  const digest = deps.digest(credential);
  if (format.kind === 'fine-grained') {
    const key = await deps.store.keys.fineGrainedByDigest(digest);
    if (!key) throw unauthenticated('unknown or revoked API key', 'invalid_token');
    const now = deps.now();
    if (key.expiresAt <= now) {
      throw unauthenticated(
        `API key "${key.name}" expired at ${new Date(key.expiresAt).toISOString()}`,
        'invalid_token',
      );
    }
    const tenant = await deps.store.tenants.byId(key.tenantId);
    if (!tenant) throw unauthenticated('unknown or revoked API key', 'invalid_token');
    recordUse(key.lastUsedAt, now, deps, {
      touch: () => deps.store.keys.touchFineGrained(key.id, now),
      warning: "a fine-grained key's use could not be recorded",
      keyId: key.id,
    });
    return {
      tenant,
      credential: { kind: 'fine-grained', id: key.id, name: key.name },
      permissions: effectivePermissions(tenant, 'fine-grained', key.permissions),
      expiresAt: key.expiresAt,
      keyDigest: digest,
    };
  }
  const slot = await deps.store.keys.builtinByDigest(digest);
  const tenant = slot && (await deps.store.tenants.byId(slot.tenantId));
  // The prefix says which kind the caller meant; a key found under another kind was not issued as such.
  if (!slot || !tenant || slot.kind !== format.kind)
    throw unauthenticated('unknown or rotated API key', 'invalid_token');
  const now = deps.now();
  const id = `${slot.kind}/${slot.slot}`;
  recordUse(slot.lastUsedAt, now, deps, {
    touch: () => deps.store.keys.touchBuiltin(digest, now),
    warning: "a built-in key's use could not be recorded",
    keyId: id,
  });
  return {
    tenant,
    credential: {
      kind: slot.kind,
      id,
      name: BUILTIN_NAMES[slot.kind],
      slot: slot.slot,
    },
    permissions: effectivePermissions(tenant, slot.kind),
    expiresAt: null,
    keyDigest: digest,
  };
}

/**
 * Records an API key's use without holding up the request: a read must not wait for a write, nor fail with it
 * (another process holding SQLite's write lock, a PostgreSQL that takes no writes). Kept to the minute, as GitHub
 * and AWS keep a key's last use coarser still, so a key used in a loop is not a write per request.
 */
function recordUse(
  lastUsedAt: number | null,
  now: number,
  deps: AuthenticateDeps,
  use: { touch: () => Promise<void>; warning: string; keyId: string },
): void {
  const since = lastUsedAt === null ? Number.POSITIVE_INFINITY : now - lastUsedAt;
  // A clock stepped back since the last record (a negative `since`) records the use again.
  if (since >= 0 && since < LAST_USED_PRECISION_MS) return;
  use.touch().catch((error: unknown) => {
    deps.logger?.warn(use.warning, { key_id: use.keyId, error });
  });
}
