// Token-bucket rate limiting per key, in memory (each replica limits its own share).

/** A refusal `startsRun` when the key's previous request was granted: the first of a run of refusals. */
export type RateDecision = { ok: true } | { ok: false; retryAfterSeconds: number; startsRun: boolean };

export interface RateLimiter {
  take(key: string): RateDecision;
  /** How many keys it holds a bucket for. */
  keys(): number;
}

interface Bucket {
  tokens: number;
  updated: number;
  refusing: boolean;
}

/** Buckets held before the first sweep for full ones. */
const FIRST_SWEEP = 1024;

export function createRateLimiter(options: {
  perMinute: number;
  burst: number;
  now: () => number;
  /** Buckets kept at most; full ones are dropped first, so memory stays bounded under many keys. */
  maxKeys?: number;
}): RateLimiter {
  const { burst, now } = options;
  const perMs = options.perMinute / 60_000;
  const maxKeys = options.maxKeys ?? 100_000;
  const buckets = new Map<string, Bucket>();
  let nextSweep = Math.min(FIRST_SWEEP, maxKeys);

  const refill = (bucket: Bucket, at: number) => {
    // A wall clock stepped back (NTP, a restored VM) adds nothing, and takes nothing away either.
    bucket.tokens = Math.min(burst, bucket.tokens + Math.max(0, at - bucket.updated) * perMs);
    bucket.updated = at;
  };

  /**
   * Drops the full buckets, which a new one would equal. Each sweep waits for the map to double, so a fleet that
   * exchanges once per repository holds about as many buckets as repositories in the last refill time, not every
   * repository it has seen, at a constant cost per new key.
   */
  const sweep = (at: number) => {
    for (const [key, bucket] of buckets) {
      refill(bucket, at);
      if (bucket.tokens >= burst) buckets.delete(key);
    }
    // Still near the cap: most keys are busy. The oldest are forgotten down to nine tenths of it, so that the
    // next sweep is a tenth of the cap away, not at the next new key.
    let excess = buckets.size - Math.floor(maxKeys * 0.9);
    for (const key of buckets.keys()) {
      if (excess-- <= 0) break;
      buckets.delete(key);
    }
    nextSweep = Math.min(maxKeys, Math.max(FIRST_SWEEP, buckets.size * 2));
  };

  return {
    take(key) {
      const at = now();
      let bucket = buckets.get(key);
      if (!bucket) {
        if (buckets.size >= nextSweep) sweep(at);
        bucket = { tokens: burst, updated: at, refusing: false };
        buckets.set(key, bucket);
      } else {
        refill(bucket, at);
      }
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        bucket.refusing = false;
        return { ok: true };
      }
      const startsRun = !bucket.refusing;
      bucket.refusing = true;
      const retryAfterSeconds = Math.max(1, Math.ceil((1 - bucket.tokens) / perMs / 1000));
      return { ok: false, retryAfterSeconds, startsRun };
    },
    keys: () => buckets.size,
  };
}
