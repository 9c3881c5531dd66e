// The load generator's process: autocannon POSTs each pre-signed OIDC token once to the broker's exchange.
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import type { LoadJob, LoadResult } from './load.js';

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

function run(job: LoadJob): Promise<LoadResult> {
  const bodies = readFileSync(job.tokensFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((token) => JSON.stringify({ oidc_token: token }));
  // Every request takes the next token; autocannon sends exactly `amount` requests, each built once.
  const amount = bodies.length - job.connections;
  if (amount < job.connections) throw new Error(`${bodies.length} tokens are too few for the connections`);
  let next = 0;
  let exhausted = false;
  const latencies: number[] = [];
  const refusals: string[] = [];
  let responses = 0;
  let ok = 0;
  let lastResponse = 0;

  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: job.url,
        connections: job.connections,
        amount,
        timeout: 30,
        requests: [
          {
            method: 'POST',
            path: '/v1/oidc/token',
            headers: { 'content-type': 'application/json' },
            setupRequest(request) {
              if (next >= bodies.length) {
                exhausted = true;
                instance.stop();
                return { ...request, body: '{}' };
              }
              return { ...request, body: bodies[next++] };
            },
            onResponse(status, body) {
              if (status >= 300 && refusals.length < 5) {
                const code = /"code":"([a-z_]+)"/.exec(body)?.[1] ?? 'no problem code';
                refusals.push(`${status} ${code}`);
              }
            },
          },
        ],
      },
      (error, result) => {
        if (error) {
          reject(error);
          return;
        }
        clearTimeout(stopTimer);
        const cpu = process.cpuUsage(cpuBefore);
        const seconds = ((lastResponse || performance.now()) - started) / 1000;
        const sorted = Float64Array.from(latencies).sort();
        const mean = sorted.length ? sorted.reduce((a, b) => a + b, 0) / sorted.length : 0;
        resolve({
          requests: responses,
          ok,
          non2xx: result.non2xx,
          errors: result.errors,
          timeouts: result.timeouts,
          refusals,
          tokensUsed: next,
          tokensExhausted: exhausted,
          seconds,
          exchangesPerSecond: ok / seconds,
          latencyMs: {
            mean,
            p50: percentile(sorted, 0.5),
            p90: percentile(sorted, 0.9),
            p99: percentile(sorted, 0.99),
            max: sorted.length ? sorted[sorted.length - 1]! : 0,
          },
          loadGeneratorCpuPercent: ((cpu.user + cpu.system) / 1e6 / seconds) * 100,
        });
      },
    );
    instance.on('response', (_client: unknown, status: number, _bytes: number, responseTime: number) => {
      lastResponse = performance.now();
      responses++;
      if (status >= 200 && status < 300) {
        ok++;
        latencies.push(responseTime);
      }
    });
    const stopTimer = job.durationSeconds
      ? setTimeout(() => instance.stop(), job.durationSeconds * 1000)
      : undefined;
  });
}

process.once('message', (job: LoadJob) => {
  const reply = (message: unknown) => process.send?.(message, () => process.exit(0));
  run(job).then(
    (result) => reply({ ok: true, result }),
    (error: Error) => reply({ ok: false, error: error.message }),
  );
});
