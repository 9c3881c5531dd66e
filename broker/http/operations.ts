// Operational endpoints: liveness, readiness (the database answers; not stopping) and Prometheus metrics.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { BrokerError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import type { BrokerEnv } from './context.js';
import { notReady } from './schemas.js';

const Status = z.object({ status: z.string() }).openapi('Status');

/** How long /readyz waits for the database before answering 503. */
const READY_TIMEOUT_MS = 2000;

export function registerOperationRoutes(
  app: OpenAPIHono<BrokerEnv>,
  deps: { store: Store; metrics: Metrics; draining: () => boolean },
): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/healthz',
      operationId: 'getHealth',
      tags: ['Operations'],
      summary: 'Liveness: the process is serving',
      responses: { 200: { description: 'Alive.', content: { 'application/json': { schema: Status } } } },
    }),
    (c) => c.json({ status: 'ok' }, 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/readyz',
      operationId: 'getReadiness',
      tags: ['Operations'],
      summary: 'Readiness: the database answers, and the broker is not shutting down',
      responses: {
        200: { description: 'Ready to serve.', content: { 'application/json': { schema: Status } } },
        503: notReady('The database does not answer, or the broker is shutting down (`not_ready`).'),
      },
    }),
    async (c) => {
      // Within the shutdown delay (BROKER_SHUTDOWN_DELAY_SECONDS): the broker still serves what it is sent, while
      // this answer has load balancers send new requests elsewhere. Nothing to log: the broker said it stops.
      if (deps.draining())
        throw new BrokerError('not_ready', 'the broker is shutting down: send requests to another replica');
      // Bounded: a database that accepts connections and never answers (a paused server) is not ready either.
      let timer: NodeJS.Timeout | undefined;
      const silence = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new BrokerError('not_ready', `the database did not answer within ${READY_TIMEOUT_MS} ms`)),
          READY_TIMEOUT_MS,
        );
      });
      try {
        await Promise.race([deps.store.ping(), silence]);
      } catch (error) {
        c.get('log').warn('readiness check failed', { error });
        throw error instanceof BrokerError
          ? error
          : new BrokerError('not_ready', 'the database does not answer');
      } finally {
        clearTimeout(timer);
      }
      return c.json({ status: 'ready' }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/metrics',
      operationId: 'getMetrics',
      tags: ['Operations'],
      summary: 'Prometheus metrics',
      responses: {
        200: {
          description: 'Prometheus text exposition format.',
          content: { 'text/plain': { schema: z.string() } },
        },
      },
    }),
    async (c) => {
      const body = await deps.metrics.registry.metrics();
      return c.text(body, 200, { 'Content-Type': deps.metrics.registry.contentType });
    },
  );
}
