// Runs the built broker (`build/broker/main.js`) as a real process, the way `npm start` does.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const BROKER_ENTRY = fileURLToPath(new URL('../../build/broker/main.js', import.meta.url));

export interface BrokerProcess {
  url: string;
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Sends the signal and resolves to the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

export function runBroker(args: string[], env: Record<string, string>, cwd?: string) {
  return runNode([BROKER_ENTRY, ...args], { LOG_LEVEL: 'info', ...env }, cwd);
}

/** Runs Node with `args` and only PATH and `env` in its environment, collecting what it writes. */
export function runNode(args: string[], env: Record<string, string>, cwd?: string) {
  const child = spawn(process.execPath, args, {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  /** Once the process has ended and its output is all read. */
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, exited, closed, stdout: () => out, stderr: () => err };
}

/** Creates a tenant with the CLI, as an operator does on a configured database, and returns its Tenant API key. */
export async function createTenantKey(env: Record<string, string>, name = 'acme'): Promise<string> {
  const run = runBroker(['tenant', 'create', name], env);
  const code = await run.closed;
  const key = /^(ssa_[0-9A-Za-z]{38})\n$/.exec(run.stdout())?.[1];
  if (code !== 0 || !key) throw new Error(`tenant create exited with ${code}:\n${run.stderr()}`);
  return key;
}

/**
 * A port chosen at start, and the public URL that PORT=0 requires (tokens' iss; nothing here dials it).
 */
export const EPHEMERAL_PORT = { PORT: '0', BROKER_PUBLIC_URL: 'https://broker.test' };

/** Starts `serve` on an ephemeral port and waits for its `listening` log line. */
export async function startBrokerProcess(env: Record<string, string>, cwd?: string): Promise<BrokerProcess> {
  const run = runBroker(['serve'], { ...EPHEMERAL_PORT, ...env }, cwd);
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`broker did not start:\n${run.stdout()}\n${run.stderr()}`)),
      15_000,
    );
    const check = () => {
      const line = run
        .stdout()
        .split('\n')
        .find((l) => l.includes('"msg":"listening"'));
      if (line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { port: number }).port);
      }
    };
    run.child.stdout?.on('data', check);
    run.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code}:\n${run.stdout()}\n${run.stderr()}`));
    });
  });
  return {
    ...run,
    url: `http://127.0.0.1:${port}`,
    async stop(signal = 'SIGTERM') {
      if (run.child.exitCode === null) run.child.kill(signal);
      return run.exited;
    },
  };
}
