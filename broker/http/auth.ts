// Route guard: authenticate the bearer credential, then require one permission (audited when refused).
import { createMiddleware } from 'hono/factory';
import { type AuthenticateDeps, authenticate, bearerCredential } from '../core/authenticate.js';
import type { Permission } from '../core/permissions.js';
import { actorOf } from '../core/principal.js';
import { BrokerError } from '../errors.js';
import type { BrokerEnv } from './context.js';

export type Guard = ReturnType<typeof guard>;

/** `permission` undefined: any valid credential of the tenant may call the route. */
export function guard(deps: AuthenticateDeps, permission?: Permission) {
  return createMiddleware<BrokerEnv>(async (c, next) => {
    const principal = await authenticate(bearerCredential(c.req.header('Authorization')), deps);
    c.set('principal', principal);
    c.get('log').debug('authenticated', {
      tenant: principal.tenant.name,
      credential: principal.credential.id,
    });
    if (permission && !principal.permissions.includes(permission)) {
      await deps.store.audit.append(
        {
          tenantId: principal.tenant.id,
          type: 'permission.denied',
          outcome: 'denied',
          actor: actorOf(principal),
          details: {
            permission,
            method: c.req.method,
            route: c.req.routePath,
            request_id: c.get('requestId'),
          },
        },
        deps.now(),
      );
      throw new BrokerError('forbidden', `this credential lacks the ${permission} permission`, {
        extensions: { missing_permission: permission },
      });
    }
    await next();
  });
}
