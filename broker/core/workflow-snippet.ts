// The ready-to-paste workflow job settings GET /v1/oidc/config returns: the action's inputs for a tenant and policy.
import type { PolicyClaims } from './policy-types.js';
import { yamlString } from './yaml-string.js';

/** The action's own defaults (action.yml); inputs equal to them are left out of the snippet. */
export const ACTION_DEFAULT_API_URL = 'https://agent.api.stepsecurity.io/v1';
export const ACTION_AUDIENCE_SUFFIX = 'api.stepsecurity.io';

export interface SnippetInput {
  tenant: string;
  audience: string;
  /** The broker's base URL, ending in /v1. */
  apiUrl: string;
  /** The issuer a policy is for unless it names another (GitHub.com's). */
  defaultIssuer: string;
  policy?: { name: string; permissions: readonly string[]; claims: PolicyClaims; issuer: string };
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function isLoopback(url: string): boolean {
  try {
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    return host === 'localhost' || host === '::1' || /^127\./.test(host);
  } catch {
    return false;
  }
}

function refDescription(ref: string): string {
  if (ref.startsWith('refs/heads/')) return `branch ${ref.slice('refs/heads/'.length)}`;
  if (ref.startsWith('refs/tags/')) return `tag ${ref.slice('refs/tags/'.length)}`;
  return `ref ${ref}`;
}

/**
 * The issuer a job's token must come from, when it is not the default: where the job must run (a GHES, a GHE.com
 * subdomain), or, for an enterprise's own issuer under the default's URL, which enterprise setting GitHub.com
 * issues it by. An issuer is a trusted URL with no line break.
 */
function issuerComments(issuer: string, defaultIssuer: string): string[] {
  if (issuer === defaultIssuer) return [];
  const slug = issuer.startsWith(`${defaultIssuer}/`) ? issuer.slice(defaultIssuer.length + 1) : '';
  if (slug === '' || slug.includes('/'))
    return [`# It requires an OIDC token issued by ${issuer} (its iss).`];
  return [
    `# It requires an OIDC token issued by ${issuer} (its iss): GitHub.com issues those to jobs of the`,
    `# enterprise ${slug} once it uses its unique issuer URL (include_enterprise_slug); until then, their tokens`,
    `# carry ${defaultIssuer}.`,
  ];
}

/** Comments saying where a job must run for the policy to match; no claim value holds a line break. */
function policyComments(policy: NonNullable<SnippetInput['policy']>, defaultIssuer: string): string[] {
  const { claims } = policy;
  const lines: string[] = [];
  if (claims.repository) lines.push(`# The policy matches jobs of repository ${claims.repository} only.`);
  else if (claims.repository_owner && claims.repository_id) {
    lines.push(
      `# The policy matches jobs of the repository of ${claims.repository_owner} with id ${claims.repository_id} only, whatever its name.`,
    );
  } else if (claims.repository_owner) {
    lines.push(`# The policy matches jobs of repositories owned by ${claims.repository_owner} only.`);
  }
  lines.push(...issuerComments(policy.issuer, defaultIssuer));
  if (claims.ref) {
    lines.push(`# It requires ref ${claims.ref}: run this workflow on ${refDescription(claims.ref)}.`);
  }
  if (claims.job_workflow_ref) {
    const jwr = claims.job_workflow_ref;
    const at = jwr.indexOf('@');
    lines.push(
      at < 0
        ? `# It requires the job to be defined in ${jwr} (at any ref).`
        : `# It requires the job to be defined in ${jwr.slice(0, at)} at ${refDescription(jwr.slice(at + 1))}.`,
    );
    const file = at < 0 ? jwr : jwr.slice(0, at);
    const workflowRepository = file.split('/').slice(0, 2).join('/');
    if (workflowRepository.toLowerCase() !== claims.repository?.toLowerCase()) {
      // A workflow of another repository runs the job only when called: the steps go in it, and the caller, whose
      // permissions cap the called workflow's, must grant id-token: write too.
      const ref = at < 0 ? '<branch, tag or sha>' : jwr.slice(at + 1).replace(/^refs\/(heads|tags)\//, '');
      const owner = claims.repository_owner ?? '';
      const callers =
        claims.repository ??
        (workflowRepository.toLowerCase().startsWith(`${owner.toLowerCase()}/`)
          ? `the other repositories of ${owner}`
          : `repositories of ${owner}`);
      lines.push(
        `# Jobs of ${callers} run it as a reusable workflow: put these settings in its job, and call it`,
        `# with \`uses: ${file}@${ref}\` from a job that also has \`permissions: id-token: write\`.`,
      );
    }
  }
  return lines;
}

/** A job's `permissions`, optional `environment` and `steps`, to add to a job next to its `runs-on`. */
export function workflowSnippet(input: SnippetInput): string {
  const { policy } = input;
  const lines = ['# Add to a job under `jobs:`, next to its `runs-on`.'];
  if (policy) lines.push(...policyComments(policy, input.defaultIssuer));
  lines.push('permissions:', '  id-token: write # lets the job request its OIDC token', '  contents: read');
  if (policy?.claims.environment) {
    lines.push(
      "# The policy requires this environment, and GitHub puts it in the job's OIDC token only when the job",
      '# declares it.',
      `environment: ${yamlString(policy.claims.environment)}`,
    );
  }
  const withLines = [`      tenant: ${yamlString(input.tenant)}`];
  if (input.apiUrl !== ACTION_DEFAULT_API_URL) {
    const comment = isLoopback(input.apiUrl)
      ? ' # reachable only from the runner itself; set BROKER_PUBLIC_URL to the address runners use'
      : '';
    withLines.push(`      api-url: ${yamlString(input.apiUrl)}${comment}`);
  }
  if (input.audience !== `${input.tenant}.${ACTION_AUDIENCE_SUFFIX}`) {
    withLines.push(`      audience: ${yamlString(input.audience)}`);
  }
  if (policy) {
    withLines.push(`      policy: ${yamlString(policy.name)}`);
    withLines.push(`      permissions: ${yamlString(policy.permissions.join(', '))}`);
  }
  lines.push(
    'steps:',
    '  - uses: stepsec/oidc-auth@v1',
    '    id: stepsecurity',
    '    with:',
    ...withLines,
    '  - name: Call the StepSecurity API',
    '    env:',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: GitHub expression syntax, not a template literal
    '      STEPSECURITY_API_TOKEN: ${{ steps.stepsecurity.outputs.token }}',
    '    run: |',
    `      curl -fsS -H "Authorization: Bearer $STEPSECURITY_API_TOKEN" ${shellQuote(`${input.apiUrl}/whoami`)}`,
  );
  return `${lines.join('\n')}\n`;
}
