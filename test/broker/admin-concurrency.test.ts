// Admin changes sent at once, racing each other and the exchanges, through two brokers on one database (as two
// replicas): every outcome is one that some serial order of the same requests gives. Run on either engine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { type Federation, startFederation } from '../support/federation.js';
import { GITHUB_ISSUER } from '../support/local-issuer.js';

let f: Federation;
let replicas: TestBroker[];

beforeAll(async () => {
  f = await startFederation({ env: { BROKER_RATE_LIMIT_BURST: '100000' } });
  const other = await startTestBroker({
    db: f.t.db,
    clock: f.t.clock,
    env: {
      BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: f.issuer.jwksUri }]),
      BROKER_PUBLIC_URL: 'https://broker.test',
      BROKER_RATE_LIMIT_BURST: '100000',
    },
  });
  replicas = [f.t, other];
});
afterAll(async () => {
  await replicas?.[1]?.close();
  await f?.close();
});

type Json = Record<string, unknown>;
interface Answer {
  status: number;
  body: Json;
}
/** The replica the i-th request goes to: they alternate. */
const on = (i: number) => replicas[i % 2]!;
const answer = async (res: Response): Promise<Answer> => ({
  status: res.status,
  body: res.status === 204 ? {} : ((await res.json()) as Json),
});
const admin = (i: number, method: string, path: string, json?: unknown, key = f.key) =>
  on(i).request(method, path, { key, json }).then(answer);
const exchange = (i: number) =>
  on(i)
    .request('POST', '/v1/oidc/token', { json: { oidc_token: f.issuer.sign() } })
    .then(answer);
const status = (key: string) => f.t.request('GET', '/v1/whoami', { key }).then((r) => r.status);
const jtiOf = (token: string): string =>
  JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti;
const tick = () => new Promise((resolve) => setTimeout(resolve, 1));

interface Event {
  id: number;
  type: string;
  target?: { id: string };
  details: Json;
}
/** The tenant's audit log in commit order (ids follow it on either engine). */
async function auditLog(): Promise<Event[]> {
  const events: Event[] = [];
  for (let cursor = ''; ; ) {
    const res = await f.t.request('GET', `/v1/audit-events?limit=200${cursor && `&cursor=${cursor}`}`, {
      key: f.key,
    });
    const page = (await res.json()) as { events: Event[]; next_cursor: string | null };
    events.push(...page.events);
    if (!page.next_cursor) return events.reverse();
    cursor = page.next_cursor;
  }
}

const policy = (name: string, permissions: string[]) => ({
  name,
  claims: { repository: 'acme/infra' },
  permissions,
});
async function created(name: string, permissions: string[]): Promise<string> {
  const res = await admin(0, 'POST', '/v1/oidc/policies', policy(name, permissions));
  expect(res.status).toBe(201);
  return (res.body.policy as { id: string }).id;
}

describe('built-in slots', () => {
  it('two rotations of one slot at once: both answer a key, the one that committed last works and is listed', async () => {
    for (let round = 0; round < 4; round++) {
      const rotations = await Promise.all(
        [0, 1].map((i) => admin(i, 'POST', '/v1/api-keys/tenant-read-only/secondary/rotate')),
      );
      expect(rotations.map((r) => r.status)).toEqual([200, 200]);
      const keys = rotations.map((r) => r.body.key as string);
      const works = await Promise.all(keys.map(status));
      expect([...works].sort()).toEqual([200, 401]);
      const winner = keys[works.indexOf(200)]!;
      const hint = `ssr_…${winner.slice(-4)}`;
      const { body } = await admin(0, 'GET', '/v1/api-keys');
      expect(body.keys).toContainEqual(
        expect.objectContaining({ kind: 'tenant-read-only', slot: 'secondary', hint }),
      );
      const rotated = (await auditLog()).filter(
        (e) => e.type === 'api_key.rotated' && e.target?.id === 'tenant-read-only/secondary',
      );
      expect(rotated.at(-1)?.details.hint).toBe(hint);
    }
  });

  it('a key rotating its own slot and another at once: the other first, or only its own and a 401', async () => {
    for (let round = 0; round < 4; round++) {
      const own = (await admin(0, 'POST', '/v1/api-keys/tenant/secondary/rotate')).body.key as string;
      const before = (await admin(0, 'GET', '/v1/api-keys')).body.keys as Json[];
      const [self, other] = await Promise.all([
        admin(round, 'POST', '/v1/api-keys/tenant/secondary/rotate', undefined, own),
        admin(round + 1, 'POST', '/v1/api-keys/secure-registry/secondary/rotate', undefined, own),
      ]);
      expect(self.status).toBe(200);
      const after = (await admin(0, 'GET', '/v1/api-keys')).body.keys as Json[];
      const registry = (keys: Json[]) =>
        keys.find((k) => k.kind === 'secure-registry' && k.slot === 'secondary');
      if (other.status === 200) {
        expect(registry(after)?.hint).toBe(`ssg_…${(other.body.key as string).slice(-4)}`);
      } else {
        expect(other).toMatchObject({ status: 401, body: { code: 'unauthenticated' } });
        expect(registry(after)).toEqual(registry(before));
      }
    }
  });
});

