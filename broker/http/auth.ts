// Route guard: authenticate the bearer credential, then require one permission; every refusal is audited.
import type { Context } from 'hono';
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
      throw await refusal(c, deps, { permission }, `this credential lacks the ${permission} permission`);
    }
    await next();
  });
}

/** What a refused request lacked: a permission, or a kind of credential (`tenant`: a Tenant API key). */
export type Requirement = { permission: Permission } | { credential: 'tenant' | 'api-key' };

/**
 * Records the refusal of an authenticated request as a `permission.denied` audit event and returns the 403 to
 * throw, which names what is missing (`missing_permission` or `required_credential`).
 */
export async function refusal(
  c: Context<BrokerEnv>,
  deps: Pick<AuthenticateDeps, 'store' | 'now'>,
  requirement: Requirement,
  detail: string,
): Promise<BrokerError> {
  const principal = c.get('principal');
  // The audit event keeps the field name it always had for permissions; the body says what is missing.
  const [recorded, named] =
    'permission' in requirement
      ? [{ permission: requirement.permission }, { missing_permission: requirement.permission }]
      : [{ required_credential: requirement.credential }, { required_credential: requirement.credential }];
  await deps.store.audit.append(
    {
      tenantId: principal.tenant.id,
      type: 'permission.denied',
      outcome: 'denied',
      actor: actorOf(principal),
      details: {
        ...recorded,
        method: c.req.method,
        route: c.req.routePath,
        request_id: c.get('requestId'),
      },
    },
    deps.now(),
  );
  return new BrokerError('forbidden', detail, { extensions: named });
}
