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

/** wrk's user and system CPU, from the second line of bash's `times` (its children's times). */
function childCpuSeconds(times: string): number {
  const lines = times.trim().split('\n');
  const fields = (lines[lines.length - 1] ?? '').trim().split(/\s+/);
  return fields
    .map((field) => /^(\d+)m([\d.]+)s$/.exec(field))
    .reduce((sum, m) => sum + (m ? Number(m[1]) * 60 + Number(m[2]) : 0), 0);
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
  // bash runs wrk, passes SIGINT on to it, and prints wrk's CPU time with `times` once it is done.
  const script =
    'trap \'kill -INT "$pid"\' INT; "$@" & pid=$!; ' +
    'while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done; times >&2; exit $status';
  const child = spawn('bash', ['-c', script, 'wrk', wrk, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '' },
  });
  let stdout = '';
  let stderr = '';
  let exhaustedThreads = 0;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    const seen = stdout.match(/^exhausted$/gm)?.length ?? 0;
    if (seen > exhaustedThreads) {
      exhaustedThreads = seen;
      if (exhaustedThreads === job.threads) child.kill('SIGINT');
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      const line = stdout.split('\n').find((l) => l.startsWith('{"durationUs"'));
      if (code !== 0 || !line) {
        reject(new Error(`wrk exited with ${code}: ${(stderr || stdout).trim().slice(0, 500)}`));
        return;
      }
      const s = JSON.parse(line) as WrkSummary;
      const runSeconds = s.durationUs / 1e6;
      const exchanges = s.requests - s.fillers;
      const non2xx = s.non2xx;
      const ms = (us: number) => us / 1000;
      resolve({
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
        loadGeneratorCpuPercent: (childCpuSeconds(stderr) / runSeconds) * 100,
      });
    });
  });
}
