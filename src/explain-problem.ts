// Explains a problem+json answer of the broker by its code: what the denial means and what to change.
import { isShortcut, type Shortcut } from '../broker/core/permissions.js';
import { yamlString } from '../broker/core/yaml-string.js';
import type { Problem } from './broker-client.js';
import type { Block, Explanation, Failure, RetryInfo } from './explain.js';
import type { ActionInputs } from './inputs.js';

const TRUST_CLAIMS = [
  'iss',
  'repository_owner',
  'repository',
  'job_workflow_ref',
  'ref',
  'environment',
  'event_name',
  'repository_owner_id',
  'repository_id',
];

/**
 * The broker's reasons for refusing a token for its times (oidc-verify.ts): an expired, not-yet-valid or
 * future-issued token, which the issuer stamped with its clock and the broker judged by its own.
 */
const TIME_REFUSAL = /^token (expired at|is not valid before|is issued in the future)/;

/** Which call the broker answered: the main step's exchange, or the post step's revocation of the token. */
export type BrokerCall = 'exchange' | 'revoke';

export function explainProblem(
  failure: Extract<Failure, { kind: 'problem' }>,
  inputs?: ActionInputs,
  call: BrokerCall = 'exchange',
): Explanation {
  return withRequestId(describe(failure, inputs, call), failure.problem);
}

/**
 * What to do after the broker kept failing: a new job gets a new token, but does not revoke this one (the post
 * step says who can).
 */
function afterOutage(call: BrokerCall): string {
  return call === 'exchange' ? 'Re-run the job later.' : 'Re-running the job would not revoke it.';
}

