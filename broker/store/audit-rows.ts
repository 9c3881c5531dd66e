// Audit events in SQL: appended inside the transaction of the change they describe.

import type { SqlDriver, SqlExecutor } from './sql.js';
import type { AuditEvent, AuditEventInput, Store } from './store.js';
import { createWriteBatcher } from './write-batcher.js';

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

export async function appendAudit(db: SqlExecutor, event: AuditEventInput, at: number): Promise<void> {
  await db.run(
    'INSERT INTO audit_events (tenant_id, at, type, outcome, actor, target, details) VALUES (?, ?, ?, ?, ?, ?, ?)',
    [
      event.tenantId,
      at,
      event.type,
      event.outcome,
      JSON.stringify(event.actor),
      event.target ? JSON.stringify(event.target) : null,
      JSON.stringify(event.details ?? {}),
    ],
  );
}

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

export function auditRows(db: SqlDriver): Store['audit'] {
  const append = createWriteBatcher(db, (tx, { event, at }: { event: AuditEventInput; at: number }) =>
    appendAudit(tx, event, at),
  );
  return {
    append: (event, at) => append({ event, at }),
    async list(tenantId, { type, before, limit }) {
      const where = ['tenant_id = ?'];
      const params: (string | number)[] = [tenantId];
      if (type !== undefined) {
        where.push('type = ?');
        params.push(type);
      }
      if (before !== undefined) {
        where.push('id < ?');
        params.push(before);
      }
      const rows = await db.all<AuditRow>(
        `SELECT * FROM audit_events WHERE ${where.join(' AND ')} ORDER BY id DESC LIMIT ?`,
        [...params, limit],
      );
      return rows.map(fromRow);
    },
  };
}
