// The permission catalogue (DESIGN §2): categories, ids, shortcuts, implication and subset checks.
import { nearestWord } from './edit-distance.js';

export const CATEGORIES = [
  { id: 'harden-runner', name: 'Harden Runner', product: true },
  { id: 'orchestrate-security', name: 'Orchestrate Security', product: true },
  { id: 'workflow-run-policies', name: 'Workflow Run Policies', product: true },
  { id: 'oss-package-security', name: 'OSS Package Security', product: true },
  { id: 'apps-and-pats', name: 'Apps & PATs', product: true },
  { id: 'secure-registry', name: 'Secure Registry', product: true },
  { id: 'api-keys', name: 'API keys', product: false },
  { id: 'oidc-federation', name: 'OIDC federation', product: false },
  { id: 'audit-log', name: 'Audit log', product: false, readOnly: true },
] as const satisfies readonly { id: string; name: string; product: boolean; readOnly?: boolean }[];

export type CategoryId = (typeof CATEGORIES)[number]['id'];
export type Permission = `${CategoryId}:${'read' | 'write'}`;
export const SHORTCUTS = ['read-all', 'read-write-all'] as const;
export type Shortcut = (typeof SHORTCUTS)[number];

const PRODUCT_CATEGORY_IDS: ReadonlySet<string> = new Set(
  CATEGORIES.filter((c) => c.product).map((c) => c.id),
);

export function isProductCategory(id: string): boolean {
  return PRODUCT_CATEGORY_IDS.has(id);
}

const CATEGORY_IDS: readonly CategoryId[] = CATEGORIES.map((c) => c.id);

export function isCategoryId(id: string): id is CategoryId {
  return CATEGORIES.some((c) => c.id === id);
}

function permissionsOf(category: (typeof CATEGORIES)[number]): Permission[] {
  const read = `${category.id}:read` as Permission;
  return 'readOnly' in category && category.readOnly ? [read] : [read, `${category.id}:write` as Permission];
}

/** Every permission id that exists, in catalogue order. */
export const ALL_PERMISSIONS: readonly Permission[] = CATEGORIES.flatMap(permissionsOf);
const ALL_PERMISSION_SET: ReadonlySet<string> = new Set(ALL_PERMISSIONS);

export function isShortcut(value: string): value is Shortcut {
  return (SHORTCUTS as readonly string[]).includes(value);
}

export function isPermission(value: string): value is Permission {
  return ALL_PERMISSION_SET.has(value);
}

export function categoryOf(permission: Permission): CategoryId {
  return permission.slice(0, permission.indexOf(':')) as CategoryId;
}

/** The permissions a tenant can grant and use, given its disabled product categories. */
export function enabledPermissions(disabledCategories: readonly string[]): Permission[] {
  const disabled = new Set(disabledCategories);
  return ALL_PERMISSIONS.filter((p) => !disabled.has(categoryOf(p)));
}

/** Adds the `:read` implied by every `:write`, returning a sorted, de-duplicated list in catalogue order. */
export function withImplied(permissions: Iterable<Permission>): Permission[] {
  const set = new Set<Permission>();
  for (const p of permissions) {
    set.add(p);
    if (p.endsWith(':write')) set.add(`${categoryOf(p)}:read` as Permission);
  }
  return ALL_PERMISSIONS.filter((p) => set.has(p));
}

/** Whether `held` (with write ⇒ read) covers every permission in `wanted`. */
export function covers(held: Iterable<Permission>, wanted: Iterable<Permission>): boolean {
  return missingFrom(held, wanted).length === 0;
}

/** The permissions of `wanted` that `held` (with write ⇒ read) does not cover. */
export function missingFrom(held: Iterable<Permission>, wanted: Iterable<Permission>): Permission[] {
  const effective = new Set(withImplied(held));
  return [...wanted].filter((p) => !effective.has(p));
}

export type ExpandResult =
  | { ok: true; permissions: Permission[] }
  | { ok: false; problems: PermissionProblem[] };

