// The storage interface the broker is written against; SQLite and PostgreSQL both implement it.
import type { Permission } from '../core/permissions.js';
import type { PolicyRecord, TrustPolicy } from '../core/policy-types.js';
import type { PolicyNamesakes } from './migrations.js';

/** The policy that granted an exchange was deleted or replaced before the exchange committed; decide again. */
export class GrantingPolicyChanged extends Error {
  constructor(readonly policyId: string) {
    super(`trust policy ${policyId} changed while the exchange was decided`);
    this.name = 'GrantingPolicyChanged';
  }
}

/**
 * The credential a change was asked for with was rotated or revoked after the request authenticated it, and
 * before the change could commit: nothing was changed.
 */
export class RequesterWithdrawn extends Error {
  constructor() {
    super('the credential that asked for the change was rotated or revoked meanwhile');
    this.name = 'RequesterWithdrawn';
  }
}

/**
 * The policy a conditional change was asked for (HTTP `If-Match`) is no longer in the state the condition names:
 * another writer changed it since it was read. Nothing was changed.
 */
export class PreconditionFailed extends Error {
  constructor() {
    super('the policy changed since the version the condition names');
    this.name = 'PreconditionFailed';
  }
}

/**
 * A condition on the row a change is about to change (an HTTP `If-Match`), judged on that row as the change's own
 * transaction locked it: two writers that read the same version cannot both change it. When it does not hold, the
 * change rejects with PreconditionFailed.
 */
export type Precondition<T> = (current: T) => boolean;

/**
 * The credential a change was asked for with: an API key by its digest, or an access token by its `jti` and, for
 * an exchanged one, the id of the trust policy that granted it (the token ends with the policy).
 */
export type Requester = { keyDigest: string } | { tokenJti: string; policyId?: string };

export const BUILTIN_KINDS = ['tenant', 'tenant-read-only', 'secure-registry'] as const;
export type BuiltinKind = (typeof BUILTIN_KINDS)[number];
export const SLOTS = ['primary', 'secondary'] as const;
export type Slot = (typeof SLOTS)[number];

export interface Tenant {
  id: string;
  name: string;
  audience: string;
  disabledCategories: string[];
  createdAt: number;
}

export interface BuiltinKeySlot {
  tenantId: string;
  kind: BuiltinKind;
  slot: Slot;
  /** Null until the slot is first given a key. */
  hint: string | null;
  lastRotatedAt: number | null;
  /** The last use of the slot's current key, to the minute (as a fine-grained key's); null until it is used. */
  lastUsedAt: number | null;
}

export interface FineGrainedKey {
  id: string;
  tenantId: string;
  name: string;
  hint: string;
  permissions: Permission[];
  createdBy: string;
  createdAt: number;
  expiresAt: number;
  lastUsedAt: number | null;
}

/** Who did something: a credential (never its secret) or the operator CLI. */
export interface Actor {
  kind: string;
  id: string;
  name?: string;
}

/** Every type of audit event the broker records (README → Audit log). */
export const AUDIT_EVENT_TYPES = [
  'tenant.created',
  'api_key.rotated',
  'fine_grained_key.created',
  'fine_grained_key.revoked',
  'policy.created',
  'policy.updated',
  'policy.deleted',
  'token.exchanged',
  'token.exchange_denied',
  'token.minted',
  'token.revoked',
  'permission.denied',
] as const;

/** An event's outcome: a refusal is `denied`. */
export const AUDIT_OUTCOMES = ['success', 'denied'] as const;

export interface AuditQuery {
  type?: string;
  outcome?: AuditEvent['outcome'];
  since?: number;
  until?: number;
  /** The last event of the previous page: the page goes on below its time, and below its id at that time. */
  before?: { at: number; id: number };
  limit: number;
}

export interface AuditEventInput {
  tenantId: string;
  type: string;
  outcome: (typeof AUDIT_OUTCOMES)[number];
  actor: Actor;
  target?: { type: string; id: string; name?: string };
  details?: Record<string, unknown>;
  /** The request that made the change (its `X-Request-Id`), recorded in `details` as `request_id`. */
  requestId?: string;
  /**
   * Not recorded. The credential the change was asked for with: the change commits only while that key still
   * exists, or that token is not revoked (nor the trust policy that granted it deleted), and rejects with
   * RequesterWithdrawn otherwise.
   */
  requester?: Requester;
}

export interface AuditEvent extends AuditEventInput {
  id: number;
  at: number;
  details: Record<string, unknown>;
}

/**
 * The audit event of a change to an existing row, built from that row as the change's own transaction read
 * it — so the event never describes a state another writer had already replaced.
 */
export type AuditOf<T> = (previous: T) => AuditEventInput;

export interface StoredKey {
  digest: string;
  hint: string;
}

export type Created<T> = { ok: true; value: T } | { ok: false; conflict: string };

