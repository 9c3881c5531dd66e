// The clock a write's deadline is kept on, on the event loop and in the writer threads alike. Plain JavaScript, so
// that the threads load it from source and from build/.

/**
 * Milliseconds since the epoch as this thread's start read them, advanced by the monotonic clock since: a wall
 * clock stepped by NTP or a VM resumed from suspend moves no deadline. Threads started together (the broker starts
 * its writers at once) agree on it within the time between their starts.
 * @returns {number}
 */
export function steadyNow() {
  return performance.timeOrigin + performance.now();
}
