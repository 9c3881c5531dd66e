// The audit events of an exchange: what a verified workflow did, and why it was refused.
import type { AuditEventInput, Tenant } from '../store/store.js';
import type { VerifiedClaims } from './oidc-verify.js';

/** The caller's own trust-relevant claims: safe to echo in a denial, never another policy's values. */
export function callerClaims(c: VerifiedClaims) {
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

/**
 * `requestId`: the id of the exchange's answer (its `X-Request-Id`, its problem's `request_id`, its log lines), which
 * the action prints when it fails: what a workflow's owner hands the tenant's admins or the operator to find it by.
 */
export function auditEvent(
  tenant: Tenant,
  c: VerifiedClaims,
  requestId: string,
  fields: Partial<AuditEventInput>,
): AuditEventInput {
  return {
    tenantId: tenant.id,
    type: 'token.exchanged',
    outcome: 'success',
    actor: ACTOR(c),
    ...fields,
    details: {
      // The issuer decides which policies can match: one written for another (a GitHub Enterprise Server) is none.
      issuer: c.iss,
      repository: c.repository,
      run_id: c.run_id ?? null,
      run_attempt: c.run_attempt ?? null,
      ref: c.ref,
      event_name: c.event_name ?? null,
      oidc_jti: c.jti,
      request_id: requestId,
      ...fields.details,
    },
  };
}

/** The audit event of a verified workflow's refused exchange. */
export function deniedEvent(
  tenant: Tenant,
  c: VerifiedClaims,
  requestId: string,
  details: Record<string, unknown>,
  fields: Partial<AuditEventInput> = {},
): AuditEventInput {
  return auditEvent(tenant, c, requestId, {
    ...fields,
    type: 'token.exchange_denied',
    outcome: 'denied',
    details,
  });
}
