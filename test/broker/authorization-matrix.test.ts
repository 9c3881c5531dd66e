// The admin API's authorisation matrix, written from DESIGN §2 and §5: every authenticated operation × every credential.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { DESIGN_PERMISSIONS, DESIGN_READS } from '../support/design-catalogue.js';
import { GITHUB_ISSUER, type LocalIssuer, startLocalIssuer } from '../support/local-issuer.js';

const ALL = DESIGN_PERMISSIONS;
const READS = DESIGN_READS;

/** §2: `write` implies `read`. */
function holds(granted: readonly string[], permission: string): boolean {
  return (
    granted.includes(permission) ||
    (permission.endsWith(':read') && granted.includes(permission.replace(/:read$/, ':write')))
  );
}

/** A tenant with the resources an operation acts on, and its Tenant API key (primary slot) to set up and read back. */
interface World {
  name: string;
  audience: string;
  admin: string;
  keyId: string;
  policyId: string;
  /** An access token minted by `admin`, for introspection and revocation. */
  victim: string;
  /** What the credential under test may revoke as its own: itself if a token, else a token it minted. */
  own: string;
}

/**
 * What an operation needs (§5): a permission; any valid credential; a Tenant API key (rotation); an API key, since
 * an access token mints none; or, to revoke a token, its own minter or `api-keys:write`.
 */
type Need =
  | { permission: string }
  | { any: true }
  | { credential: 'tenant' }
  | { credential: 'api-key' }
  | { revoke: 'own' | 'another' };

interface Operation {
  method: string;
  path: (w: World) => string;
  body?: (w: World) => unknown;
  need: Need;
  status: number;
  /** What the operation changes, as the tenant's own Tenant API key reads it back; only for writes. */
  readBack?: (w: World) => Promise<unknown>;
  /** The path names a resource of the tenant, which another tenant's credential finds none of (404). */
  namesResource?: true;
}

let t: TestBroker;
let issuer: LocalIssuer;
let worlds = 0;

beforeAll(async () => {
  const clock = { now: Date.now() };
  issuer = await startLocalIssuer({ now: () => clock.now });
  t = await startTestBroker({
    clock,
    env: {
      BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: issuer.jwksUri }]),
      BROKER_PUBLIC_URL: 'https://broker.test',
    },
  });
});
afterAll(async () => {
  await t.close();
  await issuer.close();
});

