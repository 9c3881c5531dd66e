// Drives exchanges with wrk (C, Debian package `wrk`), whose cost per request is a small fraction of a Node load
// generator's, so that the broker, not the load generator, is what the run measures on a two-core machine.
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { LoadJob, LoadResult } from './load.js';

/** What bench/wrk-exchange.lua prints when wrk is done. */
interface WrkSummary {
  durationUs: number;
  requests: number;
  tokensUsed: number;
  /** GET /healthz requests sent by a thread that ran out of tokens; not exchanges. */
  fillers: number;
  /** Answers other than 2xx, counted by the script: wrk's own `errors.status` counts only 400 and up. */
  non2xx: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latencyUs: { mean: number; p50: number; p90: number; p99: number; max: number };
}

/** The wrk binary, installed from Debian's packages when missing and allowed (as .ci/postgres.sh does). */
function ensureWrk(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).trim();
  } catch {
    if (process.getuid?.() !== 0) {
      throw new Error('wrk is not installed: run `apt-get install wrk`, or pass --load autocannon');
    }
    process.stderr.write('[bench] installing wrk from Debian packages\n');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    execFileSync(
      'sh',
      ['-c', 'apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)'],
      {
        env,
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    return execFileSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).trim();
  }
}

/** The user and system CPU of bash's children, from the second line of its `times`. */
function childCpuSeconds(times: string): number {
  const lines = times.trim().split('\n');
  const fields = (lines[lines.length - 1] ?? '').trim().split(/\s+/);
  return fields
    .map((field) => /^(\d+)m([\d.]+)s$/.exec(field))
    .reduce((sum, m) => sum + (m ? Number(m[1]) * 60 + Number(m[2]) : 0), 0);
}

export interface TimedCommand {
  /** Every chunk of the command's standard output, as it comes. */
  onStdout(listener: (chunk: string) => void): void;
  /** Sends SIGINT to the command itself, as soon as its process id is known. */
  interrupt(): void;
  /** Once the command is done: its exit status, its output and the CPU it used. */
  done: Promise<{ code: number | null; stdout: string; stderr: string; cpuSeconds: number }>;
}

/**
 * Runs a command under bash, which prints the command's process id first and its CPU time (`times`) once it is
 * done. `interrupt` signals the command, never bash: a signal to bash cuts its `wait` short, and bash then
 * reports 130 as the status whenever the command had already exited by the time bash looked again.
 */
export function spawnTimed(command: string, args: string[]): TimedCommand {
  const script = '"$@" & pid=$!; echo "pid $pid" >&2; wait "$pid"; status=$?; times >&2; exit $status';
  const child = spawn('bash', ['-c', script, 'timed', command, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '' },
  });
  let stdout = '';
  let stderr = '';
  let pid: number | undefined;
  let interruptWanted = false;
  let exited = false;
  const signal = () => {
    if (pid === undefined || exited) return;
    try {
      process.kill(pid, 'SIGINT');
    } catch (error) {
      // The command has exited on its own meanwhile (its --duration was up), and bash has reaped it.
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    if (pid === undefined) {
      const m = /^pid (\d+)$/m.exec(stderr);
      if (m) {
        pid = Number(m[1]);
        if (interruptWanted) signal();
      }
    }
  });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string; cpuSeconds: number }>(
    (resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => {
        exited = true;
        const own = stderr.replace(/^pid \d+\n/m, '');
        resolve({ code, stdout, stderr: own, cpuSeconds: childCpuSeconds(own) });
      });
    },
  );
  return {
    onStdout: (listener) => child.stdout.on('data', listener),
    interrupt: () => {
      interruptWanted = true;
      signal();
    },
    done,
  };
}

export function runWrk(root: string, job: LoadJob & { threads: number }): Promise<LoadResult> {
  const wrk = ensureWrk();
  // Without --duration the run is bounded by the tokens: it ends when every thread has run out of them.
  const seconds = job.durationSeconds ?? 3600;
  const args = [
    '-t',
    String(job.threads),
    '-c',
    String(job.connections),
    '-d',
    `${seconds}s`,
    '--timeout',
    '30s',
    '-s',
    join(root, 'bench/wrk-exchange.lua'),
    job.url,
    '--',
    job.tokensFile,
    String(job.threads),
  ];
  const run = spawnTimed(wrk, args);
  let seen = '';
  let exhaustedThreads = 0;
  run.onStdout((chunk) => {
    seen += chunk;
    const count = seen.match(/^exhausted$/gm)?.length ?? 0;
    if (count > exhaustedThreads) {
      exhaustedThreads = count;
      if (exhaustedThreads === job.threads) run.interrupt();
    }
  });
  return run.done.then(({ code, stdout, stderr, cpuSeconds }) => {
    const line = stdout.split('\n').find((l) => l.startsWith('{"durationUs"'));
    if (code !== 0 || !line) {
      throw new Error(`wrk exited with ${code}: ${(stderr || stdout).trim().slice(0, 500)}`);
    }
    const s = JSON.parse(line) as WrkSummary;
    const runSeconds = s.durationUs / 1e6;
    const exchanges = s.requests - s.fillers;
    const non2xx = s.non2xx;
    const ms = (us: number) => us / 1000;
    return {
      requests: exchanges,
      ok: exchanges - non2xx,
      non2xx,
      errors: s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout,
      timeouts: s.errors.timeout,
      refusals: non2xx > 0 ? ['see the broker log for the refusal codes'] : [],
      tokensUsed: s.tokensUsed,
      tokensExhausted: job.durationSeconds !== undefined && exhaustedThreads > 0,
      seconds: runSeconds,
      exchangesPerSecond: (exchanges - non2xx) / runSeconds,
      latencyMs: {
        mean: ms(s.latencyUs.mean),
        p50: ms(s.latencyUs.p50),
        p90: ms(s.latencyUs.p90),
        p99: ms(s.latencyUs.p99),
        max: ms(s.latencyUs.max),
      },
      loadGeneratorCpuPercent: (cpuSeconds / runSeconds) * 100,
    };
  });
}
