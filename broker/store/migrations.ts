// Schema migrations, in code and applied at start; each runs once, in order, inside a transaction.
import { policyNameKey } from '../core/policy-names.js';
import type { SqlDriver, SqlExecutor } from './sql.js';

type Migration = {
  version: number;
  name: string;
} & (
  | {
      /** DDL; `{{serial}}` becomes the engine's auto-increment primary key. One engine's own, by engine. */
      sql: string | Record<SqlDriver['engine'], string>;
    }
  | {
      /** Rewrites rows by a rule only the broker's code knows (the same on both engines). */
      run(tx: SqlExecutor, engine: SqlDriver['engine']): Promise<PolicyNamesakes[]>;
    }
);

/** Policies of one tenant whose names an upgrade found to be one name, kept as they were (refilePolicyNames). */
export interface PolicyNamesakes {
  tenantId: string;
  policies: { id: string; name: string }[];
}

/** The migration that files policy names under policyNameKey's key. */
const REFILED_NAMES = 4;

type NamedPolicyRow = { id: string; tenant_id: string; name: string; name_key: string };
const NAMED_POLICY_ROWS = 'SELECT id, tenant_id, name, name_key FROM trust_policies';
/**
 * Names with a character outside printable ASCII: the only ones whose key differs from what lower-casing gave,
 * the rule before migration 4 and of the versions before it.
 */
const NOT_PLAIN_ASCII = { sqlite: "name GLOB '*[^ -~]*'", postgres: "name ~ '[^ -~]'" } as const;

/**
 * Files each trust policy under the key policyNameKey gives its name now (before, name.toLowerCase()): only names
 * with letters outside ASCII change. Policies that the new key makes namesakes in their tenant (say "STRASSE" and
 * "straße", saved when those were two names) keep the keys they had, so that none is lost or renamed; an update
 * that files one under the new key is refused 409, naming the other, until one of them is renamed.
 *
 * `onlyNotPlainAscii`: look only at names outside plain ASCII, and at the policies already filed under the key one
 * of them should have, as every start after migration 4 does; 100,000 policies read whole take most of a second.
 */
async function refilePolicyNames(
  tx: SqlExecutor,
  engine: SqlDriver['engine'],
  { onlyNotPlainAscii = false } = {},
): Promise<PolicyNamesakes[]> {
  const rows = await tx.all<NamedPolicyRow>(
    onlyNotPlainAscii ? `${NAMED_POLICY_ROWS} WHERE ${NOT_PLAIN_ASCII[engine]}` : NAMED_POLICY_ROWS,
  );
  if (onlyNotPlainAscii) {
    // A namesake in plain ASCII is filed under its key already: found by it.
    const seen = new Set(rows.map((row) => row.id));
    for (const row of [...rows]) {
      const filed = await tx.all<NamedPolicyRow>(
        `${NAMED_POLICY_ROWS} WHERE tenant_id = ? AND name_key = ?`,
        [row.tenant_id, policyNameKey(row.name)],
      );
      for (const other of filed) {
        if (seen.has(other.id)) continue;
        seen.add(other.id);
        rows.push(other);
      }
    }
  }
  // Sorted here, not by the database's collation, so that the warning lists them the same on either engine.
  const ordered = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  rows.sort((a, b) => ordered(a.tenant_id, b.tenant_id) || ordered(a.id, b.id));
  const byName = new Map<string, NamedPolicyRow[]>();
  for (const row of rows) {
    const key = `${row.tenant_id} ${policyNameKey(row.name)}`;
    const group = byName.get(key);
    if (group) group.push(row);
    else byName.set(key, [row]);
  }
  const namesakes: PolicyNamesakes[] = [];
  for (const group of byName.values()) {
    if (group.length > 1) {
      namesakes.push({
        tenantId: group[0]!.tenant_id,
        policies: group.map(({ id, name }) => ({ id, name })),
      });
      continue;
    }
    const [row] = group as [NamedPolicyRow];
    const key = policyNameKey(row.name);
    if (key !== row.name_key)
      await tx.run('UPDATE trust_policies SET name_key = ? WHERE id = ?', [key, row.id]);
  }
  return namesakes;
}

