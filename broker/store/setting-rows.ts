// The broker's own settings in SQL: one value per name, the first one stored kept until it is replaced.
import type { SqlDriver } from './sql.js';
import type { Store } from './store.js';

export function settingRows(db: SqlDriver): Store['settings'] {
  const stored = async (name: string) =>
    (await db.get<{ value: string }>('SELECT value FROM broker_settings WHERE name = ?', [name]))?.value;
  return {
    get: stored,
    // Read first: once a value is stored, as at every start but the first, no write lock is taken.
    first: async (name, value) =>
      (await stored(name)) ??
      db.transaction(async (tx) => {
        // Of inserts racing on PostgreSQL, the later waits for the earlier to commit and then inserts nothing; the
        // read after it sees the row committed (READ COMMITTED). SQLite's BEGIN IMMEDIATE serialises them.
        await tx.run(
          'INSERT INTO broker_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING',
          [name, value],
        );
        const row = await tx.get<{ value: string }>('SELECT value FROM broker_settings WHERE name = ?', [
          name,
        ]);
        return row!.value;
      }),
    replace: async (name, value) => {
      await db.run(
        'INSERT INTO broker_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value',
        [name, value],
      );
    },
  };
}
