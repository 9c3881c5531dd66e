// How long ago something happened by a wall clock that may be set back, for caches and cooldowns.

/**
 * Time from `since` to `t`. A wall clock stepped back in between (NTP, a restored VM) counts as long ago, not as
 * a wait: otherwise a cache's age or a cooldown would hold for as long as the clock went back, and what it stands
 * between (a refetch, a reload) would not happen for that long.
 */
export function elapsed(t: number, since: number): number {
  return t < since ? Number.POSITIVE_INFINITY : t - since;
}
