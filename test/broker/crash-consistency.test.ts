// What the broker answers when its storage fails under it, on SQLite: a token, a key or a change is answered only
// once it is durable where the database is, and anything else is 503 not_ready, to retry, never a 200 whose record
// is lost.
import { existsSync, mkdirSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore } from '../../broker/store/open-store.js';
import { databaseFiles } from '../../broker/store/sqlite-files.js';
import { startWriteWorker } from '../../broker/store/write-worker.js';
import { createTestDatabase } from '../support/database.js';
import { type Federation, startFederation } from '../support/federation.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A broker on a SQLite file of its own, with a trust policy for the local issuer's tokens. */
async function federationOnSqlite(): Promise<Federation & { file: string }> {
  const db = await createTestDatabase('sqlite');
  cleanups.push(() => db.drop());
  const f = await startFederation({ env: { DATABASE_URL: db.url } });
  cleanups.push(() => f.close().catch(() => {}));
  await f.policy('infra');
  return Object.assign(f, { file: db.file! });
}

const createKey = (f: Federation) =>
  f.t.request('POST', '/v1/fine-grained-keys', {
    key: f.key,
    json: { name: 'deploy', expiration: '7d', permissions: ['audit-log:read'] },
  });

describe('a SQLite file taken away while the broker runs', () => {
  it.each([
    ['the database file deleted', (file: string) => rmSync(file)],
    ['the database file moved away', (file: string) => renameSync(file, `${file}.moved`)],
    ['its WAL deleted', (file: string) => rmSync(`${file}-wal`)],
    // Another process (the CLI, a second broker) would make a new one, and the two would no longer share the WAL's
    // index and locks.
    ['its shared-memory index deleted', (file: string) => rmSync(`${file}-shm`)],
  ])(
    '%s: exchanges and key creations are 503 not_ready, with no token or key, and readiness fails',
    async (_, takeAway) => {
      const f = await federationOnSqlite();
      expect((await f.exchange(f.issuer.sign())).status).toBe(200);
      takeAway(f.file);
      // What the handles still open would commit is in no file at the database's path: lost at the next start.
      const exchanged = await f.exchange(f.issuer.sign());
      expect(exchanged.status).toBe(503);
      const body = (await exchanged.json()) as Record<string, unknown>;
      expect(body).toMatchObject({ code: 'not_ready' });
      expect(body).not.toHaveProperty('access_token');
      const created = await createKey(f);
      expect(created.status).toBe(503);
      expect(await created.json()).not.toHaveProperty('key');
      expect((await f.t.request('GET', '/readyz')).status).toBe(503);
      expect(f.t.logs.some((line) => line.includes('is no longer the'))).toBe(true);
      expect(f.t.logs.some((line) => line.includes('"internal_error"'))).toBe(false);
    },
  );
});

describe('a SQLite database reached through a symbolic link (DATABASE_URL names the link)', () => {
  // SQLite keeps the WAL and its index beside the file the link leads to, not beside the link.
  it.each([
    ['its WAL deleted', '-wal'],
    ['its shared-memory index deleted', '-shm'],
  ])('%s while the broker runs: exchanges are 503 not_ready, with no token', async (_, suffix) => {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    const link = `${db.file}.link`;
    symlinkSync(db.file!, link);
    const f = await startFederation({ env: { DATABASE_URL: `sqlite:${link}` } });
    cleanups.push(() => f.close().catch(() => {}));
    await f.policy('infra');
    expect((await f.exchange(f.issuer.sign())).status).toBe(200);
    rmSync(`${db.file}${suffix}`);
    const exchanged = await f.exchange(f.issuer.sign());
    expect(exchanged.status).toBe(503);
    expect(await exchanged.json()).not.toHaveProperty('access_token');
    expect((await f.t.request('GET', '/readyz')).status).toBe(503);
  });
});

describe("SQLite's writer thread started again (after a crash) once the file is gone", () => {
  it('commits nothing and creates no new, empty database at the path: each write is an outage', async () => {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    const made = new Database(db.file!);
    made.exec('CREATE TABLE used_jtis (jti TEXT)');
    made.close();
    const opened = databaseFiles(db.file!);
    rmSync(db.file!);
    const writer = startWriteWorker(
      new URL('../../broker/store/sqlite-write-worker.js', import.meta.url),
      { path: db.file, pragmas: [], opened },
      (error) => error,
    );
    cleanups.push(() => writer.close());
    const [settled] = await writer.flush([{ probe: { sql: 'DELETE FROM used_jtis', params: [] } }]);
    expect(settled).toMatchObject({ ok: false, error: { code: 'SQLITE_READONLY_DBMOVED' } });
    expect(existsSync(db.file!)).toBe(false);
  });
});

describe('a SQLite database whose WAL or shared-memory index the broker cannot open at start', () => {
  // SQLite says only "unable to open database file" or "attempt to write a readonly database", of a database file
  // the operator finds readable and writable: the file at fault is its WAL or index (left by a process of another
  // user, or not creatable in a directory the broker may not write). A directory in its place fails for every user.
  it.each([
    ['-wal', 'unable to open database file'],
    ['-shm', 'attempt to write a readonly database'],
  ])('%s: the error names that file and why, not only what SQLite says', async (suffix, sqliteSays) => {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    await (await openStore({ engine: 'sqlite', path: db.file! })).close();
    mkdirSync(`${db.file}${suffix}`);
    const error = await openStore({ engine: 'sqlite', path: db.file! }).then(
      (store) => store.close().then(() => 'opened'),
      (e: Error) => e.message,
    );
    expect(error).toBe(
      `DATABASE_URL sqlite:${db.file} cannot be opened: ${sqliteSays}: ${db.file}${suffix} cannot be opened for ` +
        'reading and writing (EISDIR); SQLite keeps the WAL and its shared-memory index beside the database, and ' +
        "creates them in its directory: the broker's user must be able to read and write all three, and to create " +
        'files in the directory',
    );
  });
});
