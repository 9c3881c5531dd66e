// The token exchange (DESIGN §4–§5): verify the OIDC token, pick the tenant and policy, record, mint.
import { randomUUID } from 'node:crypto';
import { BrokerError } from '../errors.js';
import type { Logger } from '../logger.js';
import { type AuditEventInput, GrantingPolicyChanged, type Store, type Tenant } from '../store/store.js';
import type { AccessTokens } from './access-tokens.js';
import type { IssuerKeys } from './issuer-keys.js';
import { type VerifiedClaims, verifyOidcToken } from './oidc-verify.js';
import { enabledPermissions, expandPermissions, type Permission } from './permissions.js';
import { type Allow, type Deny, evaluatePolicies } from './policy-evaluate.js';
import type { RateLimiter } from './rate-limit.js';
import type { TenantDirectory } from './tenant-directory.js';

/** The one documented clock-skew leeway for exp, nbf and iat (DESIGN §4). */
export const CLOCK_SKEW_SECONDS = 60;

export interface ExchangeRequest {
  oidcToken: string;
  /** When given, the token's audience must be this tenant's (the caller says which tenant it means). */
  tenant?: string;
  permissions?: string[];
  /** The request field the permissions came in, for errors: the JSON array, or the RFC 8693 form's `scope`. */
  permissionsField?: 'permissions' | 'scope';
  durationSeconds?: number;
  policy?: string;
}

export interface ExchangeResult {
  accessToken: string;
  expiresAt: number;
  expiresIn: number;
  permissions: Permission[];
  policy: string;
  tenant: string;
}

export interface ExchangeDeps {
  store: Store;
  tenants: TenantDirectory;
  issuerKeys: IssuerKeys;
  accessTokens: AccessTokens;
  rateLimiter: RateLimiter;
  defaultSessionSeconds: number;
  now: () => number;
  log: Logger;
}

/** The caller's own trust-relevant claims: safe to echo in a denial, never another policy's values. */
function callerClaims(c: VerifiedClaims) {
  return {
    iss: c.iss,
    repository_owner: c.repository_owner,
    repository: c.repository,
    job_workflow_ref: c.job_workflow_ref,
    ref: c.ref,
    environment: c.environment ?? null,
    event_name: c.event_name ?? null,
    repository_owner_id: c.repository_owner_id,
    repository_id: c.repository_id,
  };
}

const ACTOR = (c: VerifiedClaims) => ({ kind: 'workflow', id: c.sub, name: c.job_workflow_ref });

function auditEvent(tenant: Tenant, c: VerifiedClaims, fields: Partial<AuditEventInput>): AuditEventInput {
  return {
    tenantId: tenant.id,
    type: 'token.exchanged',
    outcome: 'success',
    actor: ACTOR(c),
    ...fields,
    details: {
      repository: c.repository,
      run_id: c.run_id ?? null,
      run_attempt: c.run_attempt ?? null,
      ref: c.ref,
      event_name: c.event_name ?? null,
      oidc_jti: c.jti,
      ...fields.details,
    },
  };
}

/** The audit event of a verified workflow's refused exchange. */
function deniedEvent(
  tenant: Tenant,
  c: VerifiedClaims,
  details: Record<string, unknown>,
  fields: Partial<AuditEventInput> = {},
): AuditEventInput {
  return auditEvent(tenant, c, { ...fields, type: 'token.exchange_denied', outcome: 'denied', details });
}

async function resolveTenant(
  claims: VerifiedClaims,
  named: string | undefined,
  deps: Pick<ExchangeDeps, 'store' | 'tenants' | 'rateLimiter'>,
  at: number,
): Promise<Tenant> {
  if (named === undefined) {
    const tenant = await deps.tenants.byAudience(claims.aud);
    if (tenant) return tenant;
    throw new BrokerError(
      'audience_mismatch',
      `no tenant on this broker expects the audience "${claims.aud}"`,
      {
        extensions: { audience: claims.aud },
      },
    );
  }
  const tenant = await deps.tenants.byName(named);
  if (tenant && tenant.audience === claims.aud) return tenant;
  if (tenant) {
    // A verified workflow asked for this tenant with the wrong audience: its admins want to see that. Such a
    // token can be sent again and again (nothing uses it up), so the audit row is paid for from the
    // repository's exchange budget: no one can flood a tenant's audit log.
    takeRateLimit(tenant, claims, deps);
    await deps.store.audit.append(
      deniedEvent(tenant, claims, { reason: 'audience_mismatch', audience: claims.aud }),
      at,
    );
  }
  throw new BrokerError(
    'audience_mismatch',
    tenant
      ? `the token's audience "${claims.aud}" is not tenant ${named}'s audience "${tenant.audience}"`
      : `there is no tenant "${named}" on this broker`,
    { extensions: { audience: claims.aud, ...(tenant ? { expected_audience: tenant.audience } : {}) } },
  );
}

