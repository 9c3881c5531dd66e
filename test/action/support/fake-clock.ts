// A clock that only moves when the code under test sleeps, so backoff and deadlines are checked without waiting.
import type { Clock } from '../../../src/deps.js';

export interface FakeClock extends Clock {
  sleeps: number[];
  /** Moves the time on without a sleep, as a request that takes that long does. */
  advance(ms: number): void;
}

export function createFakeClock(start = Date.parse('2025-06-01T12:00:00Z'), random = 0.5): FakeClock {
  let now = start;
  const clock: FakeClock = {
    sleeps: [],
    now: () => now,
    async sleep(ms) {
      clock.sleeps.push(ms);
      now += ms;
    },
    random: () => random,
    advance(ms) {
      now += ms;
    },
  };
  return clock;
}
