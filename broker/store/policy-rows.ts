// Trust policies in SQL, indexed by (tenant, issuer, owner, repository) so lookups stay flat as policies grow.
import { policyNameKey } from '../core/policy-names.js';
import type { PolicyClaims, PolicyRecord, TrustPolicy } from '../core/policy-types.js';
import { appendAudit, checkRequester } from './audit-rows.js';
import { bytewise, forUpdate, type SqlDriver, type SqlValue, UniqueViolation } from './sql.js';
import { type Created, type Precondition, PreconditionFailed, type Store } from './store.js';

interface PolicyRow {
  id: string;
  tenant_id: string;
  name: string;
  description: string | null;
  issuer: string;
  claims: string;
  max_session_duration_seconds: number;
  permissions: string;
  allow_pull_request_target: number;
  created_at: number;
  updated_at: number;
}

const COLUMNS =
  'id, tenant_id, name, description, issuer, claims, max_session_duration_seconds, permissions, allow_pull_request_target, created_at, updated_at';

const fromRow = (row: PolicyRow): TrustPolicy => ({
  id: row.id,
  tenantId: row.tenant_id,
  name: row.name,
  description: row.description,
  issuer: row.issuer,
  claims: JSON.parse(row.claims) as PolicyClaims,
  max_session_duration_seconds: row.max_session_duration_seconds,
  permissions: JSON.parse(row.permissions),
  allow_pull_request_target: row.allow_pull_request_target === 1,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});

/** The lower-case owner and repository a policy is filed under ('' = any repository of the owner). */
export function lookupKeys(claims: PolicyClaims): { ownerKey: string; repositoryKey: string } {
  const repository = claims.repository?.toLowerCase() ?? '';
  const owner = claims.repository_owner?.toLowerCase() ?? repository.split('/')[0] ?? '';
  return { ownerKey: owner, repositoryKey: repository };
}

function values(input: PolicyRecord) {
  const { ownerKey, repositoryKey } = lookupKeys(input.claims);
  return [
    input.name,
    policyNameKey(input.name),
    input.description,
    input.issuer,
    ownerKey,
    repositoryKey,
    JSON.stringify(input.claims),
    input.max_session_duration_seconds,
    JSON.stringify(input.permissions),
    input.allow_pull_request_target ? 1 : 0,
  ];
}

async function catchingNameClash<T>(fn: () => Promise<T>): Promise<T | { ok: false; conflict: string }> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof UniqueViolation) return { ok: false, conflict: 'name' };
    throw error;
  }
}

/** Judged on the row the change's transaction has locked, so that of two writers holding one version one changes it. */
function holds(precondition: Precondition<TrustPolicy> | undefined, current: TrustPolicy): void {
  if (precondition && !precondition(current)) throw new PreconditionFailed();
}

/**
 * The query of a tenant's policies by name key, byte by byte, from after `page.after` (exported for the contract
 * suite, which checks that both engines read a page along the name index rather than sorting the tenant's policies).
 */
export function policyPage(
  db: Pick<SqlDriver, 'engine'>,
  tenantId: string,
  page?: { after?: string; limit: number },
): { sql: string; params: SqlValue[] } {
  const key = bytewise(db, 'name_key');
  const after = page?.after;
  return {
    sql: `SELECT ${COLUMNS}, name_key FROM trust_policies WHERE tenant_id = ?${after === undefined ? '' : ` AND ${key} > ?`} ORDER BY ${key}${page ? ' LIMIT ?' : ''}`,
    params: [tenantId, ...(after === undefined ? [] : [after]), ...(page ? [page.limit] : [])],
  };
}

