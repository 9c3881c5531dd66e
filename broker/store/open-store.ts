// Opens the configured engine, brings its schema up to date and assembles the Store.
import type { DatabaseConfig } from '../config.js';
import { messageOf } from '../errors.js';
import { auditRows } from './audit-rows.js';
import { keyRows } from './key-rows.js';
import { migrate, type PolicyNamesakes } from './migrations.js';
import { policyRows } from './policy-rows.js';
import { openPostgres } from './postgres.js';
import { settingRows } from './setting-rows.js';
import { bytewise, type SqlDriver, StoreUnavailable } from './sql.js';
import { openSqlite } from './sqlite.js';
import { sqliteFileProblem } from './sqlite-access.js';
import { ERASED_PRIVATE_KEY, type SigningKeyRecord, type Store } from './store.js';
import { tenantRows } from './tenant-rows.js';
import { tokenRows } from './token-rows.js';

interface SigningKeyRow {
  kid: string;
  public_jwk: string;
  private_key: string;
  created_at: number;
  active_from: number;
  retired_at: number | null;
}

const INSERT_KEY =
  'INSERT INTO signing_keys (kid, public_jwk, private_key, created_at, active_from, retired_at) VALUES (?, ?, ?, ?, ?, ?)';
const keyValues = (key: SigningKeyRecord) => [
  key.kid,
  key.publicJwk,
  key.privateKey,
  key.createdAt,
  key.activeFrom,
  key.retiredAt,
];

function signingKeyRows(db: SqlDriver): Store['signingKeys'] {
  return {
    async list() {
      const rows = await db.all<SigningKeyRow>(
        `SELECT kid, public_jwk, private_key, created_at, active_from, retired_at FROM signing_keys ORDER BY active_from, ${bytewise(db, 'kid')}`,
      );
      return rows.map(
        (r): SigningKeyRecord => ({
          kid: r.kid,
          publicJwk: r.public_jwk,
          privateKey: r.private_key,
          createdAt: r.created_at,
          activeFrom: r.active_from,
          retiredAt: r.retired_at,
        }),
      );
    },
    rotateTo: (key) =>
      db.transaction(async (tx) => {
        const retiring = await tx.all<{ kid: string }>(
          `SELECT kid FROM signing_keys WHERE retired_at IS NULL ORDER BY ${bytewise(db, 'kid')}`,
        );
        await tx.run('UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL', [key.activeFrom]);
        await tx.run(INSERT_KEY, keyValues(key));
        return retiring.map((r) => r.kid);
      }),
    replaceAll: (key, at, options = {}) =>
      db.transaction(async (tx) => {
        if (options.withdraw) {
          const withdrawn = await tx.all<{ kid: string }>(
            `SELECT kid FROM signing_keys ORDER BY ${bytewise(db, 'kid')}`,
          );
          await tx.run('DELETE FROM signing_keys');
          await tx.run(INSERT_KEY, keyValues(key));
          return withdrawn.map((r) => r.kid);
        }
        const retiring = await tx.all<{ kid: string }>(
          `SELECT kid FROM signing_keys WHERE retired_at IS NULL OR retired_at > ? ORDER BY ${bytewise(db, 'kid')}`,
          [at],
        );
        await tx.run('UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL OR retired_at > ?', [
          at,
          at,
        ]);
        await tx.run('UPDATE signing_keys SET private_key = ?', [ERASED_PRIVATE_KEY]);
        await tx.run(INSERT_KEY, keyValues(key));
        return retiring.map((r) => r.kid);
      }),
    insertFirst: (key) =>
      db.transaction(async (tx) => {
        // SQLite's BEGIN IMMEDIATE already serialises writers, and so does PostgreSQL's write turn (postgres.ts);
        // this key keeps replicas of versions without the write turn out of the check-then-insert.
        if (db.engine === 'postgres') await tx.get('SELECT pg_advisory_xact_lock(7710002)');
        if (await tx.get('SELECT kid FROM signing_keys WHERE retired_at IS NULL')) return false;
        await tx.run(INSERT_KEY, keyValues(key));
        return true;
      }),
  };
}

export function storeOn(db: SqlDriver): Store {
  return {
    engine: db.engine,
    tenants: tenantRows(db),
    keys: keyRows(db),
    audit: auditRows(db),
    policies: policyRows(db),
    tokens: tokenRows(db),
    signingKeys: signingKeyRows(db),
    settings: settingRows(db),
    ping: () => db.ping(),
    close: () => db.close(),
  };
}

/** What the broker and the CLI warn of when `Store.unknownMigrations` is not empty. */
export const NEWER_SCHEMA =
  'the database was migrated by a newer version of the broker, which this one does not know';

/** What the broker and the CLI warn of when `Store.policyNamesakes` is not empty. */
export const POLICY_NAMESAKES =
  'trust policies saved under names that are now one name (compared ignoring case, accent encoding and invisible characters): rename all but one of each group';

