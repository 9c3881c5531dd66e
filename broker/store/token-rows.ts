// Replay records for exchanged OIDC tokens and the deny-list of revoked access tokens, in SQL.
import { appendAudit, auditInsert } from './audit-rows.js';
import type { SqlDriver } from './sql.js';
import type { Store } from './store.js';

const INSERT_JTI =
  'INSERT INTO used_jtis (issuer, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING';

export function tokenRows(db: SqlDriver): Store['tokens'] {
  return {
    recordExchange: async (use, audit, at) =>
      (await db.writeBatched({
        probe: { sql: INSERT_JTI, params: [use.issuer, use.jti, use.expiresAt] },
        onChange: auditInsert(audit.fresh, at),
        onNoChange: auditInsert(audit.replayed, at),
      })) === 1,
    revoke: (jti, tenantId, expiresAt, at, audit) =>
      db.transaction(async (tx) => {
        await tx.run(
          'INSERT INTO revoked_tokens (jti, tenant_id, revoked_at, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING',
          [jti, tenantId, at, expiresAt],
        );
        await appendAudit(tx, audit, at);
      }),
    async isRevoked(jti) {
      return (await db.get('SELECT 1 AS revoked FROM revoked_tokens WHERE jti = ?', [jti])) !== undefined;
    },
    async purgeExpired(before) {
      const jtis = await db.run('DELETE FROM used_jtis WHERE expires_at < ?', [before]);
      const revoked = await db.run('DELETE FROM revoked_tokens WHERE expires_at < ?', [before]);
      return jtis + revoked;
    },
  };
}
