// The admin's "why was my workflow denied?" tool: a token's or typed-in claims against every policy, changing nothing.
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Tenant } from '../store/store.js';
import type { IssuerKeys } from './issuer-keys.js';
import { withoutSecrets } from './keys.js';
import {
  CLOCK_SKEW_SECONDS,
  givenClaimsProblem,
  type VerifyErrorCode,
  verifyOidcToken,
} from './oidc-verify.js';
import { enabledPermissions, expandPermissions, type Permission } from './permissions.js';
import { type Explanation, policyExplainer } from './policy-evaluate.js';
import type { TrustPolicy } from './policy-types.js';

export interface DryRunDeps {
  /**
   * Every policy of the tenant, a page at a time (by name): on SQLite each read holds the event loop, and a tenant
   * may have 100,000 policies.
   */
  policyPages: (tenantId: string) => AsyncIterable<readonly TrustPolicy[]>;
  wasExchanged: (issuer: string, jti: string) => Promise<boolean>;
  issuerKeys: Pick<IssuerKeys, 'isTrusted' | 'getKey'>;
  now: () => number;
  defaultSessionSeconds: number;
  /** The `iss` assumed when typed-in claims leave it out. */
  defaultIssuer: string;
  /** The issuers the broker trusts, named when the assumed one is not among them. */
  trustedIssuers: readonly string[];
}

export interface DryRunRequest {
  /** Exactly one of `claims` (typed in, any JSON values) and `oidcToken` (verified, never consumed). */
  claims?: Record<string, unknown>;
  oidcToken?: string;
  permissions?: readonly string[];
  policy?: string;
  durationSeconds?: number;
}

/** The claims that decide the outcome: matching fields, the issuer, the audience and the event. */
export const TRUST_RELEVANT_CLAIMS = [
  'iss',
  'aud',
  'repository_owner',
  'repository_owner_id',
  'repository',
  'repository_id',
  'job_workflow_ref',
  'ref',
  'environment',
  'event_name',
] as const;

export interface DryRun {
  ok: true;
  /** The trust-relevant claims the policies were evaluated against, as given. */
  claims: Record<string, unknown>;
  /** `matches` is null when typed-in claims leave `aud` out. */
  audience: { expected: string; matches: boolean | null };
  explanation: Explanation;
  /**
   * Why the exchange would refuse what the policies allow, or before looking at them: no token it accepts could
   * carry the typed-in claims (`detail` says why, in its words), the token's audience is not this tenant's, or
   * the token was already exchanged. Null when the policies' decision stands.
   */
  refusal:
    | { code: 'invalid_token'; detail: string }
    | { code: 'audience_mismatch' | 'token_replayed' }
    | null;
  /** Things the admin should know that the per-policy results do not say. */
  warnings: string[];
}

export type DryRunResult =
  | DryRun
  | { ok: false; reason: 'token'; code: VerifyErrorCode; detail: string; retryAfterSeconds?: number }
  | { ok: false; reason: 'permission'; errors: { field: string; message: string }[] };

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

function trustRelevant(claims: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of TRUST_RELEVANT_CLAIMS) {
    if (Object.hasOwn(claims, name) && claims[name] !== undefined) out[name] = claims[name];
  }
  return out;
}

function claimWarnings(claims: Record<string, unknown>, tenant: Tenant): string[] {
  const expected = tenant.audience;
  const warnings: string[] = [];
  for (const [name, value] of Object.entries(claims)) {
    if (typeof value !== 'string') {
      warnings.push(
        `claims.${name} is ${kindOf(value)}: GitHub puts every claim in the token as a string; a value of another type never matches, and the exchange refuses a token carrying one`,
      );
    }
  }
  if (typeof claims.aud === 'string' && claims.aud !== expected) {
    warnings.push(
      `aud is "${claims.aud}", but tenant ${tenant.name} expects "${expected}": the exchange would not evaluate this ` +
        `tenant's policies for such a token; set the action's audience input to "${expected}"`,
    );
  }
  return warnings;
}

function requestedPermissions(
  values: readonly string[],
  tenant: Tenant,
): { ok: true; permissions: Permission[] } | { ok: false; errors: { field: string; message: string }[] } {
  const expanded = expandPermissions(values, enabledPermissions(tenant.disabledCategories));
  if (expanded.ok) return expanded;
  const errors = expanded.problems.map(({ index, message }) => ({ field: `permissions[${index}]`, message }));
  return { ok: false, errors };
}