/** Takes one exchange from the repository's budget at this tenant, or refuses with 429 and Retry-After. */
function takeRateLimit(
  tenant: Tenant,
  claims: VerifiedClaims,
  deps: Pick<ExchangeDeps, 'rateLimiter'>,
  repositoryKey = claims.repository.toLowerCase(),
): void {
  const limited = deps.rateLimiter.take(`${tenant.id}\n${repositoryKey}`);
  if (limited.ok) return;
  throw new BrokerError(
    'rate_limited',
    `too many exchanges for ${claims.repository}; retry in ${limited.retryAfterSeconds} s`,
    {
      headers: { 'Retry-After': String(limited.retryAfterSeconds) },
      extensions: { retry_after_seconds: limited.retryAfterSeconds },
    },
  );
}

/** The permissions the request names (undefined: all the policy allows), or the entry the tenant has none of. */
function requestedPermissions(
  { permissions: values, permissionsField = 'permissions' }: ExchangeRequest,
  tenant: Tenant,
):
  | { ok: true; permissions: Permission[] | undefined }
  | { ok: false; field: string; why: string; value: string } {
  if (values === undefined || values.length === 0) return { ok: true, permissions: undefined };
  const expanded = expandPermissions(values, enabledPermissions(tenant.disabledCategories));
  if (expanded.ok) return expanded;
  const why =
    expanded.reason === 'unknown'
      ? 'unknown permission'
      : 'permission of a category disabled for this tenant';
  const field = permissionsField === 'scope' ? 'scope' : `permissions[${expanded.index}]`;
  return { ok: false, field, why, value: expanded.value };
}

function denial(deny: Deny, claims: VerifiedClaims): BrokerError {
  const echoed = { claims: callerClaims(claims) };
  switch (deny.reason) {
    case 'no_matching_policy':
      return new BrokerError(
        'no_matching_policy',
        `no trust policy matches ${claims.repository} (ref ${claims.ref}, workflow ${claims.job_workflow_ref})`,
        { extensions: echoed },
      );
    case 'permission_not_allowed':
      return new BrokerError(
        'permission_not_allowed',
        `the matching trust policy does not allow ${deny.notAllowed.join(', ')}`,
        { extensions: { ...echoed, not_allowed: deny.notAllowed } },
      );
    case 'ambiguous_policy':
      return new BrokerError(
        'ambiguous_policy',
        `trust policies ${deny.tiedPolicies.join(', ')} match equally well; name one with "policy"`,
        { extensions: { ...echoed, policies: deny.tiedPolicies } },
      );
  }
}

/** Decisions an exchange makes at most while the policies it read keep changing before it commits. */
const MAX_DECISIONS = 3;

interface Granted {
  decision: Allow;
  /** The access token's jti, recorded in the exchange's audit event. */
  jti: string;
}

/**
 * Selects the policy for the verified job and commits the replay record with the audit event of the outcome;
 * a refusal is audited and thrown. Commits only while the granting policy is as it was read (GrantingPolicyChanged
 * otherwise), so no token comes from a policy deleted or narrowed before the exchange committed.
 */