export interface PermissionProblem {
  index: number;
  /** Why, without quoting the entry (what an audit event may keep). */
  reason: 'unknown permission' | 'permission of a category disabled for this tenant';
  /** Why, quoting the entry, with the id it probably stands for. */
  message: string;
}

/**
 * Expands shortcuts and validates ids against the tenant's enabled permissions; when an entry grants nothing, says
 * why for every such entry, so that one answer names all there are to fix.
 * `read-all` is every enabled `:read`; `read-write-all` every enabled permission.
 */
export function expandPermissions(
  values: readonly string[],
  enabled: readonly Permission[],
  listedIn: 'list' | 'scope' = 'list',
): ExpandResult {
  const enabledSet = new Set<string>(enabled);
  const out = new Set<Permission>();
  const problems: PermissionProblem[] = [];
  for (const [index, value] of values.entries()) {
    if (value === 'read-all') {
      for (const p of enabled) if (p.endsWith(':read')) out.add(p);
    } else if (value === 'read-write-all') {
      for (const p of enabled) out.add(p);
    } else if (!isPermission(value)) {
      const meant = joinedPermissions(value, listedIn) ?? meantPermission(value, (id) => `"${id}"`, enabled);
      const message = `unknown permission "${value}"${meant ? `; ${meant}` : ''} (GET /v1/permissions lists the valid ids)`;
      problems.push({ index, reason: 'unknown permission', message });
    } else if (!enabledSet.has(value)) {
      const message = `"${value}" belongs to a category that is disabled for this tenant`;
      problems.push({ index, reason: 'permission of a category disabled for this tenant', message });
    } else {
      out.add(value);
    }
  }
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, permissions: ALL_PERMISSIONS.filter((p) => out.has(p)) };
}

/**
 * For an entry holding several ids joined by commas or other separators (`harden-runner:read,audit-log:read`), how to
 * send them apart: read as one, its first id's category would be offered instead of the list.
 */
function joinedPermissions(value: string, listedIn: 'list' | 'scope'): string | null {
  const parts = value.split(/[\s,;|]+/).filter((part) => part !== '');
  if (parts.length < 2 || !parts.every((part) => isPermission(part) || isShortcut(part))) return null;
  return listedIn === 'scope'
    ? `separate the permissions of scope with spaces: did you mean "${parts.join(' ')}"?`
    : `list each permission as an entry of its own: did you mean [${parts.map((p) => `"${p}"`).join(', ')}]?`;
}

/**
 * What a value that names no permission probably stands for, as a question with each id quoted by `quote`: the id
 * or shortcut in another case, quoted or in brackets, or misspelt (`harden-runer:read`, `read-al`); a category's
 * ids, its name misspelt or not; for a read-only category's `:write`, its `:read`. Only ids among `enabled` are
 * offered, since another would only be refused next. Null when nothing is close, or two ids are as close.
 */
export function meantPermission(
  value: string,
  quote: (id: string) => string,
  enabled: readonly Permission[] = ALL_PERMISSIONS,
): string | null {
  const bare = value
    .trim()
    .toLowerCase()
    .replace(/^[["']+|["'\]]+$/g, '');
  const id =
    isShortcut(bare) || isPermission(bare) ? bare : nearestWord(bare, [...ALL_PERMISSIONS, ...SHORTCUTS]);
  if (id !== undefined && isShortcut(id)) return `did you mean ${quote(id)}?`;
  if (id !== undefined) return enabled.includes(id) ? `did you mean ${quote(id)}?` : null;
  const written = bare.split(':')[0]!;
  const category = isCategoryId(written) ? written : nearestWord(written, CATEGORY_IDS);
  if (category === undefined) return null;
  const ids = ALL_PERMISSIONS.filter((p) => categoryOf(p) === category);
  const offered = ids.filter((p) => enabled.includes(p));
  if (offered.length === 0) return null;
  if (ids.length === 1 && bare.slice(written.length) === ':write')
    return `${quote(category)} is read only: did you mean ${quote(offered[0]!)}?`;
  return `did you mean ${offered.map(quote).join(' or ')}?`;
}
