// Prepares a phase's database: the tenant through the operator CLI, then its trust policies through the store.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { GITHUB_ISSUER, loadConfig } from '../broker/config.js';
import { validatePolicy } from '../broker/core/policy-rules.js';
import { applyWrites } from '../broker/store/batch-flush.js';
import { migrate } from '../broker/store/migrations.js';
import { storeOn } from '../broker/store/open-store.js';
import { openPostgres } from '../broker/store/postgres.js';
import type { SqlDriver, SqlExecutor } from '../broker/store/sql.js';
import { openSqlite } from '../broker/store/sqlite.js';
import { fleetEntry } from './fleet.js';

export const TENANT = 'bench';
export const AUDIENCE = 'bench.api.stepsecurity.io';

/** `oidc-broker tenant create`, as an operator runs it; the Tenant API key it prints is checked, then dropped. */
export function createTenantWithCli(root: string, env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(root, 'build/broker/main.js'), 'tenant', 'create', TENANT, '--audience', AUDIENCE],
      { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let key = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      key += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      err += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0 && key.trim().length > 0) resolve();
      else reject(new Error(`tenant create exited with ${code}: ${err.trim()}`));
    });
  });
}

/** A driver whose transactions join the one already open, so the store's own writes batch into it. */
function joined(engine: SqlDriver['engine'], tx: SqlExecutor): SqlDriver {
  return {
    engine,
    all: (sql, params) => tx.all(sql, params),
    get: (sql, params) => tx.get(sql, params),
    run: (sql, params) => tx.run(sql, params),
    transaction: (fn) => fn(tx),
    writeBatched: async (write) => (await applyWrites(tx, [write]))[0]!,
    exec: () => Promise.reject(new Error('no DDL inside the policy load')),
    ping: async () => {
      await tx.get('SELECT 1 AS ok');
    },
    close: async () => {},
  };
}

/**
 * Inserts `count` fleet policies for the benchmark tenant through `store.policies.create` (each validated by
 * the same rules as the HTTP API, each with its audit event), all in one transaction so 100,000 of them take
 * seconds instead of one durable commit each.
 */
export async function insertPolicies(env: Record<string, string>, count: number): Promise<void> {
  const { database } = loadConfig(env);
  const db = database.engine === 'sqlite' ? openSqlite(database.path) : openPostgres(database.url);
  try {
    await migrate(db);
    const tenant = await storeOn(db).tenants.byName(TENANT);
    if (!tenant) throw new Error(`tenant ${TENANT} is missing after tenant create`);
    const rules = { trustedIssuers: [GITHUB_ISSUER], defaultIssuer: GITHUB_ISSUER };
    const now = Date.now();
    await db.transaction(async (tx) => {
      const store = storeOn(joined(db.engine, tx));
      for (let k = 0; k < count; k++) {
        const validation = validatePolicy(fleetEntry(k).policy, rules);
        if (!validation.ok) {
          throw new Error(`fleet policy ${k} is invalid: ${JSON.stringify(validation.errors)}`);
        }
        const id = randomUUID();
        const created = await store.policies.create(tenant.id, id, validation.policy, now, {
          tenantId: tenant.id,
          type: 'policy.created',
          outcome: 'success',
          actor: { kind: 'operator', id: 'bench' },
          target: { type: 'trust_policy', id, name: validation.policy.name },
        });
        if (!created.ok) throw new Error(`fleet policy ${k}: ${created.conflict} clash`);
      }
    });
  } finally {
    await db.close();
  }
}