function describe(
  failure: Extract<Failure, { kind: 'problem' }>,
  inputs: ActionInputs | undefined,
  call: BrokerCall,
): Explanation {
  const p = failure.problem;
  const reason = p.detail ? [`Reason given: ${code(p.detail)}`] : [];
  const tenant = inputs ? ` ${code(inputs.tenant)}` : '';
  switch (p.code) {
    case 'audience_mismatch':
      return audienceMismatch(p, inputs);
    case 'no_matching_policy':
      return noMatchingPolicy(p, inputs);
    case 'permission_not_allowed': {
      const missing = strings(p.not_allowed);
      const what = missing.length > 0 ? missing.map(code).join(', ') : 'the requested permissions';
      return {
        title: `No trust policy that matches this job allows ${what} (403 permission_not_allowed).`,
        body: [
          "Those permissions are not in the policy's allowlist, and a policy can only grant what it lists. " +
            `${whatToRemove(missing, inputs)} (leave it empty to receive everything the policy allows), ` +
            'or ask a tenant admin to add them to the policy.',
          ...claimsBlock(p),
          'A tenant admin can find the policy that matched by testing these claims with ' +
            '`POST /v1/oidc/policies/evaluate`.',
        ],
      };
    }
    case 'ambiguous_policy': {
      const names = strings(p.policies);
      return {
        title: `Several trust policies match this job equally well: ${names.map(code).join(', ') || '(not named)'} (409 ambiguous_policy).`,
        body: [
          'The broker does not guess between them. Name the one to use with the `policy` input:',
          {
            yaml: `with:\n  tenant: ${yamlString(inputs?.tenant ?? 'your-tenant')}\n  policy: ${yamlString(names[0] ?? 'policy-name')}`,
          },
        ],
      };
    }
    case 'token_replayed':
      return {
        title: 'The broker had already exchanged this OIDC token once (401 token_replayed).',
        body: [
          'Each OIDC token can be exchanged only once, and this action requests a fresh one for every attempt, ' +
            'so something else in this job exchanged the same token. Re-run the job; if it happens again, a ' +
            'tenant admin can find the earlier exchange in the audit log.',
        ],
      };
    case 'rate_limited':
      return {
        title: `The broker is rate-limiting token exchanges${tenant ? ` for tenant${tenant}` : ''} (429 rate_limited).`,
        body: [
          failure.gaveUp
            ? `${attempts(failure)}${retryAfter(failure)}`
            : `The broker did not say when to try again (${
                failure.retryAfter === undefined ? 'no Retry-After header' : 'its Retry-After is not a time'
              }), so the action did not try again after this answer.`,
          'Re-run the job in a few minutes, or have fewer jobs exchange tokens at the same time ' +
            '(one exchange per job is enough: the token lasts for the whole job).',
        ],
      };
    case 'invalid_token':
      return {
        title: "The broker rejected the job's OIDC token (401 invalid_token).",
        body: [
          ...reason,
          TIME_REFUSAL.test(p.detail ?? '')
            ? "The token's times (`iat`, `nbf`, `exp`) are set by the issuer (GitHub) when it issues the token, " +
              "not by the runner, and the broker checks them against its own clock with 60 s of leeway: the broker's " +
              "clock, or a GitHub Enterprise Server's, is likely off. Ask the broker's operator to check the time " +
              'synchronisation (NTP) of the broker and of the issuer; re-running the job will not help until then.'
            : 'GitHub issues this token for the running job, so this usually means the broker does not trust its ' +
              "issuer (GitHub Enterprise Server or another issuer must be added to the broker's " +
              "BROKER_TRUSTED_ISSUERS), or the broker's clock and the issuer's disagree (the token's times are " +
              "the issuer's, never the runner's).",
        ],
      };
    case 'issuer_unavailable':
      return {
        title:
          "The broker could not fetch the issuer's signing keys to verify the token (503 issuer_unavailable).",
        body: [
          ...reason,
          `${attempts(failure)} This is usually temporary: re-run the job. If it persists, the broker's ` +
            "operator should check that the broker can reach the issuer's JWKS (the `jwks_uri` of that issuer " +
            'in BROKER_TRUSTED_ISSUERS, or the one its discovery document names).',
        ],
      };
    case 'not_ready':
      return {
        title: `The broker cannot serve this request right now (503 not_ready).`,
        body: [
          ...reason,
          `${attempts(failure)} ${
            call === 'exchange'
              ? 'Its database is unavailable, the trust policies were changing while the exchange was decided, or ' +
                'the replica that answered cannot sign tokens until it is restarted (its key-encryption key was replaced).'
              : 'Its database is unavailable.'
          } ${afterOutage(call)} If it persists, tell the broker's operator.`,
        ],
      };
    case 'invalid_request': {
      const permissionErrors = fieldErrors(p).filter((e) => /^(permissions(\[\d+\])?|scope)$/.test(e.field));
      if (call === 'exchange' && permissionErrors.length > 0) {
        return {
          title: 'The broker refused a permission this step asks for (400 invalid_request).',
          body: [
            { list: permissionErrors.map((e) => code(e.message)) },
            'Remove it from the `permissions` input. A permission the broker does not know, or one of a category ' +
              'disabled for the tenant, cannot be requested; a tenant admin can tell which categories are enabled.',
          ],
        };
      }
      return {
        title: 'The broker rejected the request as malformed (400 invalid_request).',
        body: [
          ...reason,
          'Check the inputs of this step; if they look right, the broker may not be compatible with this version ' +
            'of the action.',
        ],
      };
    }
    default:
      return {
        title: `The broker answered ${failure.status}${p.code ? ` ${word(p.code)}` : ''}${p.title ? `: ${code(p.title)}` : ''}.`,
        body: [
          ...reason,
          ...(failure.status >= 500 ? [`${attempts(failure)} ${afterOutage(call)}`] : []),
          ...(failure.status === 404
            ? ["Check that `api-url` is the broker's base URL, ending in `/v1`."]
            : []),
        ],
      };
  }
}

const SHORTCUT_MEANS: Record<Shortcut, string> = {
  'read-all': 'every read permission',
  'read-write-all': 'every permission',
};

/**
 * What to take out of the `permissions` input: the permissions themselves, or, when a shortcut asked for some the
 * input does not name, the shortcut, which a policy must then allow in full.
 */
function whatToRemove(missing: string[], inputs?: ActionInputs): string {
  const shortcuts = (inputs?.permissions ?? []).filter(isShortcut);
  if (shortcuts.length === 0 || missing.every((p) => inputs?.permissions.includes(p))) {
    return 'Remove them from the `permissions` input';
  }
  const means = shortcuts
    .map((s) => `${code(s)} asks for ${SHORTCUT_MEANS[s]} the tenant has`)
    .join(', and ');
  return `The \`permissions\` input asks for them through a shortcut: ${means}. Name only the permissions the job needs instead`;
}

function audienceMismatch(p: Problem, inputs?: ActionInputs): Explanation {
  const sent = typeof p.audience === 'string' ? p.audience : inputs?.audience;
  const expected = typeof p.expected_audience === 'string' ? p.expected_audience : undefined;
  const tenant = inputs?.tenant ?? 'your-tenant';
  if (!expected) {
    // The broker names the tenant's audience whenever it knows the tenant: without it, the tenant is unknown.
    return {
      title: `The broker does not know tenant ${inputs ? code(inputs.tenant) : '(not named)'} (401 audience_mismatch).`,
      body: [
        ...(p.detail ? [`Reason given: ${code(p.detail)}`] : []),
        'Check that `tenant` is spelled right, and that `api-url` is the broker your tenant is on. ' +
          "A tenant admin can copy the step's settings, tenant included, from `GET /v1/oidc/config`.",
      ],
    };
  }
  return {
    title: `The broker rejected the OIDC token's audience: the token carried ${code(sent ?? '(unknown)')} but tenant ${code(tenant)} expects ${code(expected)}.`,
    body: [
      `Tenant ${code(tenant)} expects the audience ${code(expected)}. Set it on the step:`,
      { yaml: `with:\n  tenant: ${yamlString(tenant)}\n  audience: ${yamlString(expected)}` },
    ],
  };
}

