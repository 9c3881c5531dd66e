// The bench's reading of the broker's own latency histogram: which exchanges a round counts, and how.
import { describe, expect, it } from 'vitest';
import { exchangeHistogram, inBrokerBetween } from '../../bench/broker-metrics.js';
import { createMetrics } from '../../broker/metrics.js';

const EXCHANGE = ['POST', '/v1/oidc/token', 200] as const;

async function snapshot(metrics: ReturnType<typeof createMetrics>) {
  return exchangeHistogram(await metrics.registry.metrics());
}

describe("the bench's reading of the broker's latency histogram", () => {
  it('times only the successful exchanges of the round, with their mean and the share within 25 ms', async () => {
    const metrics = createMetrics();
    metrics.observeRequest(...EXCHANGE, 0.5); // before the round
    const before = await snapshot(metrics);
    for (const seconds of [0.004, 0.012, 0.025, 0.031]) metrics.observeRequest(...EXCHANGE, seconds);
    // Other routes and refused exchanges are not the round's exchanges.
    metrics.observeRequest('POST', '/v1/oidc/token', 403, 0.001);
    metrics.observeRequest('GET', '/v1/whoami', 200, 0.001);
    const round = inBrokerBetween(before, await snapshot(metrics));
    expect(round?.exchanges).toBe(4);
    expect(round?.meanMs).toBeCloseTo(18, 6);
    expect(round?.within25Ms).toBe(0.75);
  });

  it('reports nothing for a round in which the broker answered no exchange', async () => {
    const metrics = createMetrics();
    metrics.observeRequest('GET', '/v1/whoami', 200, 0.001);
    const idle = await snapshot(metrics);
    expect(inBrokerBetween(idle, idle)).toBeUndefined();
  });

  it('refuses a histogram without the 25 ms bound rather than reporting a share of zero', () => {
    const text = [
      'http_request_duration_seconds_bucket{le="0.01",method="POST",route="/v1/oidc/token",status="200"} 3',
      'http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/v1/oidc/token",status="200"} 5',
      'http_request_duration_seconds_sum{method="POST",route="/v1/oidc/token",status="200"} 0.1',
      'http_request_duration_seconds_count{method="POST",route="/v1/oidc/token",status="200"} 5',
    ].join('\n');
    const empty = { buckets: new Map(), count: 0, sumSeconds: 0, gc: { seconds: 0, major: 0 } };
    expect(() => inBrokerBetween(empty, exchangeHistogram(text))).toThrow(/no 0.025 s bucket/);
  });

  it("sets the broker's garbage collections of the round against its exchanges, every kind's pauses and the major ones", () => {
    const exposition = (exchanges: number, gc: Record<string, [count: number, seconds: number]>) =>
      [
        `http_request_duration_seconds_bucket{le="0.025",method="POST",route="/v1/oidc/token",status="200"} ${exchanges}`,
        `http_request_duration_seconds_sum{method="POST",route="/v1/oidc/token",status="200"} ${exchanges * 0.01}`,
        `http_request_duration_seconds_count{method="POST",route="/v1/oidc/token",status="200"} ${exchanges}`,
        ...Object.entries(gc).flatMap(([kind, [count, seconds]]) => [
          `nodejs_gc_duration_seconds_sum{kind="${kind}"} ${seconds}`,
          `nodejs_gc_duration_seconds_count{kind="${kind}"} ${count}`,
        ]),
      ].join('\n');
    const before = exchangeHistogram(exposition(100, { minor: [10, 0.02], major: [1, 0.005] }));
    const after = exchangeHistogram(
      exposition(2100, { minor: [24, 0.05], major: [3, 0.012], incremental: [2, 0.002] }),
    );
    // 2,000 exchanges: 30 + 7 + 2 ms of pauses and 2 major collections.
    expect(inBrokerBetween(before, after)?.gcPerThousand).toEqual({ ms: expect.closeTo(19.5, 6), major: 1 });
  });
});
