// Which of a SQLite database's files the broker cannot use, when SQLite says only "unable to open database file".
import { accessSync, closeSync, constants, openSync, realpathSync, statfsSync } from 'node:fs';
import { basename, dirname } from 'node:path';

/** SQLite's codes for a file it could not open, create, write or grow: their own messages name no file. */
const FILE_TROUBLE = /^SQLITE_(CANTOPEN|READONLY|IOERR|FULL)/;

/** Less free space than this, on the database's file system, is a full disk to SQLite (its WAL index alone is 32 KiB). */
const NEARLY_FULL_BYTES = 64 * 1024;

const WHY =
  'SQLite keeps the WAL and its shared-memory index beside the database, and creates them in its directory: the ' +
  "broker's user must be able to read and write all three, and to create files in the directory";

/**
 * What SQLite's error `reason`, met opening the database at `path`, most likely comes from, or undefined when it
 * is not about the files or nothing wrong is found with them: the database file, its WAL or its shared-memory index
 * that this process cannot open for reading and writing (a mode or owner, a directory in its place, a read-only file
 * system), a directory it cannot create them in, or a file system with no room left.
 */
export function sqliteFileProblem(configured: string, reason: unknown): string | undefined {
  const code = (reason as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !FILE_TROUBLE.test(code)) return undefined;
  // SQLite keeps the WAL and its index beside the file a symbolic link leads to.
  let path = configured;
  try {
    path = realpathSync(configured);
  } catch {
    // Not there (yet): as configured.
  }
  const directory = dirname(path);
  let missing = false;
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      closeSync(openSync(file, constants.O_RDWR));
    } catch (error) {
      const errno = error as NodeJS.ErrnoException;
      if (errno.code === 'ENOENT') {
        missing = true;
        continue;
      }
      return `${file} cannot be opened for reading and writing (${errno.code}); ${WHY}`;
    }
  }
  if (missing) {
    try {
      accessSync(directory, constants.W_OK);
    } catch (error) {
      const errno = error as NodeJS.ErrnoException;
      return `no file can be created in ${directory} (${errno.code}), where ${basename(path)}-wal and ${basename(path)}-shm go; ${WHY}`;
    }
  }
  try {
    const space = statfsSync(directory);
    const free = space.bavail * space.bsize;
    if (free < NEARLY_FULL_BYTES) return `the file system holding ${directory} is full (${free} bytes free)`;
  } catch {
    // Nothing more to tell.
  }
  return undefined;
}
