// Request and response schemas of the trust-policy routes: validation and OpenAPI entries at once.
import { z } from '@hono/zod-openapi';
import { GITHUB_ISSUER } from '../config.js';
import { MAX_JSON_DEPTH } from '../core/jws-compact.js';
import { POLICY_CLAIM_FIELDS } from '../core/policy-types.js';
import { PermissionId, PermissionList, queryParameters, Timestamp } from './schemas.js';
import { Duration, nameCharacters, PolicyName, storedText } from './text.js';

const CLAIM_DOCS = {
  repository_owner: ['acme', 'The GitHub account that owns the repository; case-insensitive.'],
  repository: ['acme/infra', '`owner/name`; case-insensitive.'],
  job_workflow_ref: [
    'acme/infra/.github/workflows/deploy.yml@refs/heads/main',
    'The workflow file the job is defined in, with `@ref` (exact) or without (any ref).',
  ],
  ref: ['refs/heads/main', 'The full git ref the workflow runs on; exact.'],
  environment: ['production', 'The deployment environment the job declares; case-insensitive.'],
  repository_owner_id: [
    '131804563',
    "The owner's numeric id, a pin against renamed or re-registered accounts.",
  ],
  repository_id: ['632596897', "The repository's numeric id."],
} as const satisfies Record<(typeof POLICY_CLAIM_FIELDS)[number], readonly [string, string]>;

/** The claims a number may be: the ids, and an account or environment named in digits. */
const QUOTABLE_CLAIMS: readonly (typeof POLICY_CLAIM_FIELDS)[number][] = [
  'repository_owner',
  'environment',
  'repository_owner_id',
  'repository_id',
];

/**
 * An optional member of a policy body for which `null` means left out, as Go and Terraform clients send an unset
 * pointer: the document says nullable, and the handler sees it left out (its default, and the same warnings).
 */
function optionalOrNull<T extends z.ZodType>(schema: T) {
  return schema
    .nullable()
    .optional()
    .transform((value) => value ?? undefined);
}

/** The claim conditions as a policy shows them. */
function claimShape() {
  return Object.fromEntries(
    POLICY_CLAIM_FIELDS.map((field) => {
      const [example, description] = CLAIM_DOCS[field];
      return [field, z.string().openapi({ example, description }).optional()];
    }),
  ) as Record<(typeof POLICY_CLAIM_FIELDS)[number], z.ZodOptional<z.ZodString>>;
}

/** The claim conditions as a client writes them: a secret refused, `null` left out. */
function claimInputShape() {
  return Object.fromEntries(
    POLICY_CLAIM_FIELDS.map((field) => {
      const [example, description] = CLAIM_DOCS[field];
      const quotable = QUOTABLE_CLAIMS.includes(field);
      return [field, optionalOrNull(storedText(`claims.${field}`, { example, description, quotable }))];
    }),
  ) as Record<(typeof POLICY_CLAIM_FIELDS)[number], ReturnType<typeof optionalOrNull<z.ZodString>>>;
}

// Said of a claim name a policy does not take, such as `sub` (a cloud trust policy's habit) or a claim GitHub issues
// that no policy compares (`workflow_ref`, `ref_type`): which ones it can set instead.
const NOT_A_POLICY_CLAIM =
  `not a claim a policy can set; it can set only ${POLICY_CLAIM_FIELDS.slice(0, -1).join(', ')} and ` +
  `${POLICY_CLAIM_FIELDS.at(-1)} (sub is never compared, as a subject template changes its format: set the ` +
  'claims it is made of, such as repository, ref or environment)';

export const PolicyClaimsInput = z
  .strictObject(claimInputShape(), {
    error: (issue) => (issue.code === 'unrecognized_keys' ? NOT_A_POLICY_CLAIM : undefined),
  })
  .openapi('TrustPolicyClaims', {
    description:
      'Conditions on the OIDC token; every one that is set must equal the token claim, the others match anything. ' +
      'Set at least `repository_owner` or `repository`.',
  });

