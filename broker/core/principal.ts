// Who is calling: the tenant, the credential and its effective permissions (DESIGN §2).
import type { Actor, AuditEventInput, BuiltinKind, Slot, Tenant } from '../store/store.js';
import { enabledPermissions, type Permission, withImplied } from './permissions.js';

export type CredentialKind = BuiltinKind | 'fine-grained' | 'access-token';

export interface Credential {
  kind: CredentialKind;
  /** `tenant/primary` for built-in slots, the key id for fine-grained keys, the `jti` for access tokens. */
  id: string;
  name?: string;
  slot?: Slot;
}

export interface Principal {
  tenant: Tenant;
  credential: Credential;
  /** Effective permissions: granted ∩ enabled, with every write's read added. */
  permissions: Permission[];
  expiresAt: number | null;
  /** For an API key: its stored digest, by which a later write can check that the key still exists. */
  keyDigest?: string;
  /** For an exchanged access token: the trust policy that granted it, which a later write checks still exists. */
  grantedBy?: string;
  /** The request it authenticated (its `X-Request-Id`), which the audit events of its changes carry. */
  requestId?: string;
}

/** What a credential of this kind may do in this tenant; `granted` applies to fine-grained keys and tokens. */
export function effectivePermissions(
  tenant: Tenant,
  kind: CredentialKind,
  granted: readonly Permission[] = [],
): Permission[] {
  const enabled = enabledPermissions(tenant.disabledCategories);
  const enabledSet = new Set(enabled);
  switch (kind) {
    case 'tenant':
      return enabled;
    case 'tenant-read-only':
      return enabled.filter((p) => p.endsWith(':read'));
    case 'secure-registry':
      return enabled.filter((p) => p.startsWith('secure-registry:'));
    case 'fine-grained':
    case 'access-token':
      return withImplied(granted).filter((p) => enabledSet.has(p));
  }
}

export function actorOf(principal: Principal): Actor {
  const { kind, id, name } = principal.credential;
  return name === undefined ? { kind, id } : { kind, id, name };
}

/**
 * The audit fields of a change this principal asks for: who it is, and the credential the change commits only
 * while it still holds (a key rotated or revoked while its request is in flight changes nothing).
 */
export function changedBy(principal: Principal): Pick<AuditEventInput, 'actor' | 'requester' | 'requestId'> {
  return {
    actor: actorOf(principal),
    ...(principal.requestId === undefined ? {} : { requestId: principal.requestId }),
    requester:
      principal.keyDigest !== undefined
        ? { keyDigest: principal.keyDigest }
        : {
            tokenJti: principal.credential.id,
            ...(principal.grantedBy === undefined ? {} : { policyId: principal.grantedBy }),
          },
  };
}

export const OPERATOR: Actor = { kind: 'operator', id: 'cli' };
