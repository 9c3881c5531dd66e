// Reads and validates every action input once, before anything touches the network.

import { isLoopbackHost } from '../broker/core/loopback.js';
import { ALL_PERMISSIONS, isCategoryId, isPermission, SHORTCUTS } from '../broker/core/permissions.js';

export const DEFAULT_API_URL = 'https://agent.api.stepsecurity.io/v1';
export const AUDIENCE_SUFFIX = 'api.stepsecurity.io';
export const MAX_DURATION_SECONDS = 3600;
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
  // Counted in characters, as the broker counts a name (a character outside the BMP is two UTF-16 units).
  if (policy !== undefined && [...policy].length > 100) {
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
    errors.push(
      `Input \`api-url\` is "${redacted(raw)}", which is not a URL; use e.g. \`${DEFAULT_API_URL}\`.`,
    );
    return raw;
  }
  // The hosts the broker itself accepts for an http:// public URL.
  const loopback = isLoopbackHost(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    errors.push(
      `Input \`api-url\` must use https:// (got ${url.protocol}//${url.host}); plain http:// is accepted only ` +
        'for a broker on this runner (127.x.x.x, ::1 or localhost), because the token travels over it.',
    );
  }
  if (url.username || url.password || url.search || url.hash) {
    errors.push('Input `api-url` must be a plain base URL, without credentials, query string or fragment.');
  }
  const path = url.pathname.replace(/\/+$/, '');
  // Every request goes to a path under the base URL (`/oidc/token`, `/tokens/revoke`), which ends in the API
  // version: without it, the exchange would be sent to a path the broker does not serve.
  if (!path.endsWith('/v1')) {
    errors.push(
      `Input \`api-url\` is "${redacted(raw)}", which does not end in \`/v1\`: give the broker's base URL, e.g. ` +
        `\`${url.origin}${versionedPath(path)}\` (the default is \`${DEFAULT_API_URL}\`).`,
    );
  }
  return `${url.origin}${path}`;
}

/**
 * The value without what may be secret, for a message: everything up to its last `@` after the scheme (a
 * password may itself hold `/`, `?`, `#` or `@`, and then the value is no URL at all), then the query string
 * and fragment.
 */
function redacted(raw: string): string {
  return raw.replace(/^([a-z][a-z\d+.-]*:\/\/)?.*@/is, '$1…@').replace(/[?#].*$/s, '');
}

/** The path as it was probably meant: cut after a `/v1` it contains, a `/vN` at its end as `/v1`, or `/v1` added. */
function versionedPath(path: string): string {
  const v1 = path.indexOf('/v1/');
  if (v1 !== -1) return path.slice(0, v1 + 3);
  return /\/v\d+$/.test(path) ? path.replace(/\/v\d+$/, '/v1') : `${path}/v1`;
}

function parsePermissions(raw: string, errors: string[]): string[] {
  const values = [...new Set(raw.split(/[\s,]+/).filter((v) => v !== ''))];
  for (const value of values) {
    if (isPermission(value) || (SHORTCUTS as readonly string[]).includes(value)) continue;
    // Only the ids that exist: a read-only category such as `audit-log` has no `:write`.
    const suggestions = isCategoryId(value)
      ? [`${value}:read`, `${value}:write`].filter(isPermission).map((id) => `\`${id}\``)
      : [];
    const hint = suggestions.length > 0 ? ` Did you mean ${suggestions.join(' or ')}?` : '';
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
