// Operational endpoints: liveness, readiness (the database answers; this replica can sign; not stopping) and
// Prometheus metrics.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { type SigningKeys, UndecryptableSigningKey } from '../core/signing-keys.js';
import { BrokerError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { StoreUnavailable } from '../store/sql.js';
import type { Store } from '../store/store.js';
import type { BrokerEnv } from './context.js';
import { CANNOT_SIGN } from './problems.js';
import { notReady } from './schemas.js';

const Status = z.object({ status: z.string() }).openapi('Status');

/** How long /readyz waits for the database (its ping, and a due reload of the signing keys) before answering 503. */
const READY_TIMEOUT_MS = 2000;

export function registerOperationRoutes(
  app: OpenAPIHono<BrokerEnv>,
  deps: { store: Store; signingKeys: SigningKeys; metrics: Metrics; draining: () => boolean },
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
      summary: 'Readiness: the database answers, this replica can sign tokens, and it is not shutting down',
      description:
        'Only what is wrong with this replica alone: a trusted issuer whose keys cannot be fetched is not, as every ' +
        'replica would fail at once. The signing key is the one this replica signs with now, as last read (the keys ' +
        'are read again once a minute, as for exchanges), so a rotation whose new key signs later changes nothing.',
      responses: {
        200: { description: 'Ready to serve.', content: { 'application/json': { schema: Status } } },
        503: notReady(
          'The database does not answer within 2 s; this replica cannot decrypt the signing key in use, as it runs ' +
            'with a key-encryption key that `oidc-broker signing-key replace` replaced (restart it with the new ' +
            'one); or the broker is shutting down (`not_ready`).',
        ),
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
      let pinged = false;
      const check = async () => {
        await deps.store.ping();
        pinged = true;
        // The key an exchange would sign with now (reloaded once a minute, as for exchanges): its private key, or
        // why it cannot be decrypted, is kept once known, so a probe decrypts nothing.
        await deps.signingKeys.active();
      };
      try {
        await Promise.race([check(), silence]);
      } catch (error) {
        c.get('log').warn('readiness check failed', { error });
        if (error instanceof BrokerError) throw error;
        if (error instanceof UndecryptableSigningKey) {
          throw new BrokerError(
            'not_ready',
            `${CANNOT_SIGN}; restart it with the new BROKER_KEY_ENCRYPTION_KEY`,
          );
        }
        if (!pinged || error instanceof StoreUnavailable) {
          throw new BrokerError('not_ready', 'the database does not answer');
        }
        throw error;
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