async function call(method: string, path: string, key: string, json?: unknown) {
  const res = await t.request(method, path, { key, json });
  const text = await res.text();
  return { status: res.status, text, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function ok<T>(method: string, path: string, key: string, json?: unknown): Promise<T> {
  const res = await call(method, path, key, json);
  expect(res.status, `${method} ${path}: ${res.text}`).toBeLessThan(300);
  return res.body as T;
}

const rotate = async (admin: string, kind: string, slot: string) =>
  (await ok<{ key: string }>('POST', `/v1/api-keys/${kind}/${slot}/rotate`, admin)).key;
const fineGrained = (admin: string, permissions: string[], expiresInDays = 7) =>
  ok<{ id: string; key: string }>('POST', '/v1/fine-grained-keys', admin, {
    name: 'matrix',
    expires_in_days: expiresInDays,
    permissions,
  });
const mint = async (key: string, permissions?: string[], seconds?: number) =>
  (
    await ok<{ access_token: string }>('POST', '/v1/tokens', key, {
      ...(permissions ? { permissions } : {}),
      ...(seconds ? { duration_seconds: seconds } : {}),
    })
  ).access_token;
const revokeToken = (key: string, token: string) => ok('POST', '/v1/tokens/revoke', key, { token });

async function newWorld(): Promise<World> {
  const name = `world-${String(++worlds).padStart(4, '0')}`;
  const { tenant, key: admin } = await t.createTenant(name);
  const { id: keyId } = await fineGrained(admin, ['harden-runner:read']);
  const { policy } = await ok<{ policy: { id: string } }>('POST', '/v1/oidc/policies', admin, {
    name: 'fixture',
    claims: { repository: 'acme/web', ref: 'refs/heads/main' },
    permissions: ['harden-runner:read'],
  });
  const victim = await mint(admin);
  return { name, audience: tenant.audience, admin, keyId, policyId: policy.id, victim, own: victim };
}

/** An access token from the exchange, through a trust policy of `w` granting `allowlist`. */
async function exchanged(w: World, allowlist: string[]): Promise<string> {
  await ok('POST', '/v1/oidc/policies', w.admin, {
    name: 'exchange',
    claims: { repository: 'acme/infra' },
    permissions: allowlist,
  });
  const res = await t.request('POST', '/v1/oidc/token', {
    json: { oidc_token: issuer.sign({ aud: w.audience }) },
  });
  const body = (await res.json()) as { access_token: string };
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body.access_token;
}

const slotHint = async (w: World, kind: string, slot: string) => {
  const { keys } = await ok<{ keys: { kind: string; slot: string; hint: string | null }[] }>(
    'GET',
    '/v1/api-keys',
    w.admin,
  );
  return keys.find((k) => k.kind === kind && k.slot === slot)?.hint;
};
const keyIds = async (w: World) =>
  (await ok<{ keys: { id: string }[] }>('GET', '/v1/fine-grained-keys', w.admin)).keys
    .map((k) => k.id)
    .sort();
const policyIds = async (w: World) =>
  (await ok<{ policies: { id: string }[] }>('GET', '/v1/oidc/policies', w.admin)).policies
    .map((p) => p.id)
    .sort();
const readAs = async (w: World, path: string) => {
  const { status, body } = await call('GET', path, w.admin);
  return { status, body };
};
const active = async (w: World, token: string) =>
  (await ok<{ active: boolean }>('POST', '/v1/tokens/introspect', w.admin, { token })).active;
const denials = async (w: World) =>
  (await ok<{ events: unknown[] }>('GET', '/v1/audit-events?type=permission.denied&limit=200', w.admin))
    .events.length;
const mintedEvents = async (w: World) =>
  (await ok<{ events: unknown[] }>('GET', '/v1/audit-events?type=token.minted&limit=200', w.admin)).events
    .length;

const rotation = (kind: string): Operation => ({
  method: 'POST',
  path: () => `/v1/api-keys/${kind}/secondary/rotate`,
  need: { credential: 'tenant' },
  status: 200,
  readBack: (w) => slotHint(w, kind, 'secondary'),
});

// §5, route by route: the permission each needs, a valid request, and its success status.
const OPERATIONS: Record<string, Operation> = {
  'GET /v1/whoami': {
    method: 'GET',
    path: () => '/v1/whoami',
    need: { any: true },
    status: 200,
  },
  'GET /v1/permissions': {
    method: 'GET',
    path: () => '/v1/permissions',
    need: { any: true },
    status: 200,
  },
  'GET /v1/api-keys': {
    method: 'GET',
    path: () => '/v1/api-keys',
    need: { permission: 'api-keys:read' },
    status: 200,
  },
  'POST /v1/api-keys/tenant/secondary/rotate': rotation('tenant'),
  'POST /v1/api-keys/tenant-read-only/secondary/rotate': rotation('tenant-read-only'),
  'POST /v1/api-keys/secure-registry/secondary/rotate': rotation('secure-registry'),
  'POST /v1/fine-grained-keys': {
    method: 'POST',
    path: () => '/v1/fine-grained-keys',
    body: () => ({ name: 'created', expiration: '7d', permissions: ['api-keys:read'] }),
    need: { permission: 'api-keys:write' },
    status: 201,
    readBack: keyIds,
  },
  'GET /v1/fine-grained-keys': {
    method: 'GET',
    path: () => '/v1/fine-grained-keys',
    need: { permission: 'api-keys:read' },
    status: 200,
  },
  'GET /v1/fine-grained-keys/{id}': {
    method: 'GET',
    path: (w) => `/v1/fine-grained-keys/${w.keyId}`,
    need: { permission: 'api-keys:read' },
    status: 200,
    namesResource: true,
  },
  'DELETE /v1/fine-grained-keys/{id}': {
    method: 'DELETE',
    path: (w) => `/v1/fine-grained-keys/${w.keyId}`,
    need: { permission: 'api-keys:write' },
    status: 204,
    readBack: (w) => readAs(w, `/v1/fine-grained-keys/${w.keyId}`),
    namesResource: true,
  },
  'GET /v1/oidc/policies': {
    method: 'GET',
    path: () => '/v1/oidc/policies',
    need: { permission: 'oidc-federation:read' },
    status: 200,
  },
  'POST /v1/oidc/policies': {
    method: 'POST',
    path: () => '/v1/oidc/policies',
    body: () => ({
      name: 'created',
      claims: { repository: 'acme/app', ref: 'refs/heads/main' },
      permissions: ['oidc-federation:read'],
    }),
    need: { permission: 'oidc-federation:write' },
    status: 201,
    readBack: policyIds,
  },
  'GET /v1/oidc/policies/{id}': {
    method: 'GET',
    path: (w) => `/v1/oidc/policies/${w.policyId}`,
    need: { permission: 'oidc-federation:read' },
    status: 200,
    namesResource: true,
  },
  'PUT /v1/oidc/policies/{id}': {
    method: 'PUT',
    path: (w) => `/v1/oidc/policies/${w.policyId}`,
    body: () => ({
      name: 'replaced',
      claims: { repository: 'acme/web', ref: 'refs/heads/release' },
      permissions: ['oidc-federation:read'],
    }),
    need: { permission: 'oidc-federation:write' },
    status: 200,
    readBack: (w) => readAs(w, `/v1/oidc/policies/${w.policyId}`),
    namesResource: true,
  },
  'DELETE /v1/oidc/policies/{id}': {
    method: 'DELETE',
    path: (w) => `/v1/oidc/policies/${w.policyId}`,
    need: { permission: 'oidc-federation:write' },
    status: 204,
    readBack: (w) => readAs(w, `/v1/oidc/policies/${w.policyId}`),
    namesResource: true,
  },
  'POST /v1/oidc/policies/evaluate': {
    method: 'POST',
    path: () => '/v1/oidc/policies/evaluate',
    body: () => ({ claims: { repository_owner: 'acme', repository: 'acme/web', ref: 'refs/heads/main' } }),
    need: { permission: 'oidc-federation:read' },
    status: 200,
  },
  'GET /v1/oidc/config': {
    method: 'GET',
    path: () => '/v1/oidc/config',
    need: { permission: 'oidc-federation:read' },
    status: 200,
  },
  'POST /v1/tokens': {
    method: 'POST',
    path: () => '/v1/tokens',
    body: () => ({ duration_seconds: 60 }),
    need: { credential: 'api-key' },
    status: 201,
    readBack: mintedEvents,
  },
  'POST /v1/tokens/introspect': {
    method: 'POST',
    path: () => '/v1/tokens/introspect',
    body: (w) => ({ token: w.victim }),
    need: { any: true },
    status: 200,
  },
  "POST /v1/tokens/revoke, another credential's token": {
    method: 'POST',
    path: () => '/v1/tokens/revoke',
    body: (w) => ({ token: w.victim }),
    need: { revoke: 'another' },
    status: 200,
    readBack: (w) => active(w, w.victim),
  },
  'POST /v1/tokens/revoke, its own token': {
    method: 'POST',
    path: () => '/v1/tokens/revoke',
    body: (w) => ({ token: w.own }),
    need: { revoke: 'own' },
    status: 200,
    readBack: (w) => active(w, w.own),
  },
  'GET /v1/audit-events': {
    method: 'GET',
    path: () => '/v1/audit-events',
    need: { permission: 'audit-log:read' },
    status: 200,
  },
};

type Kind = 'tenant' | 'api-key' | 'token';

/** A credential as §2 describes it: how it is made, what it holds, and what kind it is; or one that is no credential. */
type Credential =
  | {
      valid: true;
      kind: Kind;
      holds: readonly string[];
      /** Of another tenant: it acts in that tenant, which has resources of its own, and sees none of this one's. */
      foreign?: true;
      make: (w: World) => Promise<Record<string, string>>;
    }
  | { valid: false; make: (w: World) => Promise<Record<string, string>> };

const bearer = (credential: string) => ({ Authorization: `Bearer ${credential}` });

/** The permission an operation names, if any: what the "exactly", "write" and "read" keys are made of. */
const named = (op: Operation) => ('permission' in op.need ? op.need.permission : undefined);

/** The grant that is exactly what `op` needs: its permission, or what the route is easily mistaken to need. */
function exactly(op: Operation): string[] {
  const permission = named(op);
  if (permission) return [permission];
  // Nothing grants rotation, though keys are what api-keys:write manages; revoking another's token takes it.
  if ('credential' in op.need && op.need.credential === 'tenant') return ['api-keys:write'];
  if ('revoke' in op.need && op.need.revoke === 'another') return ['api-keys:write'];
  return ['harden-runner:read'];
}

const CREDENTIALS: Record<string, (op: Operation) => Credential | null> = {
  'Tenant API key, primary': () => ({
    valid: true,
    kind: 'tenant',
    holds: ALL,
    make: async (w) => bearer(w.admin),
  }),
  'Tenant API key, secondary': () => ({
    valid: true,
    kind: 'tenant',
    holds: ALL,
    make: async (w) => bearer(await rotate(w.admin, 'tenant', 'secondary')),
  }),
  'Tenant read-only key': () => ({
    valid: true,
    kind: 'api-key',
    holds: READS,
    make: async (w) => bearer(await rotate(w.admin, 'tenant-read-only', 'primary')),
  }),
  'Secure Registry key': () => ({
    valid: true,
    kind: 'api-key',
    holds: ['secure-registry:read', 'secure-registry:write'],
    make: async (w) => bearer(await rotate(w.admin, 'secure-registry', 'primary')),
  }),
  'fine-grained key granted nothing this route needs': () => ({
    valid: true,
    kind: 'api-key',
    holds: ['harden-runner:write'],
    make: async (w) => bearer((await fineGrained(w.admin, ['harden-runner:write'])).key),
  }),
  'fine-grained key granted exactly what the route needs': (op) => ({
    valid: true,
    kind: 'api-key',
    holds: exactly(op),
    make: async (w) => bearer((await fineGrained(w.admin, exactly(op))).key),
  }),
  "fine-grained key granted the write of the route's read": (op) => {
    const permission = named(op);
    if (!permission?.endsWith(':read') || permission === 'audit-log:read') return null;
    const grant = [permission.replace(/:read$/, ':write')];
    return {
      valid: true,
      kind: 'api-key',
      holds: grant,
      make: async (w) => bearer((await fineGrained(w.admin, grant)).key),
    };
  },
  "fine-grained key granted the read of the route's write": (op) => {
    const permission = named(op);
    if (!permission?.endsWith(':write')) return null;
    const grant = [permission.replace(/:write$/, ':read')];
    return {
      valid: true,
      kind: 'api-key',
      holds: grant,
      make: async (w) => bearer((await fineGrained(w.admin, grant)).key),
    };
  },
  'fine-grained key granted read-write-all': () => ({
    valid: true,
    kind: 'api-key',
    holds: ALL,
    make: async (w) => bearer((await fineGrained(w.admin, ['read-write-all'])).key),
  }),
  'access token from POST /v1/tokens, narrow': () => ({
    valid: true,
    kind: 'token',
    holds: ['harden-runner:read'],
    make: async (w) => bearer(await mint(w.admin, ['harden-runner:read'])),
  }),
  'access token from POST /v1/tokens, wide': () => ({
    valid: true,
    kind: 'token',
    holds: ALL,
    make: async (w) => bearer(await mint(w.admin)),
  }),
  'access token from the exchange, narrow': () => ({
    valid: true,
    kind: 'token',
    holds: ['harden-runner:read'],
    make: async (w) => bearer(await exchanged(w, ['harden-runner:read'])),
  }),
  'access token from the exchange, wide': () => ({
    valid: true,
    kind: 'token',
    holds: ALL,
    make: async (w) => bearer(await exchanged(w, ['read-write-all'])),
  }),
  'expired fine-grained key': () => ({
    valid: false,
    make: async (w) => {
      // Created two days ago for one day.
      t.clock.now -= 2 * 86_400_000;
      try {
        return bearer((await fineGrained(w.admin, ['read-write-all'], 1)).key);
      } finally {
        t.clock.now += 2 * 86_400_000;
      }
    },
  }),
  'revoked fine-grained key': () => ({
    valid: false,
    make: async (w) => {
      const { id, key } = await fineGrained(w.admin, ['read-write-all']);
      await ok('DELETE', `/v1/fine-grained-keys/${id}`, w.admin);
      return bearer(key);
    },
  }),
  'Tenant API key of a slot rotated since': () => ({
    valid: false,
    make: async (w) => {
      const old = await rotate(w.admin, 'tenant', 'secondary');
      await rotate(w.admin, 'tenant', 'secondary');
      return bearer(old);
    },
  }),
  'revoked access token from POST /v1/tokens': () => ({
    valid: false,
    make: async (w) => {
      const token = await mint(w.admin);
      await revokeToken(w.admin, token);
      return bearer(token);
    },
  }),
  'revoked access token from the exchange': () => ({
    valid: false,
    make: async (w) => {
      const token = await exchanged(w, ['read-write-all']);
      await revokeToken(token, token);
      return bearer(token);
    },
  }),
  "another tenant's Tenant API key": () => ({
    valid: true,
    kind: 'tenant',
    holds: ALL,
    foreign: true,
    make: async (w) => bearer((await t.createTenant(`${w.name}-other`)).key),
  }),
  "another tenant's wide access token": () => ({
    valid: true,
    kind: 'token',
    holds: ALL,
    foreign: true,
    make: async (w) => bearer(await mint((await t.createTenant(`${w.name}-other`)).key)),
  }),
  'expired access token': () => ({
    valid: false,
    make: async (w) => {
      // Minted two minutes ago for one.
      t.clock.now -= 120_000;
      try {
        return bearer(await mint(w.admin, undefined, 60));
      } finally {
        t.clock.now += 120_000;
      }
    },
  }),
  garbage: () => ({ valid: false, make: async () => bearer('not-a-credential') }),
  'Tenant API key with a checksum that does not match': () => ({
    valid: false,
    make: async (w) => {
      // One character of the random part changed; the checksum is left as it was.
      const c = w.admin[4] === 'A' ? 'B' : 'A';
      return bearer(`${w.admin.slice(0, 4)}${c}${w.admin.slice(5)}`);
    },
  }),
  'no Authorization header': () => ({ valid: false, make: async () => ({}) }),
  'Tenant API key sent as Basic': () => ({
    valid: false,
    make: async (w) => ({ Authorization: `Basic ${Buffer.from(`${w.admin}:`).toString('base64')}` }),
  }),
  'Tenant API key after two spaces': () => ({
    valid: false,
    make: async (w) => ({ Authorization: `Bearer  ${w.admin}` }),
  }),
  'Tenant API key under a lower-case "bearer"': () => ({
    valid: false,
    make: async (w) => ({ Authorization: `bearer ${w.admin}` }),
  }),
};

type Expected =
  | { status: number }
  | { status: 403; permission: string }
  | { status: 403; credential: 'tenant' | 'api-key' };

/** §2 and §5 as rules: the answer `credential` gets from `op`. */
function expected(op: Operation, credential: Credential): Expected {
  if (!credential.valid) return { status: 401 };
  const answer = allowed(op, credential);
  return credential.foreign && op.namesResource && answer.status === op.status ? { status: 404 } : answer;
}

function allowed(op: Operation, credential: Credential & { valid: true }): Expected {
  const { need } = op;
  if ('permission' in need) {
    return holds(credential.holds, need.permission)
      ? { status: op.status }
      : { status: 403, permission: need.permission };
  }
  if ('credential' in need) {
    const fits = need.credential === 'tenant' ? credential.kind === 'tenant' : credential.kind !== 'token';
    return fits ? { status: op.status } : { status: 403, credential: need.credential };
  }
  if ('revoke' in need) {
    // A token may revoke itself, and a key the tokens it minted (RFC 7009 §2.1); another's needs api-keys:write. The
    // victim was minted by the tenant's primary key, which holds api-keys:write anyway.
    if (need.revoke === 'own') return { status: op.status };
    return holds(credential.holds, 'api-keys:write')
      ? { status: op.status }
      : { status: 403, permission: 'api-keys:write' };
  }
  return { status: op.status };
}

const cells = Object.entries(OPERATIONS).flatMap(([operation, op]) =>
  Object.entries(CREDENTIALS).flatMap(([name, row]) => {
    const credential = row(op);
    return credential ? [{ operation, op, name, credential }] : [];
  }),
);

describe('authorisation matrix (DESIGN §2, §5)', () => {
  it.each(cells)('$operation with $name', async ({ op, credential }) => {
    const w = await newWorld();
    const headers = await credential.make(w);
    if (credential.valid) {
      const raw = headers.Authorization!.slice('Bearer '.length);
      w.own = credential.kind === 'token' ? raw : await mint(raw);
    }
    const before = await op.readBack?.(w);
    const deniedBefore = await denials(w);
    const want = expected(op, credential);
    const body = op.body?.(w);
    const res = await t.request(op.method, op.path(w), {
      headers,
      ...(body === undefined ? {} : { json: body }),
    });
    const text = await res.text();
    expect(res.status, text).toBe(want.status);
    const answer = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    if (want.status === 401) {
      expect(answer.code).toBe('unauthenticated');
      expect(res.headers.get('WWW-Authenticate')).toMatch(/^Bearer /);
    }
    if ('permission' in want) {
      expect(answer).toMatchObject({ code: 'forbidden', missing_permission: want.permission });
      expect(answer.detail).toContain(want.permission);
    }
    if ('credential' in want) {
      expect(answer).toMatchObject({ code: 'forbidden', required_credential: want.credential });
    }
    const foreign = credential.valid && credential.foreign === true;
    if (foreign) {
      // Another tenant's credential acts in its own tenant: it sees and changes nothing of this one.
      // (A 404 repeats the id it was asked for, which tells nothing.)
      const shown = [w.audience, w.keyId, w.policyId].filter((own) => !op.path(w).includes(own));
      for (const own of shown) expect(text).not.toContain(own);
      if (want.status === 404) expect(answer.code).toBe('not_found');
      if (op.path(w) === '/v1/tokens/introspect') expect(answer).toEqual({ active: false });
    }
    if (op.path(w) === '/v1/whoami' && credential.valid) {
      // §2's table, as the credential itself is told it: write implying read.
      const implied = ALL.filter((p) => holds(credential.holds, p));
      expect(answer.permissions).toEqual(implied);
    }
    // §5: every permission denial is in the tenant's audit log; nothing else is.
    expect(await denials(w)).toBe(deniedBefore + (want.status === 403 && !foreign ? 1 : 0));
    if (op.readBack) {
      const after = await op.readBack(w);
      const changes = want.status === op.status && !foreign;
      if (changes) expect(after).not.toEqual(before);
      else expect(after).toEqual(before);
    }
  });
});

describe('no escalation (DESIGN §2): a grant beyond the caller’s own permissions is refused and writes nothing', () => {
  // Each caller holds the permission the route needs, and not `audit-log:read`, which its request grants.
  const grants: [
    string,
    (w: World) => { method: string; path: string; body: unknown },
    (w: World) => Promise<unknown>,
  ][] = [
    [
      'POST /v1/fine-grained-keys',
      () => ({
        method: 'POST',
        path: '/v1/fine-grained-keys',
        body: { name: 'wider', expiration: '7d', permissions: ['api-keys:read', 'audit-log:read'] },
      }),
      keyIds,
    ],
    [
      'POST /v1/oidc/policies',
      () => ({
        method: 'POST',
        path: '/v1/oidc/policies',
        body: {
          name: 'wider',
          claims: { repository: 'acme/app', ref: 'refs/heads/main' },
          permissions: ['audit-log:read'],
        },
      }),
      policyIds,
    ],
    [
      'PUT /v1/oidc/policies/{id}',
      (w) => ({
        method: 'PUT',
        path: `/v1/oidc/policies/${w.policyId}`,
        body: {
          name: 'fixture',
          claims: { repository: 'acme/web', ref: 'refs/heads/main' },
          permissions: ['audit-log:read'],
        },
      }),
      (w) => readAs(w, `/v1/oidc/policies/${w.policyId}`),
    ],
    [
      'POST /v1/tokens',
      () => ({ method: 'POST', path: '/v1/tokens', body: { permissions: ['audit-log:read'] } }),
      mintedEvents,
    ],
  ];
  const withoutAuditLog = async (w: World) =>
    (
      await fineGrained(
        w.admin,
        ALL.filter((p) => p !== 'audit-log:read'),
      )
    ).key;
  const cases = [
    ...grants.map(([operation, request, readBack]) => ({
      operation,
      request,
      readBack,
      caller: 'a fine-grained key granted everything but audit-log:read',
      make: withoutAuditLog,
    })),
    {
      operation: 'POST /v1/tokens',
      request: grants[3]![1],
      readBack: mintedEvents,
      caller: 'a Secure Registry key',
      make: (w: World) => rotate(w.admin, 'secure-registry', 'primary'),
    },
  ];

  it.each(cases)('$operation by $caller', async ({ request, readBack, make }) => {
    const w = await newWorld();
    const key = await make(w);
    const before = await readBack(w);
    const { method, path, body } = request(w);
    const res = await call(method, path, key, body);
    expect(res.status, res.text).toBe(403);
    expect(res.body).toMatchObject({ code: 'permission_escalation', missing: ['audit-log:read'] });
    expect(await readBack(w)).toEqual(before);
  });
});

describe('a category disabled for the tenant (DESIGN §2) is refused everywhere a permission is granted or used', () => {
  const DISABLED = 'secure-registry:read';
  let admin: string;
  let audience: string;
  let policyId: string;

  beforeAll(async () => {
    const created = await t.createTenant('limited', { disable: ['secure-registry', 'harden-runner'] });
    admin = created.key;
    audience = created.tenant.audience;
    ({
      policy: { id: policyId },
    } = await ok<{ policy: { id: string } }>('POST', '/v1/oidc/policies', admin, {
      name: 'infra',
      claims: { repository: 'acme/infra' },
      permissions: ['read-write-all'],
    }));
  });

  const policy = async () => (await call('GET', `/v1/oidc/policies/${policyId}`, admin)).body;
  const keys = async () => (await call('GET', '/v1/fine-grained-keys', admin)).body;
  const policies = async () => (await call('GET', '/v1/oidc/policies', admin)).body;
  const minted = async () => (await call('GET', '/v1/audit-events?type=token.minted&limit=200', admin)).body;

  it('no credential holds it: not the Tenant API key, not the Secure Registry key, not a shortcut', async () => {
    const registry = await rotate(admin, 'secure-registry', 'primary');
    const me = await ok<{ permissions: string[] }>('GET', '/v1/whoami', admin);
    expect(me.permissions).toEqual(
      ALL.filter((p) => !p.startsWith('secure-registry:') && !p.startsWith('harden-runner:')),
    );
    expect((await ok<{ permissions: string[] }>('GET', '/v1/whoami', registry)).permissions).toEqual([]);
    const catalogue = await ok<{ shortcuts: Record<string, string[]> }>('GET', '/v1/permissions', admin);
    expect(catalogue.shortcuts['read-write-all']).not.toContain(DISABLED);
    const wide = await ok<{ permissions: string[] }>('POST', '/v1/fine-grained-keys', admin, {
      name: 'wide',
      expiration: '7d',
      permissions: ['read-write-all'],
    });
    expect(wide.permissions).not.toContain(DISABLED);
    const exchange = await t.request('POST', '/v1/oidc/token', {
      json: { oidc_token: issuer.sign({ aud: audience }) },
    });
    expect(((await exchange.json()) as { permissions: string[] }).permissions).not.toContain(DISABLED);
    // Whatever a Secure Registry key could mint would hold nothing.
    const before = await minted();
    expect((await call('POST', '/v1/tokens', registry, {})).status).toBe(400);
    expect(await minted()).toEqual(before);
  });

  it.each([
    [
      'POST /v1/fine-grained-keys',
      400,
      () => ({ name: 'x', expiration: '7d', permissions: [DISABLED] }),
      keys,
    ],
    [
      'POST /v1/oidc/policies',
      422,
      () => ({
        name: 'x',
        claims: { repository: 'acme/x', ref: 'refs/heads/main' },
        permissions: [DISABLED],
      }),
      policies,
    ],
    [
      'PUT /v1/oidc/policies/{id}',
      422,
      () => ({ name: 'infra', claims: { repository: 'acme/infra' }, permissions: [DISABLED] }),
      policy,
    ],
    ['POST /v1/tokens', 400, () => ({ permissions: [DISABLED] }), minted],
  ] as const)('%s granting it is %i and writes nothing', async (operation, status, body, readBack) => {
    const [method, route] = operation.split(' ') as [string, string];
    const before = await readBack();
    const res = await call(method, route.replace('{id}', policyId), admin, body());
    expect(res.status, res.text).toBe(status);
    expect(res.text).toContain('disabled');
    expect(await readBack()).toEqual(before);
  });

  it('an exchange asking for it gets no token, and the dry run says it would not', async () => {
    const exchange = await t.request('POST', '/v1/oidc/token', {
      json: { oidc_token: issuer.sign({ aud: audience }), permissions: [DISABLED] },
    });
    const refusal = (await exchange.json()) as Record<string, unknown>;
    expect(exchange.status, JSON.stringify(refusal)).toBe(400);
    expect(refusal.access_token).toBeUndefined();
    expect(JSON.stringify(refusal)).toContain('disabled');
    const dry = await call('POST', '/v1/oidc/policies/evaluate', admin, {
      claims: { repository_owner: 'acme', repository: 'acme/infra', ref: 'refs/heads/main' },
      permissions: [DISABLED],
    });
    expect(dry.status, dry.text).toBe(400);
    expect(dry.text).toContain('disabled');
  });
});
