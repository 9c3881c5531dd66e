// A fresh, empty database per phase: a new SQLite file, or a new database on a throwaway PostgreSQL 15.
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';

export interface DatabaseServer {
  engine: 'sqlite' | 'postgres';
  /** A DATABASE_URL naming an empty database that nothing else uses. */
  fresh(name: string): Promise<string>;
  stop(): Promise<void>;
}

/** Runs a command with stderr passed through (PostgreSQL's start-up and install messages); resolves to stdout. */
function run(command: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} exited with ${code}`)),
    );
  });
}

function sqliteServer(dir: string): DatabaseServer {
  const paths: string[] = [];
  const remove = (path: string) =>
    Promise.all(['', '-wal', '-shm'].map((suffix) => rm(`${path}${suffix}`, { force: true })));
  return {
    engine: 'sqlite',
    async fresh(name) {
      const path = join(dir, `${name}.db`);
      await remove(path);
      paths.push(path);
      return `sqlite:${path}`;
    },
    async stop() {
      await Promise.all(paths.splice(0).map(remove));
    },
  };
}

async function postgresServer(root: string): Promise<DatabaseServer> {
  const script = join(root, '.ci/postgres.sh');
  const exports = await run('bash', [script, 'start'], root);
  const url = /TEST_DATABASE_URL=(\S+)/.exec(exports)?.[1];
  const dataDir = /PG_DATA_DIR=(\S+)/.exec(exports)?.[1];
  if (!url || !dataDir) throw new Error(`.ci/postgres.sh start printed no URL: ${exports}`);
  let stopped = false;
  return {
    engine: 'postgres',
    async fresh(name) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name}`);
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      const database = new URL(url);
      database.pathname = `/${name}`;
      return database.toString();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await run('bash', [script, 'stop', dataDir], root);
    },
  };
}

/** `dir` holds SQLite files; `root` is the project (for .ci/postgres.sh). */
export async function startDatabaseServer(
  engine: 'sqlite' | 'postgres',
  dir: string,
  root: string,
): Promise<DatabaseServer> {
  return engine === 'sqlite' ? sqliteServer(dir) : postgresServer(root);
}
