// POST /v1/oidc/policies/evaluate and GET /v1/oidc/config: the admin's dry run and the workflow snippet.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import type { AppDeps } from '../app.js';
import { GITHUB_ISSUER } from '../config.js';
import type { AuthenticateDeps } from '../core/authenticate.js';
import { findPoliciesNamed } from '../core/policies.js';
import { type DryRun, dryRunPolicies } from '../core/policy-dry-run.js';
import type { Decision, PolicyExplanation } from '../core/policy-evaluate.js';
import { namesakesDetail } from '../core/policy-names.js';
import type { TrustPolicy } from '../core/policy-types.js';
import { workflowSnippet } from '../core/workflow-snippet.js';
import { BrokerError, retryAfter } from '../errors.js';
import type { Store } from '../store/store.js';
import { secured } from './auth.js';
import type { BrokerEnv } from './context.js';
import { ConfigQuery, EvaluateBody, EvaluateResult, OidcConfig } from './policy-schemas.js';
import { authErrors, badRequest, NoQuery, notFound, notReady, problem } from './schemas.js';

const TAGS = ['Trust policies'];

const policyResult = (p: PolicyExplanation) => ({
  id: p.id,
  name: p.name,
  matched: p.matched,
  mismatches: p.mismatches,
  covers_request: p.coversRequest,
  missing_permissions: p.missing,
  specificity: p.specificity,
  considered: p.considered,
  selected: p.selected,
});

function decisionView(d: Decision) {
  if (d.allow) {
    const { policy, permissions, durationSeconds } = d;
    return { allowed: true, policy: policy.name, permissions, duration_seconds: durationSeconds };
  }
  if (d.reason === 'permission_not_allowed')
    return { allowed: false, reason: d.reason, not_allowed: d.notAllowed };
  if (d.reason === 'ambiguous_policy')
    return { allowed: false, reason: d.reason, tied_policies: d.tiedPolicies };
  return { allowed: false, reason: d.reason };
}

/** What the exchange would refuse though the policies allow it, or before it reads them. */
function refusalView(refusal: NonNullable<DryRun['refusal']>) {
  const { code, ...detail } = refusal;
  return { allowed: false, reason: code, ...detail };
}

/**
 * How many policies the dry run reads, and then writes into its answer, at a time, the event loop free between:
 * a tenant's 100,000 policies read, assessed and written at once held every tenant's exchanges for seconds.
 */
export const DRY_RUN_SLICE = 500;

/** The tenant's policies by name, DRY_RUN_SLICE at a time, each page read along the name index. */
async function* policyPages(store: Store, tenantId: string): AsyncGenerator<TrustPolicy[]> {
  let after: string | undefined;
  for (;;) {
    const page = await store.policies.page(tenantId, { after, limit: DRY_RUN_SLICE });
    yield page.map((filed) => filed.policy);
    if (page.length < DRY_RUN_SLICE) return;
    after = page[page.length - 1]!.nameKey;
  }
}

/**
 * `{...before, policies, ...after}` as JSON, streamed: the policies are written DRY_RUN_SLICE at a time, with the
 * event loop free between slices (a socket that takes each at once would otherwise have them all written in one
 * stretch), rather than 100,000 of them (27 MB) at once.
 */
function withPolicies(
  before: Record<string, unknown>,
  policies: readonly PolicyExplanation[],
  after: Record<string, unknown>,
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  let from = 0;
  return new ReadableStream({
    async pull(controller) {
      if (from > 0) await nextTurn();
      if (from === 0)
        controller.enqueue(encoder.encode(`${JSON.stringify(before).slice(0, -1)},"policies":[`));
      const slice = policies.slice(from, from + DRY_RUN_SLICE).map(policyResult);
      if (slice.length > 0)
        controller.enqueue(encoder.encode(`${from > 0 ? ',' : ''}${JSON.stringify(slice).slice(1, -1)}`));
      from += DRY_RUN_SLICE;
      if (from < policies.length) return;
      controller.enqueue(encoder.encode(`],${JSON.stringify(after).slice(1)}`));
      controller.close();
    },
  });
}

