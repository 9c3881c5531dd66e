// Test databases: a fresh SQLite file, or a fresh PostgreSQL database when TEST_DB=postgres.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openPostgres } from '../../broker/store/postgres.js';
import type { SqlDriver } from '../../broker/store/sql.js';
import { openSqlite } from '../../broker/store/sqlite.js';

export type Engine = 'sqlite' | 'postgres';

/** The engine the suite was asked to run on; a PostgreSQL run that cannot connect fails, it never skips. */
export function requestedEngine(): Engine {
  const engine = process.env.TEST_DB ?? 'sqlite';
  if (engine !== 'sqlite' && engine !== 'postgres')
    throw new Error(`TEST_DB must be sqlite or postgres, got ${engine}`);
  return engine;
}

export interface TestDatabase {
  engine: Engine;
  /** A DATABASE_URL for the broker. */
  url: string;
  /** For SQLite: the database file (tests read it raw to prove no secret is stored). */
  file?: string;
  drop(): Promise<void>;
}

/**
 * `icuLocale` (PostgreSQL): create the database with that ICU collation instead of the server's C.UTF-8, as a
 * managed PostgreSQL often is; SQLite has none.
 */
export async function createTestDatabase(
  engine: Engine = requestedEngine(),
  { icuLocale }: { icuLocale?: string } = {},
): Promise<TestDatabase> {
  if (engine === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'oidc-broker-test-'));
    const file = join(dir, 'broker.db');
    return {
      engine,
      url: `sqlite:${file}`,
      file,
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const admin = process.env.TEST_DATABASE_URL;
  if (!admin)
    throw new Error('TEST_DB=postgres needs TEST_DATABASE_URL (postgres://USER@HOST:PORT/postgres)');
  const name = `broker_test_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  try {
    const collation = icuLocale
      ? ` TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '${icuLocale}' LOCALE 'C.UTF-8'`
      : '';
    await client.query(`CREATE DATABASE ${name}${collation}`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    engine,
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** A driver of its own on `db`: another replica's connection, or a raw look at the schema. */
export function openDriver(db: TestDatabase): SqlDriver {
  return db.engine === 'sqlite' ? openSqlite(db.file!) : openPostgres(db.url);
}