async function decideAndRecord(
  request: ExchangeRequest,
  job: {
    claims: VerifiedClaims;
    tenant: Tenant;
    permissions: Permission[] | undefined;
    repositoryKey: string;
  },
  deps: ExchangeDeps,
): Promise<Granted> {
  const { store, now } = deps;
  const { claims, tenant, permissions } = job;
  const candidates = await store.policies.candidates(
    tenant.id,
    claims.iss,
    claims.repository_owner.toLowerCase(),
    job.repositoryKey,
  );
  const decision = evaluatePolicies(
    candidates,
    claims,
    { permissions, policy: request.policy },
    { defaultSessionSeconds: deps.defaultSessionSeconds, requestedDurationSeconds: request.durationSeconds },
  );
  const at = now();
  if (!decision.allow) {
    await store.audit.append(
      deniedEvent(tenant, claims, {
        reason: decision.reason,
        requested_permissions: permissions ?? null,
        requested_policy: request.policy ?? null,
        policies: decision.audit.policies.map((p) => ({
          id: p.id,
          name: p.name,
          mismatches: p.mismatches,
          missing: p.missing,
        })),
      }),
      at,
    );
    throw denial(decision, claims);
  }

  const jti = randomUUID();
  const policy = decision.policy;
  const target = { type: 'trust_policy', id: policy.id, name: policy.name };
  // The replay record and the audit event are committed before any token exists.
  const fresh = await store.tokens.recordExchange(
    { issuer: claims.iss, jti: claims.jti, expiresAt: (claims.exp + CLOCK_SKEW_SECONDS) * 1000 },
    {
      fresh: auditEvent(tenant, claims, {
        target,
        details: { token_jti: jti, permissions: decision.permissions, expires_in: decision.durationSeconds },
      }),
      replayed: deniedEvent(tenant, claims, { reason: 'token_replayed' }, { target }),
    },
    at,
    { id: policy.id, updatedAt: policy.updatedAt },
  );
  if (!fresh)
    throw new BrokerError('token_replayed', 'this OIDC token was already exchanged; request a new one');
  return { decision, jti };
}

export async function exchangeToken(request: ExchangeRequest, deps: ExchangeDeps): Promise<ExchangeResult> {
  const { store, now } = deps;
  const verified = await verifyOidcToken(request.oidcToken, {
    issuers: deps.issuerKeys,
    now,
    leewaySeconds: CLOCK_SKEW_SECONDS,
  });
  if (!verified.ok) {
    deps.log.info('exchange refused', { reason: verified.reason });
    throw new BrokerError(verified.code, verified.reason);
  }
  const claims = verified.claims;
  const tenant = await resolveTenant(claims, request.tenant, deps, now());

  const repositoryKey = claims.repository.toLowerCase();
  takeRateLimit(tenant, claims, deps, repositoryKey);

  const requested = requestedPermissions(request, tenant);
  if (!requested.ok) {
    // A verified workflow was refused: its tenant's admins see it, as they see every other refusal. The entry
    // itself is left out of the event: it is whatever the caller typed, and could be anything.
    await store.audit.append(
      deniedEvent(tenant, claims, {
        reason: 'invalid_request',
        errors: [{ field: requested.field, message: requested.why }],
      }),
      now(),
    );
    throw BrokerError.fields('invalid_request', [
      { field: requested.field, message: `${requested.why} "${requested.value}"` },
    ]);
  }
  const permissions = requested.permissions;
  let granted: Granted | undefined;
  for (let decisions = 1; !granted; decisions++) {
    try {
      granted = await decideAndRecord(request, { claims, tenant, permissions, repositoryKey }, deps);
    } catch (error) {
      // The granting policy was deleted or replaced meanwhile, on any replica: decide again on what is there now.
      if (!(error instanceof GrantingPolicyChanged)) throw error;
      if (decisions === MAX_DECISIONS) {
        throw new BrokerError(
          'not_ready',
          'the trust policies kept changing while this exchange was decided; retry',
        );
      }
    }
  }
  const { decision, jti } = granted;
  const policy = decision.policy;

  const minted = await deps.accessTokens.mint({
    tenant,
    permissions: decision.permissions,
    lifetimeSeconds: decision.durationSeconds,
    subject: claims.sub,
    clientId: policy.id,
    jti,
    extra: {
      policy: policy.name,
      repository: claims.repository,
      repository_owner: claims.repository_owner,
      ref: claims.ref,
      ...(claims.run_id ? { run_id: claims.run_id } : {}),
    },
  });
  return {
    accessToken: minted.token,
    expiresAt: minted.expiresAt,
    expiresIn: decision.durationSeconds,
    permissions: decision.permissions,
    policy: policy.name,
    tenant: tenant.name,
  };
}