describe('trust policies and the exchanges deciding on them', () => {
  it("permissions replaced while exchanges run: each token carries the version in force at its exchange's commit", async () => {
    const first = ['harden-runner:read', 'audit-log:read'];
    const second = ['harden-runner:read', 'secure-registry:read'];
    const id = await created('flipping', first);
    const work: Promise<Answer>[] = [];
    for (let i = 0; i < 60; i++) {
      work.push(exchange(i));
      if (i % 12 === 6) {
        const permissions = Math.floor(i / 12) % 2 ? first : second;
        work.push(admin(i + 1, 'PUT', `/v1/oidc/policies/${id}`, policy('flipping', permissions)));
      }
      if (i % 6 === 0) await tick();
    }
    const answers = await Promise.all(work);
    // A decision the policy changed under is made again; one it kept changing under is 503, to retry.
    for (const a of answers) {
      if (a.status !== 200) expect(a.body.code).toBe('not_ready');
    }
    const last = await exchange(0);
    expect(last.status).toBe(200);
    const byJti = new Map(
      [...answers, last]
        .filter((a) => a.status === 200 && 'access_token' in a.body)
        .map((a) => [jtiOf(a.body.access_token as string), a]),
    );
    let current: unknown;
    let checked = 0;
    for (const event of await auditLog()) {
      if (event.target?.id !== id) continue;
      if (event.type === 'policy.created' || event.type === 'policy.updated')
        current = event.details.permissions;
      if (event.type === 'token.exchanged') {
        expect(event.details.permissions).toEqual(current);
        expect(byJti.get(event.details.token_jti as string)?.body.permissions).toEqual(current);
        checked++;
      }
    }
    expect(checked).toBe(byJti.size);
    await admin(0, 'DELETE', `/v1/oidc/policies/${id}`);
  });

  it('deleted while exchanges run: a token only from an exchange committed before the deletion, the others refused', async () => {
    const id = await created('doomed', ['harden-runner:read']);
    const work: Promise<Answer>[] = [];
    let deleted: Promise<Answer> | undefined;
    for (let i = 0; i < 40; i++) {
      work.push(exchange(i));
      if (i === 20) deleted = admin(i + 1, 'DELETE', `/v1/oidc/policies/${id}`);
      if (i % 5 === 0) await tick();
    }
    const answers = await Promise.all(work);
    expect((await deleted!).status).toBe(204);
    for (const a of answers) {
      if (a.status !== 200) expect(a.body.code).toBe('no_matching_policy');
    }
    const events = (await auditLog()).filter((e) => e.target?.id === id);
    const deletion = events.findIndex((e) => e.type === 'policy.deleted');
    expect(events.slice(deletion + 1).filter((e) => e.type === 'token.exchanged')).toEqual([]);
    expect(events.filter((e) => e.type === 'token.exchanged')).toHaveLength(
      answers.filter((a) => a.status === 200).length,
    );
  });

  it('two creates of one name at once through two replicas: one 201, one 409 naming it', async () => {
    for (let round = 0; round < 4; round++) {
      const name = `twin-${round}`;
      const answers = await Promise.all(
        [0, 1].map((i) =>
          admin(round + i, 'POST', '/v1/oidc/policies', policy(name, ['harden-runner:read'])),
        ),
      );
      expect(answers.map((a) => a.status).sort()).toEqual([201, 409]);
      const holder = answers.find((a) => a.status === 201)!.body.policy as { id: string };
      expect(answers.find((a) => a.status === 409)!.body.detail).toContain(holder.id);
      await admin(0, 'DELETE', `/v1/oidc/policies/${holder.id}`);
    }
  });
});

describe('fine-grained keys', () => {
  it('revoked while mints from it run: each mint is 401, or a token the revocation revoked', async () => {
    const { body } = await admin(0, 'POST', '/v1/fine-grained-keys', {
      name: 'minting',
      expiration: '7d',
      permissions: ['harden-runner:read'],
    });
    const { id, key } = body as { id: string; key: string };
    const work: Promise<Answer>[] = [];
    let revoked: Promise<Answer> | undefined;
    for (let i = 0; i < 40; i++) {
      work.push(on(i).request('POST', '/v1/tokens', { key, json: {} }).then(answer));
      if (i === 20) revoked = admin(i + 1, 'DELETE', `/v1/fine-grained-keys/${id}`);
      if (i % 5 === 0) await tick();
    }
    const mints = await Promise.all(work);
    expect((await revoked!).status).toBe(204);
    for (const m of mints) {
      if (m.status !== 201) expect(m.body.code).toBe('unauthenticated');
      else expect(await status(m.body.access_token as string)).toBe(401);
    }
  });
});
