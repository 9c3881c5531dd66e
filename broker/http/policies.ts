// /v1/oidc/policies: create, list, get, replace and delete trust policies (the dry run and snippet: policy-tools.ts).
import { createRoute, type Hook, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppDeps } from '../app.js';
import { GITHUB_ISSUER } from '../config.js';
import type { AuthenticateDeps } from '../core/authenticate.js';
import {
  createPolicy,
  deletePolicy,
  findPoliciesNamed,
  type PolicyChange,
  type PolicyDeps,
  permissionEntryErrors,
  replacePolicy,
} from '../core/policies.js';
import { type PolicyFieldError, type PolicyRulesContext, validatePolicy } from '../core/policy-rules.js';
import {
  POLICY_CLAIM_FIELDS,
  type PolicyClaims,
  type PolicyInput,
  type TrustPolicy,
} from '../core/policy-types.js';
import type { Principal } from '../core/principal.js';
import { BrokerError } from '../errors.js';
import { secured } from './auth.js';
import { type BrokerEnv, fieldErrors, validationHook } from './context.js';
import { conditional, conditionsOf, type FailedCondition, onlyWeakTags, policyEtag } from './entity-tags.js';
import { refuseMethods } from './methods.js';
import { ListPoliciesQuery, policyCursors } from './policy-pages.js';
import { PolicyBody, PolicyChanged, PolicyView } from './policy-schemas.js';
import { registerPolicyToolRoutes } from './policy-tools.js';
import {
  authErrors,
  badRequest,
  headers,
  iso,
  locationOf,
  NoQuery,
  notFound,
  Problem,
  problem,
} from './schemas.js';
import { IdParam, unknownIdIsNotFound } from './text.js';

const TAGS = ['Trust policies'];
const invalidPolicy = {
  422: problem('The policy breaks a rule; `errors` names each field (`invalid_policy`).'),
};

const NameConflict = Problem.extend({
  policy: z
    .object({ id: z.uuid(), name: z.string() })
    .optional()
    .openapi({
      description:
        'The policy that has the name, under its own spelling: the one a retried create made, say, to read with ' +
        '`GET /v1/oidc/policies/{id}` and adopt. Absent only if it was deleted meanwhile.',
    }),
}).openapi('TrustPolicyNameConflict');
const nameConflict = {
  409: {
    description: 'Another policy of the tenant has the name, in any case (`conflict`); `policy` names it.',
    content: { 'application/problem+json': { schema: NameConflict } },
  },
};
const preconditionFailed = {
  412: problem(
    '`If-Match` names a state the policy is no longer in: another writer changed it since; or `If-None-Match` ' +
      'names the state it is in, or is `*` (`precondition_failed`). Nothing was written; read the policy again. ' +
      'An `If-Match` of weak tags only (`W/"…"`, as a proxy that compresses answers makes of an ETag) matches no ' +
      'state, and the answer says so.',
  ),
};

const invalidPolicyHook = validationHook('invalid_policy');

/**
 * Schema failures of a policy body are 422 `invalid_policy`, and list with them every rule the body breaks
 * besides, so that one answer names every field to fix; generic so each route keeps its input types.
 */
function policyHookFor(rules: PolicyRulesContext) {
  return <I, P extends string>(...[result, c]: Parameters<Hook<I, BrokerEnv, P, undefined>>): undefined => {
    if (!result.success && result.target === 'json') {
      const reported = fieldErrors(result.error);
      const within = (field: string) =>
        reported.some(
          (r) => field === r.field || field.startsWith(`${r.field}.`) || field.startsWith(`${r.field}[`),
        );
      throw BrokerError.fields('invalid_policy', [
        ...reported,
        ...ruleErrors((result as { data?: unknown }).data, rules, c.get('principal')).filter(
          (e) => !within(e.field),
        ),
      ]);
    }
    return invalidPolicyHook(result as never, c as never);
  };
}

/** The rules a body breaks, judged as far as its shape allows, its permission entries included. */
function ruleErrors(body: unknown, rules: PolicyRulesContext, principal: Principal): PolicyFieldError[] {
  if (typeof body !== 'object' || body === null) return [];
  const { permissions } = body as { permissions?: unknown };
  const entries =
    Array.isArray(permissions) && permissions.every((p) => typeof p === 'string')
      ? permissionEntryErrors(principal, permissions)
      : [];
  try {
    const validation = validatePolicy(body as PolicyInput, rules);
    return validation.ok ? entries : [...validation.errors, ...entries];
  } catch {
    return entries;
  }
}

