// Replay records for exchanged OIDC tokens, the access tokens minted from API keys and the deny-list of
// revoked access tokens, in SQL.
import { appendAudit, auditInsert, checkRequester, keyExists } from './audit-rows.js';
import { purgeInBatches } from './purge.js';
import type { SqlDriver, SqlExecutor } from './sql.js';
import { GrantingPolicyChanged, type Store } from './store.js';

// A new (iss, jti), only while the granting policy is still as the exchange read it (SQLite's upsert after a
// SELECT needs the WHERE it has here).
const INSERT_JTI_WHILE_POLICY = `INSERT INTO used_jtis (issuer, jti, expires_at)
  SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM trust_policies WHERE id = ? AND updated_at = ?)
  ON CONFLICT (issuer, jti) DO NOTHING`;

/**
 * Revokes the access tokens minted from one credential (`tenant/primary`, a fine-grained key's id) that have not
 * expired at `at`, or expired less than `expiredWithinMs` before it, inside the transaction that rotates or
 * deletes it; returns how many.
 */
export async function revokeTokensMintedBy(
  tx: SqlExecutor,
  tenantId: string,
  credentialId: string,
  at: number,
  { expiredWithinMs }: { expiredWithinMs: number },
): Promise<number> {
  const revoked = await tx.run(
    `INSERT INTO revoked_tokens (jti, tenant_id, revoked_at, expires_at)
     SELECT jti, tenant_id, ?, expires_at FROM minted_tokens WHERE tenant_id = ? AND credential_id = ? AND expires_at > ?
     ON CONFLICT (jti) DO NOTHING`,
    [at, tenantId, credentialId, at - expiredWithinMs],
  );
  await tx.run('DELETE FROM minted_tokens WHERE tenant_id = ? AND credential_id = ?', [
    tenantId,
    credentialId,
  ]);
  return revoked;
}

/** The tables of records kept until their token's expiry, and the columns of their rows' key. */
const PURGED = [
  ['used_jtis', 'issuer, jti'],
  ['revoked_tokens', 'jti'],
  ['minted_tokens', 'jti'],
] as const;

export function tokenRows(db: SqlDriver): Store['tokens'] {
  return {
    // Writes are serialised (SQLite's one writer, PostgreSQL's write turn), so a deletion or replacement of the
    // granting policy either committed before this insert, which then records nothing, or after it.
    async recordExchange(use, audit, at, grantedBy) {
      const key = [use.issuer, use.jti];
      const { probe, next } = await db.writeBatched({
        probe: {
          sql: INSERT_JTI_WHILE_POLICY,
          params: [...key, use.expiresAt, grantedBy.id, grantedBy.updatedAt],
        },
        onChange: auditInsert(audit.fresh, at),
        // Nothing inserted: a replay only if the token was used; otherwise the policy changed.
        onNoChange: auditInsert(audit.replayed, at, {
          sql: 'SELECT 1 FROM used_jtis WHERE issuer = ? AND jti = ?',
          params: key,
        }),
      });
      if (probe === 1) return true;
      // The replay's audit event was written with the refusal; without it, the policy had changed and nothing
      // was recorded (a use of the token committed after that check is then audited by the next decision).
      if (next === 1) return false;
      throw new GrantingPolicyChanged(grantedBy.id);
    },
    // Through group commit, as exchanges are: one commit with the audit event, off the event loop's connection.
    // Writes are serialised (SQLite's one writer, PostgreSQL's write turn), so a rotation or deletion of the key
    // either committed before this insert, which then finds no key, or revokes the token it records.
    recordMinted: async (token, keyDigest, audit, at) => {
      const key = keyExists(keyDigest);
      const { probe } = await db.writeBatched({
        probe: {
          sql: `INSERT INTO minted_tokens (jti, tenant_id, credential_id, expires_at)
                SELECT ?, ?, ?, ? WHERE EXISTS (${key.sql})`,
          params: [token.jti, token.tenantId, token.credentialId, token.expiresAt, ...key.params],
        },
        onChange: auditInsert(audit, at),
      });
      return probe === 1;
    },
    revoke: (jti, tenantId, expiresAt, at, audit) =>
      db.transaction(async (tx) => {
        await checkRequester(tx, audit);
        const revoked = await tx.run(
          'INSERT INTO revoked_tokens (jti, tenant_id, revoked_at, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING',
          [jti, tenantId, at, expiresAt],
        );
        // A token another request revoked first (the same revoke sent twice, or its key's rotation) is not
        // revoked again: the event of that revocation is already there.
        if (revoked === 1) await appendAudit(tx, audit, at);
      }),
    async isRevoked(jti) {
      return (await db.get('SELECT 1 AS revoked FROM revoked_tokens WHERE jti = ?', [jti])) !== undefined;
    },
    async wasExchanged(issuer, jti) {
      return (
        (await db.get('SELECT 1 AS used FROM used_jtis WHERE issuer = ? AND jti = ?', [issuer, jti])) !==
        undefined
      );
    },
    async purgeExpired(before) {
      let purged = 0;
      for (const [table, key] of PURGED) {
        purged += await purgeInBatches(db, (limit) => ({
          sql: `DELETE FROM ${table} WHERE (${key}) IN (SELECT ${key} FROM ${table} WHERE expires_at < ? LIMIT ?)`,
          params: [before, limit],
        }));
      }
      return purged;
    },
  };
}
