// An API key or a token pasted into text the broker stores and lists back (a key's or policy's name, a description,
// a claim value) is refused naming the field, and stored, echoed, audited and logged nowhere (DESIGN §3).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicy, type Federation, startFederation } from '../support/federation.js';

interface Problem {
  status: number;
  code: string;
  detail: string;
  errors?: { field: string; message: string }[];
}

let f: Federation;
let tenants = 0;
/** Real secrets of every kind the broker issues or takes, each with a label for the test names. */
let secrets: [string, string][];

const request = (method: string, path: string, key: string, json?: unknown) =>
  f.t.request(method, path, { key, json });
const newTenantKey = async () => (await f.t.createTenant(`stored-${++tenants}`)).key;

async function mintToken(key: string): Promise<string> {
  const res = await request('POST', '/v1/tokens', key, {});
  return ((await res.json()) as { access_token: string }).access_token;
}

async function rotate(key: string, kind: string): Promise<string> {
  const res = await request('POST', `/v1/api-keys/${kind}/secondary/rotate`, key);
  return ((await res.json()) as { key: string }).key;
}

beforeAll(async () => {
  f = await startFederation();
  const fineGrained = await request('POST', '/v1/fine-grained-keys', f.key, {
    name: 'source of a key',
    expiration: '7d',
    permissions: ['harden-runner:read'],
  });
  secrets = [
    ['a Tenant API key', f.key],
    ['a Tenant read-only key', await rotate(f.key, 'tenant-read-only')],
    ['a Secure Registry key', await rotate(f.key, 'secure-registry')],
    ['a fine-grained key', ((await fineGrained.json()) as { key: string }).key],
    ['a key without its checksum', f.key.slice(0, -6)],
    ['an access token', await mintToken(f.key)],
    ['a GitHub OIDC token', f.issuer.sign()],
  ];
});
afterAll(() => f.close());

const isToken = (secret: string) => secret.startsWith('eyJ');

/** Fails if `text` holds `secret`, or any long run of it: a key's random part, a token's segments. */
function expectNoSecret(text: string, secret: string, where: string): void {
  expect(text, where).not.toContain(secret);
  for (const part of secret.split('.')) expect(text, where).not.toContain(part.slice(4, 36));
}

const policyBody = (
  fields: Record<string, unknown> = {},
  claims: Record<string, string> = {},
): Record<string, unknown> => ({
  name: `p-${randomUUID()}`,
  claims: { repository: 'acme/infra', ...claims },
  permissions: ['harden-runner:read'],
  ...fields,
});

/** Every stored text field of a trust policy, and how a secret ends up in it. */
const POLICY_FIELDS: [string, (secret: string) => Record<string, unknown>][] = [
  ['name', (s) => policyBody({ name: `deploy ${s}` })],
  ['description', (s) => policyBody({ description: `the key for deploys is ${s}` })],
  ['issuer', (s) => policyBody({ issuer: s })],
  ['claims.repository_owner', (s) => policyBody({ claims: { repository_owner: s } })],
  ['claims.repository', (s) => policyBody({}, { repository: `acme/${s}` })],
  [
    'claims.job_workflow_ref',
    (s) => policyBody({}, { job_workflow_ref: `acme/infra/.github/workflows/deploy.yml@refs/heads/${s}` }),
  ],
  ['claims.ref', (s) => policyBody({}, { ref: `refs/heads/${s}` })],
  ['claims.environment', (s) => policyBody({}, { environment: s })],
  ['claims.repository_owner_id', (s) => policyBody({}, { repository_owner_id: s })],
  ['claims.repository_id', (s) => policyBody({}, { repository_id: s })],
];

/** Asserts a refusal naming exactly `field`, that says what was found and shows a key only as its hint. */
async function expectRefused(res: Response, status: number, code: string, field: string, secret: string) {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expectNoSecret(text, secret, `the answer for ${field}`);
  const problem = JSON.parse(text) as Problem;
  expect(problem.code).toBe(code);
  expect(problem.errors).toEqual([{ field, message: expect.stringContaining(field) }]);
  const message = problem.errors![0]!.message;
  if (isToken(secret)) {
    expect(message).toMatch(/looks like a token/);
  } else {
    expect(message).toMatch(/looks like an API key/);
    expect(message).toContain(`${secret.slice(0, 4)}…${secret.slice(-4)}`);
  }
  expect(message).toMatch(/never stored/);
  expect(message).toMatch(isToken(secret) || secret.startsWith('ssf_') ? /revoke it/ : /rotate its slot/);
  expect(problem.detail).toContain(field);
}

/** The tenant's listings and audit log, and the broker's logs, hold none of the secrets. */
async function expectStoredNowhere(key: string, tested: string[]) {
  const listings = [
    await (await request('GET', '/v1/oidc/policies', key)).text(),
    await (await request('GET', '/v1/fine-grained-keys', key)).text(),
    await (await request('GET', '/v1/audit-events?limit=200', key)).text(),
    f.t.logs.join('\n'),
  ];
  for (const secret of tested) for (const text of listings) expectNoSecret(text, secret, 'a listing');
}

