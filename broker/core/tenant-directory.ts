// Tenant lookups for the exchange and token checks, remembered in memory: a tenant record never changes once
// created (there is no update or delete path), so a cached answer can never be stale.
import type { Store, Tenant } from '../store/store.js';

export interface TenantDirectory {
  byAudience(audience: string): Promise<Tenant | undefined>;
  byName(name: string): Promise<Tenant | undefined>;
}

export function createTenantDirectory(store: Store, maxEntries = 10_000): TenantDirectory {
  const byAudience = new Map<string, Tenant>();
  const byName = new Map<string, Tenant>();
  const remember = (tenant: Tenant | undefined) => {
    if (!tenant) return tenant; // unknown ones are not remembered: the operator may create them any time
    if (byName.size >= maxEntries) {
      byName.clear();
      byAudience.clear();
    }
    byName.set(tenant.name, tenant);
    byAudience.set(tenant.audience, tenant);
    return tenant;
  };
  return {
    async byAudience(audience) {
      return byAudience.get(audience) ?? remember(await store.tenants.byAudience(audience));
    },
    async byName(name) {
      return byName.get(name) ?? remember(await store.tenants.byName(name));
    },
  };
}
