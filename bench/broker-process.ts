// Runs the built broker (`node build/broker/main.js serve`) as its own process and reads its memory and CPU time.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface BrokerProcess {
  url: string;
  pid: number;
  /** VmRSS now, in bytes. */
  rss(): number;
  /** User + system CPU seconds used so far. */
  cpuSeconds(): number;
  /** Samples VmRSS every `intervalMs` until the returned function is called; that resolves to the peak. */
  watchRss(intervalMs?: number): () => number;
  /** SIGTERM, then waits for the exit (a --cpu-prof profile is written on the way out). */
  stop(): Promise<number | null>;
}

export interface BrokerStart {
  root: string;
  /** The script and its arguments, relative to root: the broker's `serve`, or the reference handler. */
  script: string[];
  env: Record<string, string>;
  /** Where the broker's stdout and stderr (its JSON log lines) go. */
  logFile: string;
  /** Run under `node --cpu-prof`, writing `name` into `dir`. */
  cpuProfile?: { dir: string; name: string };
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

function procStatus(pid: number, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name start at field 3 (state); utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/**
 * BENCH_BROKER_ENV, a JSON object of variables added to the environment of every server the bench starts (the
 * broker and the straightforward handler alike), for experiments. A run that sets it is filed as an experiment.
 */
export function experimentEnv(): Record<string, string> {
  const raw = process.env.BENCH_BROKER_ENV;
  if (!raw) return {};
  const parsed: unknown = JSON.parse(raw);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error('BENCH_BROKER_ENV must be a JSON object of variable names to strings');
  }
  return Object.fromEntries(Object.entries(parsed).map(([name, value]) => [name, String(value)]));
}

export async function startBroker(start: BrokerStart): Promise<BrokerProcess> {
  const profileArgs = start.cpuProfile
    ? ['--cpu-prof', '--cpu-prof-dir', start.cpuProfile.dir, '--cpu-prof-name', start.cpuProfile.name]
    : [];
  const log = openSync(start.logFile, 'w');
  const child = spawn(
    process.execPath,
    [...profileArgs, join(start.root, start.script[0] ?? ''), ...start.script.slice(1)],
    {
      cwd: start.root,
      env: { PORT: '0', ...start.env, ...experimentEnv() },
      stdio: ['ignore', log, log],
    },
  );
  closeSync(log);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const pid = child.pid;
  if (pid === undefined) throw new Error('the broker process did not start');

  const port = await new Promise<number>((resolve, reject) => {
    const deadline = Date.now() + 60_000;
    const poll = setInterval(() => {
      const text = readFileSync(start.logFile, 'utf8');
      const line = text.split('\n').find((l) => l.includes('"msg":"listening"'));
      if (line) {
        clearInterval(poll);
        resolve((JSON.parse(line) as { port: number }).port);
      } else if (child.exitCode !== null || Date.now() > deadline) {
        clearInterval(poll);
        child.kill('SIGKILL');
        reject(new Error(`the broker did not start; see ${start.logFile}:\n${text.slice(-2000)}`));
      }
    }, 50);
  });

  return {
    url: `http://127.0.0.1:${port}`,
    pid,
    rss: () => procStatus(pid, 'VmRSS'),
    cpuSeconds: () => procCpuSeconds(pid),
    watchRss(intervalMs = 100) {
      let peak = procStatus(pid, 'VmRSS');
      const timer = setInterval(() => {
        if (child.exitCode === null) peak = Math.max(peak, procStatus(pid, 'VmRSS'));
      }, intervalMs);
      return () => {
        clearInterval(timer);
        if (child.exitCode === null) peak = Math.max(peak, procStatus(pid, 'VmRSS'));
        return peak;
      };
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const timeout = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(timeout);
      return code;
    },
  };
}
