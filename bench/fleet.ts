// The synthetic tenant of the benchmark: 200 owners, one repository per trust policy, a realistic mix of pins.
import type { Permission } from '../broker/core/permissions.js';
import type { PolicyInput } from '../broker/core/policy-types.js';
import type { ClaimOverrides } from '../test/support/local-issuer.js';

export const OWNERS = 200;

/** How a policy narrows its repository, in the proportions real tenants tend to have. */
export type PinKind = 'branch' | 'workflow' | 'environment' | 'workflow-any-ref';

const PIN_BY_DIGIT: readonly PinKind[] = [
  'branch',
  'branch',
  'branch',
  'branch',
  'workflow',
  'workflow',
  'workflow',
  'environment',
  'environment',
  'workflow-any-ref',
];

export interface FleetEntry {
  kind: PinKind;
  policy: PolicyInput;
  /** Claims a workflow of that repository presents; the policy matches them and no other policy does. */
  token: ClaimOverrides;
}

const MAIN = 'refs/heads/main';
const RELEASE_TAG = 'refs/tags/v1.4.2';

/** Policy `k` of a fleet: owner `k mod 200`, repository `k div 200` of that owner, so every owner grows evenly. */
export function fleetEntry(k: number): FleetEntry {
  const ownerIndex = k % OWNERS;
  const owner = `owner-${ownerIndex}`;
  const repository = `${owner}/repo-${Math.floor(k / OWNERS)}`;
  const kind = PIN_BY_DIGIT[k % PIN_BY_DIGIT.length]!;
  const workflows = `${repository}/.github/workflows`;

  let claims: PolicyInput['claims'];
  let permissions: Permission[];
  let ref = MAIN;
  let workflowRef = `${workflows}/ci.yml@${MAIN}`;
  let environment: string | undefined;
  switch (kind) {
    case 'branch':
      claims = { repository, ref: MAIN };
      permissions = ['harden-runner:read'];
      break;
    case 'workflow':
      workflowRef = `${workflows}/deploy.yml@${MAIN}`;
      claims = { repository, job_workflow_ref: workflowRef };
      permissions = ['harden-runner:read', 'orchestrate-security:write'];
      break;
    case 'environment':
      environment = 'production';
      claims = { repository, ref: MAIN, environment };
      permissions = ['secure-registry:read', 'secure-registry:write'];
      break;
    case 'workflow-any-ref':
      ref = RELEASE_TAG;
      workflowRef = `${workflows}/release.yml@${RELEASE_TAG}`;
      claims = { repository_owner: owner, repository, job_workflow_ref: `${workflows}/release.yml` };
      permissions = ['oss-package-security:read'];
      break;
  }

  return {
    kind,
    policy: {
      name: `${owner}-repo-${Math.floor(k / OWNERS)}`,
      description: `${kind} pin`,
      claims,
      permissions,
    },
    token: {
      repository,
      repository_owner: owner,
      repository_owner_id: String(100_000 + ownerIndex),
      repository_id: String(10_000_000 + k),
      ref,
      ref_type: ref === MAIN ? 'branch' : 'tag',
      job_workflow_ref: workflowRef,
      workflow_ref: workflowRef,
      environment,
      event_name: 'push',
      sub: environment ? `repo:${repository}:environment:${environment}` : `repo:${repository}:ref:${ref}`,
    },
  };
}