/** What a replaced signing key keeps of its private key: nothing (it no longer signs; its public key stays). */
export const ERASED_PRIVATE_KEY = 'erased';

export interface SigningKeyRecord {
  kid: string;
  publicJwk: string;
  /** Encrypted under the key-encryption key; opaque to the store. */
  privateKey: string;
  createdAt: number;
  /** When it starts signing: at once for the first key, later for a rotation's (it is published before). */
  activeFrom: number;
  /** When it stops signing; it stays published until the tokens it signed have expired. */
  retiredAt: number | null;
}

export interface Store {
  readonly engine: 'sqlite' | 'postgres';
  /** Migrations the database records that this version does not know: a newer version has run on it. */
  readonly unknownMigrations?: readonly number[];
  /** Policies an upgrade found under names that are one name now, each group kept as it was: to rename. */
  readonly policyNamesakes?: readonly PolicyNamesakes[];
  tenants: {
    /** Creates the tenant, its six empty built-in slots with the Tenant primary key set, and the audit event. */
    create(tenant: Tenant, primaryKey: StoredKey, audit: AuditEventInput): Promise<Created<Tenant>>;
    list(): Promise<Tenant[]>;
    byId(id: string): Promise<Tenant | undefined>;
    byAudience(audience: string): Promise<Tenant | undefined>;
    byName(name: string): Promise<Tenant | undefined>;
  };
  keys: {
    builtinByDigest(digest: string): Promise<BuiltinKeySlot | undefined>;
    listBuiltin(tenantId: string): Promise<BuiltinKeySlot[]>;
    /**
     * Replaces the slot's key (the previous one stops working at once), revokes the access tokens minted from
     * the slot, and records the audit event (with `access_tokens_revoked`), atomically. The tokens revoked are
     * those unexpired at `at`, and those expired less than `revoking.expiredWithinMs` before it.
     */
    rotate(
      tenantId: string,
      kind: BuiltinKind,
      slot: Slot,
      key: StoredKey,
      at: number,
      audit: AuditEventInput,
      revoking: { expiredWithinMs: number },
    ): Promise<BuiltinKeySlot>;
    fineGrainedByDigest(digest: string): Promise<FineGrainedKey | undefined>;
    createFineGrained(
      key: FineGrainedKey,
      stored: StoredKey,
      audit: AuditEventInput,
    ): Promise<FineGrainedKey>;
    /**
     * The first `limit` of the tenant's keys, newest first (by `createdAt`, then by id), from after the place `after`
     * (which no key need hold any more): read along the index of that order, so that a page costs the same
     * wherever it starts.
     */
    pageFineGrained(
      tenantId: string,
      page: { after?: { createdAt: number; id: string }; limit: number },
    ): Promise<FineGrainedKey[]>;
    getFineGrained(tenantId: string, id: string): Promise<FineGrainedKey | undefined>;
    /**
     * Deletes the key, revokes the access tokens minted from it (as `rotate` does) and records the audit event
     * (with `access_tokens_revoked`); undefined when the tenant has no such key.
     */
    deleteFineGrained(
      tenantId: string,
      id: string,
      at: number,
      audit: AuditOf<FineGrainedKey>,
      revoking: { expiredWithinMs: number },
    ): Promise<FineGrainedKey | undefined>;
    touchFineGrained(id: string, at: number): Promise<void>;
    /** Records a use of the built-in key of this digest; once its slot is rotated, that of no key. */
    touchBuiltin(digest: string, at: number): Promise<void>;
  };
  audit: {
    append(event: AuditEventInput, at: number): Promise<void>;
    /**
     * Newest first by the time recorded, events of one millisecond by id; `before` is the last event of the
     * previous page. `since` and `until` bound the time an event was recorded at (ms, both included); `type` and
     * `outcome` pick events of that type or outcome.
     */
    list(tenantId: string, query: AuditQuery): Promise<AuditEvent[]>;
    /**
     * When the tenant's event with this id was recorded; undefined when its log holds no such event (another
     * tenant's, or one retention deleted).
     */
    recordedAt(tenantId: string, id: number): Promise<number | undefined>;
    /**
     * Deletes the events recorded before `before`, oldest first, from the old end of the log only: an event kept
     * is newer, by id, than every event deleted (an older one recorded after a newer one goes with it, later).
     * Returns how many went; several replicas may run it at once.
     */
    purgeOlderThan(before: number): Promise<number>;
    /**
     * The id of the oldest event kept, of any tenant; undefined when none is. Every event with a smaller id has been
     * deleted (or never was), whichever tenant's it was.
     */
    oldestKept(): Promise<number | undefined>;
  };
  policies: {
    create(
      tenantId: string,
      id: string,
      input: PolicyRecord,
      at: number,
      audit: AuditEventInput,
    ): Promise<Created<TrustPolicy>>;
    /**
     * Writes nothing (no event, the same `updatedAt`) when `input` is what is stored already. Undefined when the
     * tenant has no such policy, whatever `precondition`; it is judged before the no-change shortcut.
     */
    replace(
      tenantId: string,
      id: string,
      input: PolicyRecord,
      at: number,
      audit: AuditOf<TrustPolicy>,
      precondition?: Precondition<TrustPolicy>,
    ): Promise<Created<TrustPolicy> | undefined>;
    /** Undefined when the tenant has no such policy, whatever `precondition`. */
    delete(
      tenantId: string,
      id: string,
      at: number,
      audit: AuditOf<TrustPolicy>,
      precondition?: Precondition<TrustPolicy>,
    ): Promise<TrustPolicy | undefined>;
    get(tenantId: string, id: string): Promise<TrustPolicy | undefined>;
    /** Every policy of the tenant, in byte order of the name keys they are filed under. */
    list(tenantId: string): Promise<TrustPolicy[]>;
    /**
     * The first `limit` of the tenant's policies in that order, from after the name key `after` (which no policy
     * need have any more), each with the key it is filed under: read along the name index, so that a page costs
     * the same wherever it starts. A key is `policyNameKey` of the name, or for namesakes an upgrade kept, the name
     * lower-cased.
     */
    page(
      tenantId: string,
      page: { after?: string; limit: number },
    ): Promise<{ policy: TrustPolicy; nameKey: string }[]>;
    /** The policies named so (`policyNameKey` of the name), whatever they match: an indexed lookup. */
    named(tenantId: string, nameKey: string): Promise<TrustPolicy[]>;
    /** Policies that can match a token of this issuer, owner and repository (lower-case keys): an indexed lookup. */
    candidates(
      tenantId: string,
      issuer: string,
      ownerKey: string,
      repositoryKey: string,
    ): Promise<TrustPolicy[]>;
  };
  tokens: {
    /**
     * Records (iss, jti) as used together with the audit event of its outcome, in one commit: `fresh` when the
     * pair is new, `replayed` when it was already used. Resolves once both are durable; true when fresh. A new
     * pair is recorded only while the policy `grantedBy` still exists as last updated at `updatedAt`; if it does
     * not, a pair already used is still `replayed` as above, and an unused one is not recorded: it rejects with
     * GrantingPolicyChanged.
     */
    recordExchange(
      use: { issuer: string; jti: string; expiresAt: number },
      audit: { fresh: AuditEventInput; replayed: AuditEventInput },
      at: number,
      grantedBy: { id: string; updatedAt: number },
    ): Promise<boolean>;
    /**
     * Remembers which credential minted an access token, with the audit event, in one commit — only while the
     * key with digest `keyDigest` still exists; false when it was rotated or deleted meanwhile.
     */
    recordMinted(
      token: { jti: string; tenantId: string; credentialId: string; expiresAt: number },
      keyDigest: string,
      audit: AuditEventInput,
      at: number,
    ): Promise<boolean>;
    /** Adds the token to the deny-list with the audit event; nothing, and no event, when it is already there. */
    revoke(
      jti: string,
      tenantId: string,
      expiresAt: number,
      at: number,
      audit: AuditEventInput,
    ): Promise<void>;
    isRevoked(jti: string): Promise<boolean>;
    /** Whether (iss, jti) has been exchanged (and its replay record is still kept). */
    wasExchanged(issuer: string, jti: string): Promise<boolean>;
    /** Forgets replay and revocation records whose tokens have expired; returns how many went. */
    purgeExpired(before: number): Promise<number>;
  };
  signingKeys: {
    list(): Promise<SigningKeyRecord[]>;
    /** Inserts `key` only if no unretired key exists — replicas starting together create exactly one. */
    insertFirst(key: SigningKeyRecord): Promise<boolean>;
    /**
     * Adds `key` and retires every other key not yet retired as of `key.activeFrom`, in one transaction (so
     * rotations racing each other still leave one key to sign from then on); returns the kids it retired.
     */
    rotateTo(key: SigningKeyRecord): Promise<string[]>;
    /**
     * Adds `key` and, in the same transaction, retires at `at` every other key not retired by then and erases
     * every other key's private key (their public keys stay); returns the kids it retired. With `withdraw`, every
     * other key is deleted instead, public key and all, and the kids returned are those it deleted.
     */
    replaceAll(key: SigningKeyRecord, at: number, options?: { withdraw?: boolean }): Promise<string[]>;
  };
  /** The broker's own settings, by name: a check of the key pepper, the public URL it was last started with. */
  settings: {
    /** The value stored under `name`, if any. */
    get(name: string): Promise<string | undefined>;
    /**
     * Stores `value` under `name` unless a value is stored there already; resolves to the value stored, so that of
     * replicas storing at once every one gets the one that was kept.
     */
    first(name: string, value: string): Promise<string>;
    /** Stores `value` under `name`, in place of any value stored there. */
    replace(name: string, value: string): Promise<void>;
  };
  ping(): Promise<void>;
  close(): Promise<void>;
}