const notFoundError = (id: string) =>
  new BrokerError('not_found', `no trust policy with id "${id}" in this tenant`);
const idHook = unknownIdIsNotFound(notFoundError);
interface ConditionHeaders {
  ifMatch: string | undefined;
  ifNoneMatch: string | undefined;
}

const conditionHeaders = (c: Context<BrokerEnv>): ConditionHeaders => ({
  ifMatch: c.req.header('If-Match'),
  ifNoneMatch: c.req.header('If-None-Match'),
});

/**
 * The 412 of a conditional request, naming the condition that failed; one whose If-Match could match no state says
 * why, not that the policy changed. `change`: the request was a replace or delete, which wrote nothing.
 */
function conditionFailed(
  id: string,
  failed: FailedCondition,
  headers: ConditionHeaders,
  change: boolean,
): BrokerError {
  const nothingWritten = change ? ': nothing was written' : '';
  if (failed === 'If-None-Match') {
    return new BrokerError(
      'precondition_failed',
      headers.ifNoneMatch?.trim() === '*'
        ? `trust policy ${id} exists, and If-None-Match: * asks for the change only if it does not${nothingWritten}`
        : `trust policy ${id} is in a state If-None-Match names (its ETag is listed), and asks for the change only ` +
            `in another${nothingWritten}`,
    );
  }
  if (onlyWeakTags(headers.ifMatch)) {
    return new BrokerError(
      'precondition_failed',
      `If-Match lists only weak entity tags (W/"…"), which never match its strong comparison, whatever the state ` +
        `of trust policy ${id}${nothingWritten}. The broker's ETags are strong; a proxy between you and the ` +
        'broker that compresses its answers (nginx gzip, Cloudflare) marks them W/ on the way. Send the tag without ' +
        'W/, or have the proxy leave application/json answers uncompressed',
    );
  }
  return new BrokerError(
    'precondition_failed',
    change
      ? `trust policy ${id} changed since the version If-Match names was read: nothing was written; read it again ` +
          `with GET /v1/oidc/policies/${id}, apply your change to what it answers, and send its ETag`
      : `trust policy ${id} changed since the version If-Match names was read: your copy is stale; read it again ` +
          `with GET /v1/oidc/policies/${id} without If-Match`,
  );
}

/**
 * The conditions of a replace or delete, as the store judges them in the change's own transaction, and the 412 of
 * the one that failed there.
 */
function changeConditions(c: Context<BrokerEnv>, id: string) {
  const headers = conditionHeaders(c);
  const judge = conditionsOf(headers);
  let failed: FailedCondition | undefined;
  const precondition =
    judge &&
    ((current: TrustPolicy) => {
      failed = judge(current);
      return failed === undefined;
    });
  return { precondition, refusal: () => conditionFailed(id, failed ?? 'If-Match', headers, true) };
}

function claimsView(claims: PolicyClaims): PolicyClaims {
  const out: PolicyClaims = {};
  for (const field of POLICY_CLAIM_FIELDS) if (claims[field]) out[field] = claims[field];
  return out;
}

const view = (p: TrustPolicy) => ({
  id: p.id,
  name: p.name,
  description: p.description,
  issuer: p.issuer,
  claims: claimsView(p.claims),
  max_session_duration_seconds: p.max_session_duration_seconds,
  permissions: p.permissions,
  allow_pull_request_target: p.allow_pull_request_target,
  created_at: iso(p.createdAt),
  updated_at: iso(p.updatedAt),
});

