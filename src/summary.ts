// Renders the job summary: what was issued on success (never the token), what went wrong on failure.
import type { TokenGrant } from './broker-client.js';
import { code, type Explanation } from './explain.js';
import type { ActionInputs } from './inputs.js';

export function successSummary(grant: TokenGrant, inputs: ActionInputs): string {
  const rows: [string, string][] = [
    ['Tenant', code(grant.tenant)],
    ['Trust policy', code(grant.policy)],
    ['Permissions', grant.permissions.length > 0 ? grant.permissions.map(code).join(', ') : '(none)'],
    ['Expires at', `${grant.expiresAt} (in ${Math.round(grant.expiresIn / 60)} min)`],
    ['Exported as `STEPSECURITY_API_TOKEN`', inputs.exportEnv ? 'yes' : 'no'],
    ['Revoked when the job ends', inputs.revoke ? 'yes' : 'no'],
  ];
  return [
    '### StepSecurity API token issued',
    '',
    '| | |',
    '|---|---|',
    ...rows.map(([name, value]) => `| ${name} | ${value.replace(/\|/g, '\\|')} |`),
    '',
  ].join('\n');
}

export function failureSummary(explanation: Explanation): string {
  const blocks = explanation.body.map((block) => {
    if (typeof block === 'string') return block;
    if ('list' in block) return block.list.map((item) => `- ${item}`).join('\n');
    return `\`\`\`yaml\n${block.yaml}\n\`\`\``;
  });
  return `${['### StepSecurity API token not issued', `**${explanation.title}**`, ...blocks].join('\n\n')}\n`;
}
