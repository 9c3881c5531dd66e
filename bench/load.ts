// Drives exchanges at the broker from a separate process — wrk (bench/wrk.ts) or autocannon (bench/load-child.ts).
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { runWrk } from './wrk.js';

export type LoadGenerator = 'wrk' | 'autocannon';

export interface LoadJob {
  generator: LoadGenerator;
  url: string;
  /** One pre-signed OIDC token a line; each is sent exactly once. */
  tokensFile: string;
  connections: number;
  /** Stop after this many seconds even if tokens remain; without it, run until the tokens are used. */
  durationSeconds?: number;
}

export interface LoadResult {
  /** Responses received. */
  requests: number;
  ok: number;
  non2xx: number;
  /** Connection errors, timeouts included. */
  errors: number;
  timeouts: number;
  /** `status code` of the first few refused exchanges. */
  refusals: string[];
  tokensUsed: number;
  /** True when the run ran out of tokens (the last requests then carried none and were refused). */
  tokensExhausted: boolean;
  /** From the first request to the last response. */
  seconds: number;
  exchangesPerSecond: number;
  /** Of successful exchanges, measured by the load generator from request written to response parsed. */
  latencyMs: { mean: number; p50: number; p90: number; p99: number; max: number };
  /**
   * CPU the load generator itself used, in percent of one core, divided by `seconds`. For wrk the CPU time also
   * covers its start-up (the Lua script reading the token file), which falls outside `seconds`, so the figure
   * reads slightly high.
   */
  loadGeneratorCpuPercent: number;
}

type Reply = { ok: true; result: LoadResult } | { ok: false; error: string };

export function runLoad(root: string, job: LoadJob): Promise<LoadResult> {
  return job.generator === 'wrk' ? runWrk(root, { ...job, threads: 1 }) : runAutocannon(root, job);
}

function runAutocannon(root: string, job: LoadJob): Promise<LoadResult> {
  const child = fork(join(root, 'build/bench/load-child.js'), [], {
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    child.once('message', (reply: Reply) => {
      settled = true;
      if (reply.ok) resolve(reply.result);
      else reject(new Error(`load generator failed: ${reply.error}`));
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (!settled) reject(new Error(`load generator exited with ${code} before reporting`));
    });
    child.send(job);
  });
}

/** A result that is an error of the run, not a measurement: anything but a successful exchange per token. */
export function loadProblems(label: string, r: LoadResult): string[] {
  const problems: string[] = [];
  if (r.non2xx > 0) problems.push(`${label}: ${r.non2xx} non-2xx answers (${r.refusals.join(', ')})`);
  if (r.errors > 0) problems.push(`${label}: ${r.errors} connection errors (${r.timeouts} timeouts)`);
  if (r.tokensExhausted) problems.push(`${label}: ran out of pre-signed tokens`);
  if (r.ok === 0) problems.push(`${label}: no successful exchange`);
  return problems;
}
