// Prometheus metrics: request counts and latency by route and status, plus process metrics.
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';

/** The route under which a request Node refused before the app read it is counted and logged. */
export const UNREAD_ROUTE = 'unread';

export interface Metrics {
  registry: Registry;
  observeRequest(method: string, route: string, status: number, seconds: number): void;
  /** An error answer's problem `code` (a closed list), by route pattern: what the status alone does not tell. */
  observeError(route: string, code: string): void;
  /** A failed fetch of a trusted issuer's signing keys, by issuer (configured ones only) and kind of failure. */
  observeIssuerKeyFailure(issuer: string, reason: string): void;
  /**
   * Starts each issuer's count of every kind of failure at 0, so that the first failure is an increase an alert
   * sees (`increase()` over a series that appears at 1 sees none).
   */
  expectIssuerKeyFailures(issuers: readonly string[], reasons: readonly string[]): void;
  /** A request Node refused before it was read (408, 431, 400): counted, method `unknown`, route `unread`. */
  observeUnreadRequest(status: number): void;
}

/**
 * The methods counted by name: HTTP's own (RFC 9110, and RFC 5789's PATCH). Node parses 34, WebDAV's and others
 * among them, each of which a scan can send to every route: counted by name, they would add a series per method,
 * route and status that stays until the broker restarts. The others are counted as `_OTHER`, as OpenTelemetry's
 * HTTP conventions count them.
 */
const NAMED_METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
  'PATCH',
]);
const OTHER_METHOD = '_OTHER';

export function createMetrics(options: { processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.processMetrics) collectDefaultMetrics({ register: registry });
  const requests = new Counter({
    name: 'http_requests_total',
    help: 'HTTP requests handled, by method, route pattern and status code.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request latency in seconds, by method, route pattern and status code.',
    labelNames: ['method', 'route', 'status'] as const,
    // Up to the broker's own deadlines (5 s for a connection or a read, 15 s for a write, 30 s for a request):
    // histogram_quantile() answers the highest finite bound for a quantile past it, so a last bucket of 2.5 s
    // would show requests that waited 15 s as 2.5 s.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'http_request_errors_total',
    help: 'HTTP requests answered with a problem document, by route pattern and problem code.',
    labelNames: ['route', 'code'] as const,
    registers: [registry],
  });
  const issuerKeyFailures = new Counter({
    name: 'issuer_key_fetch_failures_total',
    help: "Failed fetches of a trusted issuer's signing keys, by issuer and kind of failure; exchanges go on with cached keys meanwhile.",
    labelNames: ['issuer', 'reason'] as const,
    registers: [registry],
  });
  // Label sets are few (method × route pattern × status); resolving each once keeps the hot path to two adds.
  const series = new Map<string, { count: { inc(): void }; time: { observe(v: number): void } }>();
  return {
    registry,
    observeRequest(sent, route, status, seconds) {
      const method = NAMED_METHODS.has(sent) ? sent : OTHER_METHOD;
      const key = `${method} ${route} ${status}`;
      let s = series.get(key);
      if (!s) {
        const labels = [method, route, String(status)] as const;
        s = { count: requests.labels(...labels), time: latency.labels(...labels) };
        series.set(key, s);
      }
      s.count.inc();
      s.time.observe(seconds);
    },
    observeIssuerKeyFailure(issuer, reason) {
      issuerKeyFailures.labels(issuer, reason).inc();
    },
    expectIssuerKeyFailures(issuers, reasons) {
      for (const issuer of issuers)
        for (const reason of reasons) issuerKeyFailures.labels(issuer, reason).inc(0);
    },
    observeError(route, code) {
      errors.labels(route, code).inc();
    },
    observeUnreadRequest(status) {
      // Not timed: how long its client took to send too little, or too much, says nothing of the broker.
      requests.labels('unknown', UNREAD_ROUTE, String(status)).inc();
    },
  };
}
