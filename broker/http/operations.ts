// Operational endpoints: liveness, readiness (the database answers) and Prometheus metrics.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { BrokerError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import type { BrokerEnv } from './context.js';
import { problem } from './schemas.js';

const Status = z.object({ status: z.string() }).openapi('Status');

export function registerOperationRoutes(
  app: OpenAPIHono<BrokerEnv>,
  deps: { store: Store; metrics: Metrics },
): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/healthz',
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
      tags: ['Operations'],
      summary: 'Readiness: the database answers',
      responses: {
        200: { description: 'Ready to serve.', content: { 'application/json': { schema: Status } } },
        503: problem('The database does not answer (`not_ready`).'),
      },
    }),
    async (c) => {
      try {
        await deps.store.ping();
      } catch (error) {
        c.get('log').warn('readiness check failed', { error });
        throw new BrokerError('not_ready', 'the database does not answer');
      }
      return c.json({ status: 'ready' }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/metrics',
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
