// Reads and validates every action input once, before anything touches the network.

import { isAudience } from '../broker/core/audience.js';
import { isLoopbackHost } from '../broker/core/loopback.js';
import {
  hasUnsafeNameCharacter,
  isInvisibleName,
  UNSAFE_NAME_CHARACTERS,
} from '../broker/core/name-characters.js';
import {
  ALL_PERMISSIONS,
  isPermission,
  isShortcut,
  meantPermission,
  SHORTCUTS,
} from '../broker/core/permissions.js';

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
    errors.push(tenantError(tenant));
  }

  const audienceInput = read('audience');
  const audience = audienceInput || `${tenant}.${AUDIENCE_SUFFIX}`;
  // The broker's rule for a tenant's audience: a value outside it is no tenant's, whatever GitHub puts in the token.
  if (audienceInput && !isAudience(audienceInput)) {
    errors.push(
      `Input \`audience\` is "${shown(audienceInput)}", which cannot be a tenant's audience: use at most 255 ` +
        `printable ASCII characters without white space, e.g. \`${DNS_LABEL.test(tenant) ? tenant : 'acme'}.${AUDIENCE_SUFFIX}\`, or leave ` +
        "it empty for the tenant's default.",
    );
  }

  const apiUrl = parseApiUrl(read('api-url') || DEFAULT_API_URL, errors);
  const permissions = parsePermissions(getInput('permissions'), errors);

  const policy = read('policy') || undefined;
  // Counted in characters, as the broker counts a name (a character outside the BMP is two UTF-16 units).
  if (policy !== undefined && [...policy].length > 100) {
    errors.push('Input `policy` must be the name of a trust policy, at most 100 characters.');
  } else if (policy !== undefined && hasUnsafeNameCharacter(policy)) {
    // The broker's own rule for names: such a value names no policy, and the broker would refuse the request.
    errors.push(
      `Input \`policy\` is "${shown(policy)}", which cannot be the name of a trust policy: a name holds no ` +
        `${UNSAFE_NAME_CHARACTERS}. Write the name on one line, exactly as the tenant's policies show it.`,
    );
  } else if (policy !== undefined && isInvisibleName(policy)) {
    // The broker's rule too: no policy has a name that shows as nothing, so the request could only be refused.
    errors.push(
      `Input \`policy\` is "${shown(policy)}", which shows as nothing: it holds only invisible characters, and no ` +
        "trust policy has such a name. Write the policy's name as the tenant's policies show it, or leave the " +
        'input empty for the broker to choose the policy that matches the job.',
    );
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

/** Why the value is no tenant name, and the name it probably stands for. */
function tenantError(tenant: string): string {
  const start = `Input \`tenant\` is "${shown(tenant)}", which is not a tenant name`;
  // An audience or a URL pasted as the tenant: the name is the label before the audience's suffix.
  if (/[./:]/.test(tenant)) {
    const host = urlOf(/^[a-z][a-z\d+.-]*:\/\//i.test(tenant) ? tenant : `https://${tenant}`)?.hostname;
    const label = host?.endsWith(`.${AUDIENCE_SUFFIX}`) ? host.slice(0, -AUDIENCE_SUFFIX.length - 1) : '';
    const meant = DNS_LABEL.test(label) && host !== new URL(DEFAULT_API_URL).hostname ? label : undefined;
    return (
      `${start}: the input takes the tenant's name alone, e.g. \`acme\`; the broker's URL goes in \`api-url\`, ` +
      `and an audience other than the tenant's default in \`audience\`.${meant ? ` Did you mean \`${meant}\`?` : ''}`
    );
  }
  const rule = 'use lower-case letters, digits and inner hyphens, at most 63 characters';
  const meant = visible(tenant).toLowerCase().replace(/_/g, '-');
  return DNS_LABEL.test(meant)
    ? `${start}: ${rule}. Did you mean \`${meant}\`?`
    : `${start}: ${rule} (e.g. \`acme\` or \`acme-prod\`).`;
}

/**
 * A value as a message quotes it: characters that show as nothing or as something else (control, format, line
 * separator, lone surrogate, default-ignorable such as a variation selector, e.g. a zero-width space pasted with a
 * name) written as escapes, so the reader sees them.
 */
function shown(value: string): string {
  return value.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Default_Ignorable_Code_Point}]/gu, (c) => {
    const point = c.codePointAt(0)!;
    return point > 0xffff ? `\\u{${point.toString(16)}}` : `\\u${point.toString(16).padStart(4, '0')}`;
  });
}

/** The value without the characters that show as nothing (format characters such as a zero-width space). */
function visible(value: string): string {
  return value.replace(/\p{Cf}/gu, '');
}

