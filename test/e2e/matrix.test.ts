// A large matrix: hundreds of jobs of one run exchange at once against a real broker with the default rate limit,
// each with the action's own retry logic, on a clock that moves only when every job waits.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RunDeps } from '../../src/deps.js';
import { run } from '../../src/run.js';
import { createFakeIO } from '../action/support/fake-io.js';
import { type Federation, startFederation } from '../support/federation.js';

let f: Federation;
beforeAll(async () => {
  f = await startFederation();
  await f.policy('ci', { claims: { repository: 'acme/infra' } });
});
afterAll(() => f?.close());

/** A seeded PRNG (mulberry32), so that the jitter is the same on every run. */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

it("384 jobs of one run all get a token within the step's 90 s, paced by 429 and Retry-After", async () => {
  // Two 192-job matrices of one workflow run: 60 exchanges at once, then 10 a second (600/min, burst 60).
  const jobs = 384;
  const clock = f.t.clock;
  const start = clock.now;
  const random = seeded(1);
  const timers: { at: number; wake: () => void }[] = [];
  let asleep = 0;
  let finished = 0;
  let nudge = () => {};
  const results = await Promise.all([
    ...Array.from({ length: jobs }, async (_, job) => {
      const io = createFakeIO({ tenant: 'acme-corp', 'api-url': 'https://broker.test/v1' });
      const deps: RunDeps = {
        io,
        now: () => clock.now,
        random,
        sleep: (ms) =>
          new Promise<void>((resolve) => {
            asleep++;
            timers.push({ at: clock.now + ms, wake: resolve });
            nudge();
          }),
        fetch: async (url, init) => f.t.broker.app.request(url, init),
        idTokenAvailable: true,
        getIdToken: async (audience) =>
          f.issuer.sign({ aud: audience, run_id: '4242', check_run_id: String(9000 + job) }),
      };
      const issued = await run(deps);
      finished++;
      nudge();
      return { issued, at: clock.now - start, failure: io.failures[0] };
    }),
    (async () => {
      // The broker's work takes no time here: when every job waits, the clock moves to the first wake-up.
      while (finished < jobs) {
        await new Promise<void>((resolve) => {
          nudge = resolve;
          setTimeout(resolve, 20);
        });
        if (asleep + finished < jobs || timers.length === 0) continue;
        timers.sort((a, b) => a.at - b.at);
        clock.now = Math.max(clock.now, timers[0]!.at);
        while (timers.length > 0 && timers[0]!.at <= clock.now) {
          asleep--;
          timers.shift()!.wake();
        }
      }
      return undefined;
    })(),
  ]);

  const jobResults = results.filter((r) => r !== undefined);
  expect(jobResults.filter((r) => !r.issued).map((r) => r.failure)).toEqual([]);
  expect(Math.max(...jobResults.map((r) => r.at))).toBeLessThan(90_000);
}, 120_000);