/** Each group of `Store.policyNamesakes` as the warning lists it: `tenant <id>: "A" (<id>), "a" (<id>)`. */
export function namesakesShown(groups: readonly PolicyNamesakes[]): string[] {
  return groups.map(
    (g) => `tenant ${g.tenantId}: ${g.policies.map((p) => `${JSON.stringify(p.name)} (${p.id})`).join(', ')}`,
  );
}

/**
 * DATABASE_URL as an error may show it: a PostgreSQL URL without its password (`***` where there was one) and
 * without the values of its query string, which may hold one too.
 */
export function shownDatabaseUrl(config: DatabaseConfig): string {
  if (config.engine === 'sqlite') return `sqlite:${config.path}`;
  try {
    const url = new URL(config.url);
    if (url.password) url.password = '***';
    const query = url.search ? '?…' : '';
    url.search = '';
    url.hash = '';
    return `${url}${query}`;
  } catch {
    return socketUrlShown(config.url) ?? `${config.url.slice(0, config.url.indexOf(':'))}://…`;
  }
}

/**
 * A URL without a host (the Unix socket its `host` parameter names: `postgres://broker:pw@/oidc?host=/dir`), which
 * URL refuses: its user, database and socket directory; the password, and every other parameter, left out.
 */
function socketUrlShown(raw: string): string | undefined {
  const parts = /^(postgres(?:ql)?):\/\/(?:([^:@/?#]*)(:[^@/?#]*)?@)?\/([^?#]*)(?:\?([^#]*))?/.exec(raw);
  if (!parts) return undefined;
  const [, scheme, user, password, database, query] = parts;
  const host = new URLSearchParams(query ?? '').get('host');
  const others = (query ?? '').split('&').some((pair) => pair !== '' && !pair.startsWith('host='));
  const userInfo = user || password ? `${user ?? ''}${password ? ':***' : ''}@` : '';
  const shownQuery = host === null ? (others ? '?…' : '') : `?host=${host}${others ? '&…' : ''}`;
  return `${scheme}://${userInfo}/${database}${shownQuery}`;
}

/**
 * Node's codes for a server certificate that no CA it trusts has signed: PostgreSQL services sign theirs with a CA
 * of their own (Amazon RDS, Cloud SQL, Supabase), which Node does not know, and pg verifies the certificate with
 * any sslmode but disable and no-verify.
 */
const UNTRUSTED_CERTIFICATE = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
]);

/**
 * What to fix, by the code of the error (Node's or a SQLSTATE), where the message alone does not say: migrations
 * run at start, as the broker's role, in the first schema of its search_path.
 */
const TO_FIX: Record<string, string> = {
  ...Object.fromEntries(
    [...UNTRUSTED_CERTIFICATE].map((code) => [
      code,
      "the server's TLS certificate is signed by no CA the broker trusts; name that CA in DATABASE_URL with sslrootcert=/path/to/ca.pem (the bundle your provider publishes)",
    ]),
  ),
  // invalid_schema_name: "no schema has been selected to create in".
  '3F000':
    'the search_path (options=-c search_path=… in DATABASE_URL, or set on the role or database) names no schema that exists and the role may use; create it, or grant the role USAGE and CREATE on it',
  // insufficient_privilege: "permission denied for schema public", "must be owner of table tenants".
  '42501':
    'the broker creates and alters its tables at start, so its role needs USAGE and CREATE on the schema, and to own the tables',
};

/**
 * Why the database cannot be opened, with what to fix when the message alone does not say: for SQLite, which of its
 * files (or the directory, or the file system) is at fault, as SQLite's own messages name none.
 */
function reasonShown(reason: unknown, config: DatabaseConfig): string {
  const code = (reason as { code?: unknown } | null)?.code;
  const toFix =
    config.engine === 'sqlite'
      ? sqliteFileProblem(config.path, reason)
      : typeof code === 'string' && Object.hasOwn(TO_FIX, code)
        ? TO_FIX[code]
        : undefined;
  return toFix ? `${messageOf(reason)}: ${toFix}` : messageOf(reason);
}

/**
 * Opens the database and brings its schema up to date. A failure names DATABASE_URL and the database (without
 * its password) before the reason, so that a broker that cannot start says which setting to check.
 */
export async function openStore(config: DatabaseConfig): Promise<Store> {
  let db: SqlDriver | undefined;
  try {
    db =
      config.engine === 'sqlite'
        ? openSqlite(config.path)
        : openPostgres(config.url, { maxConnections: config.poolSize });
    const { unknown, namesakes } = await migrate(db);
    return { ...storeOn(db), unknownMigrations: unknown, policyNamesakes: namesakes };
  } catch (error) {
    await db?.close().catch(() => {});
    // An outage's own message ("the database is unavailable: …") would only repeat what this one says.
    const reason = error instanceof StoreUnavailable ? error.cause : error;
    throw new Error(
      `DATABASE_URL ${shownDatabaseUrl(config)} cannot be opened: ${reasonShown(reason, config)}`,
      {
        cause: error,
      },
    );
  }
}