describe('a secret pasted into a trust policy is refused with 422 invalid_policy naming the field', () => {
  for (const [field, body] of POLICY_FIELDS) {
    it(`${field}: refused on create and on replace, and nothing is saved`, async () => {
      const key = await newTenantKey();
      const existing = await request('POST', '/v1/oidc/policies', key, policyBody({ name: 'existing' }));
      const { policy } = (await existing.json()) as { policy: { id: string } };
      const before = await (await request('GET', `/v1/oidc/policies/${policy.id}`, key)).text();
      for (const [label, secret] of secrets) {
        const created = await request('POST', '/v1/oidc/policies', key, body(secret));
        await expectRefused(created, 422, 'invalid_policy', field, secret);
        const replaced = await request('PUT', `/v1/oidc/policies/${policy.id}`, key, body(secret));
        await expectRefused(replaced, 422, 'invalid_policy', field, secret);
        expect(await (await request('GET', `/v1/oidc/policies/${policy.id}`, key)).text(), label).toBe(
          before,
        );
      }
      const listed = (await (await request('GET', '/v1/oidc/policies', key)).json()) as {
        policies: unknown[];
      };
      expect(listed.policies).toHaveLength(1);
      const audit = await request('GET', '/v1/audit-events?type=policy.updated', key);
      expect(((await audit.json()) as { events: unknown[] }).events).toEqual([]);
      await expectStoredNowhere(
        key,
        secrets.map(([, s]) => s),
      );
    });
  }

  it("the policy's other broken rules are listed with it, in one answer", async () => {
    const key = await newTenantKey();
    const res = await request(
      'POST',
      '/v1/oidc/policies',
      key,
      policyBody({ name: f.key, max_session_duration_seconds: 7200 }, { ref: 'main' }),
    );
    const problem = (await res.json()) as Problem;
    expect(res.status).toBe(422);
    expect(problem.errors?.map((e) => e.field).sort()).toEqual([
      'claims.ref',
      'max_session_duration_seconds',
      'name',
    ]);
  });
});

describe('a secret pasted into a fine-grained key name is refused with 400 invalid_request naming it', () => {
  it('as the whole name or within it, for every kind of key and token, and nothing is saved', async () => {
    const key = await newTenantKey();
    for (const [, secret] of secrets) {
      for (const name of [secret, `ci ${secret}`, `${secret}-old`]) {
        const res = await request('POST', '/v1/fine-grained-keys', key, {
          name,
          expiration: '7d',
          permissions: ['harden-runner:read'],
        });
        await expectRefused(res, 400, 'invalid_request', 'name', secret);
      }
    }
    const listed = (await (await request('GET', '/v1/fine-grained-keys', key)).json()) as { keys: unknown[] };
    expect(listed.keys).toEqual([]);
    const audit = await request('GET', '/v1/audit-events?type=fine_grained_key.created', key);
    expect(((await audit.json()) as { events: unknown[] }).events).toEqual([]);
    await expectStoredNowhere(
      key,
      secrets.map(([, s]) => s),
    );
  });
});

describe('a secret split by invisible characters, which every listing shows as the secret itself', () => {
  // Some chat tools and editors put U+200B or a soft hyphen into a long word so that it can wrap.
  const split = (secret: string) =>
    `${secret.slice(0, 12)}\u200b${secret.slice(12, 30)}\u00ad${secret.slice(30)}`;

  it('is refused in a fine-grained key name, a policy description and a claim, showing a key only as its hint', async () => {
    const key = await newTenantKey();
    for (const [, secret] of secrets) {
      const name = await request('POST', '/v1/fine-grained-keys', key, {
        name: `ci ${split(secret)}`,
        expiration: '7d',
        permissions: ['harden-runner:read'],
      });
      await expectRefused(name, 400, 'invalid_request', 'name', secret);
      const description = await request(
        'POST',
        '/v1/oidc/policies',
        key,
        policyBody({ description: `the key is ${split(secret)}` }),
      );
      await expectRefused(description, 422, 'invalid_policy', 'description', secret);
      const ref = await request(
        'POST',
        '/v1/oidc/policies',
        key,
        policyBody({}, { ref: `refs/heads/${split(secret)}` }),
      );
      await expectRefused(ref, 422, 'invalid_policy', 'claims.ref', secret);
    }
    expect((await (await request('GET', '/v1/fine-grained-keys', key)).json()) as unknown).toEqual({
      keys: [],
      next_cursor: null,
    });
    expect((await (await request('GET', '/v1/oidc/policies', key)).json()) as unknown).toMatchObject({
      policies: [],
    });
  });
});

