// A broker that trusts a local GitHub-shaped issuer, with a tenant and helpers to add policies and exchange tokens.

import type { Permission } from '../../broker/core/permissions.js';
import type { PolicyRecordInput } from '../../broker/store/store.js';
import { startTestBroker, type TestBroker } from './broker.js';
import { DEFAULT_AUDIENCE, GITHUB_ISSUER, type LocalIssuer, startLocalIssuer } from './local-issuer.js';

export interface Federation {
  t: TestBroker;
  issuer: LocalIssuer;
  tenantId: string;
  /** The Tenant API key of tenant `acme-corp`, whose audience is the local issuer's default. */
  key: string;
  policy(name: string, fields?: Partial<PolicyRecordInput>): Promise<string>;
  exchange(token: string, body?: Record<string, unknown>): Promise<Response>;
  close(): Promise<void>;
}

export async function startFederation(options: { env?: Record<string, string> } = {}): Promise<Federation> {
  const clock = { now: Date.now() };
  const issuer = await startLocalIssuer({ now: () => clock.now });
  const t = await startTestBroker({
    clock,
    env: {
      BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: issuer.jwksUri }]),
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
      const created = await t.broker.store.policies.create(
        tenant.id,
        id,
        {
          name,
          description: null,
          issuer: GITHUB_ISSUER,
          claims: { repository: 'acme/infra' },
          max_session_duration_seconds: 0,
          permissions: ['harden-runner:read'] as Permission[],
          allow_pull_request_target: false,
          ...fields,
        },
        clock.now,
        {
          tenantId: tenant.id,
          type: 'policy.created',
          outcome: 'success',
          actor: { kind: 'test', id: 'setup' },
        },
      );
      if (!created.ok) throw new Error(`policy ${name}: ${created.conflict}`);
      return id;
    },
    exchange: (token, body = {}) =>
      t.request('POST', '/v1/oidc/token', { json: { oidc_token: token, ...body } }),
    async close() {
      await t.close();
      await issuer.close();
    },
  };
}
