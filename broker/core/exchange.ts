// The token exchange (DESIGN §4–§5): verify the OIDC token, pick the tenant and policy, record, mint.
import { BrokerError, retryAfter } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Store, Tenant } from '../store/store.js';
import type { AccessTokens } from './access-tokens.js';
import { deniedEvent } from './exchange-audit.js';
import { decide } from './exchange-decision.js';
import type { IssuerKeys } from './issuer-keys.js';
import { withoutSecrets } from './keys.js';
import { CLOCK_SKEW_SECONDS, type VerifiedClaims, verifyOidcToken } from './oidc-verify.js';
import { enabledPermissions, expandPermissions, type Permission } from './permissions.js';
import type { RateLimiter } from './rate-limit.js';
import type { TenantDirectory } from './tenant-directory.js';

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
  /** The request's logger and id, which its audit events carry too. */
  log: Logger;
  requestId: string;
}

async function resolveTenant(
  claims: VerifiedClaims,
  named: string | undefined,
  deps: Pick<ExchangeDeps, 'store' | 'tenants' | 'rateLimiter' | 'requestId'>,
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
    // repository's exchange budget, as every audited refusal of a verified token is.
    await takeRateLimit(tenant, claims, deps, at);
    await deps.store.audit.append(
      deniedEvent(tenant, claims, deps.requestId, { reason: 'audience_mismatch', audience: claims.aud }),
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

// A short stand-in for an issuer in the rate limiter's keys, of which a large tenant has one per repository.
// Only trusted issuers get here, so the map holds as many as the configuration lists.
const issuerNumbers = new Map<string, number>();
const issuerNumber = (iss: string): number => {
  const known = issuerNumbers.get(iss);
  if (known !== undefined) return known;
  issuerNumbers.set(iss, issuerNumbers.size);
  return issuerNumbers.size - 1;
};

/**
 * Takes one exchange from the repository's budget at this tenant, or refuses with 429 and Retry-After. The
 * first refusal of a run is audited, so the tenant's admins see a workflow being refused; the rest of the run
 * is not, so a flood writes one row.
 */
async function takeRateLimit(
  tenant: Tenant,
  claims: VerifiedClaims,
  deps: Pick<ExchangeDeps, 'store' | 'rateLimiter' | 'requestId'>,
  at: number,
  repositoryKey = claims.repository.toLowerCase(),
): Promise<void> {
  // Per issuer: a GHES's acme/infra is another repository than github.com's, and must not use up its budget.
  const limited = deps.rateLimiter.take(`${tenant.id}\n${issuerNumber(claims.iss)}\n${repositoryKey}`);
  if (limited.ok) return;
  if (limited.startsRun) {
    await deps.store.audit.append(
      deniedEvent(tenant, claims, deps.requestId, {
        reason: 'rate_limited',
        retry_after_seconds: limited.retryAfterSeconds,
      }),
      at,
    );
  }
  throw new BrokerError(
    'rate_limited',
    `too many exchanges for ${claims.repository}; retry in ${limited.retryAfterSeconds} s`,
    {
      headers: { 'Retry-After': String(limited.retryAfterSeconds) },
      extensions: { retry_after_seconds: limited.retryAfterSeconds },
    },
  );
}

/**
 * The permissions the request names (undefined: all the policy allows), or every entry that grants nothing: why,
 * without the entry (for the audit event), and the message that quotes it with the id it probably stands for.
 */
function requestedPermissions(
  { permissions: values, permissionsField = 'permissions' }: ExchangeRequest,
  tenant: Tenant,
):
  | { ok: true; permissions: Permission[] | undefined }
  | { ok: false; problems: { field: string; why: string; message: string }[] } {
  if (values === undefined || values.length === 0) return { ok: true, permissions: undefined };
  const expanded = expandPermissions(
    values,
    enabledPermissions(tenant.disabledCategories),
    permissionsField === 'scope' ? 'scope' : 'list',
  );
  if (expanded.ok) return expanded;
  const problems = expanded.problems.map(({ index, reason, message }) => ({
    field: permissionsField === 'scope' ? 'scope' : `permissions[${index}]`,
    why: reason,
    message,
  }));
  return { ok: false, problems };
}

export async function exchangeToken(request: ExchangeRequest, deps: ExchangeDeps): Promise<ExchangeResult> {
  const { store, now } = deps;
  const verified = await verifyOidcToken(request.oidcToken, {
    issuers: deps.issuerKeys,
    now,
    leewaySeconds: CLOCK_SKEW_SECONDS,
  });
  if (!verified.ok) {
    // The reason may quote a claim of the untrusted token, where anything can stand, a key included.
    deps.log.info('exchange refused', { reason: withoutSecrets(verified.reason) });
    throw new BrokerError(verified.code, verified.reason, retryAfter(verified.retryAfterSeconds));
  }
  const claims = verified.claims;
  const tenant = await resolveTenant(claims, request.tenant, deps, now());

  const repositoryKey = claims.repository.toLowerCase();
  await takeRateLimit(tenant, claims, deps, now(), repositoryKey);

  const requested = requestedPermissions(request, tenant);
  if (!requested.ok) {
    // A verified workflow was refused: its tenant's admins see it, as they see every other refusal. The entry
    // itself is left out of the event: it is whatever the caller typed, and could be anything. Each field and
    // reason is recorded once: a scope of 2,000 unknown entries is one field, not a row of 2,000.
    const errors = new Map(
      requested.problems.map(({ field, why }) => [`${field}\n${why}`, { field, message: why }]),
    );
    await store.audit.append(
      deniedEvent(tenant, claims, deps.requestId, {
        reason: 'invalid_request',
        errors: [...errors.values()],
      }),
      now(),
    );
    throw BrokerError.fields(
      'invalid_request',
      requested.problems.map(({ field, message }) => ({ field, message })),
    );
  }
  const permissions = requested.permissions;
  // Read before the exchange is recorded, so that a key the database cannot give fails it then. Once it is
  // recorded, the token is signed with the key that signs by then, or with this one if that cannot be read.
  const signingKey = await deps.accessTokens.signingKey();
  const { decision, jti } = await decide(request, { claims, tenant, permissions, repositoryKey }, deps);
  const policy = decision.policy;

  const minted = await deps.accessTokens.mint({
    signingKey,
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
