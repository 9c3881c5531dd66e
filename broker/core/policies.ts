// Creating, replacing and deleting trust policies (DESIGN §4): rules, shortcut expansion, no escalation, audit.
import { randomUUID } from 'node:crypto';
import { type AuditEventInput, type Precondition, PreconditionFailed, type Store } from '../store/store.js';
import { enabledPermissions, expandPermissions, missingFrom, type Permission } from './permissions.js';
import { policiesNamed, policyNameKey } from './policy-names.js';
import { type PolicyFieldError, type PolicyRulesContext, validatePolicy } from './policy-rules.js';
import type { PolicyClaims, PolicyRecord, TrustPolicy } from './policy-types.js';
import { changedBy, type Principal } from './principal.js';

export interface PolicyDeps {
  store: Store;
  now: () => number;
  rules: PolicyRulesContext;
  /** What a session cap of 0 stands for (BROKER_DEFAULT_SESSION_SECONDS). */
  defaultSessionSeconds: number;
}

/** A create or replace body once its JSON types are checked; every §4 rule is still to be applied. */
export interface PolicySubmission {
  name: string;
  description?: string | null;
  issuer?: string;
  claims: PolicyClaims;
  max_session_duration_seconds?: number;
  /** Permission ids and shortcuts, as the admin wrote them. */
  permissions: string[];
  allow_pull_request_target?: boolean;
}

export type PolicyRefusal =
  | { ok: false; reason: 'invalid'; errors: PolicyFieldError[] }
  | { ok: false; reason: 'escalation'; missing: Permission[] }
  /** `holder`: the policy that has the name (its own spelling), unless it was deleted since. */
  | { ok: false; reason: 'name_taken'; name: string; holder?: { id: string; name: string } }
  | { ok: false; reason: 'not_found' }
  /** The change was conditional (If-Match) and another writer changed the policy since: nothing was written. */
  | { ok: false; reason: 'precondition_failed' };

export type PolicyChange = { ok: true; policy: TrustPolicy; warnings: string[] } | PolicyRefusal;

type Checked =
  | { ok: true; record: PolicyRecord; warnings: string[] }
  | Extract<PolicyRefusal, { reason: 'invalid' | 'escalation' }>;

/** A policy's permission list as written, expanded; or each entry that is unknown or of a disabled category. */
function expandEntries(
  principal: Principal,
  values: readonly string[],
): { ok: true; permissions: Permission[] } | { ok: false; errors: PolicyFieldError[] } {
  const expanded = expandPermissions(values, enabledPermissions(principal.tenant.disabledCategories));
  if (expanded.ok) return expanded;
  const errors = expanded.problems.map(({ index, message }) => ({ field: `permissions[${index}]`, message }));
  return { ok: false, errors };
}

/** Each entry of a policy's permission list that is unknown or of a category the tenant disabled. */
export function permissionEntryErrors(principal: Principal, values: readonly string[]): PolicyFieldError[] {
  const expanded = expandEntries(principal, values);
  return expanded.ok ? [] : expanded.errors;
}

/** Applies every rule at once, so one answer names every field to fix; then refuses escalation. */
function check(principal: Principal, submission: PolicySubmission, rules: PolicyRulesContext): Checked {
  const expanded = expandEntries(principal, submission.permissions);
  // Every unknown or disabled entry is named, with the other broken rules.
  const badPermissions = expanded.ok ? [] : expanded.errors;
  // When an entry is bad the list goes on as written, only so that validatePolicy judges its emptiness.
  const permissions = expanded.ok ? expanded.permissions : (submission.permissions as Permission[]);
  const validation = validatePolicy({ ...submission, permissions }, rules);
  if (!validation.ok || badPermissions.length > 0) {
    const errors = [...(validation.ok ? [] : validation.errors), ...badPermissions];
    return { ok: false, reason: 'invalid', errors };
  }
  const missing = missingFrom(principal.permissions, permissions);
  if (missing.length > 0) return { ok: false, reason: 'escalation', missing };
  return { ok: true, record: validation.policy, warnings: validation.warnings };
}

/** The refusal of `name` as taken, naming the other policy of the tenant that has it under its own spelling. */
async function nameTaken(
  principal: Principal,
  name: string,
  id: string,
  deps: PolicyDeps,
): Promise<PolicyRefusal> {
  // The one filed under the name's key, which the unique index refused: looked up, never the tenant's whole list.
  const holder = (await deps.store.policies.named(principal.tenant.id, policyNameKey(name))).find(
    (p) => p.id !== id,
  );
  return {
    ok: false,
    reason: 'name_taken',
    name,
    ...(holder && { holder: { id: holder.id, name: holder.name } }),
  };
}

/**
 * The tenant's policies a requested name names, as policiesNamed gives them, by indexed lookups: a tenant with
 * 100,000 policies is not read whole for one of them (SQLite reads on the event loop, holding up every tenant's
 * requests meanwhile). Namesakes an upgrade kept are filed under their names lower-cased, the key of their day:
 * looked up under the name as asked, and under those of the namesakes the start found (`Straße`, filed under
 * `straße`, for `strasse`).
 */
export async function findPoliciesNamed(
  store: Store,
  tenantId: string,
  name: string,
): Promise<TrustPolicy[]> {
  const key = policyNameKey(name);
  const keptApart = (store.policyNamesakes ?? [])
    .filter((group) => group.tenantId === tenantId)
    .flatMap((group) => group.policies)
    .filter((policy) => policyNameKey(policy.name) === key)
    .map((policy) => policy.name.toLowerCase());
  const keys = [...new Set([key, name.toLowerCase(), ...keptApart])];
  const filed = await Promise.all(keys.map((key) => store.policies.named(tenantId, key)));
  return policiesNamed(filed.flat(), name);
}

