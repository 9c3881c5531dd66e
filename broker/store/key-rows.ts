// Built-in key slots and fine-grained keys in SQL; only digests and hints are stored.
import { appendAudit, checkRequester } from './audit-rows.js';
import { forUpdate, type SqlDriver, type SqlStatement } from './sql.js';
import type { AuditEventInput, BuiltinKeySlot, FineGrainedKey, Store } from './store.js';
import { revokeTokensMintedBy } from './token-rows.js';

interface SlotRow {
  tenant_id: string;
  kind: BuiltinKeySlot['kind'];
  slot: BuiltinKeySlot['slot'];
  hint: string | null;
  last_rotated_at: number | null;
  last_used_at: number | null;
}

interface FineGrainedRow {
  id: string;
  tenant_id: string;
  name: string;
  hint: string;
  permissions: string;
  created_by: string;
  created_at: number;
  expires_at: number;
  last_used_at: number | null;
}

const slotFromRow = (row: SlotRow): BuiltinKeySlot => ({
  tenantId: row.tenant_id,
  kind: row.kind,
  slot: row.slot,
  hint: row.hint,
  lastRotatedAt: row.last_rotated_at,
  lastUsedAt: row.last_used_at,
});

const keyFromRow = (row: FineGrainedRow): FineGrainedKey => ({
  id: row.id,
  tenantId: row.tenant_id,
  name: row.name,
  hint: row.hint,
  permissions: JSON.parse(row.permissions),
  createdBy: row.created_by,
  createdAt: row.created_at,
  expiresAt: row.expires_at,
  lastUsedAt: row.last_used_at,
});

const SLOT_COLUMNS = 'tenant_id, kind, slot, hint, last_rotated_at, last_used_at';
const KEY_COLUMNS =
  'id, tenant_id, name, hint, permissions, created_by, created_at, expires_at, last_used_at';
const KIND_ORDER = "CASE kind WHEN 'tenant' THEN 0 WHEN 'tenant-read-only' THEN 1 ELSE 2 END";

const withRevokedCount = (audit: AuditEventInput, revoked: number): AuditEventInput => ({
  ...audit,
  details: { ...audit.details, access_tokens_revoked: revoked },
});

/**
 * The query of a page of a tenant's keys, newest first, from after `page.after` (exported for the contract suite,
 * which checks that both engines read it along the index of (tenant_id, created_at, id) rather than sorting the
 * tenant's keys).
 */
export function fineGrainedKeyPage(
  tenantId: string,
  { after, limit }: { after?: { createdAt: number; id: string }; limit: number },
): SqlStatement {
  return {
    sql: `SELECT ${KEY_COLUMNS} FROM fine_grained_keys WHERE tenant_id = ?${after ? ' AND (created_at, id) < (?, ?)' : ''} ORDER BY created_at DESC, id DESC LIMIT ?`,
    params: [tenantId, ...(after ? [after.createdAt, after.id] : []), limit],
  };
}

export function keyRows(db: SqlDriver): Store['keys'] {
  const lock = forUpdate(db);
  return {
    async builtinByDigest(digest) {
      const row = await db.get<SlotRow>(`SELECT ${SLOT_COLUMNS} FROM builtin_keys WHERE digest = ?`, [
        digest,
      ]);
      return row && slotFromRow(row);
    },
    async listBuiltin(tenantId) {
      const rows = await db.all<SlotRow>(
        `SELECT ${SLOT_COLUMNS} FROM builtin_keys WHERE tenant_id = ? ORDER BY ${KIND_ORDER}, slot`,
        [tenantId],
      );
      return rows.map(slotFromRow);
    },
    rotate: (tenantId, kind, slot, key, at, audit, revoking) =>
      db.transaction(async (tx) => {
        await checkRequester(tx, audit);
        await tx.run(
          'UPDATE builtin_keys SET digest = ?, hint = ?, last_rotated_at = ?, last_used_at = NULL WHERE tenant_id = ? AND kind = ? AND slot = ?',
          [key.digest, key.hint, at, tenantId, kind, slot],
        );
        const revoked = await revokeTokensMintedBy(tx, tenantId, `${kind}/${slot}`, at, revoking);
        await appendAudit(tx, withRevokedCount(audit, revoked), at);
        return { tenantId, kind, slot, hint: key.hint, lastRotatedAt: at, lastUsedAt: null };
      }),
    async fineGrainedByDigest(digest) {
      const row = await db.get<FineGrainedRow>(
        `SELECT ${KEY_COLUMNS} FROM fine_grained_keys WHERE digest = ?`,
        [digest],
      );
      return row && keyFromRow(row);
    },
    createFineGrained: (key, stored, audit) =>
      db.transaction(async (tx) => {
        await checkRequester(tx, audit);
        await tx.run(
          `INSERT INTO fine_grained_keys (${KEY_COLUMNS}, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          [
            key.id,
            key.tenantId,
            key.name,
            stored.hint,
            JSON.stringify(key.permissions),
            key.createdBy,
            key.createdAt,
            key.expiresAt,
            null,
            stored.digest,
          ],
        );
        await appendAudit(tx, audit, key.createdAt);
        return { ...key, hint: stored.hint };
      }),
    async pageFineGrained(tenantId, page) {
      const { sql, params } = fineGrainedKeyPage(tenantId, page);
      return (await db.all<FineGrainedRow>(sql, params)).map(keyFromRow);
    },
    async getFineGrained(tenantId, id) {
      const row = await db.get<FineGrainedRow>(
        `SELECT ${KEY_COLUMNS} FROM fine_grained_keys WHERE tenant_id = ? AND id = ?`,
        [tenantId, id],
      );
      return row && keyFromRow(row);
    },
    deleteFineGrained: (tenantId, id, at, audit, revoking) =>
      db.transaction(async (tx) => {
        const row = await tx.get<FineGrainedRow>(
          `SELECT ${KEY_COLUMNS} FROM fine_grained_keys WHERE tenant_id = ? AND id = ?${lock}`,
          [tenantId, id],
        );
        if (!row) return undefined;
        const key = keyFromRow(row);
        const event = audit(key);
        await checkRequester(tx, event);
        await tx.run('DELETE FROM fine_grained_keys WHERE tenant_id = ? AND id = ?', [tenantId, id]);
        const revoked = await revokeTokensMintedBy(tx, tenantId, id, at, revoking);
        await appendAudit(tx, withRevokedCount(event, revoked), at);
        return key;
      }),
    async touchFineGrained(id, at) {
      // Through group commit: on SQLite a write on the event loop's own connection would wait there for the
      // writer thread's lock.
      await db.writeBatched({
        probe: { sql: 'UPDATE fine_grained_keys SET last_used_at = ? WHERE id = ?', params: [at, id] },
      });
    },
    async touchBuiltin(digest, at) {
      // By the key's digest, not the slot: a use batched before a rotation of the slot is not the new key's.
      await db.writeBatched({
        probe: { sql: 'UPDATE builtin_keys SET last_used_at = ? WHERE digest = ?', params: [at, digest] },
      });
    },
  };
}