// The limits below are documentation only: the policy rules enforce them, with messages that name the rule and
// count characters as people do (a zod limit would replace those messages and count UTF-16 code units).
export const PolicyBody = z
  .strictObject({
    name: storedText('name', {
      quotable: true,
      minLength: 1,
      maxLength: 100,
      description: '1–100 characters, unique in the tenant (case-insensitive).',
      example: 'deploy-infra',
    }),
    description: optionalOrNull(
      storedText('description', {
        quotable: true,
        maxLength: 500,
        description: 'At most 500 characters.',
        example: 'Deploys acme/infra from main to production',
      }),
    ),
    issuer: optionalOrNull(
      storedText('issuer', {
        description: 'The token issuer; one of the issuers the broker trusts (`GET /v1/oidc/config`).',
        default: GITHUB_ISSUER,
      }),
    ),
    claims: PolicyClaimsInput,
    max_session_duration_seconds: optionalOrNull(
      // The rules judge whole numbers, with their own message; the type is documentation, nullable as the others.
      z.number().openapi({
        type: ['integer', 'null'],
        minimum: 0,
        maximum: 3600,
        default: 0,
        description: 'Longest token lifetime this policy grants; 0 uses the server default.',
      }),
    ),
    permissions: PermissionList.openapi({ minItems: 1 }),
    allow_pull_request_target: optionalOrNull(
      z.boolean().openapi({
        default: false,
        description: 'Whether `pull_request_target` runs may use the policy. Leave false unless you must.',
      }),
    ),
  })
  .openapi('TrustPolicyInput');