/** What the audit log keeps of a policy: everything that decides who gets which token. */
function auditedValues(policy: PolicyRecord) {
  return {
    issuer: policy.issuer,
    claims: policy.claims,
    permissions: policy.permissions,
    max_session_duration_seconds: policy.max_session_duration_seconds,
    allow_pull_request_target: policy.allow_pull_request_target,
  };
}

function auditEvent(
  principal: Principal,
  type: string,
  id: string,
  name: string,
  details: Record<string, unknown>,
): AuditEventInput {
  return {
    tenantId: principal.tenant.id,
    type,
    outcome: 'success',
    ...changedBy(principal),
    target: { type: 'trust_policy', id, name },
    details,
  };
}

export async function createPolicy(
  principal: Principal,
  submission: PolicySubmission,
  deps: PolicyDeps,
): Promise<PolicyChange> {
  const checked = check(principal, submission, deps.rules);
  if (!checked.ok) return checked;
  const { record, warnings } = checked;
  const id = randomUUID();
  const details = { ...auditedValues(record), warnings };
  const created = await deps.store.policies.create(
    principal.tenant.id,
    id,
    record,
    deps.now(),
    auditEvent(principal, 'policy.created', id, record.name, details),
  );
  if (!created.ok) return nameTaken(principal, record.name, id, deps);
  return { ok: true, policy: created.value, warnings };
}

/** The outcome of a conditional change whose condition no longer held, as a refusal; other errors as they are. */
async function unlessChangedMeanwhile<T>(
  change: () => Promise<T>,
): Promise<T | Extract<PolicyRefusal, { reason: 'precondition_failed' }>> {
  try {
    return await change();
  } catch (error) {
    if (error instanceof PreconditionFailed) return { ok: false, reason: 'precondition_failed' };
    throw error;
  }
}

/**
 * Full replacement: fields left out take their defaults, as on create. With `precondition`, only while the policy
 * as stored still meets it (If-Match), checked within the replacement's own transaction.
 */
export async function replacePolicy(
  principal: Principal,
  id: string,
  submission: PolicySubmission,
  deps: PolicyDeps,
  precondition?: Precondition<TrustPolicy>,
): Promise<PolicyChange> {
  const checked = check(principal, submission, deps.rules);
  if (!checked.ok) return checked;
  const { record } = checked;
  let warnings = checked.warnings;
  const replaced = await unlessChangedMeanwhile(() =>
    deps.store.policies.replace(
      principal.tenant.id,
      id,
      record,
      deps.now(),
      (before) => {
        warnings = [...checked.warnings, ...broadenedByOmission(submission, before, record, deps)];
        return auditEvent(principal, 'policy.updated', id, record.name, {
          ...auditedValues(record),
          warnings,
          previous: { name: before.name, ...auditedValues(before) },
        });
      },
      precondition,
    ),
  );
  if (!replaced) return { ok: false, reason: 'not_found' };
  if ('reason' in replaced) return replaced;
  if (!replaced.ok) return nameTaken(principal, record.name, id, deps);
  return { ok: true, policy: replaced.value, warnings };
}

/**
 * What a replace makes broader only because its body left a field out, which then takes its default: a replace
 * sets every field, and a body written to change one field (the permissions, say) may leave out another.
 */
function broadenedByOmission(
  submission: PolicySubmission,
  before: PolicyRecord,
  after: PolicyRecord,
  { defaultSessionSeconds }: Pick<PolicyDeps, 'defaultSessionSeconds'>,
): string[] {
  const warnings: string[] = [];
  // An empty issuer stands for the default as a left-out one does (a client may send every field, some empty).
  const issuerUnset =
    submission.issuer === undefined ? 'left out' : submission.issuer === '' ? 'empty' : null;
  if (issuerUnset && after.issuer !== before.issuer) {
    warnings.push(
      `issuer: ${issuerUnset}, so this policy now trusts tokens of ${after.issuer}, the default, where it trusted ${before.issuer}; a replace sets every field: send issuer to keep it`,
    );
  }
  const cap = (policy: PolicyRecord) => policy.max_session_duration_seconds || defaultSessionSeconds;
  if (submission.max_session_duration_seconds === undefined && cap(after) > cap(before)) {
    warnings.push(
      `max_session_duration_seconds: left out, so tokens now last up to ${cap(after)} s, the broker's default, where they lasted up to ${cap(before)} s; a replace sets every field: send max_session_duration_seconds to keep it`,
    );
  }
  return warnings;
}

/** With `precondition`, only while the policy as stored still meets it (If-Match), as replacePolicy. */
export async function deletePolicy(
  principal: Principal,
  id: string,
  deps: PolicyDeps,
  precondition?: Precondition<TrustPolicy>,
): Promise<
  { ok: true; policy: TrustPolicy } | Extract<PolicyRefusal, { reason: 'not_found' | 'precondition_failed' }>
> {
  const deleted = await unlessChangedMeanwhile(() =>
    deps.store.policies.delete(
      principal.tenant.id,
      id,
      deps.now(),
      (before) => auditEvent(principal, 'policy.deleted', id, before.name, auditedValues(before)),
      precondition,
    ),
  );
  if (deleted && 'reason' in deleted) return deleted;
  return deleted ? { ok: true, policy: deleted } : { ok: false, reason: 'not_found' };
}
