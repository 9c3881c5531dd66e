// Tenants in SQL, created together with their six built-in key slots.
import { appendAudit } from './audit-rows.js';
import { bytewise, type SqlDriver, UniqueViolation } from './sql.js';
import { BUILTIN_KINDS, SLOTS, type Store, type Tenant } from './store.js';

interface TenantRow {
  id: string;
  name: string;
  audience: string;
  disabled_categories: string;
  created_at: number;
}

const COLUMNS = 'id, name, audience, disabled_categories, created_at';

const fromRow = (row: TenantRow): Tenant => ({
  id: row.id,
  name: row.name,
  audience: row.audience,
  disabledCategories: JSON.parse(row.disabled_categories),
  createdAt: row.created_at,
});

export function tenantRows(db: SqlDriver): Store['tenants'] {
  const one = async (column: 'id' | 'name' | 'audience', value: string) => {
    const row = await db.get<TenantRow>(`SELECT ${COLUMNS} FROM tenants WHERE ${column} = ?`, [value]);
    return row && fromRow(row);
  };
  return {
    async create(tenant, primaryKey, audit) {
      try {
        await db.transaction(async (tx) => {
          await tx.run(
            'INSERT INTO tenants (id, name, audience, disabled_categories, created_at) VALUES (?, ?, ?, ?, ?)',
            [
              tenant.id,
              tenant.name,
              tenant.audience,
              JSON.stringify(tenant.disabledCategories),
              tenant.createdAt,
            ],
          );
          for (const kind of BUILTIN_KINDS) {
            for (const slot of SLOTS) {
              const key = kind === 'tenant' && slot === 'primary' ? primaryKey : undefined;
              await tx.run(
                'INSERT INTO builtin_keys (tenant_id, kind, slot, digest, hint, last_rotated_at) VALUES (?, ?, ?, ?, ?, ?)',
                [
                  tenant.id,
                  kind,
                  slot,
                  key?.digest ?? null,
                  key?.hint ?? null,
                  key ? tenant.createdAt : null,
                ],
              );
            }
          }
          await appendAudit(tx, audit, tenant.createdAt);
        });
        return { ok: true, value: tenant };
      } catch (error) {
        if (error instanceof UniqueViolation) {
          // Both may clash at once; the name is what the operator typed, so report it first.
          return { ok: false, conflict: (await one('name', tenant.name)) ? 'name' : 'audience' };
        }
        throw error;
      }
    },
    list: async () =>
      (await db.all<TenantRow>(`SELECT ${COLUMNS} FROM tenants ORDER BY ${bytewise(db, 'name')}`)).map(
        fromRow,
      ),
    byId: (id) => one('id', id),
    byName: (name) => one('name', name),
    byAudience: (audience) => one('audience', audience),
  };
}