const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        audience TEXT NOT NULL,
        disabled_categories TEXT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE UNIQUE INDEX tenants_name ON tenants (name);
      CREATE UNIQUE INDEX tenants_audience ON tenants (audience);

      CREATE TABLE builtin_keys (
        tenant_id TEXT NOT NULL REFERENCES tenants (id),
        kind TEXT NOT NULL,
        slot TEXT NOT NULL,
        digest TEXT,
        hint TEXT,
        last_rotated_at BIGINT,
        PRIMARY KEY (tenant_id, kind, slot)
      );
      CREATE UNIQUE INDEX builtin_keys_digest ON builtin_keys (digest);

      CREATE TABLE fine_grained_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants (id),
        name TEXT NOT NULL,
        digest TEXT NOT NULL,
        hint TEXT NOT NULL,
        permissions TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        last_used_at BIGINT
      );
      CREATE UNIQUE INDEX fine_grained_keys_digest ON fine_grained_keys (digest);
      CREATE INDEX fine_grained_keys_tenant ON fine_grained_keys (tenant_id, created_at);

      CREATE TABLE audit_events (
        id {{serial}},
        tenant_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        type TEXT NOT NULL,
        outcome TEXT NOT NULL,
        actor TEXT NOT NULL,
        target TEXT,
        details TEXT NOT NULL
      );
      CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id);
      CREATE INDEX audit_events_tenant_type ON audit_events (tenant_id, type, id);

      CREATE TABLE trust_policies (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants (id),
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        description TEXT,
        issuer TEXT NOT NULL,
        owner_key TEXT NOT NULL,
        repository_key TEXT NOT NULL,
        claims TEXT NOT NULL,
        max_session_duration_seconds INTEGER NOT NULL,
        permissions TEXT NOT NULL,
        allow_pull_request_target INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE UNIQUE INDEX trust_policies_name ON trust_policies (tenant_id, name_key);
      CREATE INDEX trust_policies_lookup ON trust_policies (tenant_id, issuer, owner_key, repository_key);

      CREATE TABLE used_jtis (
        issuer TEXT NOT NULL,
        jti TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (issuer, jti)
      );
      CREATE INDEX used_jtis_expiry ON used_jtis (expires_at);

      CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        revoked_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
      );
      CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);

      CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        public_jwk TEXT NOT NULL,
        private_key TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT
      );
    `,
  },
  {
    version: 2,
    name: 'access tokens minted from API keys',
    sql: `
      CREATE TABLE minted_tokens (
        jti TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        credential_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL
      );
      CREATE INDEX minted_tokens_credential ON minted_tokens (tenant_id, credential_id);
      CREATE INDEX minted_tokens_expiry ON minted_tokens (expires_at);
    `,
  },
  {
    version: 3,
    name: 'signing keys published before they sign',
    sql: `
      ALTER TABLE signing_keys ADD COLUMN active_from BIGINT NOT NULL DEFAULT 0;
      UPDATE signing_keys SET active_from = created_at
    `,
  },
  {
    version: REFILED_NAMES,
    name: 'trust policy names compared by Unicode caseless matching',
    run: refilePolicyNames,
  },
  {
    version: 5,
    name: "the broker's own settings: a check of the key pepper",
    sql: `
      CREATE TABLE broker_settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
      )
    `,
  },
  {
    version: 6,
    name: 'trust policy name keys ordered byte by byte by their index',
    // Listings order name keys byte by byte (COLLATE "C"), which an index in the database's own collation cannot
    // serve, even a C.UTF-8 one: every page of GET /v1/oidc/policies would sort the tenant's policies. Equality
    // is byte equality in either, so the keys unique before are unique after. SQLite compares bytes already.
    sql: {
      sqlite: '',
      postgres: 'ALTER TABLE trust_policies ALTER COLUMN name_key TYPE TEXT COLLATE "C"',
    },
  },
  {
    version: 7,
    name: "built-in key slots' last use",
    sql: 'ALTER TABLE builtin_keys ADD COLUMN last_used_at BIGINT',
  },
  {
    version: 8,
    name: 'audit events listed by the time recorded',
    // The log is listed newest first by (at, id): each filter (none, a type, an outcome) has an index whose range
    // the time window and the cursor bound, so that no listing reads the log from its newest event down to the
    // window, nor sorts it. The indexes by id served the listing by id only.
    sql: `
      CREATE INDEX audit_events_tenant_at ON audit_events (tenant_id, at, id);
      CREATE INDEX audit_events_tenant_type_at ON audit_events (tenant_id, type, at, id);
      CREATE INDEX audit_events_tenant_outcome_at ON audit_events (tenant_id, outcome, at, id);
      DROP INDEX audit_events_tenant;
      DROP INDEX audit_events_tenant_type
    `,
  },
  {
    version: 9,
    name: 'fine-grained keys listed in pages',
    // GET /v1/fine-grained-keys pages newest first by (created_at, id): the cursor's place bounds this index's
    // range, so that a page reads only its own keys and sorts none, keys created in one millisecond included. The
    // index by (tenant_id, created_at) is a prefix of this one.
    sql: `
      CREATE INDEX fine_grained_keys_tenant_created ON fine_grained_keys (tenant_id, created_at, id);
      DROP INDEX fine_grained_keys_tenant
    `,
  },
];

const SERIAL = {
  sqlite: 'INTEGER PRIMARY KEY AUTOINCREMENT',
  postgres: 'BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
} as const;

/**
 * Brings the schema up to date. Safe to call from several replicas at once. Returns the migrations it applied,
 * those recorded in the database that this version does not know (a newer version ran on it), and the policies
 * whose names are one name now, kept from before, for the operator to rename.
 */
export async function migrate(
  db: SqlDriver,
  now: () => number = Date.now,
): Promise<{ applied: number[]; unknown: number[]; namesakes: PolicyNamesakes[] }> {
  return db.transaction(
    async (tx) => {
      // Replicas starting together queue here; SQLite's BEGIN IMMEDIATE already serialises them. On PostgreSQL
      // the write turn (postgres.ts) does too; this key also keeps out replicas of versions without it. The
      // bookkeeping table is created behind the lock too: PostgreSQL's IF NOT EXISTS is no guard against a
      // replica creating it at the same moment.
      if (db.engine === 'postgres') await tx.get('SELECT pg_advisory_xact_lock(7710001)');
      await tx.run(
        'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)',
      );
      const done = new Set(
        (await tx.all<{ version: number }>('SELECT version FROM schema_migrations')).map((r) => r.version),
      );
      const applied: number[] = [];
      let namesakes: PolicyNamesakes[] = [];
      for (const m of MIGRATIONS) {
        if (done.has(m.version)) continue;
        if ('run' in m) namesakes = await m.run(tx, db.engine);
        else
          for (const statement of (typeof m.sql === 'string' ? m.sql : m.sql[db.engine])
            .replaceAll('{{serial}}', SERIAL[db.engine])
            .split(';')
            .map((s) => s.trim())
            .filter(Boolean))
            await tx.run(statement);
        await tx.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [
          m.version,
          m.name,
          now(),
        ]);
        applied.push(m.version);
      }
      const known = new Set(MIGRATIONS.map((m) => m.version));
      const unknown = [...done].filter((v) => !known.has(v)).sort((a, b) => a - b);
      // Not only once: a version before migration 4, run on this database after it (a rollback), files the names
      // it saves by lower-casing them. Unless a newer version has run on it, whose rule this one may not know.
      if (done.has(REFILED_NAMES) && unknown.length === 0)
        namesakes = await refilePolicyNames(tx, db.engine, { onlyNotPlainAscii: true });
      return { applied, unknown, namesakes };
    },
    { unbounded: true },
  );
}