/** Evaluates like the exchange would, but over every policy of the tenant, and consumes no token. */
export async function dryRunPolicies(
  tenant: Tenant,
  request: DryRunRequest,
  deps: DryRunDeps,
): Promise<DryRunResult> {
  const requested = requestedPermissions(request.permissions ?? [], tenant);
  if (!requested.ok) return { ok: false, reason: 'permission', errors: requested.errors };

  let claims: Record<string, unknown>;
  let used: { iss: string; jti: string } | undefined;
  // Why the exchange would refuse any token carrying the typed-in claims; a verified token's have passed.
  let tokenProblem: string | null = null;
  if (request.oidcToken !== undefined) {
    // No jti is recorded: the same token can still be exchanged, or evaluated again.
    const verified = await verifyOidcToken(request.oidcToken, {
      issuers: deps.issuerKeys,
      now: deps.now,
      leewaySeconds: CLOCK_SKEW_SECONDS,
    });
    if (!verified.ok) {
      const { code, reason: detail, retryAfterSeconds } = verified;
      return {
        ok: false,
        reason: 'token',
        code,
        detail,
        ...(retryAfterSeconds ? { retryAfterSeconds } : {}),
      };
    }
    claims = trustRelevant({ ...verified.claims });
    used = verified.claims;
  } else {
    // A claim given as null is absent, as a denial echoes it: pasted claims get the exchange's answer.
    const given = {
      iss: deps.defaultIssuer,
      ...Object.fromEntries(Object.entries(request.claims ?? {}).filter(([, value]) => value !== null)),
    };
    claims = trustRelevant(given);
    tokenProblem = givenClaimsProblem(given, deps.issuerKeys);
    // The default stands in for a claim the admin left out: on a broker that does not trust it (GHES only, say),
    // "not trusted" would read as a fault of the claims given.
    if (
      given.iss === deps.defaultIssuer &&
      request.claims?.iss == null &&
      !deps.issuerKeys.isTrusted(given.iss)
    ) {
      tokenProblem =
        `no iss was given, so GitHub.com's '${deps.defaultIssuer}' was assumed, and it is not trusted here: ` +
        `give the iss of the job's token (trusted: ${deps.trustedIssuers.map((i) => `'${i}'`).join(', ')})`;
    }
  }

  const explainer = policyExplainer(
    claims,
    { permissions: requested.permissions, policy: request.policy },
    { defaultSessionSeconds: deps.defaultSessionSeconds, requestedDurationSeconds: request.durationSeconds },
  );
  // A page at a time, the event loop free between them, so that the exchanges of every tenant go on meanwhile.
  // A policy renamed while the pages are read, to a name still to come, is read twice: it is listed once.
  const seen = new Set<string>();
  for await (const page of deps.policyPages(tenant.id)) {
    explainer.add(page.filter((policy) => !seen.has(policy.id) && seen.add(policy.id)));
    await nextTurn();
  }
  const explanation = explainer.finish();
  const warnings = claimWarnings(claims, tenant);
  if (request.policy && !explanation.policies.some((p) => p.considered)) {
    warnings.push(
      `no policy of this tenant is named "${withoutSecrets(request.policy)}", so nothing can match`,
    );
  }
  const aud = claims.aud;
  const audienceMatches = aud === undefined ? null : aud === tenant.audience;
  // In the exchange's order: the token's claims, its audience, then (once a policy grants it) whether it is used up.
  let refusal: DryRun['refusal'] = null;
  if (tokenProblem !== null) refusal = { code: 'invalid_token', detail: tokenProblem };
  else if (audienceMatches === false) refusal = { code: 'audience_mismatch' };
  else if (explanation.decision.allow && used && (await deps.wasExchanged(used.iss, used.jti))) {
    refusal = { code: 'token_replayed' };
    warnings.push(
      'this token was already exchanged, and each OIDC token is exchanged once: the policies would allow a new one',
    );
  }
  return {
    ok: true,
    claims,
    audience: { expected: tenant.audience, matches: audienceMatches },
    explanation,
    refusal,
    warnings,
  };
}