export const PolicyView = z
  .object({
    id: z.string(),
    name: z.string(),
    description: z.string().nullable(),
    issuer: z.string(),
    claims: z.object(claimShape()).openapi({ description: 'Only the conditions that are set.' }),
    max_session_duration_seconds: z.number().int(),
    permissions: z.array(PermissionId),
    allow_pull_request_target: z.boolean(),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi('TrustPolicy');

export const PolicyChanged = z
  .object({
    policy: PolicyView,
    warnings: z.array(z.string()).openapi({
      description:
        'Why the policy, though valid, may be broader than intended; empty when nothing stands out.',
    }),
  })
  .openapi('TrustPolicyChanged');

// Every claim GitHub puts in its tokens (those the verifier knows, and environment_node_id and issuer_scope, which
// its discovery document lists and no decision uses), so a decoded token can be pasted; a name outside it (and
// outside repo_property_*) is a typo.
const TOKEN_CLAIM_NAMES = [
  ...['iss', 'aud', 'sub', 'jti', 'exp', 'iat', 'nbf', 'repository', 'repository_id', 'repository_owner'],
  ...['repository_owner_id', 'ref', 'ref_type', 'ref_protected', 'job_workflow_ref', 'job_workflow_sha'],
  ...['environment', 'event_name', 'run_id', 'run_number', 'run_attempt', 'actor', 'actor_id', 'workflow'],
  ...['workflow_ref', 'workflow_sha', 'repository_visibility', 'runner_environment', 'sha', 'head_ref'],
  ...['base_ref', 'check_run_id', 'enterprise', 'enterprise_id', 'environment_node_id', 'issuer_scope'],
];

/** Levels of arrays and objects in a value, counted up to one past `limit`, without recursion. */
function nestingDepth(value: unknown, limit: number): number {
  let deepest = 0;
  const pending: [unknown, number][] = [[value, 0]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [item, depth] = next;
    if (typeof item !== 'object' || item === null) continue;
    if (depth + 1 > limit) return depth + 1;
    deepest = Math.max(deepest, depth + 1);
    for (const child of Object.values(item)) pending.push([child, depth + 1]);
  }
  return deepest;
}

// Any value a token's claims could hold: they are its first level of JSON, so a value has one level less. Deeper
// input is refused here, where it would otherwise be accepted and then fail to be echoed back.
const ClaimValue = z.unknown().refine((value) => nestingDepth(value, MAX_JSON_DEPTH - 1) < MAX_JSON_DEPTH, {
  message: `nests deeper than the ${MAX_JSON_DEPTH} levels a token's claims may`,
});

// A custom property an organization or enterprise includes in its OIDC tokens: `repo_property_<property name>`.
const REPO_PROPERTY_CLAIM = /^repo_property_\S+$/;

const TOKEN_CLAIM_SHAPE = Object.fromEntries(TOKEN_CLAIM_NAMES.map((name) => [name, ClaimValue.optional()]));

const TokenClaims = z
  .object(TOKEN_CLAIM_SHAPE)
  .catchall(ClaimValue)
  .superRefine((claims, ctx) => {
    const unknown = Object.keys(claims).filter(
      (name) => !Object.hasOwn(TOKEN_CLAIM_SHAPE, name) && !REPO_PROPERTY_CLAIM.test(name),
    );
    if (unknown.length > 0) ctx.addIssue({ code: 'unrecognized_keys', keys: unknown, input: claims });
  })
  .openapi('TokenClaims', {
    description:
      "A GitHub OIDC token's claims as JSON, as a decoded token holds them (with `repo_property_*`, the custom " +
      "properties an organization includes). Only the trust-relevant ones count (`iss`, default GitHub's; `aud`, " +
      '`repository_owner`, `repository`, their ids, `job_workflow_ref`, `ref`, `environment`, `event_name`); ' +
      'values are compared as given, so a value that is not a string never matches.',
    example: { repository: 'acme/infra', ref: 'refs/heads/main', event_name: 'push' },
    // OpenAPI 3.1 (JSON Schema) has patternProperties; the metadata type, written for 3.0, does not.
    ...{ patternProperties: { [REPO_PROPERTY_CLAIM.source]: {} } },
    additionalProperties: false,
  });

export const EvaluateBody = z
  .strictObject({
    claims: TokenClaims.optional(),
    oidc_token: z.string().min(1).optional().openapi({
      description: 'A GitHub OIDC token, verified but not used up: it can still be exchanged afterwards.',
    }),
    permissions: PermissionList.optional(),
    policy: PolicyName.optional().openapi({
      description: 'Consider only this policy, as the exchange would.',
    }),
    duration_seconds: Duration.optional(),
  })
  // The handler refuses neither and both; the document says so for clients that check first, and its example,
  // which the reference prefills, gives claims alone.
  .openapi('EvaluatePoliciesRequest', {
    description: 'Give exactly one of `claims` and `oidc_token`.',
    oneOf: [{ required: ['claims'] }, { required: ['oidc_token'] }],
    example: {
      claims: { repository: 'acme/infra', ref: 'refs/heads/main', event_name: 'push' },
      permissions: ['harden-runner:read'],
    },
  });

const Mismatch = z.object({
  field: z.string().openapi({ example: 'ref' }),
  expected: z.string().openapi({ example: 'refs/heads/main' }),
  actual: z.string().nullable().openapi({ example: 'refs/heads/feature' }),
});

const PolicyResult = z.object({
  id: z.string(),
  name: z.string(),
  matched: z.boolean(),
  mismatches: z.array(Mismatch),
  covers_request: z
    .boolean()
    .openapi({ description: 'Whether the allowlist covers the requested permissions.' }),
  missing_permissions: z.array(PermissionId),
  specificity: z
    .number()
    .int()
    .openapi({ description: 'How many claim conditions are set; the highest wins.' }),
  considered: z.boolean().openapi({ description: 'False when the request named another policy.' }),
  selected: z.boolean(),
});

export const EvaluateResult = z
  .object({
    claims: z
      .record(z.string(), z.unknown())
      .openapi({ description: 'The trust-relevant claims evaluated.' }),
    expected_audience: z.string(),
    audience_matches: z.boolean().nullable().openapi({
      description: "Whether `aud` is this tenant's audience; null when the claims have no `aud`.",
    }),
    policies: z.array(PolicyResult),
    decision: z.object({
      allowed: z.boolean(),
      reason: z
        .enum([
          'no_matching_policy',
          'permission_not_allowed',
          'ambiguous_policy',
          'invalid_token',
          'audience_mismatch',
          'token_replayed',
        ])
        .optional(),
      detail: z.string().optional().openapi({
        description:
          'For `invalid_token`: why the exchange refuses any token carrying the claims given, as its 401 says.',
      }),
      policy: z.string().optional(),
      permissions: z.array(PermissionId).optional(),
      duration_seconds: z.number().int().optional(),
      not_allowed: z.array(PermissionId).optional(),
      tied_policies: z.array(z.string()).optional(),
    }),
    warnings: z.array(z.string()),
  })
  .openapi('PolicyEvaluation');

export const ConfigQuery = queryParameters({
  policy: z
    .string()
    .min(1, { error: 'empty: name a trust policy, or leave the parameter out' })
    .max(100, { error: 'a trust policy name is at most 100 characters' })
    .check(nameCharacters)
    .optional()
    .openapi({ description: 'Tailor the snippet to this policy (case-insensitive).' }),
});

export const OidcConfig = z
  .object({
    tenant: z.string(),
    audience: z.string().openapi({ description: 'The `aud` the OIDC token must carry.' }),
    trusted_issuers: z.array(z.string()),
    token_endpoint: z.string(),
    api_url: z.string(),
    policy: z.string().optional(),
    permissions: z.array(PermissionId).optional(),
    workflow: z.string().openapi({ description: 'YAML to add to a workflow job.' }),
  })
  .openapi('OidcConfig');
