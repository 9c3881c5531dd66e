// Whether a SQLite database's files are still the ones its connections opened. A file deleted, moved or replaced
// while the broker runs still takes writes through the handles open on it, but what is written there is not in the
// database at that path: lost when the process ends, or missing from the file put in its place. Plain JavaScript, so
// that the writer thread (sqlite-write-worker.js) checks the same way from source and from build/.
import { realpathSync, statSync } from 'node:fs';

/** @typedef {{ dev: number, ino: number }} FileId */
/**
 * `beside`: the path SQLite names the WAL and its index after, `${beside}-wal` and `${beside}-shm`: the file a
 * symbolic link at the database's path leads to, which SQLite opens.
 * @typedef {{ db: FileId, beside: string, wal?: FileId, shm?: FileId }} DatabaseFiles
 */

/** SQLite's code for a database moved since it was opened (which it reports itself only without a WAL). */
export const MOVED = 'SQLITE_READONLY_DBMOVED';

/**
 * The files beside the database in WAL mode, each kept by SQLite until the last connection closes: the WAL, and its
 * shared-memory index, through which every process on the database shares the WAL's locks. One made anew while the
 * broker runs (by the CLI or a second broker) would not be shared with the broker's connections.
 * @type {readonly ['wal' | 'shm', string][]}
 */
const COMPANIONS = [
  ['wal', 'WAL'],
  ['shm', 'shared-memory index'],
];

/** @param {string} path */
const idOf = (path) => {
  const stats = statSync(path, { throwIfNoEntry: false });
  return stats && { dev: stats.dev, ino: stats.ino };
};

/**
 * The files of the database at `path` as they are now, once a connection has opened it: the database file, and
 * its WAL and shared-memory index when it has them. A new database may have none until its first write, so a write
 * transaction learns them (assertFilesUnchanged).
 * @param {string} path
 * @returns {DatabaseFiles}
 */
export function databaseFiles(path) {
  const db = idOf(path);
  if (!db) throw new Error(`${path} does not exist`);
  /** @type {DatabaseFiles} */
  const files = { db, beside: realpathSync(path) };
  for (const [suffix] of COMPANIONS) {
    const id = idOf(`${files.beside}-${suffix}`);
    if (id) files[suffix] = id;
  }
  return files;
}

/**
 * Why the files at `path` are no longer `opened` (the database file, its WAL or its shared-memory index deleted,
 * moved or replaced), or undefined while they are. A companion file is compared once known. The database file is
 * looked up at `path`, so that a symbolic link turned to another file is noticed too.
 * @param {string} path
 * @param {DatabaseFiles} opened
 * @returns {string | undefined}
 */
export function filesChanged(path, opened) {
  /** @type {[string, string, FileId | undefined][]} */
  const files = [
    [path, 'database file', opened.db],
    ...COMPANIONS.map(
      ([suffix, what]) =>
        /** @type {[string, string, FileId | undefined]} */ ([
          `${opened.beside}-${suffix}`,
          what,
          opened[suffix],
        ]),
    ),
  ];
  for (const [file, what, id] of files) {
    if (!id) continue;
    const now = idOf(file);
    if (!now || now.dev !== id.dev || now.ino !== id.ino)
      return `${file} is no longer the ${what} this broker opened`;
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
  // Within a transaction that wrote, the WAL and its index are this connection's own until it closes.
  for (const [suffix] of COMPANIONS) opened[suffix] ??= idOf(`${opened.beside}-${suffix}`);
  const changed = filesChanged(path, opened);
  if (changed) throw Object.assign(new Error(changed), { code: MOVED });
}
