// The exchange rate limiter's memory: it forgets the buckets that have refilled, and never a key still limited.
import { describe, expect, it } from 'vitest';
import { createRateLimiter } from '../../broker/core/rate-limit.js';

const clock = () => {
  const c = { now: 0, read: () => c.now };
  return c;
};

describe('rate limiter memory', () => {
  it('forgets the buckets of repositories that have refilled, as new repositories arrive', () => {
    const c = clock();
    const limiter = createRateLimiter({ perMinute: 600, burst: 10, now: c.read });
    // A fleet of 50,000 repositories, each exchanging once, one every 100 ms: a bucket is full again after 100 ms.
    for (let k = 0; k < 50_000; k++) {
      expect(limiter.take(`repo-${k}`).ok).toBe(true);
      c.now += 100;
    }
    expect(limiter.keys()).toBeLessThanOrEqual(2048);
  });

  it('keeps a repository limited however many others come and go meanwhile', () => {
    const c = clock();
    const limiter = createRateLimiter({ perMinute: 1, burst: 1, now: c.read });
    expect(limiter.take('acme/infra').ok).toBe(true);
    for (let k = 0; k < 20_000; k++) {
      limiter.take(`repo-${k}`);
      c.now += 1;
    }
    // 20 s later: a token takes 60 s to come back.
    expect(limiter.take('acme/infra')).toEqual({ ok: false, retryAfterSeconds: 40, startsRun: true });
    expect(limiter.take('acme/infra')).toMatchObject({ ok: false, startsRun: false });
  });

  it('holds at most maxKeys buckets while every repository is still being limited', () => {
    const c = clock();
    const limiter = createRateLimiter({ perMinute: 1, burst: 1, now: c.read, maxKeys: 1000 });
    for (let k = 0; k < 5000; k++) {
      limiter.take(`repo-${k}`);
      expect(limiter.keys()).toBeLessThanOrEqual(1000);
    }
    // The newest keys are kept: the last one is still limited.
    expect(limiter.take('repo-4999').ok).toBe(false);
  });
});
