// Audit events in SQL: appended inside the transaction of the change they describe, or group-committed.
import { withoutSecretsInJson } from '../core/keys.js';
import { purgeInBatches } from './purge.js';
import type { SqlDriver, SqlExecutor, SqlStatement, SqlValue } from './sql.js';
import {
  type AuditEvent,
  type AuditEventInput,
  type AuditQuery,
  RequesterWithdrawn,
  type Store,
} from './store.js';

interface AuditRow {
  id: number;
  tenant_id: string;
  at: number;
  type: string;
  outcome: AuditEvent['outcome'];
  actor: string;
  target: string | null;
  details: string;
}

/**
 * A part of an event as its row keeps it: an API key that a name, a claim or a path holds (pasted there by
 * mistake) as its hint, and a token left out, as error bodies show them. On the JSON text (keys, then tokens): what
 * is replaced is letters, digits, `_`, `-` and `.` outside any escape, so it lies inside one JSON string, and what is
 * put there needs no escaping.
 */
const recorded = (value: unknown): string => withoutSecretsInJson(JSON.stringify(value));

/** The INSERT for one audit event, for a transaction of its own or a group commit; with `onlyIf`, only when that query finds a row. */
export function auditInsert(event: AuditEventInput, at: number, onlyIf?: SqlStatement): SqlStatement {
  const columns = 'INSERT INTO audit_events (tenant_id, at, type, outcome, actor, target, details)';
  return {
    sql: onlyIf
      ? `${columns} SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (${onlyIf.sql})`
      : `${columns} VALUES (?, ?, ?, ?, ?, ?, ?)`,
    params: [
      event.tenantId,
      at,
      event.type,
      event.outcome,
      recorded(event.actor),
      event.target ? recorded(event.target) : null,
      recorded(
        event.requestId === undefined
          ? (event.details ?? {})
          : { ...event.details, request_id: event.requestId },
      ),
      ...(onlyIf?.params ?? []),
    ],
  };
}

/**
 * Rejects with RequesterWithdrawn when the event's requester no longer holds: its key was rotated or revoked, or
 * its token revoked (or, for an exchanged token, the trust policy that granted it deleted), after the request
 * authenticated it. Run in the change's transaction before the change (a
 * key may rotate or revoke itself): writes take turns, so a rotation either committed before, and this finds
 * it, or commits after this change, which the key was still good for.
 */
export async function checkRequester(tx: SqlExecutor, event: AuditEventInput): Promise<void> {
  const { requester } = event;
  if (!requester) return;
  let holds: boolean;
  if ('keyDigest' in requester) {
    const key = keyExists(requester.keyDigest);
    holds = (await tx.get(key.sql, key.params)) !== undefined;
  } else {
    holds =
      (await tx.get('SELECT 1 AS found FROM revoked_tokens WHERE jti = ?', [requester.tokenJti])) ===
        undefined &&
      (requester.policyId === undefined ||
        (await tx.get('SELECT 1 AS found FROM trust_policies WHERE id = ?', [requester.policyId])) !==
          undefined);
  }
  if (!holds) throw new RequesterWithdrawn();
}

/** A query that finds a row while an API key (built-in or fine-grained) with this digest exists. */
export function keyExists(digest: string): SqlStatement {
  return {
    sql: 'SELECT 1 AS found FROM builtin_keys WHERE digest = ? UNION ALL SELECT 1 FROM fine_grained_keys WHERE digest = ?',
    params: [digest, digest],
  };
}

export async function appendAudit(db: SqlExecutor, event: AuditEventInput, at: number): Promise<void> {
  const { sql, params } = auditInsert(event, at);
  await db.run(sql, params);
}

/**
 * Deletes, of the oldest events (by id, the primary key: no index on `at` is needed), as many as the second `?` (the
 * batch's limit), those below the first one at or after the first `?`, so that the log is only ever trimmed from its old end: every event kept is newer, by
 * id, than every event deleted, which is what lets a cursor naming a deleted event be told from another tenant's
 * (see `oldestKept`). An older event recorded after a newer one (a replica whose clock runs behind) waits for the
 * newer one to go. Ids are never reused (AUTOINCREMENT, an identity column), and one committed after this reads
 * the oldest events is above them all, so it is never taken.
 */
