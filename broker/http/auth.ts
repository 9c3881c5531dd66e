// Route guard: authenticate the bearer credential, then require one permission; and the audit of every refusal.
import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { type AuthenticateDeps, authenticate, bearerCredential } from '../core/authenticate.js';
import { withoutSecrets } from '../core/keys.js';
import type { Permission } from '../core/permissions.js';
import { actorOf, type Principal } from '../core/principal.js';
import { BrokerError } from '../errors.js';
import { type AuditEventInput, BUILTIN_KINDS, SLOTS } from '../store/store.js';
import type { BrokerEnv } from './context.js';
import { IdParam } from './text.js';

export type Guard = ReturnType<typeof guard>;

/** `permission` undefined: any valid credential of the tenant may call the route. */
export function guard(deps: AuthenticateDeps, permission?: Permission) {
  return createMiddleware<BrokerEnv>(async (c, next) => {
    // What a credential may read (an audit log, policies, which keys exist), or was refused, no cache keeps: not
    // even the browser that ran Try it out, which would otherwise write the answer to its disk cache.
    c.header('Cache-Control', 'no-store');
    // A fine-grained key's use that cannot be recorded is reported after the request, on its own log line: with the
    // request's logger, that line carries the request_id of the request it belongs to.
    const principal = await authenticate(bearerCredential(c.req.header('Authorization')), {
      ...deps,
      logger: c.get('log'),
    });
    c.set('principal', { ...principal, requestId: c.get('requestId') });
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

/**
 * A route's guard and its OpenAPI security requirement at once: the permission the guard requires is the role the
 * bearer requirement names (OpenAPI 3.1 lets a scheme other than OAuth list roles); none when the guard checks no
 * permission, though the route may still take only some credentials (rotation: a Tenant API key), as it then says.
 */
export function secured(deps: AuthenticateDeps, permission?: Permission) {
  const middleware: [Guard] = [guard(deps, permission)];
  return { security: [{ bearerAuth: permission === undefined ? [] : [permission] }], middleware };
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

type Target = NonNullable<AuditEventInput['target']>;

/** A path id that is a UUID, in lower case as stored; anything else names no resource. */
function idTarget(type: string, id: string | undefined): Target | undefined {
  const parsed = IdParam.safeParse({ id });
  return parsed.success ? { type, id: parsed.data.id } : undefined;
}

/**
 * The resource the path of a refused request names, with the type and id the events of its changes give it; the
 * guard refuses before the route has checked its parameters, so values that name nothing are left out.
 */
const REFUSAL_TARGETS: Record<string, (param: (name: string) => string | undefined) => Target | undefined> = {
  '/v1/api-keys/:kind/:slot/rotate': (param) => {
    const [kind, slot] = [param('kind'), param('slot')];
    const known = BUILTIN_KINDS.some((k) => k === kind) && SLOTS.some((s) => s === slot);
    return known ? { type: 'api_key', id: `${kind}/${slot}` } : undefined;
  },
  '/v1/fine-grained-keys/:id': (param) => idTarget('fine_grained_key', param('id')),
  '/v1/oidc/policies/:id': (param) => idTarget('trust_policy', param('id')),
};

// Real paths are far shorter; a longer one is cut, so that one request cannot write a large row.
const MAX_AUDITED_PATH = 256;

/** The request's path as the audit log keeps it: a key pasted into it as its hint, a token left out. */
function auditedPath(path: string): string {
  const characters = [...withoutSecrets(path)];
  if (characters.length <= MAX_AUDITED_PATH) return characters.join('');
  return `${characters.slice(0, MAX_AUDITED_PATH).join('')}…`;
}

/**
 * Records every 403 an authenticated request ends with — a missing permission or kind of credential, or a grant
 * beyond the caller's own permissions — as a `permission.denied` audit event, from the error that ends it, with
 * the path it was sent to and the built-in slot, fine-grained key or trust policy that path names.
 */
export async function auditRefusal(
  c: Context<BrokerEnv>,
  error: unknown,
  deps: Pick<AuthenticateDeps, 'store' | 'now'>,
): Promise<void> {
  const principal = c.get('principal') as Principal | undefined;
  if (!principal || !(error instanceof BrokerError) || !AUDITED_REFUSALS.has(error.code)) return;
  const { missing_permission: permission, required_credential, missing } = error.extensions;
  const target = REFUSAL_TARGETS[c.req.routePath]?.((name) => c.req.param(name));
  await deps.store.audit.append(
    {
      tenantId: principal.tenant.id,
      type: 'permission.denied',
      outcome: 'denied',
      actor: actorOf(principal),
      ...(target ? { target } : {}),
      details: {
        code: error.code,
        // The field name the event always had for a missing permission.
        ...(permission === undefined ? {} : { permission }),
        ...(required_credential === undefined ? {} : { required_credential }),
        ...(missing === undefined ? {} : { missing }),
        method: c.req.method,
        route: c.req.routePath,
        path: auditedPath(c.req.path),
        request_id: c.get('requestId'),
      },
    },
    deps.now(),
  );
}
