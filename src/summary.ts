// Renders the job summary: what was issued (never the token), what went wrong, and a token left unrevoked.
import type { TokenGrant } from './broker-client.js';
import type { ActionIO } from './deps.js';
import { code, type Explanation } from './explain.js';
import type { ActionInputs } from './inputs.js';

export function successSummary(grant: TokenGrant, inputs: ActionInputs): string {
  const rows: [string, string][] = [
    ['Tenant', code(grant.tenant)],
    ['Trust policy', code(grant.policy)],
    ['Permissions', grant.permissions.length > 0 ? grant.permissions.map(code).join(', ') : '(none)'],
    ['Expires at', `${grant.expiresAt} (in ${lifetime(grant.expiresIn)})`],
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

/** A lifetime as a reader takes it in: whole minutes, or seconds while minutes would round it far off (0 min). */
function lifetime(seconds: number): string {
  return seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
}

export function failureSummary(explanation: Explanation): string {
  return section('### StepSecurity API token not issued', [
    `**${explanation.title}**`,
    ...blocks(explanation),
  ]);
}

/** The post step's word on a token it could not revoke: the main step's summary promised it would. */
export function notRevokedSummary(expiresAt: string, whatToDo: string, explanation: Explanation): string {
  return section('### StepSecurity API token not revoked', [
    expiresAt
      ? `**Not revoked; valid until ${expiresAt}**, when it expires on its own. ${whatToDo}`
      : `**Not revoked; valid until it expires on its own.** ${whatToDo}`,
    `Why: ${explanation.title}`,
    ...blocks(explanation),
  ]);
}

/** Appends to the job summary; outside a runner there is none, and the step's outcome does not depend on it. */
export async function writeSummary(
  io: Pick<ActionIO, 'appendSummary' | 'debug'>,
  markdown: string,
): Promise<void> {
  try {
    await io.appendSummary(markdown);
  } catch (error) {
    io.debug(`Job summary not written: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function blocks(explanation: Explanation): string[] {
  return explanation.body.map((block) => {
    if (typeof block === 'string') return block;
    if ('list' in block) return block.list.map((item) => `- ${item}`).join('\n');
    return `\`\`\`yaml\n${block.yaml}\n\`\`\``;
  });
}

function section(heading: string, paragraphs: string[]): string {
  return `${[heading, ...paragraphs].join('\n\n')}\n`;
}
