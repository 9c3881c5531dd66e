// Trust-policy matching and selection (DESIGN §4): which policy a token's claims may use, and what it grants.
import { missingFrom, type Permission, withImplied } from './permissions.js';
import { policiesNamed, policyNameKey } from './policy-names.js';
import {
  COMMIT_SHA,
  MAX_SESSION_SECONDS,
  POLICY_CLAIM_FIELDS,
  type PolicyClaimField,
  type TrustPolicy,
} from './policy-types.js';

/**
 * A token's claims: verified by the exchange, or typed in by an admin — so nothing here is trusted to be a string.
 * Typed as `object` so that an interface such as the verifier's claims type is accepted without a cast.
 */
export type ClaimsRecord = object;

export interface Mismatch {
  /** `issuer`, `event_name` or a claim field name such as `repository`. */
  field: string;
  /** The policy's value (as the admin wrote it), or a description of what was expected. */
  expected: string;
  /** The token's value; null when the claim is absent or not a string. */
  actual: string | null;
}

export interface MatchResult {
  matched: boolean;
  mismatches: Mismatch[];
}

export interface EvaluationRequest {
  /** Requested permissions; absent or empty means "the whole allowlist". */
  permissions?: readonly Permission[];
  /** A policy name (case-insensitive); absent or empty means "select the most specific". */
  policy?: string;
}

export interface EvaluationLimits {
  /** Lifetime used when a policy's max_session_duration_seconds is 0. */
  defaultSessionSeconds: number;
  requestedDurationSeconds?: number;
}

/** How one policy fared against the token and the request — for the audit log and the admin tool only. */
export interface PolicyReport {
  id: string;
  name: string;
  matched: boolean;
  mismatches: Mismatch[];
  /** Whether the allowlist covers the requested permissions (write ⇒ read), whether or not the claims matched. */
  coversRequest: boolean;
  /** Requested permissions the allowlist does not cover. */
  missing: Permission[];
  /** Number of non-empty claim fields; the most specific candidate wins. */
  specificity: number;
}

/** Never sent to the caller: it describes policies, not just the caller's own request. */
export interface DenyAudit {
  requestedPolicy: string | null;
  /** The policies that were considered (only the named one, when a name was given). */
  policies: PolicyReport[];
}

export interface Allow {
  allow: true;
  policy: TrustPolicy;
  permissions: Permission[];
  durationSeconds: number;
}

/** Top-level fields may be told to the caller; `audit` may not. */
export type Deny =
  | { allow: false; reason: 'no_matching_policy'; audit: DenyAudit }
  | {
      allow: false;
      reason: 'permission_not_allowed';
      /** Requested permissions to drop so that some policy matching the caller could grant the rest. */
      notAllowed: Permission[];
      audit: DenyAudit;
    }
  | { allow: false; reason: 'ambiguous_policy'; tiedPolicies: string[]; audit: DenyAudit };

export type Decision = Allow | Deny;
export type DenyReason = Deny['reason'];

export interface PolicyExplanation extends PolicyReport {
  /** False when the request named another policy. */
  considered: boolean;
  selected: boolean;
}

export interface Explanation {
  policies: PolicyExplanation[];
  decision: Decision;
}

const PULL_REQUEST_TARGET = 'pull_request_target';
const NOT_PULL_REQUEST_TARGET = 'any event except pull_request_target (the policy does not allow it)';
const INVALID_POLICY_VALUE = '(invalid policy value: not a string)';

const UPPER = /[A-Z]/;
const UPPER_ALL = /[A-Z]/g;

/**
 * ASCII-only lower-casing. `toLowerCase()` would fold e.g. the Kelvin sign U+212A to `k`, letting a look-alike
 * name match; GitHub names are ASCII, so only A–Z fold.
 */
export function asciiLower(value: string): string {
  return UPPER.test(value)
    ? value.replace(UPPER_ALL, (c) => String.fromCharCode(c.charCodeAt(0) + 32))
    : value;
}

function foldsCase(field: PolicyClaimField): boolean {
  return field === 'repository_owner' || field === 'repository' || field === 'environment';
}

