// SQLite's group-commit writer, on its own thread with its own connection: the batch's fsync blocks this thread,
// never the event loop serving requests. Plain JavaScript so the same file runs from source and from build/.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { assertFilesUnchanged, filesChanged, MOVED } from './sqlite-files.js';

/** @typedef {{ sql: string, params: (string | number | null)[] }} Statement */
/** @typedef {{ probe: Statement, onChange?: Statement, onNoChange?: Statement }} Write */

/** @type {{ path: string, pragmas: string[], opened: import('./sqlite-files.js').DatabaseFiles }} */
const { path, pragmas, opened } = workerData;
// A thread started again after a crash finds the files as the broker opened them, or opens nothing: a database file
// created anew at the path would take writes the broker's own connection never sees.
const moved = filesChanged(path, opened);
const db = moved ? undefined : new Database(path, { fileMustExist: true });
if (db) for (const pragma of pragmas) db.pragma(pragma);

/** @type {Map<string, import('better-sqlite3').Statement>} */
const statements = new Map();
/** @param {Statement} s */
const run = (s) => {
  let stmt = statements.get(s.sql);
  if (!stmt) {
    stmt = /** @type {import('better-sqlite3').Database} */ (db).prepare(s.sql);
    statements.set(s.sql, stmt);
  }
  return stmt.run(...s.params).changes;
};
/**
 * Rows each probe changed, and rows the statement after it changed (0 if none ran): every probe first, then the
 * statement after each, in the order batch-flush.js's applyWrites() runs them on the other engines.
 * @param {Write[]} writes
 */
const apply = (writes) => {
  const probes = writes.map((write) => run(write.probe));
  const results = writes.map((write, i) => {
    const probe = /** @type {number} */ (probes[i]);
    const next = probe > 0 ? write.onChange : write.onNoChange;
    return { probe, next: next ? run(next) : 0 };
  });
  // Before the COMMIT: nothing commits to a file no longer at the database's path.
  assertFilesUnchanged(path, opened);
  return results;
};
const applyAll = db
  ? db.transaction(apply)
  : {
      /** @returns {never} */
      immediate: () => {
        throw Object.assign(new Error(/** @type {string} */ (moved)), { code: MOVED });
      },
    };

/** SQLite's codes for a database that cannot take work now (as sql.ts's sqliteOutage). */
const OUTAGE = /^SQLITE_(BUSY|FULL|IOERR|READONLY_DBMOVED)/;

/** @param {unknown} error */
const describe = (error) => {
  const e = /** @type {{ message?: string, code?: string }} */ (error);
  return { message: e.message ?? String(error), code: e.code };
};

/**
 * One transaction for the writes of every batch queued so far: a batch that arrived while the previous
 * transaction committed joins the next one, so the commit rate, not the round trip to the event loop, bounds
 * the writes per second.
 * @param {{ id: number, writes: Write[] }[]} batches
 */
const commit = (batches) => {
  const writes = batches.length === 1 ? batches[0].writes : batches.flatMap((b) => b.writes);
  /** @type {({ ok: true, value: { probe: number, next: number } } | { ok: false, error: { message: string, code?: string } })[]} */
  let results;
  try {
    results = applyAll
      .immediate(writes)
      .map((/** @type {{ probe: number, next: number }} */ value) => ({ ok: true, value }));
  } catch (error) {
    // The database cannot take work now (its write lock held past the busy timeout, the disk full, an I/O
    // error): trying each write again would only wait as long again, for each.
    if (OUTAGE.test(/** @type {{ code?: string }} */ (error).code ?? '')) {
      const failed = describe(error);
      results = writes.map(() => ({ ok: /** @type {const} */ (false), error: failed }));
    } else {
      // One bad write must not fail its neighbours: each again on its own, so only it sees its error.
      results = writes.map((write) => {
        try {
          return { ok: true, value: applyAll.immediate([write])[0] };
        } catch (error) {
          return { ok: false, error: describe(error) };
        }
      });
    }
  }
  let at = 0;
  return batches.map(({ id, writes: own }) => {
    const answer = { id, results: results.slice(at, at + own.length) };
    at += own.length;
    return answer;
  });
};

/**
 * Copies the WAL's committed pages into the database file as far as no reader still needs them (PASSIVE: it waits
 * for no lock and holds up no other connection), so that the WAL is written from its start again. SQLite does so
 * itself after this connection's commits once the WAL holds 1,000 pages; the event loop's connection never does
 * (sqlite.ts), and asks for one here after it writes. A checkpoint that fails is tried again at the next.
 */
const checkpoint = () => {
  try {
    db?.pragma('wal_checkpoint(PASSIVE)');
  } catch {}
};

/** @param {{ id: number, writes: Write[] } | 'checkpoint' | 'close'} first */
const onMessage = (first) => {
  /** @type {{ id: number, writes: Write[] }[]} */
  const batches = [];
  let closing = false;
  let checkpointing = false;
  for (let message = first; message !== undefined; message = receiveMessageOnPort(port)?.message) {
    if (message === 'close') closing = true;
    else if (message === 'checkpoint') checkpointing = true;
    else batches.push(message);
  }
  if (batches.length > 0) port.postMessage(commit(batches));
  // After the answers: the writes waiting for them are not held up by it.
  if (checkpointing) checkpoint();
  if (closing) {
    db?.close();
    port.close();
  }
};

if (!parentPort) throw new Error('the SQLite writer runs as a worker thread');
const port = parentPort;
port.on('message', onMessage);
