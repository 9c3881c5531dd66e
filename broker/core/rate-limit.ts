// Token-bucket rate limiting per key, in memory (each replica limits its own share).

/** A refusal `startsRun` when the key's previous request was granted: the first of a run of refusals. */
export type RateDecision = { ok: true } | { ok: false; retryAfterSeconds: number; startsRun: boolean };

export interface RateLimiter {
  take(key: string): RateDecision;
}

interface Bucket {
  tokens: number;
  updated: number;
  refusing: boolean;
}

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

  const refill = (bucket: Bucket, at: number) => {
    bucket.tokens = Math.min(burst, bucket.tokens + (at - bucket.updated) * perMs);
    bucket.updated = at;
  };

  const prune = (at: number) => {
    for (const [key, bucket] of buckets) {
      refill(bucket, at);
      if (bucket.tokens >= burst) buckets.delete(key);
    }
    // Still too many: every key is busy; forget the oldest to stay bounded.
    for (const key of buckets.keys()) {
      if (buckets.size <= maxKeys) break;
      buckets.delete(key);
    }
  };

  return {
    take(key) {
      const at = now();
      let bucket = buckets.get(key);
      if (!bucket) {
        if (buckets.size >= maxKeys) prune(at);
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
  };
}