/** The token side, read once per evaluation so each policy comparison allocates nothing. */
interface TokenView {
  iss: string | null;
  eventName: unknown;
  raw: Record<PolicyClaimField, string | null>;
  folded: Record<PolicyClaimField, string | null>;
  /** job_workflow_ref up to the `@` its ref starts at: the workflow file regardless of ref. */
  workflowFile: string | null;
}

// Own properties only, so a polluted prototype cannot supply a claim.
function own(claims: ClaimsRecord, key: string): unknown {
  return Object.hasOwn(claims, key) ? (claims as Record<string, unknown>)[key] : undefined;
}

function stringClaim(claims: ClaimsRecord, key: string): string | null {
  const value = own(claims, key);
  return typeof value === 'string' ? value : null;
}

/**
 * Where the ref starts in a job_workflow_ref: at the first `@` followed by `refs/…` or by a full commit sha and
 * nothing else. A workflow file's name may itself hold `@` (git allows it) but never `/`, so no `@` inside the
 * name qualifies, and `deploy.yml@evil.yml@refs/heads/main` is the file `deploy.yml@evil.yml`.
 */
function refSeparator(jwr: string): number {
  for (let at = jwr.indexOf('@'); at >= 0; at = jwr.indexOf('@', at + 1)) {
    const ref = jwr.slice(at + 1);
    if (ref.startsWith('refs/') || COMMIT_SHA.test(ref)) return at;
  }
  return -1;
}

function viewOf(claims: ClaimsRecord): TokenView {
  const raw = {} as Record<PolicyClaimField, string | null>;
  const folded = {} as Record<PolicyClaimField, string | null>;
  for (const field of POLICY_CLAIM_FIELDS) {
    const value = stringClaim(claims, field);
    raw[field] = value;
    folded[field] = value !== null && foldsCase(field) ? asciiLower(value) : value;
  }
  const jwr = raw.job_workflow_ref;
  const at = jwr === null ? -1 : refSeparator(jwr);
  return {
    iss: stringClaim(claims, 'iss'),
    eventName: own(claims, 'event_name'),
    raw,
    folded,
    workflowFile: jwr === null || at < 0 ? jwr : jwr.slice(0, at),
  };
}

// Policy values are compared on the fly rather than cached: lower-casing allocates only for upper-case values,
// and a cache keyed by the policy object would go stale if a store ever updated a policy in place.
function claimMatches(field: PolicyClaimField, expected: string, token: TokenView): boolean {
  const actual = token.raw[field];
  if (actual === null) return false;
  if (foldsCase(field)) return asciiLower(expected) === token.folded[field];
  if (field === 'job_workflow_ref' && !expected.includes('@')) return expected === token.workflowFile;
  return expected === actual;
}

/** Records a mismatch; returns whether checking should go on (only when the caller wants every mismatch). */
function note(out: Mismatch[] | null, field: string, expected: string, actual: string | null): boolean {
  out?.push({ field, expected, actual });
  return out !== null;
}

/** The one implementation of §4 matching; with `out` null it stops at the first mismatch. */
function matches(policy: TrustPolicy, token: TokenView, out: Mismatch[] | null): boolean {
  let matched = true;
  if (typeof policy.issuer !== 'string' || policy.issuer === '' || policy.issuer !== token.iss) {
    matched = false;
    if (!note(out, 'issuer', String(policy.issuer), token.iss)) return false;
  }
  for (const field of POLICY_CLAIM_FIELDS) {
    const expected: unknown = policy.claims?.[field];
    if (expected === undefined || expected === null || expected === '') continue;
    if (typeof expected === 'string' && claimMatches(field, expected, token)) continue;
    matched = false;
    const shown = typeof expected === 'string' ? expected : INVALID_POLICY_VALUE;
    if (!note(out, field, shown, token.raw[field])) return false;
  }
  // An absent event_name is not pull_request_target; a present non-string one cannot be ruled out, so it fails.
  const event = token.eventName;
  if (policy.allow_pull_request_target !== true && event !== undefined) {
    if (typeof event !== 'string' || asciiLower(event) === PULL_REQUEST_TARGET) {
      matched = false;
      note(out, 'event_name', NOT_PULL_REQUEST_TARGET, typeof event === 'string' ? event : null);
    }
  }
  return matched;
}

