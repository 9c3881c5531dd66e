// SQLite's WAL checkpoint: on the writer thread, never on the event loop, and the WAL still bounded.
import { randomUUID } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrate } from '../../broker/store/migrations.js';
import { storeOn } from '../../broker/store/open-store.js';
import type { SqlDriver } from '../../broker/store/sql.js';
import { openSqlite } from '../../broker/store/sqlite.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let db: TestDatabase;
let driver: SqlDriver;

beforeEach(async () => {
  db = await createTestDatabase('sqlite');
  driver = openSqlite(db.file!);
  await migrate(driver);
});
afterEach(async () => {
  await driver.close();
  await db.drop();
});

/** `count` replay records expired long ago, with random keys (as exchanges leave them), written by another process. */
function fillExpired(count: number) {
  const other = new Database(db.file!);
  const insert = other.prepare('INSERT INTO used_jtis (issuer, jti, expires_at) VALUES (?, ?, ?)');
  other.transaction(() => {
    for (let i = 0; i < count; i++)
      insert.run('https://token.actions.githubusercontent.com', randomUUID(), 1);
  })();
  // Its WAL checkpointed into the file, so that what is in the WAL afterwards is the purge's alone.
  other.pragma('wal_checkpoint(TRUNCATE)');
  other.close();
}

const walBytes = () => statSync(`${db.file}-wal`, { throwIfNoEntry: false })?.size ?? 0;

describe("SQLite's WAL checkpoint", () => {
  it("is never run on the event loop's connection: its automatic checkpoint is off", async () => {
    expect(await driver.get('PRAGMA wal_autocheckpoint')).toEqual({ wal_autocheckpoint: 0 });
  });

  it('is run by the writer thread during a long purge with no exchanges, so the WAL stays a few MB', async () => {
    fillExpired(40_000);
    const pageSize = ((await driver.get('PRAGMA page_size')) as { page_size: number }).page_size;
    expect(await storeOn(driver).tokens.purgeExpired(1_000)).toBe(40_000);
    // Unchecked, the purge leaves every page it wrote in the WAL: some 24,000 here (100 MB). Checkpointed, the
    // WAL holds a few batches' pages at most (700–2,300 measured; SQLite's own checkpoint every 1,000 pages on
    // the connection that commits, as before, ~1,500), the batches written while the writer thread starts among them.
    expect(walBytes()).toBeLessThan(6_000 * pageSize);
    expect(walBytes()).toBeGreaterThan(0);
  });

  it('is run at close, as before: the last connection closed leaves no WAL behind', async () => {
    fillExpired(5_000);
    await storeOn(driver).tokens.purgeExpired(1_000);
    await driver.close();
    expect(existsSync(`${db.file}-wal`)).toBe(false);
    const reopened = new Database(db.file!, { readonly: true });
    expect(reopened.prepare('SELECT count(*) AS n FROM used_jtis').get()).toEqual({ n: 0 });
    reopened.close();
  });
});