/** The job's trust-relevant claims as the broker's denial echoes them. */
function claimsBlock(p: Problem): Block[] {
  const claims = (typeof p.claims === 'object' && p.claims !== null ? p.claims : {}) as Record<
    string,
    unknown
  >;
  return [
    "This job's trust-relevant claims:",
    {
      list: TRUST_CLAIMS.map((name) => `${name}: ${shownClaim(name, claims[name])}`),
    },
  ];
}

/**
 * A claim's value as the list shows it. An empty `ref` is GitHub's for a job on no branch or tag, and an empty code
 * span would show as stray backticks; no policy value can equal it, so the list says what it means instead.
 */
function shownClaim(name: string, value: unknown): string {
  if (typeof value !== 'string') return '(none)';
  if (value !== '') return code(value);
  return name === 'ref'
    ? '(empty: the job runs on no branch or tag, as one a deployment created for a commit sha starts; only a policy that sets no `ref` matches it)'
    : '(empty)';
}

function noMatchingPolicy(p: Problem, inputs?: ActionInputs): Explanation {
  const body: Block[] = claimsBlock(p);
  if (inputs?.policy) {
    body.push(
      `Only policy ${code(inputs.policy)} was considered, because the step sets the \`policy\` input.`,
    );
  }
  if (inputs && inputs.permissions.length > 0) {
    body.push(
      `A policy must also allow the requested permissions (${inputs.permissions.map(code).join(', ')}) to be chosen.`,
    );
  }
  body.push(
    'How matching works: a policy matches when every claim it sets equals the value above. `repository_owner`, ' +
      '`repository` and `environment` compare case-insensitively; `ref` and `job_workflow_ref` compare exactly, ' +
      'and a `job_workflow_ref` without `@ref` matches that workflow file at any ref. Claims a policy leaves ' +
      'empty match anything. Runs triggered by `pull_request_target` match only policies that opt in with ' +
      '`allow_pull_request_target`.',
    'A tenant admin can test these claims against every policy with `POST /v1/oidc/policies/evaluate`, and ' +
      'finds this denial, with the mismatched fields, in the audit log.',
  );
  const tenant = inputs ? ` of tenant ${code(inputs.tenant)}` : '';
  return { title: `No trust policy${tenant} matches this job (403 no_matching_policy).`, body };
}

function withRequestId(explanation: Explanation, p: Problem): Explanation {
  if (typeof p.request_id !== 'string') return explanation;
  return {
    ...explanation,
    body: [
      ...explanation.body,
      `Request id: ${code(p.request_id)} (the broker's operator can find it in the logs).`,
    ],
  };
}

export function attempts(f: RetryInfo): string {
  const n = f.attempts ?? 1;
  const limit = f.gaveUp === 'deadline' ? ' within the time limit of this step' : '';
  return `Tried ${n} ${n === 1 ? 'time' : 'times'}${limit}.`;
}

function retryAfter(f: RetryInfo): string {
  return f.retryAfterMs === undefined
    ? ''
    : ` The broker asked to wait ${Math.ceil(f.retryAfterMs / 1000)} s.`;
}

/** The `errors` of a problem: which field was wrong, and why. */
function fieldErrors(p: Problem): { field: string; message: string }[] {
  if (!Array.isArray(p.errors)) return [];
  return p.errors.flatMap((e: unknown) => {
    const { field, message } = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
    return typeof field === 'string' && typeof message === 'string' ? [{ field, message }] : [];
  });
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

/** An error code as it is, when it looks like one; anything else as inline code. */
function word(value: string): string {
  return /^[a-z][a-z0-9_]*$/.test(value) ? value : code(value);
}

/**
 * Inline code that reads well in a log line and in Markdown. Text from the broker (or whatever answers at
 * `api-url`) goes into the job summary this way, so it is shown, never rendered as Markdown or HTML.
 */
export function code(value: unknown): string {
  return `\`${String(value).replace(/[`\r\n]/g, ' ')}\``;
}
