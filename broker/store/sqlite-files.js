// Whether a SQLite database's files are still the ones its connections opened. A file deleted, moved or replaced
// while the broker runs still takes writes through the handles open on it, but what is written there is not in the
// database at that path: lost when the process ends, or missing from the file put in its place. Plain JavaScript, so
// that the writer thread (sqlite-write-worker.js) checks the same way from source and from build/.
import { statSync } from 'node:fs';

/** @typedef {{ dev: number, ino: number }} FileId */
/** @typedef {{ db: FileId, wal?: FileId }} DatabaseFiles */

/** SQLite's code for a database file moved since it was opened (which it reports itself only without a WAL). */
export const MOVED = 'SQLITE_READONLY_DBMOVED';

/** @param {string} path */
const idOf = (path) => {
  const stats = statSync(path, { throwIfNoEntry: false });
  return stats && { dev: stats.dev, ino: stats.ino };
};

/**
 * The files of the database at `path` as they are now, once a connection has opened it: the database file, and
 * its WAL when it has one. A connection in WAL mode keeps its WAL until the last one closes; a new database has
 * none until its first write, so a write transaction learns it (assertFilesUnchanged).
 * @param {string} path
 * @returns {DatabaseFiles}
 */
export function databaseFiles(path) {
  const db = idOf(path);
  if (!db) throw new Error(`${path} does not exist`);
  const wal = idOf(`${path}-wal`);
  return wal ? { db, wal } : { db };
}

/**
 * Why the files at `path` are no longer `opened` (the database file or its WAL deleted, moved or replaced), or
 * undefined while they are. The WAL is compared once known.
 * @param {string} path
 * @param {DatabaseFiles} opened
 * @returns {string | undefined}
 */
export function filesChanged(path, opened) {
  /** @type {[string, FileId | undefined][]} */
  const files = [
    [path, opened.db],
    [`${path}-wal`, opened.wal],
  ];
  for (const [file, id] of files) {
    if (!id) continue;
    const now = idOf(file);
    if (!now || now.dev !== id.dev || now.ino !== id.ino)
      return `${file} is no longer the ${file === path ? 'database file' : 'WAL'} this broker opened`;
  }
  return undefined;
}

/**
 * Throws, as SQLite would, unless the files at `path` are still `opened`: inside a transaction, before its COMMIT,
 * so that nothing is committed where the database no longer is.
 * @param {string} path
 * @param {DatabaseFiles} opened
 */
export function assertFilesUnchanged(path, opened) {
  // Within a transaction that wrote, the WAL is this connection's own until it closes.
  opened.wal ??= idOf(`${path}-wal`);
  const changed = filesChanged(path, opened);
  if (changed) throw Object.assign(new Error(changed), { code: MOVED });
}
