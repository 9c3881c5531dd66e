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

  it('near the cap, a sweep leaves room for a tenth of it, even when a few buckets had refilled', () => {
    const c = clock();
    const limiter = createRateLimiter({ perMinute: 1, burst: 1, now: c.read, maxKeys: 1000 });
    for (let k = 0; k < 10; k++) limiter.take(`early-${k}`);
    c.now += 60_000; // the first ten have refilled; the next 990 will not have
    for (let k = 0; k < 990; k++) limiter.take(`late-${k}`);
    expect(limiter.keys()).toBe(1000);
    limiter.take('new-0');
    // The ten full buckets went, and the oldest busy ones down to 900: not a sweep at every new key from here.
    expect(limiter.keys()).toBe(901);
    for (let k = 1; k < 100; k++) limiter.take(`new-${k}`);
    expect(limiter.keys()).toBe(1000);
    expect(limiter.take('new-99').ok).toBe(false);
    expect(limiter.take('late-989').ok).toBe(false);
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

describe('rate limiter and the wall clock', () => {
  it('a clock stepped back (NTP, a VM restored) takes no budget away: it refills from the new time on', () => {
    const c = clock();
    c.now = 10 * 3_600_000;
    const limiter = createRateLimiter({ perMinute: 600, burst: 60, now: c.read });
    expect(limiter.take('acme/infra').ok).toBe(true);
    c.now -= 3_600_000;
    expect(limiter.take('acme/infra').ok).toBe(true);
    // The burst is still there, less what was taken, and refills at the usual pace from the earlier time on.
    for (let i = 0; i < 58; i++) expect(limiter.take('acme/infra').ok, `request ${i}`).toBe(true);
    expect(limiter.take('acme/infra')).toEqual({ ok: false, retryAfterSeconds: 1, startsRun: true });
    c.now += 100;
    expect(limiter.take('acme/infra').ok).toBe(true);
  });
});
