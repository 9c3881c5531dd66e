// Validation of a submitted trust policy (DESIGN §4): well-formed claim values, no contradictions, defaults, warnings.
import { GITHUB_OWNER } from './github-names.js';
import { hasUnsafeNameCharacter, isInvisibleName, UNSAFE_NAME_CHARACTERS } from './name-characters.js';
import type { PolicyClaimField, PolicyClaims, PolicyInput, PolicyRecord } from './policy-types.js';
import { COMMIT_SHA, MAX_SESSION_SECONDS, POLICY_CLAIM_FIELDS } from './policy-types.js';

export interface PolicyFieldError {
  /** Dotted path of the offending field, e.g. `claims.repository`. */
  field: string;
  message: string;
}

export type PolicyValidation =
  | { ok: true; policy: PolicyRecord; warnings: string[] }
  | { ok: false; errors: PolicyFieldError[] };

export interface PolicyRulesContext {
  trustedIssuers: readonly string[];
  defaultIssuer: string;
}

const REPO_NAME = /^[A-Za-z0-9_.-]+$/;
const NUMERIC_ID = /^[0-9]+$/;
const ANY_CASE_SHA1 = /^[0-9a-fA-F]{40}$/;
// Characters an admin types when expecting wildcard or regular-expression semantics.
const PATTERN_CHARS = /[*?|[\]{}()^$\\+]/;
// What reads as a glob or a regular expression (the wildcards * ? [, the alternatives | and {, .* or .+) but is
// legal where it appears, so it only warns: in an environment name, and for | { .+ in a ref (git refuses * ? [
// there, which is a 422). Parentheses, + and $ alone stay quiet: they are ordinary in names such as
// "Production (EU)" or tags such as v1.0.0+build.
const PATTERN_HINT = /[*?|[{]|\.[*+]/;
const WHITESPACE_OR_CONTROL = /[\s\p{Cc}]/u;
const CONTROL = /\p{Cc}/u;
// PostgreSQL text cannot hold NUL; other control characters in a description only hide text.
const UNSAFE_IN_DESCRIPTION = /[^\P{Cc}\t\n\r]|\p{Cs}/u;
const EDGE_WHITESPACE = /^\s|\s$/u;
// Invisible and direction-changing characters (Unicode's format characters, such as U+200B or U+202E): a value
// with one is shown as if it had none, yet matches only a claim that holds the same character.
const INVISIBLE = /\p{Cf}/gu;
// Text no token claim carries (the exchange refuses such tokens), and that UTF-8 storage would turn into U+FFFD.
const UNPAIRED_SURROGATE = /\p{Cs}/u;
const GIT_FORBIDDEN = /[~^:?*[\\]/;
// A space is ordinary in a workflow file name: GitHub runs .github/workflows/Build and Deploy.yml, and its
// job_workflow_ref holds the space as is. Other white space is not, nor a leading or trailing space (a pasting
// slip; a name ending in a space cannot end in .yml, and is told so rather than that it is no .yml name).
const WORKFLOW_FILE = /^(?! )(?:(?![^\S ])[^\p{Cc}/@*?[\]|])+\.ya?ml$/u;
const NOT_IN_WORKFLOW_FILE = /^ | $|[^\S ]|\p{Cc}/u;
// Of the pattern characters, those a workflow file name is refused for; ( ) { } + $ ^ are ordinary in file names.
const FILE_WILDCARDS = /[*?|[\]]/;

const COMPARED_WHOLE =
  'values are compared whole: wildcards and patterns such as *, ?, | or [ ] are not supported';
const REPOSITORY_EXAMPLE = "'owner/name' exactly as GitHub shows it, e.g. acme/infra";
const WORKFLOW_EXAMPLE =
  'owner/repo/.github/workflows/<file>.yml (or .yaml), optionally followed by @<ref>, ' +
  'e.g. acme/infra/.github/workflows/deploy.yml@refs/heads/main';

function charCount(value: string): number {
  let n = 0;
  for (const _ of value) n++;
  return n;
}

function ownerProblem(value: string, what: string): string | null {
  if (PATTERN_CHARS.test(value))
    return `${what} ${COMPARED_WHOLE}; to allow every repository of an owner, set only claims.repository_owner`;
  if (!GITHUB_OWNER.test(value))
    return `${what} must be a GitHub account name: letters, digits, hyphens and, for an Enterprise Managed User, an underscore (handle_shortcode), starting with a letter or digit (e.g. acme)`;
  if (value.length > 39) return `${what} must be at most 39 characters, the GitHub limit for account names`;
  return null;
}

function repositoryProblem(value: string, what: string): string | null {
  if (PATTERN_CHARS.test(value))
    return `${what} ${COMPARED_WHOLE}; create one policy per repository, or set only claims.repository_owner to allow them all`;
  const parts = value.split('/');
  if (parts.length !== 2) return `${what} must be ${REPOSITORY_EXAMPLE}`;
  const ownerIssue = ownerProblem(parts[0]!, `the owner part of ${what}`);
  if (ownerIssue) return ownerIssue;
  const name = parts[1]!;
  if (!REPO_NAME.test(name) || name === '.' || name === '..') {
    return `the repository name in ${what} may contain only letters, digits, '-', '_' and '.' (and is not '.' or '..'): ${REPOSITORY_EXAMPLE}`;
  }
  if (name.length > 100) return `the repository name in ${what} must be at most 100 characters`;
  return null;
}

/** git check-ref-format rules plus GitHub's `refs/<kind>/<name>` shape. */
function refProblem(value: string, what: string): string | null {
  const shape = `${what} must be a full ref such as refs/heads/main, refs/tags/v1 or refs/pull/12/merge`;
  if (!value.startsWith('refs/')) return shape;
  if (value.length > 1024) return `${what} must be at most 1024 characters`;
  if (WHITESPACE_OR_CONTROL.test(value)) return `${what} must not contain whitespace or control characters`;
  if (GIT_FORBIDDEN.test(value)) {
    return `${what} contains a character git never allows in a ref (~ ^ : ? * [ \\); ${COMPARED_WHOLE}`;
  }
  if (value.includes('..') || value.includes('@{') || value.endsWith('.')) {
    return `${what} contains '..', '@{' or a trailing '.', which git never allows in a ref`;
  }
  const parts = value.split('/');
  const badPart = parts.some((p) => p === '' || p === '@' || p.startsWith('.') || p.endsWith('.lock'));
  if (parts.length < 3 || badPart) return shape;
  return null;
}

// A reusable workflow can be pinned by commit sha (`uses: org/repo/.github/workflows/x.yml@<sha>`), and GitHub
// then puts the bare sha after `@` in job_workflow_ref; so a full lower-case 40-hex sha is accepted besides refs/...
function workflowRefProblem(value: string, what: string): string | null {
  const at = value.indexOf('@');
  const path = at < 0 ? value : value.slice(0, at);
  const parts = path.split('/');
  if (parts.length !== 5 || parts[2] !== '.github' || parts[3] !== 'workflows') {
    return PATTERN_CHARS.test(path) ? `${what} ${COMPARED_WHOLE}` : `${what} must be ${WORKFLOW_EXAMPLE}`;
  }
  const repoIssue = repositoryProblem(`${parts[0]}/${parts[1]}`, `the repository part of ${what}`);
  if (repoIssue) return repoIssue;
  const file = parts[4]!;
  if (!WORKFLOW_FILE.test(file)) {
    if (FILE_WILDCARDS.test(file)) return `the workflow file in ${what}: ${COMPARED_WHOLE}`;
    if (NOT_IN_WORKFLOW_FILE.test(file)) {
      return `the workflow file in ${what} must not start or end with a space, nor contain control characters or white space other than spaces`;
    }
    return `the workflow file in ${what} must be a .yml or .yaml file name: ${WORKFLOW_EXAMPLE}`;
  }
  if (at < 0) return null;
  const ref = value.slice(at + 1);
  if (COMMIT_SHA.test(ref)) return null;
  if (ANY_CASE_SHA1.test(ref))
    return `the commit sha after @ in ${what} must be lower-case, as GitHub writes it`;
  if (!ref.startsWith('refs/')) {
    return `the part after @ in ${what} must be a full ref (e.g. @refs/heads/main or @refs/tags/v1) or a 40-character commit sha; leave out @ to allow the workflow at any ref`;
  }
  return refProblem(ref, `the ref after @ in ${what}`);
}

function environmentProblem(value: string, what: string): string | null {
  if (charCount(value) > 255) return `${what} must be at most 255 characters, the GitHub limit`;
  if (CONTROL.test(value)) return `${what} must not contain control characters`;
  if (EDGE_WHITESPACE.test(value)) return `${what} must not start or end with whitespace`;
  return null;
}

function idProblem(value: string, what: string): string | null {
  // GitHub ids have no leading zeros, so such a value could never equal a token's claim.
  if (!NUMERIC_ID.test(value) || value.length > 20 || (value.length > 1 && value.startsWith('0'))) {
    return `${what} must be the numeric id GitHub puts in the token: digits only, no leading zeros, at most 20 (e.g. 632596897)`;
  }
  return null;
}

const CLAIM_CHECKS: Record<PolicyClaimField, (value: string, what: string) => string | null> = {
  repository_owner: ownerProblem,
  repository: repositoryProblem,
  job_workflow_ref: workflowRefProblem,
  ref: refProblem,
  environment: environmentProblem,
  repository_owner_id: idProblem,
  repository_id: idProblem,
};

/** The one rule for a name a client gives (trust policies, fine-grained keys); why it is refused, or null. */
export function nameProblem(name: unknown): string | null {
  if (typeof name !== 'string' || name === '') return 'name is required (1–100 characters)';
  if (EDGE_WHITESPACE.test(name)) return 'name must not start or end with whitespace';
  if (hasUnsafeNameCharacter(name)) return `name must not contain ${UNSAFE_NAME_CHARACTERS}`;
  if (isInvisibleName(name))
    return 'name must hold a character that shows: it has only invisible ones (such as U+200B), and would show as nothing';
  if (charCount(name) > 100) return 'name must be at most 100 characters';
  return null;
}

function descriptionOf(value: unknown, errors: PolicyFieldError[]): string | null {
  if (value === undefined || value === null || value === '') return null;
  if (typeof value !== 'string')
    errors.push({ field: 'description', message: 'description must be a string' });
  else if (charCount(value) > 500)
    errors.push({ field: 'description', message: 'description must be at most 500 characters' });
  else if (UNSAFE_IN_DESCRIPTION.test(value)) {
    errors.push({
      field: 'description',
      message:
        'description must not contain control characters (other than tab and line breaks) or unpaired surrogates',
    });
  } else return value;
  return null;
}

function issuerOf(value: unknown, ctx: PolicyRulesContext, errors: PolicyFieldError[]): string {
  const trusted = ctx.trustedIssuers.join(', ') || '(none configured)';
  // Left out, null or empty, the default, as for the description and the claims.
  const unset = value === undefined || value === null || value === '';
  if (!unset && typeof value !== 'string') {
    errors.push({ field: 'issuer', message: `issuer must be a string, one of: ${trusted}` });
    return '';
  }
  const issuer = unset ? ctx.defaultIssuer : (value as string);
  if (!ctx.trustedIssuers.includes(issuer)) {
    const message =
      issuer === ctx.defaultIssuer && issuer !== value
        ? `issuer is not set and the default ${ctx.defaultIssuer} is not trusted by this broker; set issuer to one of: ${trusted}`
        : `issuer must be exactly one of the issuers this broker trusts (no trailing slash, same case): ${trusted}`;
    errors.push({ field: 'issuer', message });
  }
  return issuer;
}

function claimsOf(raw: PolicyClaims | undefined, errors: PolicyFieldError[]): PolicyClaims {
  const claims: PolicyClaims = {};
  for (const field of POLICY_CLAIM_FIELDS) {
    const value: unknown = raw?.[field];
    if (value === undefined || value === null || value === '') continue;
    const what = `claims.${field}`;
    const problem =
      typeof value !== 'string'
        ? `${what} must be a string`
        : UNPAIRED_SURROGATE.test(value)
          ? `${what} must not contain half of a surrogate pair (a \\uD800–\\uDFFF escape without its other half): no token's claim holds one, and it cannot be stored as sent`
          : CLAIM_CHECKS[field](value, what);
    if (problem) errors.push({ field: what, message: problem });
    else claims[field] = value as string;
  }
  const { repository_owner: owner, repository } = claims;
  const given = (field: PolicyClaimField) => raw?.[field] != null && raw[field] !== '';
  if (!given('repository_owner') && !given('repository')) {
    errors.push({
      field: 'claims',
      message:
        'set claims.repository_owner or claims.repository (or both): a policy must name where its workflows run',
    });
  } else if (owner && repository) {
    // The only truly impossible pair: GitHub sets repository_owner to the owner part of repository. A reusable
    // workflow in another repository, or at a ref other than claims.ref (the caller's ref), is legitimate.
    const repositoryOwner = repository.slice(0, repository.indexOf('/'));
    if (repositoryOwner.toLowerCase() !== owner.toLowerCase()) {
      errors.push({
        field: 'claims.repository',
        message: `claims.repository belongs to owner ${repositoryOwner} but claims.repository_owner is ${owner}; no token carries both — fix one of them, or drop claims.repository_owner (claims.repository already pins the owner)`,
      });
    }
  }
  return claims;
}

function warningsFor(policy: PolicyRecord): string[] {
  const { claims } = policy;
  const warnings: string[] = [];
  const narrowed = Boolean(claims.ref || claims.job_workflow_ref || claims.environment);
  const writes = policy.permissions.filter((p) => p.endsWith(':write'));
  // An owner with a repository id pins one repository, whatever it is named now or later.
  const scope = claims.repository
    ? `repository ${claims.repository}`
    : claims.repository_id
      ? `the repository of ${claims.repository_owner} with id ${claims.repository_id}`
      : `any repository of ${claims.repository_owner}`;
  if (!narrowed) {
    warnings.push(
      `claims: any workflow in ${scope} can use this policy, on any branch; add claims.ref, claims.job_workflow_ref or claims.environment to limit it to the branch, workflow or environment that needs it`,
    );
    if (writes.length > 0) {
      warnings.push(
        `permissions: ${writes.join(', ')} can be obtained by any workflow in ${scope}, including one on an unreviewed branch; add claims.ref (e.g. refs/heads/main), claims.job_workflow_ref or claims.environment (ideally one with required reviewers), or grant only :read permissions`,
      );
    }
  }
  const workflow = claims.job_workflow_ref;
  if (
    narrowed &&
    !claims.ref &&
    !claims.environment &&
    workflow &&
    !workflow.includes('@') &&
    writes.length > 0
  ) {
    // The workflow file at any ref, in the job's own repository: a branch that edits the file runs its own code.
    const workflowRepository = workflow.split('/').slice(0, 2).join('/');
    const ownRepository = claims.repository
      ? workflowRepository.toLowerCase() === claims.repository.toLowerCase()
      : workflowRepository.toLowerCase().startsWith(`${(claims.repository_owner ?? '').toLowerCase()}/`);
    if (ownRepository) {
      warnings.push(
        `claims.job_workflow_ref: ${workflow} has no @ref, and a job of ${workflowRepository} runs it from its own branch, so any branch can change what runs with ${writes.join(', ')}; pin it (e.g. ${workflow}@refs/heads/main), or add claims.ref or claims.environment`,
      );
    }
  }
  const workflowAt = workflow?.indexOf('@') ?? -1;
  const workflowPath = workflowAt >= 0 ? workflow!.slice(0, workflowAt) : workflow;
  const literals = {
    ref: claims.ref,
    environment: claims.environment,
    'job_workflow_ref (its file name)': workflowPath?.slice(workflowPath.lastIndexOf('/') + 1),
    'job_workflow_ref (its ref)': workflowAt >= 0 ? workflow!.slice(workflowAt + 1) : undefined,
  };
  for (const [field, value] of Object.entries(literals)) {
    if (PATTERN_HINT.test(value ?? '')) {
      warnings.push(
        `claims.${field}: ${COMPARED_WHOLE}, so this matches only that literal value; create one policy per value instead`,
      );
    }
  }
  for (const field of ['ref', 'environment', 'job_workflow_ref'] as const) {
    const value = claims[field];
    const hidden = value?.match(INVISIBLE);
    if (!value || !hidden) continue;
    const codes = [...new Set(hidden)].map(
      (c) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`,
    );
    warnings.push(
      `claims.${field} holds ${codes.join(', ')}, which no listing shows: it reads as ${JSON.stringify(value.replace(INVISIBLE, ''))} but matches only a job whose ${field} holds the same; remove it unless the job's ${field} does`,
    );
  }
  if (policy.allow_pull_request_target) {
    warnings.push(
      "allow_pull_request_target: pull_request_target workflows run with the base repository's secrets and token permissions while usually handling code or input from an untrusted fork, so anyone who can open a pull request may obtain this policy's token; set it to false unless the workflow never runs pull-request code, and otherwise pin claims.job_workflow_ref to a reviewed workflow and grant only :read permissions",
    );
  }
  return warnings;
}

/** Checks every §4 rule that the HTTP schema and the permission checks leave, reporting all errors at once. */
export function validatePolicy(input: PolicyInput, ctx: PolicyRulesContext): PolicyValidation {
  const errors: PolicyFieldError[] = [];
  const nameIssue = nameProblem(input.name);
  if (nameIssue) errors.push({ field: 'name', message: nameIssue });
  const description = descriptionOf(input.description, errors);
  const issuer = issuerOf(input.issuer, ctx, errors);
  const claims = claimsOf(input.claims, errors);

  const max = input.max_session_duration_seconds ?? 0;
  if (!Number.isInteger(max) || max < 0 || max > MAX_SESSION_SECONDS) {
    errors.push({
      field: 'max_session_duration_seconds',
      message:
        'max_session_duration_seconds must be a whole number of seconds from 0 to 3600 (0 uses the server default)',
    });
  }
  if (!Array.isArray(input.permissions) || input.permissions.length === 0) {
    errors.push({
      field: 'permissions',
      message:
        'permissions must list at least one permission this policy may grant, e.g. ["harden-runner:read"]',
    });
  }
  const prt = input.allow_pull_request_target ?? false;
  if (typeof prt !== 'boolean') {
    errors.push({
      field: 'allow_pull_request_target',
      message: 'allow_pull_request_target must be true or false',
    });
  }
  if (errors.length > 0) return { ok: false, errors };

  const policy: PolicyRecord = {
    name: input.name,
    description,
    issuer,
    claims,
    max_session_duration_seconds: max,
    permissions: [...input.permissions],
    allow_pull_request_target: prt,
  };
  return { ok: true, policy, warnings: warningsFor(policy) };
}
