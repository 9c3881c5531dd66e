// The decision of an exchange: select the policy for the verified job, and commit the replay record with the
// audit event of the outcome while that policy is as it was read; decide again when it changed meanwhile.
import { randomUUID } from 'node:crypto';
import { BrokerError } from '../errors.js';
import { GrantingPolicyChanged, type Tenant } from '../store/store.js';
import type { ExchangeDeps, ExchangeRequest } from './exchange.js';
import { auditEvent, callerClaims, deniedEvent } from './exchange-audit.js';
import { withoutSecrets } from './keys.js';
import { CLOCK_SKEW_SECONDS, type VerifiedClaims } from './oidc-verify.js';
import type { Permission } from './permissions.js';
import { type Allow, asciiLower, type Deny, evaluatePolicies } from './policy-evaluate.js';
import { namesakesDetail, policyNameKey } from './policy-names.js';
import type { TrustPolicy } from './policy-types.js';

interface Granted {
  decision: Allow;
  /** The access token's jti, recorded in the exchange's audit event. */
  jti: string;
}

interface Job {
  claims: VerifiedClaims;
  tenant: Tenant;
  permissions: Permission[] | undefined;
  repositoryKey: string;
}

/** Decisions an exchange makes at most while the policies it read keep changing before it commits. */
const MAX_DECISIONS = 3;

/** The granting decision, committed; a refusal is audited and thrown. */
export async function decide(request: ExchangeRequest, job: Job, deps: ExchangeDeps): Promise<Granted> {
  for (let decisions = 1; ; decisions++) {
    try {
      return await decideAndRecord(request, job, deps);
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
}

/**
 * Selects the policy for the verified job and commits the replay record with the audit event of the outcome;
 * a refusal is audited and thrown. Commits only while the granting policy is as it was read (GrantingPolicyChanged
 * otherwise), so no token comes from a policy deleted or narrowed before the exchange committed.
 */
async function decideAndRecord(request: ExchangeRequest, job: Job, deps: ExchangeDeps): Promise<Granted> {
  const { store, now } = deps;
  const { claims, tenant, permissions } = job;
  const candidates = await store.policies.candidates(
    tenant.id,
    claims.iss,
    claims.repository_owner.toLowerCase(),
    job.repositoryKey,
  );
  const evaluate = (policies: TrustPolicy[]) =>
    evaluatePolicies(
      policies,
      claims,
      { permissions, policy: request.policy },
      {
        defaultSessionSeconds: deps.defaultSessionSeconds,
        requestedDurationSeconds: request.durationSeconds,
      },
    );
  const decision = evaluate(candidates);
  const at = now();
  if (!decision.allow) {
    // The policy a job names is the one considered, whatever it is filed under; one of another issuer, owner or
    // repository cannot match, so the lookup above leaves it out: it is added, which changes no refusal, for the
    // audit to say why it did not match.
    const named =
      request.policy === undefined ? [] : await namedElsewhere(request.policy, candidates, tenant.id, store);
    const audited = named.length > 0 ? evaluate([...candidates, ...named]) : decision;
    const considered = (audited.allow ? decision : audited).audit.policies;
    await store.audit.append(
      deniedEvent(tenant, claims, deps.requestId, {
        reason: decision.reason,
        requested_permissions: permissions ?? null,
        // A key pasted as the policy name is recorded as its hint, as a path holding one is.
        requested_policy: request.policy === undefined ? null : withoutSecrets(request.policy),
        policies: considered.map((p) => ({
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
      fresh: auditEvent(tenant, claims, deps.requestId, {
        target,
        details: { token_jti: jti, permissions: decision.permissions, expires_in: decision.durationSeconds },
      }),
      replayed: deniedEvent(tenant, claims, deps.requestId, { reason: 'token_replayed' }, { target }),
    },
    at,
    { id: policy.id, updatedAt: policy.updatedAt },
  );
  if (!fresh)
    throw new BrokerError('token_replayed', 'this OIDC token was already exchanged; request a new one');
  return { decision, jti };
}

/** The policies of this name that the candidate lookup did not return. */
async function namedElsewhere(
  name: string,
  candidates: readonly TrustPolicy[],
  tenantId: string,
  store: ExchangeDeps['store'],
): Promise<TrustPolicy[]> {
  const named = await store.policies.named(tenantId, policyNameKey(name));
  return named.filter((p) => !candidates.some((c) => c.id === p.id));
}

/**
 * The job's claims a policy most often names, for a refusal's detail: its ref, workflow and environment, and a
 * pull_request_target run, whose ref and workflow are its base branch's and so can look like a policy's own.
 */
function jobSummary(claims: VerifiedClaims): string {
  const parts = [
    claims.ref ? `ref ${claims.ref}` : 'no ref',
    `workflow ${claims.job_workflow_ref}`,
    claims.environment ? `environment ${claims.environment}` : 'no environment',
  ];
  if (claims.event_name !== undefined && asciiLower(claims.event_name) === 'pull_request_target') {
    parts.push(`event ${claims.event_name}, which only a policy with allow_pull_request_target matches`);
  }
  return parts.join(', ');
}

function denial(deny: Deny, claims: VerifiedClaims): BrokerError {
  const echoed = { claims: callerClaims(claims) };
  switch (deny.reason) {
    case 'no_matching_policy': {
      // The name asked for is echoed, a misspelling easier to see; whether a policy has that name is not told.
      const named = deny.audit.requestedPolicy;
      return new BrokerError(
        'no_matching_policy',
        `no trust policy ${named === null ? '' : `named "${named}" `}matches ${claims.repository} (${jobSummary(claims)})`,
        { extensions: echoed },
      );
    }
    case 'permission_not_allowed':
      return new BrokerError(
        'permission_not_allowed',
        `the matching trust policy does not allow ${deny.notAllowed.join(', ')}`,
        { extensions: { ...echoed, not_allowed: deny.notAllowed } },
      );
    case 'ambiguous_policy': {
      // Tied though a policy was named: namesakes an upgrade kept, none of them written as the request wrote it.
      const named = deny.audit.requestedPolicy;
      return new BrokerError(
        'ambiguous_policy',
        named === null
          ? `trust policies ${deny.tiedPolicies.join(', ')} match equally well; name one with "policy"`
          : namesakesDetail(named, deny.tiedPolicies),
        { extensions: { ...echoed, policies: deny.tiedPolicies } },
      );
    }
  }
}
