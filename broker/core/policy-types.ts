// The trust policy record (DESIGN §4) as the core, the store and the HTTP layer share it.
import type { Permission } from './permissions.js';

/** Claim conditions; an absent field is a wildcard. */
export interface PolicyClaims {
  repository_owner?: string;
  repository?: string;
  job_workflow_ref?: string;
  ref?: string;
  environment?: string;
  repository_owner_id?: string;
  repository_id?: string;
}

export const POLICY_CLAIM_FIELDS = [
  'repository_owner',
  'repository',
  'job_workflow_ref',
  'ref',
  'environment',
  'repository_owner_id',
  'repository_id',
] as const satisfies readonly (keyof PolicyClaims)[];

/** No token from an exchange lives longer than this, whatever a policy or the server default says (DESIGN §4). */
export const MAX_SESSION_SECONDS = 3600;

/** A full commit sha as GitHub writes it after `@` in a job_workflow_ref pinned by commit. */
export const COMMIT_SHA = /^[0-9a-f]{40}$/;

export type PolicyClaimField = (typeof POLICY_CLAIM_FIELDS)[number];

/** What an admin submits (after shortcut expansion of permissions). */
export interface PolicyInput {
  name: string;
  description?: string | null;
  issuer?: string;
  claims: PolicyClaims;
  max_session_duration_seconds?: number;
  permissions: Permission[];
  allow_pull_request_target?: boolean;
}

/** A policy's content with every default applied: what validation yields and what the store saves. */
export interface PolicyRecord {
  name: string;
  description: string | null;
  issuer: string;
  claims: PolicyClaims;
  max_session_duration_seconds: number;
  permissions: Permission[];
  allow_pull_request_target: boolean;
}

/** A stored policy. */
export interface TrustPolicy extends PolicyRecord {
  id: string;
  tenantId: string;
  createdAt: number;
  updatedAt: number;
}
