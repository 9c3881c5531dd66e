// Start-to-exit time of the bundled action (dist/main) against local fakes, beside bare `node -e ''` timed alike.
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readActionYml } from '../test/action/support/action-yml.js';
import { startFakeBroker } from '../test/action/support/fake-broker.js';
import { startFakeGitHubOidc } from '../test/action/support/fake-github.js';

export interface Timing {
  meanMs: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
}

export interface ActionStart {
  runs: number;
  action: Timing;
  /** Means over the action's runs: when it wrote its first and its last line (module load, then work done). */
  firstOutputMs: number;
  lastOutputMs: number;
  bareNode: Timing;
  /** Mean action time over mean bare-node time. */
  ratio: number;
  /** Bytes of each dist/<entry>/index.js. */
  bundleBytes: Record<string, number>;
}

const ACCESS_TOKEN = 'eyJhbGciOiJFUzI1NiJ9.bench-access-token.c2lnbmF0dXJl';
const WARM_UP_RUNS = 2;

function timing(samples: number[]): Timing {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return {
    meanMs: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    medianMs: sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2,
    minMs: sorted[0]!,
    maxMs: sorted[sorted.length - 1]!,
  };
}

interface Run {
  ms: number;
  code: number | null;
  stdout: string;
  firstOutputMs: number;
  lastOutputMs: number;
}

/** Milliseconds from spawn until the process has exited and its output is drained, as a runner waits. */
function timedRun(args: string[], env: Record<string, string>, cwd: string) {
  return new Promise<Run>((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let firstOutputMs = 0;
    let lastOutputMs = 0;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      lastOutputMs = performance.now() - started;
      firstOutputMs ||= lastOutputMs;
      stdout += chunk;
    });
    child.stderr.resume();
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ ms: performance.now() - started, code, stdout, firstOutputMs, lastOutputMs }),
    );
  });
}

async function bundleSizes(root: string): Promise<Record<string, number>> {
  const sizes: Record<string, number> = {};
  for (const entry of (await readdir(join(root, 'dist'), { withFileTypes: true })).sort((a, b) =>
    a.name.localeCompare(b.name),
  )) {
    if (!entry.isDirectory()) continue;
    const file = join(root, 'dist', entry.name, 'index.js');
    sizes[`dist/${entry.name}/index.js`] = (await stat(file).catch(() => undefined))?.size ?? 0;
  }
  return sizes;
}

export async function measureActionStart(root: string, runs: number): Promise<ActionStart> {
  const github = await startFakeGitHubOidc((audience) => `github-oidc-token-for-${audience}`);
  const broker = await startFakeBroker(ACCESS_TOKEN);
  const dir = await mkdtemp(join(tmpdir(), 'oidc-auth-bench-runner-'));
  try {
    const files = {
      GITHUB_OUTPUT: join(dir, 'output'),
      GITHUB_STATE: join(dir, 'state'),
      GITHUB_ENV: join(dir, 'env'),
      GITHUB_STEP_SUMMARY: join(dir, 'summary'),
    };
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      RUNNER_TEMP: dir,
      GITHUB_ACTIONS: 'true',
      ACTIONS_ID_TOKEN_REQUEST_URL: github.requestUrl,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: github.requestToken,
      ...files,
    };
    const { inputs } = await readActionYml(join(root, 'action.yml'));
    const given = { tenant: 'acme', 'api-url': broker.apiUrl, permissions: 'harden-runner:read' };
    for (const [name, input] of Object.entries(inputs)) {
      const value = given[name as keyof typeof given] ?? input.default;
      if (value !== undefined) env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] = value;
    }
    const action = async () => {
      await Promise.all(Object.values(files).map((file) => writeFile(file, '')));
      const run = await timedRun([join(root, 'dist/main/index.js')], env, root);
      if (run.code !== 0) {
        const errors = run.stdout.split('\n').filter((line) => line.startsWith('::error'));
        throw new Error(`the bundled action exited with ${run.code}: ${errors.join(' ')}`);
      }
      return run;
    };
    const bare = async () => (await timedRun(['-e', ''], env, root)).ms;

    for (let i = 0; i < WARM_UP_RUNS; i++) {
      await action();
      await bare();
    }
    const actionRuns: Run[] = [];
    const bareMs: number[] = [];
    // Interleaved, so drift in the machine's load falls on both alike.
    for (let i = 0; i < runs; i++) {
      actionRuns.push(await action());
      bareMs.push(await bare());
    }
    const mean = (pick: (r: Run) => number) => actionRuns.reduce((sum, r) => sum + pick(r), 0) / runs;
    const result = { action: timing(actionRuns.map((r) => r.ms)), bareNode: timing(bareMs) };
    return {
      runs,
      ...result,
      firstOutputMs: mean((r) => r.firstOutputMs),
      lastOutputMs: mean((r) => r.lastOutputMs),
      ratio: result.action.meanMs / result.bareNode.meanMs,
      bundleBytes: await bundleSizes(root),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
    await broker.close();
    await github.close();
  }
}
