// A broker that trusts a local GitHub-shaped issuer, with a tenant and helpers to add policies and exchange tokens.

import { runCli } from '../../broker/cli.js';
import { loadConfig } from '../../broker/config.js';
import type { Permission } from '../../broker/core/permissions.js';
import type { PolicyRecord } from '../../broker/core/policy-types.js';
import { openStore } from '../../broker/store/open-store.js';
import type { Store } from '../../broker/store/store.js';
import { startTestBroker, type TestBroker } from './broker.js';
import { DEFAULT_AUDIENCE, GITHUB_ISSUER, type LocalIssuer, startLocalIssuer } from './local-issuer.js';

/**
 * Stores a trust policy as tests set one up: for `acme/infra` on GitHub, granting `harden-runner:read`,
 * unless `policy` says otherwise.
 */
export async function createPolicy(
  store: Store,
  tenantId: string,
  id: string,
  policy: Partial<PolicyRecord> & { name: string },
  at: number,
): Promise<void> {
  const created = await store.policies.create(
    tenantId,
    id,
    {
      description: null,
      issuer: GITHUB_ISSUER,
      claims: { repository: 'acme/infra' },
      max_session_duration_seconds: 0,
      permissions: ['harden-runner:read'] as Permission[],
      allow_pull_request_target: false,
      ...policy,
    },
    at,
    { tenantId, type: 'policy.created', outcome: 'success', actor: { kind: 'test', id: 'setup' } },
  );
  if (!created.ok) throw new Error(`policy ${policy.name}: ${created.conflict}`);
}

export interface Federation {
  t: TestBroker;
  issuer: LocalIssuer;
  tenantId: string;
  /** The Tenant API key of tenant `acme-corp`, whose audience is the local issuer's default. */
  key: string;
  policy(name: string, fields?: Partial<PolicyRecord>): Promise<string>;
  /** Deletes every trust policy of the tenant, so that a test starts from none. */
  deletePolicies(): Promise<void>;
  exchange(token: string, body?: Record<string, unknown>): Promise<Response>;
  close(): Promise<void>;
}

/**
 * `alsoTrusted`: more issuers (e.g. a GHES's) the broker trusts, whose keys are the local issuer's, so that
 * `issuer.sign({ iss })` makes their tokens.
 */
export async function startFederation(
  options: { env?: Record<string, string>; alsoTrusted?: string[] } = {},
): Promise<Federation> {
  const clock = { now: Date.now() };
  const issuer = await startLocalIssuer({ now: () => clock.now });
  const trusted = [GITHUB_ISSUER, ...(options.alsoTrusted ?? [])];
  const t = await startTestBroker({
    clock,
    env: {
      BROKER_TRUSTED_ISSUERS: JSON.stringify(
        trusted.map((iss) => ({ issuer: iss, jwks_uri: issuer.jwksUri })),
      ),
      BROKER_PUBLIC_URL: 'https://broker.test',
      ...options.env,
    },
  });
  const { tenant, key } = await t.createTenant('acme-corp', { audience: DEFAULT_AUDIENCE });
  let policies = 0;
  return {
    t,
    issuer,
    tenantId: tenant.id,
    key,
    async policy(name, fields = {}) {
      const id = `policy-${++policies}`;
      await createPolicy(t.broker.store, tenant.id, id, { ...fields, name }, clock.now);
      return id;
    },
    async deletePolicies() {
      for (const p of await t.broker.store.policies.list(tenant.id)) {
        await t.broker.store.policies.delete(tenant.id, p.id, clock.now, () => ({
          tenantId: tenant.id,
          type: 'policy.deleted',
          outcome: 'success',
          actor: { kind: 'test', id: 'setup' },
        }));
      }
    },
    exchange: (token, body = {}) =>
      t.request('POST', '/v1/oidc/token', { json: { oidc_token: token, ...body } }),
    async close() {
      await t.close();
      await issuer.close();
    },
  };
}

/**
 * For tests that run the broker as a process: creates a tenant through the operator CLI and one trust policy
 * in the database it will use. Resolves to the Tenant API key.
 */
export async function seedTenant(
  env: Record<string, string>,
  tenant: { name: string; audience?: string },
  policy: Partial<PolicyRecord> & { name: string },
): Promise<string> {
  let key = '';
  const args = ['tenant', 'create', tenant.name, ...(tenant.audience ? ['--audience', tenant.audience] : [])];
  const code = await runCli(args, {
    env,
    out: (s) => {
      key += s.trim();
    },
    err: () => {},
    serve: async () => 0,
  });
  if (code !== 0) throw new Error(`tenant create ${tenant.name} exited with ${code}`);
  const store = await openStore(loadConfig(env).database);
  try {
    const { id } = (await store.tenants.byName(tenant.name))!;
    await createPolicy(store, id, `${policy.name}-id`, policy, Date.now());
  } finally {
    await store.close();
  }
  return key;
}
