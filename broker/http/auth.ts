// Route guard: authenticate the bearer credential, then require one permission; and the audit of every refusal.
import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { type AuthenticateDeps, authenticate, bearerCredential } from '../core/authenticate.js';
import type { Permission } from '../core/permissions.js';
import { actorOf, type Principal } from '../core/principal.js';
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
      throw refusal({ permission }, `this credential lacks the ${permission} permission`);
    }
    await next();
  });
}

/** What a refused request lacked: a permission, or a kind of credential (`tenant`: a Tenant API key). */
export type Requirement = { permission: Permission } | { credential: 'tenant' | 'api-key' };

/** The 403 for an authenticated request that lacks `requirement`, naming it (`missing_permission`, `required_credential`). */
export function refusal(requirement: Requirement, detail: string): BrokerError {
  return new BrokerError('forbidden', detail, {
    extensions:
      'permission' in requirement
        ? { missing_permission: requirement.permission }
        : { required_credential: requirement.credential },
  });
}

const AUDITED_REFUSALS = new Set(['forbidden', 'permission_escalation']);

/**
 * Records every 403 an authenticated request ends with — a missing permission or kind of credential, or a grant
 * beyond the caller's own permissions — as a `permission.denied` audit event, from the error that ends it.
 */
export async function auditRefusal(
  c: Context<BrokerEnv>,
  error: unknown,
  deps: Pick<AuthenticateDeps, 'store' | 'now'>,
): Promise<void> {
  const principal = c.get('principal') as Principal | undefined;
  if (!principal || !(error instanceof BrokerError) || !AUDITED_REFUSALS.has(error.code)) return;
  const { missing_permission: permission, required_credential, missing } = error.extensions;
  await deps.store.audit.append(
    {
      tenantId: principal.tenant.id,
      type: 'permission.denied',
      outcome: 'denied',
      actor: actorOf(principal),
      details: {
        code: error.code,
        // The field name the event always had for a missing permission.
        ...(permission === undefined ? {} : { permission }),
        ...(required_credential === undefined ? {} : { required_credential }),
        ...(missing === undefined ? {} : { missing }),
        method: c.req.method,
        route: c.req.routePath,
        request_id: c.get('requestId'),
      },
    },
    deps.now(),
  );
}
