// Replay records for exchanged OIDC tokens and the deny-list of revoked access tokens, in SQL.
import { appendAudit } from './audit-rows.js';
import type { SqlDriver } from './sql.js';
import type { Store } from './store.js';
import { createWriteBatcher } from './write-batcher.js';

type ExchangeRecord = Parameters<Store['tokens']['recordExchange']>;

export function tokenRows(db: SqlDriver): Store['tokens'] {
  const recordExchange = createWriteBatcher(
    db,
    async (tx, { use, audit, at }: { use: ExchangeRecord[0]; audit: ExchangeRecord[1]; at: number }) => {
      const fresh =
        (await tx.run(
          'INSERT INTO used_jtis (issuer, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING',
          [use.issuer, use.jti, use.expiresAt],
        )) === 1;
      await appendAudit(tx, fresh ? audit.fresh : audit.replayed, at);
      return fresh;
    },
  );
  return {
    async consumeJti(issuer, jti, expiresAt) {
      const changed = await db.run(
        'INSERT INTO used_jtis (issuer, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING',
        [issuer, jti, expiresAt],
      );
      return changed === 1;
    },
    recordExchange: (use, audit, at) => recordExchange({ use, audit, at }),
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