export function policyRows(db: SqlDriver): Store['policies'] {
  const lock = forUpdate(db);
  const get = async (tenantId: string, id: string) => {
    const row = await db.get<PolicyRow>(
      `SELECT ${COLUMNS} FROM trust_policies WHERE tenant_id = ? AND id = ?`,
      [tenantId, id],
    );
    return row && fromRow(row);
  };
  return {
    create: (tenantId, id, input, at, audit) =>
      catchingNameClash<Created<TrustPolicy>>(() =>
        db.transaction(async (tx) => {
          await checkRequester(tx, audit);
          await tx.run(
            `INSERT INTO trust_policies (name, name_key, description, issuer, owner_key, repository_key, claims,
               max_session_duration_seconds, permissions, allow_pull_request_target, id, tenant_id, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
            [...values(input), id, tenantId, at, at],
          );
          await appendAudit(tx, audit, at);
          return { ok: true, value: { ...input, id, tenantId, createdAt: at, updatedAt: at } };
        }),
      ),
    replace: (tenantId, id, input, at, audit, precondition) =>
      catchingNameClash<Created<TrustPolicy> | undefined>(() =>
        db.transaction(async (tx) => {
          const before = await tx.get<PolicyRow>(
            `SELECT ${COLUMNS} FROM trust_policies WHERE tenant_id = ? AND id = ?${lock}`,
            [tenantId, id],
          );
          if (!before) return undefined;
          const previous = fromRow(before);
          const event = audit(previous);
          await checkRequester(tx, event);
          holds(precondition, previous);
          // A replacement that changes nothing writes nothing: no policy.updated event, and updated_at stays the
          // time of the last change (a script that applies its policies on every run changes none of them).
          if (JSON.stringify(values(input)) === JSON.stringify(values(previous)))
            return { ok: true, value: previous };
          // Every replacement moves updated_at forward, even within one millisecond (or a clock behind another
          // replica's): an exchange commits only while the policy it read is unchanged (see recordExchange).
          const updatedAt = Math.max(at, before.updated_at + 1);
          await tx.run(
            `UPDATE trust_policies SET name = ?, name_key = ?, description = ?, issuer = ?, owner_key = ?, repository_key = ?,
               claims = ?, max_session_duration_seconds = ?, permissions = ?, allow_pull_request_target = ?, updated_at = ?
             WHERE tenant_id = ? AND id = ?`,
            [...values(input), updatedAt, tenantId, id],
          );
          await appendAudit(tx, event, at);
          return { ok: true, value: { ...input, id, tenantId, createdAt: before.created_at, updatedAt } };
        }),
      ),
    delete: (tenantId, id, at, audit, precondition) =>
      db.transaction(async (tx) => {
        const row = await tx.get<PolicyRow>(
          `SELECT ${COLUMNS} FROM trust_policies WHERE tenant_id = ? AND id = ?${lock}`,
          [tenantId, id],
        );
        if (!row) return undefined;
        const policy = fromRow(row);
        const event = audit(policy);
        await checkRequester(tx, event);
        holds(precondition, policy);
        await tx.run('DELETE FROM trust_policies WHERE tenant_id = ? AND id = ?', [tenantId, id]);
        await appendAudit(tx, event, at);
        return policy;
      }),
    get,
    async list(tenantId) {
      const { sql, params } = policyPage(db, tenantId);
      return (await db.all<PolicyRow>(sql, params)).map(fromRow);
    },
    async page(tenantId, page) {
      const { sql, params } = policyPage(db, tenantId, page);
      const rows = await db.all<PolicyRow & { name_key: string }>(sql, params);
      return rows.map((row) => ({ policy: fromRow(row), nameKey: row.name_key }));
    },
    async named(tenantId, nameKey) {
      const rows = await db.all<PolicyRow>(
        `SELECT ${COLUMNS} FROM trust_policies WHERE tenant_id = ? AND name_key = ?`,
        [tenantId, nameKey],
      );
      return rows.map(fromRow);
    },
    async candidates(tenantId, issuer, ownerKey, repositoryKey) {
      const rows = await db.all<PolicyRow>(
        `SELECT ${COLUMNS} FROM trust_policies
         WHERE tenant_id = ? AND issuer = ? AND owner_key = ? AND repository_key IN ('', ?)`,
        [tenantId, issuer, ownerKey, repositoryKey],
      );
      return rows.map(fromRow);
    },
  };
}
