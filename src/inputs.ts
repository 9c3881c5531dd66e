// Reads and validates every action input once, before anything touches the network.
import { ALL_PERMISSIONS, isCategoryId, isPermission, SHORTCUTS } from '../broker/core/permissions.js';

export const DEFAULT_API_URL = 'https://agent.api.stepsecurity.io/v1';
export const AUDIENCE_SUFFIX = 'api.stepsecurity.io';
export const MAX_DURATION_SECONDS = 3600;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export interface ActionInputs {
  tenant: string;
  audience: string;
  /** The broker's base URL without a trailing slash, e.g. `https://agent.api.stepsecurity.io/v1`. */
  apiUrl: string;
  /** Permission ids and shortcuts as written, de-duplicated; empty asks for the policy's whole allowlist. */
  permissions: string[];
  policy?: string;
  durationSeconds?: number;
  exportEnv: boolean;
  revoke: boolean;
}

export type ParsedInputs = { ok: true; inputs: ActionInputs } | { ok: false; errors: string[] };

export function parseInputs(getInput: (name: string) => string): ParsedInputs {
  const errors: string[] = [];
  const read = (name: string) => getInput(name).trim();

  const tenant = read('tenant');
  if (!tenant) {
    errors.push('Input `tenant` is required: the name of your StepSecurity tenant, e.g. `tenant: acme`.');
  } else if (!DNS_LABEL.test(tenant)) {
    errors.push(
      `Input \`tenant\` is "${tenant}", which is not a tenant name: use lower-case letters, digits and inner ` +
        'hyphens, at most 63 characters (e.g. `acme` or `acme-prod`).',
    );
  }

  const audienceInput = read('audience');
  const audience = audienceInput || `${tenant}.${AUDIENCE_SUFFIX}`;
  if (/\s/.test(audienceInput) || audienceInput.length > 255) {
    errors.push('Input `audience` must be a single value without whitespace, at most 255 characters.');
  }

  const apiUrl = parseApiUrl(read('api-url') || DEFAULT_API_URL, errors);
  const permissions = parsePermissions(getInput('permissions'), errors);

  const policy = read('policy') || undefined;
  if (policy !== undefined && policy.length > 100) {
    errors.push('Input `policy` must be the name of a trust policy, at most 100 characters.');
  }

  const durationSeconds = parseDuration(read('duration-seconds'), errors);
  const exportEnv = parseBoolean('export-env', read('export-env'), false, errors);
  const revoke = parseBoolean('revoke', read('revoke'), true, errors);

  if (errors.length > 0) return { ok: false, errors };
  return {
    ok: true,
    inputs: { tenant, audience, apiUrl, permissions, policy, durationSeconds, exportEnv, revoke },
  };
}

function parseApiUrl(raw: string, errors: string[]): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    errors.push(`Input \`api-url\` is "${raw}", which is not a URL; use e.g. \`${DEFAULT_API_URL}\`.`);
    return raw;
  }
  const loopback = LOOPBACK_HOSTS.has(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    errors.push(
      `Input \`api-url\` must use https:// (got ${url.protocol}//${url.host}); plain http:// is accepted only ` +
        'for a broker on this runner (127.0.0.1, ::1 or localhost), because the token travels over it.',
    );
  }
  if (url.username || url.password || url.search || url.hash) {
    errors.push('Input `api-url` must be a plain base URL, without credentials, query string or fragment.');
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

function parsePermissions(raw: string, errors: string[]): string[] {
  const values = [...new Set(raw.split(/[\s,]+/).filter((v) => v !== ''))];
  for (const value of values) {
    if (isPermission(value) || (SHORTCUTS as readonly string[]).includes(value)) continue;
    const hint = isCategoryId(value) ? ` Did you mean \`${value}:read\` or \`${value}:write\`?` : '';
    errors.push(
      `Input \`permissions\` contains "${value}", which is not a permission.${hint} Valid ids: ` +
        `${ALL_PERMISSIONS.join(', ')}; shortcuts: ${SHORTCUTS.join(', ')}.`,
    );
  }
  return values;
}

function parseDuration(raw: string, errors: string[]): number | undefined {
  if (raw === '') return undefined;
  const value = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_DURATION_SECONDS) {
    errors.push(
      `Input \`duration-seconds\` is "${raw}"; it must be a whole number of seconds from 1 to ` +
        `${MAX_DURATION_SECONDS}, or left empty for the policy's default.`,
    );
    return undefined;
  }
  return value;
}

// The YAML 1.2 core-schema booleans, as @actions/core's getBooleanInput accepts them.
function parseBoolean(name: string, raw: string, fallback: boolean, errors: string[]): boolean {
  if (raw === '') return fallback;
  if (['true', 'True', 'TRUE'].includes(raw)) return true;
  if (['false', 'False', 'FALSE'].includes(raw)) return false;
  errors.push(`Input \`${name}\` is "${raw}"; it must be \`true\` or \`false\`.`);
  return fallback;
}