describe('ordinary text that merely resembles part of a secret is saved as given', () => {
  const NAMES = [
    'ssa_',
    'ssf_deploy',
    'ssa_token-rotation',
    'ssr_readonlyIntegration',
    'ssf_DeployBot2026Production',
    'eyJ-decoder',
    'decode eyJhbGciOiJSUzI1NiJ9 headers',
    'jwt eyJ.eyJ',
    'v1.eyJ.eyJ-notes',
  ];

  it('fine-grained key names', async () => {
    const key = await newTenantKey();
    for (const name of NAMES) {
      const res = await request('POST', '/v1/fine-grained-keys', key, {
        name,
        expiration: '7d',
        permissions: ['harden-runner:read'],
      });
      expect(res.status, `${name}: ${await res.clone().text()}`).toBe(201);
    }
    const listed = (await (await request('GET', '/v1/fine-grained-keys', key)).json()) as {
      keys: { name: string }[];
    };
    expect(listed.keys.map((k) => k.name).sort()).toEqual([...NAMES].sort());
  });

  it('trust policy names, descriptions and claim values', async () => {
    const key = await newTenantKey();
    const bodies = [
      ...NAMES.map((name) => policyBody({ name })),
      policyBody({
        description: 'Keys start with ssa_, ssf_ or ssr_ and tokens with eyJ; never paste one here.',
      }),
      policyBody({}, { repository: 'acme/ssa_tools' }),
      policyBody({ claims: { repository_owner: 'ssf_acme' } }),
      policyBody({}, { ref: 'refs/heads/feature/eyJ.eyJ-support' }),
      policyBody({}, { ref: 'refs/tags/ssa_release2026' }),
      policyBody({}, { environment: 'ssg_production' }),
      policyBody(
        {},
        {
          job_workflow_ref:
            'acme/infra/.github/workflows/ssf_rotate.yml@0123456789abcdef0123456789abcdef01234567',
        },
      ),
    ];
    for (const body of bodies) {
      const res = await request('POST', '/v1/oidc/policies', key, body);
      expect(res.status, `${JSON.stringify(body)}: ${await res.clone().text()}`).toBe(201);
      const { policy } = (await res.json()) as { policy: Record<string, unknown> };
      expect(policy).toMatchObject({
        name: body.name,
        description: body.description ?? null,
        claims: body.claims,
      });
    }
  });
});

describe('ordinary text that merely resembles part of a secret is shown as given where it is echoed', () => {
  it("in the audit log and in a conflicting name's 409", async () => {
    const key = await newTenantKey();
    const keyName = 'ssf_DeployBot2026Production';
    const created = await request('POST', '/v1/fine-grained-keys', key, {
      name: keyName,
      expiration: '7d',
      permissions: ['harden-runner:read'],
    });
    expect(created.status).toBe(201);
    const body = policyBody(
      { name: 'ssr_readonlyIntegration' },
      { repository: 'acme/ssa_toolsForRelease2026' },
    );
    expect((await request('POST', '/v1/oidc/policies', key, body)).status).toBe(201);

    const taken = await request('POST', '/v1/oidc/policies', key, body);
    expect(taken.status).toBe(409);
    expect(((await taken.json()) as Problem).detail).toContain('"ssr_readonlyIntegration"');
    const audit = await (await request('GET', '/v1/audit-events', key)).text();
    for (const text of [keyName, 'ssr_readonlyIntegration', 'acme/ssa_toolsForRelease2026']) {
      expect(audit).toContain(`"${text}"`);
    }
  });
});

describe('rows stored before secrets were refused', () => {
  it('are listed as stored, and can still be replaced and deleted', async () => {
    const legacy = `deploy ${f.key}`;
    const id = randomUUID();
    await createPolicy(
      f.t.broker.store,
      f.tenantId,
      id,
      { name: legacy, description: f.key, claims: { repository: 'acme/infra', environment: f.key } },
      f.t.clock.now,
    );
    const shown = (await (await request('GET', `/v1/oidc/policies/${id}`, f.key)).json()) as {
      name: string;
      description: string;
      claims: { environment: string };
    };
    expect(shown).toMatchObject({ name: legacy, description: f.key, claims: { environment: f.key } });

    const replaced = await request('PUT', `/v1/oidc/policies/${id}`, f.key, policyBody({ name: 'deploy' }));
    expect(replaced.status, await replaced.clone().text()).toBe(200);
    expect((await request('DELETE', `/v1/oidc/policies/${id}`, f.key)).status).toBe(204);
  });
});

describe('the OpenAPI document', () => {
  it('says of every stored text field that a secret in it is refused', async () => {
    const doc = (await (await f.t.request('GET', '/v1/openapi.json')).json()) as {
      components: { schemas: Record<string, { properties: Record<string, { description?: string }> }> };
    };
    const { CreateFineGrainedKey, TrustPolicyInput, TrustPolicyClaims } = doc.components.schemas;
    const fields = [
      CreateFineGrainedKey!.properties.name,
      ...['name', 'description', 'issuer'].map((name) => TrustPolicyInput!.properties[name]),
      ...Object.values(TrustPolicyClaims!.properties),
    ];
    for (const field of fields) expect(field?.description).toMatch(/API key or a token/);
  });
});
