// The broker's own view of a round: its latency histogram for successful exchanges and its garbage collections
// (GET /metrics), read before and after the round, so the report can set the time spent inside the broker beside
// what wrk measured.

const SERIES = 'http_request_duration_seconds';
const EXCHANGE_LABELS = { method: 'POST', route: '/v1/oidc/token', status: '200' };
const GC_SERIES = 'nodejs_gc_duration_seconds';

/** Cumulative counts of one histogram series: observations ≤ each bucket's upper bound, in seconds. */
export interface HistogramSnapshot {
  buckets: Map<number, number>;
  count: number;
  sumSeconds: number;
  /** V8's garbage collections so far, of every kind: their pauses, and how many were major (mark-compact). */
  gc: { seconds: number; major: number };
}

/** What the broker timed in a round: from its first middleware until the response was built. */
export interface InBroker {
  exchanges: number;
  meanMs: number;
  /** Share of the round's exchanges the broker handled within 25 ms (a histogram bucket bound, so exact). */
  within25Ms: number;
  /**
   * Garbage collection per 1,000 of the round's exchanges: its pauses in ms (wall time, so a busy machine inflates
   * them) and the major collections, which count what survives young-generation collection.
   */
  gcPerThousand: { ms: number; major: number };
}

function labelsOf(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
}

/** The successful-exchange series of the latency histogram in a Prometheus text exposition. */
export function exchangeHistogram(exposition: string): HistogramSnapshot {
  const snapshot: HistogramSnapshot = {
    buckets: new Map(),
    count: 0,
    sumSeconds: 0,
    gc: { seconds: 0, major: 0 },
  };
  for (const line of exposition.split('\n')) {
    const m = /^(\w+)\{([^}]*)\} (\S+)$/.exec(line);
    if (m?.[1] === `${GC_SERIES}_sum`) snapshot.gc.seconds += Number(m[3]);
    if (m?.[1] === `${GC_SERIES}_count` && labelsOf(m[2]!).kind === 'major')
      snapshot.gc.major += Number(m[3]);
    if (!m?.[1]?.startsWith(SERIES)) continue;
    const labels = labelsOf(m[2]!);
    if (Object.entries(EXCHANGE_LABELS).some(([name, value]) => labels[name] !== value)) continue;
    const value = Number(m[3]);
    const suffix = m[1].slice(SERIES.length);
    if (suffix === '_bucket' && labels.le !== undefined) snapshot.buckets.set(Number(labels.le), value);
    else if (suffix === '_count') snapshot.count = value;
    else if (suffix === '_sum') snapshot.sumSeconds = value;
  }
  return snapshot;
}

/** The exchanges between two snapshots; undefined when none were timed. */
export function inBrokerBetween(before: HistogramSnapshot, after: HistogramSnapshot): InBroker | undefined {
  const exchanges = after.count - before.count;
  if (exchanges <= 0) return undefined;
  const bound = 0.025;
  if (!after.buckets.has(bound)) throw new Error(`the broker's ${SERIES} has no ${bound} s bucket`);
  const within = after.buckets.get(bound)! - (before.buckets.get(bound) ?? 0);
  return {
    exchanges,
    meanMs: ((after.sumSeconds - before.sumSeconds) / exchanges) * 1000,
    within25Ms: within / exchanges,
    gcPerThousand: {
      ms: ((after.gc.seconds - before.gc.seconds) / exchanges) * 1e6,
      major: ((after.gc.major - before.gc.major) / exchanges) * 1000,
    },
  };
}

export async function scrapeExchangeHistogram(brokerUrl: string): Promise<HistogramSnapshot> {
  const response = await fetch(`${brokerUrl}/metrics`);
  if (!response.ok) throw new Error(`GET /metrics answered ${response.status}`);
  return exchangeHistogram(await response.text());
}
