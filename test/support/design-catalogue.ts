// DESIGN §2's permission catalogue, written out from the document rather than imported from the broker, so that the
// tests built on it check the broker's catalogue instead of repeating it.

/** The categories, in the document's order; `audit-log` is read only. */
export const DESIGN_CATEGORIES = [
  'harden-runner',
  'orchestrate-security',
  'workflow-run-policies',
  'oss-package-security',
  'apps-and-pats',
  'secure-registry',
  'api-keys',
  'oidc-federation',
  'audit-log',
] as const;

/** Every permission id: each category's `:read`, and its `:write` unless it is read only. */
export const DESIGN_PERMISSIONS = DESIGN_CATEGORIES.flatMap((c) =>
  c === 'audit-log' ? [`${c}:read`] : [`${c}:read`, `${c}:write`],
);

/** Every `:read`: what `read-all` stands for when every category is enabled. */
export const DESIGN_READS = DESIGN_PERMISSIONS.filter((p) => p.endsWith(':read'));