/** Registered by registerPolicyRoutes, beside the policies they read. */
export function registerPolicyToolRoutes(
  app: OpenAPIHono<BrokerEnv>,
  auth: AuthenticateDeps,
  deps: AppDeps,
): void {
  const { config, store } = deps;
  const trustedIssuers = config.trustedIssuers.map((i) => i.issuer);

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/oidc/policies/evaluate',
      operationId: 'evaluatePolicies',
      tags: TAGS,
      summary: 'Evaluate claims or a token against every policy',
      description:
        'Answers "why was my workflow denied?": each policy\'s match with every mismatched field (expected and ' +
        'actual value), whether it covers the requested permissions, and the decision the exchange would make ' +
        '(`invalid_token` with its `detail` when the exchange refuses any token carrying the claims given, such as an ' +
        "`aud` that is not one string; `audience_mismatch` when `aud` is not this tenant's; `token_replayed` for a " +
        'token already exchanged). ' +
        'An `oidc_token` is verified like the exchange does, but not used up.',
      ...secured(auth, 'oidc-federation:read'),
      request: {
        query: NoQuery,
        body: { required: true, content: { 'application/json': { schema: EvaluateBody } } },
      },
      responses: {
        200: { description: 'The evaluation.', content: { 'application/json': { schema: EvaluateResult } } },
        ...badRequest,
        ...authErrors,
        503: notReady(
          "The token issuer's signing keys cannot be fetched (`issuer_unavailable`), or the database does not answer " +
            'right now (`not_ready`, with `Retry-After`); retry.',
        ),
      },
    }),
    async (c) => {
      const input = c.req.valid('json');
      if ((input.claims === undefined) === (input.oidc_token === undefined)) {
        throw BrokerError.fields('invalid_request', [
          { field: 'claims', message: 'give exactly one of claims and oidc_token' },
        ]);
      }
      const { tenant } = c.get('principal');
      const result = await dryRunPolicies(
        tenant,
        {
          claims: input.claims,
          oidcToken: input.oidc_token,
          permissions: input.permissions,
          policy: input.policy,
          durationSeconds: input.duration_seconds,
        },
        {
          policyPages: (tenantId) => policyPages(store, tenantId),
          wasExchanged: (issuer, jti) => store.tokens.wasExchanged(issuer, jti),
          issuerKeys: deps.issuerKeys,
          now: deps.now,
          defaultSessionSeconds: config.defaultSessionSeconds,
          defaultIssuer: GITHUB_ISSUER,
          trustedIssuers,
        },
      );
      if (!result.ok && result.reason === 'permission') {
        throw BrokerError.fields('invalid_request', result.errors);
      }
      if (!result.ok) {
        if (result.code === 'issuer_unavailable') {
          throw new BrokerError('issuer_unavailable', result.detail, retryAfter(result.retryAfterSeconds));
        }
        throw BrokerError.fields('invalid_request', [
          { field: 'oidc_token', message: `the token does not verify: ${result.detail}` },
        ]);
      }
      const body = withPolicies(
        {
          claims: result.claims,
          expected_audience: result.audience.expected,
          audience_matches: result.audience.matches,
        },
        result.explanation.policies,
        {
          decision: result.refusal ? refusalView(result.refusal) : decisionView(result.explanation.decision),
          warnings: result.warnings,
        },
      );
      // EvaluateResult's JSON, streamed in slices rather than written by c.json, whose type the route would check.
      return c.body(body, 200, { 'Content-Type': 'application/json' }) as never;
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/oidc/config',
      operationId: 'getOidcConfig',
      tags: TAGS,
      summary: 'Settings and a workflow snippet for the action',
      description:
        "The tenant's audience, the trusted issuers, the token endpoint and YAML to add to a workflow job; " +
        '`?policy=NAME` tailors the YAML to that policy.',
      ...secured(auth, 'oidc-federation:read'),
      request: { query: ConfigQuery },
      responses: {
        200: { description: 'The settings.', content: { 'application/json': { schema: OidcConfig } } },
        ...badRequest,
        ...authErrors,
        ...notFound,
        409: problem(
          '`ambiguous_policy`: `policy` names several policies (namesakes an upgrade kept, none written so), as ' +
            'the exchange would refuse it; `policies` lists them: name one exactly as it is written.',
        ),
      },
    }),
    async (c) => {
      const { tenant } = c.get('principal');
      const name = c.req.valid('query').policy;
      let policy: TrustPolicy | undefined;
      if (name !== undefined) {
        const named = await findPoliciesNamed(store, tenant.id, name);
        if (named.length === 0)
          throw new BrokerError('not_found', `no trust policy named "${name}" in this tenant`);
        // Namesakes an upgrade kept, none written as asked: the exchange would refuse the snippet's name alike.
        if (named.length > 1) {
          const policies = named.map((p) => p.name).sort();
          throw new BrokerError('ambiguous_policy', namesakesDetail(name, policies), {
            extensions: { policies },
          });
        }
        policy = named[0];
      }
      const apiUrl = `${config.publicUrl}/v1`;
      const workflow = workflowSnippet({
        tenant: tenant.name,
        audience: tenant.audience,
        apiUrl,
        defaultIssuer: GITHUB_ISSUER,
        policy: policy && {
          name: policy.name,
          permissions: policy.permissions,
          claims: policy.claims,
          issuer: policy.issuer,
        },
      });
      return c.json(
        {
          tenant: tenant.name,
          audience: tenant.audience,
          trusted_issuers: trustedIssuers,
          token_endpoint: `${config.publicUrl}/v1/oidc/token`,
          api_url: apiUrl,
          ...(policy ? { policy: policy.name, permissions: policy.permissions } : {}),
          workflow,
        },
        200,
      );
    },
  );
}