/** The answer to a create or replace, or its refusal; `refusal`, the 412 of a replace sent with conditions. */
function changed(result: PolicyChange, id = '', refusal?: () => BrokerError) {
  if (result.ok) return { policy: view(result.policy), warnings: result.warnings };
  switch (result.reason) {
    case 'invalid':
      throw BrokerError.fields('invalid_policy', result.errors);
    case 'escalation':
      throw new BrokerError(
        'permission_escalation',
        `a policy cannot grant permissions you do not hold: ${result.missing.join(', ')}`,
        { extensions: { missing: result.missing } },
      );
    case 'name_taken': {
      const { name, holder } = result;
      const message = !holder
        ? `a trust policy named "${name}" already exists in this tenant (names are case-insensitive)`
        : holder.name === name
          ? `a trust policy named "${name}" already exists in this tenant (id ${holder.id}); choose another name`
          : `trust policy "${holder.name}" (id ${holder.id}) already has this name: names are compared ignoring case, accent encoding and invisible characters, so "${name}" is the same name; choose another`;
      throw new BrokerError('conflict', message, {
        extensions: { errors: [{ field: 'name', message }], ...(holder && { policy: holder }) },
      });
    }
    case 'not_found':
      throw notFoundError(id);
    case 'precondition_failed':
      // Only a change sent with conditions can fail one.
      throw refusal?.() ?? new Error('a change without conditions failed one');
  }
}