const PURGE_OLDEST_EVENTS = `DELETE FROM audit_events WHERE id < (
  SELECT COALESCE(MIN(CASE WHEN at >= ? THEN id END), MAX(id) + 1)
  FROM (SELECT id, at FROM audit_events ORDER BY id LIMIT ?) oldest)`;

const COLUMNS = 'id, tenant_id, at, type, outcome, actor, target, details';

function fromRow(row: AuditRow): AuditEvent {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    at: row.at,
    type: row.type,
    outcome: row.outcome,
    actor: JSON.parse(row.actor),
    ...(row.target ? { target: JSON.parse(row.target) } : {}),
    details: JSON.parse(row.details),
  };
}

/**
 * The query of a page of a tenant's audit log, newest first by (at, id): a range of one index, (tenant_id, at, id)
 * or the one that leads with the type or the outcome filtered on, read backwards from the cursor or the window's
 * end to the window's start; nothing sorted, however long the log. Exported for the contract suite, which reads
 * both engines' plans.
 *
 * SQLite is told which index (INDEXED BY): without statistics, its planner takes (tenant_id, at, id) for a time
 * window or a cursor with an outcome or a type, and reads every event of the window to test it; the index leading
 * with the one filtered on reads only the events that pass. With both, the type's: almost every type has one
 * outcome, and a type is the rarer of the two. PostgreSQL's planner weighs them by its statistics.
 */
export function auditPage(
  db: Pick<SqlDriver, 'engine'>,
  tenantId: string,
  { type, outcome, since, until, before, limit }: AuditQuery,
): SqlStatement {
  const where = ['tenant_id = ?'];
  const params: SqlValue[] = [tenantId];
  // Of `until` and the cursor, only the lower bounds the page: it implies the other. Given both, either engine
  // may start the scan at `until` and read every event from there down to the cursor, more on every page.
  const cursor = before && (until === undefined || before.at <= until) ? before : undefined;
  const filters = [
    ['type = ?', type],
    ['outcome = ?', outcome],
    ['at >= ?', since],
    ['at <= ?', cursor ? undefined : until],
  ] as const;
  for (const [condition, value] of filters) {
    if (value === undefined) continue;
    where.push(condition);
    params.push(value);
  }
  if (cursor) {
    where.push('(at, id) < (?, ?)');
    params.push(cursor.at, cursor.id);
  }
  const index =
    type !== undefined
      ? 'audit_events_tenant_type_at'
      : outcome !== undefined
        ? 'audit_events_tenant_outcome_at'
        : 'audit_events_tenant_at';
  const from = db.engine === 'sqlite' ? `audit_events INDEXED BY ${index}` : 'audit_events';
  return {
    sql: `SELECT ${COLUMNS} FROM ${from} WHERE ${where.join(' AND ')} ORDER BY at DESC, id DESC LIMIT ?`,
    params: [...params, limit],
  };
}

export function auditRows(db: SqlDriver): Store['audit'] {
  return {
    // Events outside a change of their own (denials, mints) go through the group commit.
    append: async (event, at) => {
      await db.writeBatched({ probe: auditInsert(event, at) });
    },
    async list(tenantId, query) {
      const { sql, params } = auditPage(db, tenantId, query);
      return (await db.all<AuditRow>(sql, params)).map(fromRow);
    },
    purgeOlderThan: (before) =>
      purgeInBatches(db, (limit) => ({ sql: PURGE_OLDEST_EVENTS, params: [before, limit] })),
    async oldestKept() {
      const row = await db.get<{ id: number | null }>('SELECT MIN(id) AS id FROM audit_events');
      return row?.id ?? undefined;
    },
    async recordedAt(tenantId, id) {
      const row = await db.get<{ at: number }>('SELECT at FROM audit_events WHERE tenant_id = ? AND id = ?', [
        tenantId,
        id,
      ]);
      return row?.at;
    },
  };
}