function urlOf(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

function parseApiUrl(raw: string, errors: string[]): string {
  const url = urlOf(raw);
  if (!url) {
    // A host and path without the scheme, e.g. `agent.api.stepsecurity.io/v1`; never a value with credentials.
    const guess = /^[a-z][a-z\d+.-]*:\/\//i.test(raw) ? undefined : urlOf(`https://${raw}`);
    const meant =
      guess?.hostname.includes('.') && !guess.username && !guess.password
        ? `${guess.origin}${versionedPath(guess.pathname.replace(/\/+$/, ''))}`
        : undefined;
    errors.push(
      `Input \`api-url\` is "${shown(redacted(raw))}", which is not a URL; ` +
        (meant ? `did you mean \`${meant}\`?` : `use e.g. \`${DEFAULT_API_URL}\`.`),
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
      `Input \`api-url\` is "${shown(redacted(raw))}", which does not end in \`/v1\`: give the broker's base URL, e.g. ` +
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
  const v1 = path.toLowerCase().indexOf('/v1/');
  if (v1 !== -1) return `${path.slice(0, v1)}/v1`;
  return /\/v\d+$/i.test(path) ? path.replace(/\/v\d+$/i, '/v1') : `${path}/v1`;
}

/**
 * A permission written as a job's `permissions:` block writes one (`harden-runner: read`): white space on a line
 * around the colon before `read` or `write`.
 */
const SPACED_PERMISSION = /([^\s,:]+)([^\S\n]*):([^\S\n]*)(read|write)(?![^\s,])/gi;

function parsePermissions(raw: string, errors: string[]): string[] {
  // The id each such value stands for takes its place, so the rest of the input is checked as it was meant.
  const spaced: { written: string; meant: string }[] = [];
  const joined = raw.replace(SPACED_PERMISSION, (written, category: string, before, after, level: string) => {
    const meant = `${category}:${level}`.toLowerCase();
    if ((before === '' && after === '') || !isPermission(meant)) return written;
    spaced.push({ written, meant });
    return meant;
  });
  if (spaced.length > 0) {
    errors.push(
      `Input \`permissions\` writes ${spaced.map((s) => `"${shown(s.written)}"`).join(', ')} with spaces around ` +
        "the colon, as a job's `permissions:` block does; an id has none: did you mean " +
        `\`${[...new Set(spaced.map((s) => s.meant))].join(', ')}\`?`,
    );
  }
  const values = [...new Set(joined.split(/[\s,]+/).filter((v) => v !== ''))];
  // A YAML list written in a block scalar (`permissions: |` then `- audit-log:read` lines) leaves its dashes.
  if (values.includes('-')) {
    const ids = values.filter((v) => v !== '-');
    errors.push(
      'Input `permissions` is a YAML list; write the ids separated by commas, spaces or new lines, without the ' +
        `dashes, e.g. \`${(ids.length > 0 ? ids : ['audit-log:read']).join(', ')}\`.`,
    );
  }
  const wrong = values.filter((v) => v !== '-' && !isPermission(v) && !isShortcut(v));
  wrong.forEach((value, i) => {
    // The valid ids once, after the last wrong value, rather than after each.
    const valid =
      i === wrong.length - 1
        ? ` Valid ids: ${ALL_PERMISSIONS.join(', ')}; shortcuts: ${SHORTCUTS.join(', ')}.`
        : '';
    errors.push(
      `Input \`permissions\` contains "${shown(value)}", which is not a permission.${permissionHint(value)}${valid}`,
    );
  });
  return values;
}

/** The id a wrong value probably stands for, as a sentence of its own. */
function permissionHint(value: string): string {
  // Ids joined by another separator (`audit-log:read;harden-runner:read`): the list, not its first id.
  const parts = visible(value)
    .split(/[;|]+/)
    .filter((part) => part !== '');
  if (parts.length > 1 && parts.every((part) => isPermission(part) || isShortcut(part))) {
    return ` Separate permissions with commas, spaces or new lines: did you mean \`${parts.join(', ')}\`?`;
  }
  const meant = meantPermission(visible(value), (id) => `\`${id}\``);
  return meant ? ` ${meant[0]!.toUpperCase()}${meant.slice(1)}` : '';
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600 };

function parseDuration(raw: string, errors: string[]): number | undefined {
  if (raw === '') return undefined;
  const value = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_DURATION_SECONDS) {
    // With a unit, as other actions take a lifetime (`3600s`, `15m`, `1h`): the same time in seconds, if allowed.
    const [, amount, unit] = /^(\d+)\s*([smh])$/i.exec(raw) ?? [];
    const seconds = amount && unit ? Number(amount) * UNIT_SECONDS[unit.toLowerCase()]! : 0;
    const hint = seconds >= 1 && seconds <= MAX_DURATION_SECONDS ? ` Did you mean \`${seconds}\`?` : '';
    errors.push(
      `Input \`duration-seconds\` is "${shown(raw)}"; it must be a whole number of seconds from 1 to ` +
        `${MAX_DURATION_SECONDS}, or left empty for the policy's default.${hint}`,
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
  errors.push(`Input \`${name}\` is "${shown(raw)}"; it must be \`true\` or \`false\`.`);
  return fallback;
}