/** Whether `policy` matches the claims, with every mismatch (for the admin tool and the audit log). */
export function matchPolicy(policy: TrustPolicy, claims: ClaimsRecord): MatchResult {
  const mismatches: Mismatch[] = [];
  const matched = matches(policy, viewOf(claims), mismatches);
  return { matched, mismatches };
}

function specificityOf(policy: TrustPolicy): number {
  let n = 0;
  for (const field of POLICY_CLAIM_FIELDS) {
    const value: unknown = policy.claims?.[field];
    if (typeof value === 'string' && value !== '') n++;
  }
  return n;
}

/** A report plus the policy it is about; only the report ever leaves this module in a denial. */
interface Assessed {
  policy: TrustPolicy;
  report: PolicyReport;
}

function assess(
  policy: TrustPolicy,
  token: TokenView,
  requested: readonly Permission[],
  detailed: boolean,
): Assessed {
  const mismatches: Mismatch[] = [];
  const matched = matches(policy, token, detailed ? mismatches : null);
  // Coverage only matters for a matching policy, except to the admin tool, which shows it for every policy.
  const missing =
    requested.length > 0 && (matched || detailed) ? missingFrom(policy.permissions, requested) : [];
  const { id, name } = policy;
  const specificity = specificityOf(policy);
  return {
    policy,
    report: { id, name, matched, mismatches, coversRequest: missing.length === 0, missing, specificity },
  };
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function durationFor(policy: TrustPolicy, limits: EvaluationLimits): number {
  const max = policy.max_session_duration_seconds;
  const cap = Math.min(max > 0 ? max : limits.defaultSessionSeconds, MAX_SESSION_SECONDS);
  const requested = limits.requestedDurationSeconds;
  const seconds = Math.floor(requested !== undefined && requested < cap ? requested : cap);
  // Fails short, not long: a non-positive or NaN value (a configuration bug) yields a one-second token.
  return Number.isNaN(seconds) ? 1 : Math.max(seconds, 1);
}

type Outcome =
  | { allow: true; chosen: Assessed }
  | { allow: false; reason: 'no_matching_policy' }
  | { allow: false; reason: 'permission_not_allowed'; notAllowed: Permission[] }
  | { allow: false; reason: 'ambiguous_policy'; tiedPolicies: string[] };

/** §4 selection over the considered policies. */
function select(considered: readonly Assessed[]): Outcome {
  const matching = considered.filter((a) => a.report.matched);
  if (matching.length === 0) return { allow: false, reason: 'no_matching_policy' };
  const candidates = matching.filter((a) => a.report.coversRequest);
  if (candidates.length === 0) {
    // Tell the caller the fewest requested permissions whose removal leaves a request some policy matching its
    // own token grants: about its request only, never another policy's claim values.
    // Fewest missing, then most specific, then first by name: the same answer whatever order the policies
    // come in (the exchange gets them in storage order, the dry run by name).
    const closest = matching.reduce((best, a) => {
      const [r, b] = [a.report, best.report];
      if (r.missing.length !== b.missing.length) return r.missing.length < b.missing.length ? a : best;
      if (r.specificity !== b.specificity) return r.specificity > b.specificity ? a : best;
      return byCodeUnits(a.policy.name, best.policy.name) < 0 ? a : best;
    });
    return { allow: false, reason: 'permission_not_allowed', notAllowed: closest.report.missing };
  }
  let top = 0;
  for (const a of candidates) top = Math.max(top, a.report.specificity);
  const tied = candidates.filter((a) => a.report.specificity === top);
  if (tied.length > 1) {
    const tiedPolicies = tied.map((a) => a.policy.name).sort(byCodeUnits);
    return { allow: false, reason: 'ambiguous_policy', tiedPolicies };
  }
  return { allow: true, chosen: tied[0]! };
}

function requestedOf(request: EvaluationRequest): Permission[] {
  return [...new Set(request.permissions ?? [])];
}

/** What an evaluation compares: the token's view of the claims, the permissions asked for, the policy named. */
function askedOf(claims: ClaimsRecord, request: EvaluationRequest) {
  return {
    token: viewOf(claims),
    requested: requestedOf(request),
    requestedPolicy: request.policy ? request.policy : null,
  };
}

/** §4 selection over the considered policies, and the decision it comes to. */
function conclude(
  considered: readonly Assessed[],
  token: TokenView,
  requested: readonly Permission[],
  requestedPolicy: string | null,
  limits: EvaluationLimits,
  detailed: boolean,
): Decision {
  const outcome = select(considered);
  if (outcome.allow) {
    const { policy } = outcome.chosen;
    // Each write with the read it implies, as the token carries them.
    const permissions = withImplied(requested.length > 0 ? requested : policy.permissions);
    return { allow: true, policy, permissions, durationSeconds: durationFor(policy, limits) };
  }
  // A denial is rare and audited with every mismatch, so the considered policies are re-checked in full.
  const full = detailed ? considered : considered.map((a) => assess(a.policy, token, requested, true));
  const audit: DenyAudit = { requestedPolicy, policies: full.map((a) => a.report) };
  return { ...outcome, audit };
}

/** The exchange's decision for a verified token's claims (DESIGN §4 selection, grant and lifetime). */
export function evaluatePolicies(
  policies: readonly TrustPolicy[],
  claims: ClaimsRecord,
  request: EvaluationRequest,
  limits: EvaluationLimits,
): Decision {
  const { token, requested, requestedPolicy } = askedOf(claims, request);
  const named = requestedPolicy === null ? policies : policiesNamed(policies, requestedPolicy);
  const considered = named.map((p) => assess(p, token, requested, false));
  return conclude(considered, token, requested, requestedPolicy, limits, false);
}

/**
 * The admin "evaluate" tool, fed the policies a part at a time (a large tenant's, read page by page, so that
 * neither the reading nor the assessing holds the event loop for long): every policy's result, in the order they
 * were added, and the decision the exchange would make over all of them.
 */
export interface PolicyExplainer {
  add(policies: readonly TrustPolicy[]): void;
  finish(): Explanation;
}

export function policyExplainer(
  claims: ClaimsRecord,
  request: EvaluationRequest,
  limits: EvaluationLimits,
): PolicyExplainer {
  const { token, requested, requestedPolicy } = askedOf(claims, request);
  const key = requestedPolicy === null ? null : policyNameKey(requestedPolicy);
  const assessed: Assessed[] = [];
  // Each policy's entry is made as it is added, a page's worth at a time, and only the few the decision concerns
  // are marked at the end: building 100,000 of them at once held the event loop for a quarter of a second.
  const explained: PolicyExplanation[] = [];
  /** Where those named as requested are: policiesNamed of all the policies is policiesNamed of these. */
  const namesakes: number[] = [];
  return {
    add(policies) {
      for (const policy of policies) {
        const a = assess(policy, token, requested, true);
        if (key !== null && policyNameKey(policy.name) === key) namesakes.push(assessed.length);
        assessed.push(a);
        explained.push({ ...a.report, considered: key === null, selected: false });
      }
    },
    finish() {
      let considered = assessed;
      if (requestedPolicy !== null) {
        const named = new Set(
          policiesNamed(
            namesakes.map((i) => assessed[i]!.policy),
            requestedPolicy,
          ),
        );
        const kept = namesakes.filter((i) => named.has(assessed[i]!.policy));
        for (const i of kept) explained[i]!.considered = true;
        considered = kept.map((i) => assessed[i]!);
      }
      const decision = conclude(considered, token, requested, requestedPolicy, limits, true);
      if (decision.allow) explained[assessed.findIndex((a) => a.policy === decision.policy)]!.selected = true;
      return { policies: explained, decision };
    },
  };
}

/** The admin "evaluate" tool over policies read at once: every policy's result, and the exchange's decision. */
export function explainPolicies(
  policies: readonly TrustPolicy[],
  claims: ClaimsRecord,
  request: EvaluationRequest,
  limits: EvaluationLimits,
): Explanation {
  const explainer = policyExplainer(claims, request, limits);
  explainer.add(policies);
  return explainer.finish();
}
