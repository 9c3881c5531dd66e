// Two broker processes on one database behave as one: replay protection and revocation hold across them and
// across a restart, and the exchange refuses a token outside the body over a real socket too.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_KEK } from '../support/broker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { deferred } from '../support/deferred.js';
import { seedTenant } from '../support/federation.js';
import {
  DEFAULT_AUDIENCE,
  GITHUB_ISSUER,
  type LocalIssuer,
  startLocalIssuer,
} from '../support/local-issuer.js';
import { type BrokerProcess, startBrokerProcess } from '../support/process.js';

let db: TestDatabase;
let issuer: LocalIssuer;
let a: BrokerProcess;
let b: BrokerProcess;
let key: string;
let env: Record<string, string>;

beforeAll(async () => {
  db = await createTestDatabase();
  issuer = await startLocalIssuer();
  env = {
    DATABASE_URL: db.url,
    BROKER_KEY_ENCRYPTION_KEY: TEST_KEK,
    BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: issuer.jwksUri }]),
  };
  key = await seedTenant(env, { name: 'acme-corp', audience: DEFAULT_AUDIENCE }, { name: 'infra' });
  [a, b] = await Promise.all([startBrokerProcess(env), startBrokerProcess(env)]);
});
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await issuer?.close();
  await db?.drop();
});

const exchange = (p: BrokerProcess, token: string) =>
  fetch(`${p.url}/v1/oidc/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ oidc_token: token }),
  });

describe('two broker processes on one database', () => {
  it('refuse a token the other one already exchanged', async () => {
    const token = issuer.sign();
    expect((await exchange(a, token)).status).toBe(200);
    const replay = await exchange(b, token);
    expect(replay.status).toBe(401);
    expect(await replay.json()).toMatchObject({ code: 'token_replayed' });
  });

  it('let exactly one of many concurrent exchanges of one token through', async () => {
    const token = issuer.sign();
    const statuses = await Promise.all(
      Array.from({ length: 16 }, (_, i) => exchange(i % 2 ? a : b, token).then((r) => r.status)),
    );
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 401)).toHaveLength(15);
  });

  it('I3 refuse, once restarted, a token exchanged before the restart', async () => {
    const token = issuer.sign();
    expect((await exchange(a, token)).status).toBe(200);
    await a.stop();
    a = await startBrokerProcess(env);
    const replay = await exchange(a, token);
    expect(replay.status).toBe(401);
    expect(await replay.json()).toMatchObject({ code: 'token_replayed' });
  });

  it('I3 refuse, after one is killed mid-load (SIGKILL), every token it answered, each exchange audited', async () => {
    // Whenever the kill lands, a token is answered only once its replay record and audit event are durable.
    const jtis = Array.from({ length: 30 }, (_, i) => `killed-${i}`);
    const answered: string[] = [];
    const someAnswered = deferred();
    const sent = Promise.all(
      jtis.map((jti) =>
        exchange(a, issuer.sign({ jti })).then(
          (res) => {
            if (res.status === 200) answered.push(jti);
            if (answered.length === 5) someAnswered.resolve();
          },
          () => {},
        ),
      ),
    );
    await Promise.race([someAnswered.promise, sent]);
    await a.stop('SIGKILL');
    await sent;
    a = await startBrokerProcess(env);
    expect(answered.length).toBeGreaterThanOrEqual(5);
    // Refused as replays, by the record written before each answer: not merely refused.
    const replays = await Promise.all(
      answered.map(async (jti) => {
        const res = await exchange(a, issuer.sign({ jti }));
        return `${res.status} ${((await res.json()) as { code: string }).code}`;
      }),
    );
    expect(replays).toEqual(answered.map(() => '401 token_replayed'));
    const audited = new Set<string>();
    for (let cursor = ''; ; ) {
      const page = (await (
        await fetch(`${b.url}/v1/audit-events?type=token.exchanged&limit=100&cursor=${cursor}`, {
          headers: { Authorization: `Bearer ${key}` },
        })
      ).json()) as { events: { details: { oidc_jti: string } }[]; next_cursor: string | null };
      for (const event of page.events) audited.add(event.details.oidc_jti);
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    expect(answered.filter((jti) => !audited.has(jti))).toEqual([]);
  });

  it('refuse a token the other one revoked, on the very next request', async () => {
    const { access_token: token } = (await (await exchange(a, issuer.sign())).json()) as {
      access_token: string;
    };
    const whoami = (p: BrokerProcess) =>
      fetch(`${p.url}/v1/whoami`, { headers: { Authorization: `Bearer ${token}` } });
    expect((await whoami(b)).status).toBe(200);
    const revoked = await fetch(`${a.url}/v1/tokens/revoke`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    expect(revoked.status).toBe(200);
    expect((await whoami(b)).status).toBe(401);
    const introspected = await fetch(`${b.url}/v1/tokens/introspect`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    expect(await introspected.json()).toEqual({ active: false });
  });

  it('publish the same signing keys, so either verifies the other’s tokens', async () => {
    const [ja, jb] = await Promise.all(
      [a, b].map(async (p) => (await fetch(`${p.url}/.well-known/jwks.json`)).json()),
    );
    expect(ja).toEqual(jb);
    const { access_token: token } = (await (await exchange(b, issuer.sign())).json()) as {
      access_token: string;
    };
    expect(
      (await fetch(`${a.url}/v1/whoami`, { headers: { Authorization: `Bearer ${token}` } })).status,
    ).toBe(200);
  });
});

/** Sends `request` as written on a socket of its own; resolves to the raw answer. */
function rawExchange(p: BrokerProcess, request: string): Promise<string> {
  const { hostname, port } = new URL(p.url);
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = connect(Number(port), hostname, () => socket.end(request));
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString();
    });
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
  });
}

describe('the exchange over a real socket', () => {
  // Node keeps one of two Authorization headers, where an in-process request joins them: refused either way.
  it.each([
    [
      'two Authorization headers',
      '/v1/oidc/token',
      (t: string) => `Authorization: Bearer ${t}\r\nAuthorization: Bearer x\r\n`,
    ],
    ['an absolute-form target with a query', 'http://broker.example/v1/oidc/token?oidc_token=x', () => ''],
  ])('H8/H9 refuses a token with %s, and mints nothing', async (_, target, extra) => {
    const token = issuer.sign();
    const body = JSON.stringify({ oidc_token: token });
    const answer = await rawExchange(
      a,
      `POST ${target} HTTP/1.1\r\nHost: broker.test\r\n${extra(token)}Content-Type: application/json\r\n` +
        `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('"code":"invalid_request"');
    expect(answer).not.toContain(token.split('.')[2]);
    // The token itself is still fresh: nothing used it up.
    expect((await exchange(b, token)).status).toBe(200);
  });
});
