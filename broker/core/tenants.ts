// Creating tenants (DESIGN §6): name and audience rules, and the Tenant API key printed once.
import { randomUUID } from 'node:crypto';
import type { Store, Tenant } from '../store/store.js';
import { isAudience } from './audience.js';
import { generateKey, type KeyDigester, keyHint, storedSecretProblem } from './keys.js';
import { isCategoryId, isProductCategory } from './permissions.js';
import { OPERATOR } from './principal.js';

export interface CreateTenantInput {
  name: string;
  audience?: string;
  disabledCategories?: readonly string[];
}

export type CreateTenantResult =
  | { ok: true; tenant: Tenant; key: string }
  | { ok: false; field: 'name' | 'audience' | 'disable'; message: string };

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function validateTenantName(name: string): string | undefined {
  if (DNS_LABEL.test(name)) return undefined;
  return `"${name}" is not a valid tenant name: use lower-case letters, digits and inner hyphens, at most 63 characters (a DNS label)`;
}

export async function createTenant(
  input: CreateTenantInput,
  deps: { store: Store; digest: KeyDigester; now: () => number; audienceSuffix: string },
): Promise<CreateTenantResult> {
  // First, so that no other message repeats the secret: a name or audience holding one is stored nowhere.
  for (const field of ['name', 'audience'] as const) {
    const secret = storedSecretProblem(field, input[field] ?? '');
    if (secret) return { ok: false, field, message: secret };
  }
  const nameError = validateTenantName(input.name);
  if (nameError) return { ok: false, field: 'name', message: nameError };
  const audience = input.audience ?? `${input.name}.${deps.audienceSuffix}`;
  if (!isAudience(audience)) {
    return {
      ok: false,
      field: 'audience',
      message: `"${audience}" is not a valid audience: printable characters without spaces, at most 255`,
    };
  }
  const disabled = [...new Set(input.disabledCategories ?? [])];
  for (const category of disabled) {
    if (!isCategoryId(category) || !isProductCategory(category)) {
      return {
        ok: false,
        field: 'disable',
        message: `"${category}" is not a product category that can be disabled (harden-runner, orchestrate-security, workflow-run-policies, oss-package-security, apps-and-pats, secure-registry)`,
      };
    }
  }
  const tenant: Tenant = {
    id: randomUUID(),
    name: input.name,
    audience,
    disabledCategories: disabled,
    createdAt: deps.now(),
  };
  const key = generateKey('tenant');
  const created = await deps.store.tenants.create(
    tenant,
    { digest: deps.digest(key), hint: keyHint(key) },
    {
      tenantId: tenant.id,
      type: 'tenant.created',
      outcome: 'success',
      actor: OPERATOR,
      target: { type: 'tenant', id: tenant.id, name: tenant.name },
      details: { audience, disabled_categories: disabled },
    },
  );
  if (!created.ok) {
    return created.conflict === 'audience'
      ? { ok: false, field: 'audience', message: `audience "${audience}" is already used by another tenant` }
      : { ok: false, field: 'name', message: `a tenant named "${input.name}" already exists` };
  }
  return { ok: true, tenant, key };
}