export function registerPolicyRoutes(
  app: OpenAPIHono<BrokerEnv>,
  auth: AuthenticateDeps,
  deps: AppDeps,
): void {
  const { store } = deps;
  const policyDeps: PolicyDeps = {
    store,
    now: deps.now,
    rules: { trustedIssuers: deps.config.trustedIssuers.map((i) => i.issuer), defaultIssuer: GITHUB_ISSUER },
    defaultSessionSeconds: deps.config.defaultSessionSeconds,
  };
  // Before the /{id} routes, which would otherwise take the dry run's path for a policy with the id "evaluate".
  refuseMethods(
    app,
    ['GET', 'PUT', 'PATCH', 'DELETE'],
    '/v1/oidc/policies/evaluate',
    'the dry run takes POST with the claims of the job to evaluate',
  );
  const policyHook = policyHookFor(policyDeps.rules);
  const idAndPolicyHook = unknownIdIsNotFound(notFoundError, policyHook as never);
  const body = { required: true, content: { 'application/json': { schema: PolicyBody } } };
  const changedResponse = (description: string) => ({
    description,
    content: { 'application/json': { schema: PolicyChanged } },
  });
  const location = z.object(headers.location('/v1/oidc/policies/0b6e2f8a-3c4d-4e5f-8a9b-1c2d3e4f5a6b'));

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/oidc/policies',
      operationId: 'createPolicy',
      tags: TAGS,
      summary: 'Create a trust policy',
      description:
        'Saves a policy that lets matching GitHub Actions jobs exchange their OIDC token. Its permissions must be a ' +
        "subset of the caller's own (`403 permission_escalation`). A valid but broad policy is saved with `warnings`.",
      ...secured(auth, 'oidc-federation:write'),
      request: { query: NoQuery, body },
      responses: {
        201: { ...changedResponse('Created.'), headers: location.extend(conditional.etag) },
        ...badRequest,
        ...authErrors,
        ...nameConflict,
        ...invalidPolicy,
      },
    }),
    async (c) => {
      const created = await createPolicy(c.get('principal'), c.req.valid('json'), policyDeps);
      const result = changed(created);
      c.header('Location', locationOf(deps.config.publicUrl, `/v1/oidc/policies/${result.policy.id}`));
      if (created.ok) c.header('ETag', policyEtag(created.policy));
      return c.json(result, 201);
    },
    policyHook,
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/oidc/policies',
      operationId: 'listPolicies',
      tags: TAGS,
      summary: 'List trust policies',
      description:
        'By name (case-folded, byte by byte), `limit` at a time. Pass `next_cursor` back as `cursor` for the next ' +
        'page; it is null on the last page. `?name=NAME` lists only the policy with that name, compared as the ' +
        'broker compares names (case, accent encoding and invisible characters aside): one policy, or none.',
      ...secured(auth, 'oidc-federation:read'),
      request: { query: ListPoliciesQuery },
      responses: {
        200: {
          description:
            "A page of the tenant's policies, by name; with `name`, the one with that name, if any.",
          content: {
            'application/json': {
              schema: z.object({ policies: z.array(PolicyView), next_cursor: z.string().nullable() }),
            },
          },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    async (c) => {
      const tenantId = c.get('principal').tenant.id;
      const { name, limit, cursor } = c.req.valid('query');
      const after = cursor === undefined ? undefined : policyCursors.decode(cursor, tenantId)[0];
      if (name !== undefined) {
        const named = await findPoliciesNamed(store, tenantId, name);
        return c.json({ policies: named.map(view), next_cursor: null }, 200);
      }
      // One more than the page, read along the name index: whether another page follows, without counting them.
      const filed = await store.policies.page(tenantId, { after, limit: limit + 1 });
      const page = filed.slice(0, limit);
      const next =
        filed.length > limit ? policyCursors.encode(tenantId, [page[page.length - 1]!.nameKey]) : null;
      return c.json({ policies: page.map((p) => view(p.policy)), next_cursor: next }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/oidc/policies/{id}',
      operationId: 'getPolicy',
      tags: TAGS,
      summary: 'Get a trust policy',
      description:
        'The answer carries the `ETag` of the policy as it is; send it as `If-Match` with a replace or delete so that ' +
        'it changes the policy only if nobody else did since.',
      ...secured(auth, 'oidc-federation:read'),
      request: { params: IdParam, query: NoQuery, headers: conditional.read },
      responses: {
        200: {
          description: 'The policy.',
          headers: z.object(conditional.etag),
          content: { 'application/json': { schema: PolicyView } },
        },
        304: {
          description: 'The policy is still in the state `If-None-Match` names.',
          headers: z.object(conditional.etag),
        },
        ...badRequest,
        ...authErrors,
        ...notFound,
        412: problem(
          '`If-Match` names a state the policy is no longer in: the copy the client holds is stale ' +
            '(`precondition_failed`).',
        ),
      },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const headers = conditionHeaders(c);
      const judge = conditionsOf(headers);
      const policy = await store.policies.get(c.get('principal').tenant.id, id);
      if (!policy) throw notFoundError(id);
      const failed = judge?.(policy);
      if (failed === 'If-Match') throw conditionFailed(id, failed, headers, false);
      c.header('ETag', policyEtag(policy));
      if (failed === 'If-None-Match') return c.body(null, 304);
      return c.json(view(policy), 200);
    },
    idHook,
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/oidc/policies/{id}',
      operationId: 'replacePolicy',
      tags: TAGS,
      summary: 'Replace a trust policy',
      description:
        'Full replacement with the same body as create: a field left out takes its default, and `warnings` says so ' +
        "where that alone makes the policy broader (the `issuer` back to GitHub's, a longer session cap). The next " +
        'exchange, on every replica, uses the new version. A body that changes nothing writes nothing: no ' +
        '`policy.updated` event, and `updated_at` and the `ETag` stay. With `If-Match`, only if the policy is ' +
        'still in the state it names.',
      ...secured(auth, 'oidc-federation:write'),
      request: { params: IdParam, query: NoQuery, headers: conditional.write, body },
      responses: {
        200: { ...changedResponse('Replaced.'), headers: z.object(conditional.etag) },
        ...badRequest,
        ...authErrors,
        ...notFound,
        ...nameConflict,
        ...preconditionFailed,
        ...invalidPolicy,
      },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const { precondition, refusal } = changeConditions(c, id);
      const result = await replacePolicy(
        c.get('principal'),
        id,
        c.req.valid('json'),
        policyDeps,
        precondition,
      );
      const answer = changed(result, id, refusal);
      if (result.ok) c.header('ETag', policyEtag(result.policy));
      return c.json(answer, 200);
    },
    idAndPolicyHook,
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/oidc/policies/{id}',
      operationId: 'deletePolicy',
      tags: TAGS,
      summary: 'Delete a trust policy',
      description:
        'Effective on the next exchange, on every replica; the access tokens the policy granted stop working with it. ' +
        'With `If-Match`, only if the policy is still in the state it names.',
      ...secured(auth, 'oidc-federation:write'),
      request: { params: IdParam, query: NoQuery, headers: conditional.write },
      responses: {
        204: { description: 'Deleted.' },
        ...badRequest,
        ...authErrors,
        ...notFound,
        ...preconditionFailed,
      },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const { precondition, refusal } = changeConditions(c, id);
      const result = await deletePolicy(c.get('principal'), id, policyDeps, precondition);
      if (!result.ok) throw result.reason === 'not_found' ? notFoundError(id) : refusal();
      return c.body(null, 204);
    },
    idHook,
  );

  registerPolicyToolRoutes(app, auth, deps);
}
