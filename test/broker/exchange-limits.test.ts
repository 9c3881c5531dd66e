// Exchange rate limiting (429 with Retry-After) and the upkeep that forgets expired replay records.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Federation, startFederation } from '../support/federation.js';
import { GITHUB_ISSUER } from '../support/local-issuer.js';

const GHES = 'https://ghe.example.com/_services/token';

let f: Federation;
beforeAll(async () => {
  f = await startFederation({
    env: { BROKER_RATE_LIMIT_PER_MINUTE: '60', BROKER_RATE_LIMIT_BURST: '2' },
    alsoTrusted: [GHES],
  });
  await f.policy('infra');
  await f.policy('web', { claims: { repository: 'acme/web' } });
});
afterAll(() => f.close());

describe('rate limiting', () => {
  it('answers 429 with Retry-After once a repository exceeds its budget, and recovers', async () => {
    expect((await f.exchange(f.issuer.sign())).status).toBe(200);
    expect((await f.exchange(f.issuer.sign())).status).toBe(200);
    const limited = await f.exchange(f.issuer.sign());
    expect(limited.status).toBe(429);
    expect(limited.headers.get('Retry-After')).toBe('1');
    expect(await limited.json()).toMatchObject({ code: 'rate_limited', retry_after_seconds: 1 });
    // Another repository has its own budget.
    const web = f.issuer.sign({
      repository: 'acme/web',
      job_workflow_ref: 'acme/web/.github/workflows/ci.yml@refs/heads/main',
    });
    expect((await f.exchange(web)).status).toBe(200);
    f.t.clock.now += 1000;
    expect((await f.exchange(f.issuer.sign())).status).toBe(200);
  });

  it("a repository of the same name on another issuer has a budget of its own: it cannot use up github.com's", async () => {
    f.t.clock.now += 60_000;
    for (let i = 0; i < 4; i++) {
      const ghes = await f.exchange(f.issuer.sign({ iss: GHES }));
      expect(ghes.status).toBe(i < 2 ? 403 : 429);
    }
    expect((await f.exchange(f.issuer.sign())).status).toBe(200);
  });

  it('a refused request does not consume the token: it can be retried after Retry-After', async () => {
    f.t.clock.now += 60_000;
    await f.exchange(f.issuer.sign());
    await f.exchange(f.issuer.sign());
    const token = f.issuer.sign();
    expect((await f.exchange(token)).status).toBe(429);
    f.t.clock.now += 1000;
    expect((await f.exchange(token)).status).toBe(200);
  });
  it('a run of refusals is audited once, when it starts: the admins see it, and a flood writes one row', async () => {
    const limitedEvents = async () =>
      (
        (await (
          await f.t.request('GET', '/v1/audit-events?type=token.exchange_denied&limit=100', { key: f.key })
        ).json()) as {
          events: { details: { reason?: string; repository?: string; retry_after_seconds?: number } }[];
        }
      ).events.filter((e) => e.details.reason === 'rate_limited');
    f.t.clock.now += 60_000;
    const before = (await limitedEvents()).length;
    for (let i = 0; i < 2; i++) expect((await f.exchange(f.issuer.sign())).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await f.exchange(f.issuer.sign())).status).toBe(429);
    const first = await limitedEvents();
    expect(first).toHaveLength(before + 1);
    expect(first[0]?.details).toMatchObject({ repository: 'acme/infra', retry_after_seconds: 1 });
    // Once an exchange has been granted again, the next refusal starts a new run.
    f.t.clock.now += 1000;
    expect((await f.exchange(f.issuer.sign())).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await f.exchange(f.issuer.sign())).status).toBe(429);
    expect(await limitedEvents()).toHaveLength(before + 2);
  });

  it('a repository sending at twice the rate writes at most twice the rate in audit rows, half of them rate_limited', async () => {
    f.t.clock.now += 60_000;
    const claims = {
      repository: 'acme/x',
      job_workflow_ref: 'acme/x/.github/workflows/x.yml@refs/heads/main',
    };
    const statuses: number[] = [];
    // The budget is 60 a minute, bursts of 2: two a second for 30 s, each second's first granted (and denied).
    for (let second = 0; second < 30; second++) {
      for (let i = 0; i < 2; i++) statuses.push((await f.exchange(f.issuer.sign(claims))).status);
      f.t.clock.now += 1000;
    }
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(20);
    const rows = (
      (await (
        await f.t.request('GET', '/v1/audit-events?type=token.exchange_denied&limit=200', { key: f.key })
      ).json()) as { events: { details: { reason?: string; repository?: string } }[] }
    ).events.filter((e) => e.details.repository === 'acme/x');
    // More rows than the rate: each granted exchange ends a run, and the next refusal starts one.
    expect(rows.length).toBeGreaterThan(30 + 2);
    expect(rows.length).toBeLessThanOrEqual(2 * 30 + 2);
    const limited = rows.filter((e) => e.details.reason === 'rate_limited').length;
    expect(limited).toBeGreaterThan(20);
    expect(rows.length - limited).toBeLessThanOrEqual(30 + 2);
  });

  it("a token for another audience cannot flood a tenant's audit log: its denials share the repository budget", async () => {
    f.t.clock.now += 60_000;
    const foreign = f.issuer.sign({ aud: 'attacker-chosen.example' });
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await f.exchange(foreign, { tenant: 'acme-corp' })).status);
    expect(statuses.slice(0, 2)).toEqual([401, 401]);
    expect(new Set(statuses.slice(2))).toEqual(new Set([429]));
    const events = (await (
      await f.t.request('GET', '/v1/audit-events?type=token.exchange_denied&limit=100', { key: f.key })
    ).json()) as { events: { details: { reason?: string; audience?: string } }[] };
    expect(events.events.filter((e) => e.details.audience === 'attacker-chosen.example')).toHaveLength(2);
    // The eight refusals that followed are one run: one row.
    expect(events.events[0]?.details).toMatchObject({ reason: 'rate_limited' });
    expect(events.events[1]?.details).toMatchObject({ audience: 'attacker-chosen.example' });
  });
});

describe('upkeep', () => {
  it('forgets replay records only after the token they guard has expired', async () => {
    f.t.clock.now += 60_000;
    const token = f.issuer.sign();
    expect((await f.exchange(token)).status).toBe(200);
    await f.t.broker.maintain();
    expect((await f.exchange(token)).status).toBe(401);
    // Gone once the token is past its leeway and the margin that covers replicas' clock skew.
    f.t.clock.now += 15 * 60_000;
    await f.t.broker.maintain();
    expect(f.t.logs.some((l) => l.includes('purged expired replay and revocation records'))).toBe(true);
    // The record is gone (the pair can be recorded anew), and the token is refused for having expired.
    const { jti } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string };
    const late = await f.exchange(token);
    expect(await late.json()).toMatchObject({
      code: 'invalid_token',
      detail: expect.stringContaining('expired'),
    });
    const event = {
      tenantId: f.tenantId,
      type: 'test',
      outcome: 'success' as const,
      actor: { kind: 'test', id: 't' },
    };
    const [policy] = await f.t.broker.store.policies.list(f.tenantId);
    const fresh = await f.t.broker.store.tokens.recordExchange(
      { issuer: GITHUB_ISSUER, jti, expiresAt: 0 },
      { fresh: event, replayed: event },
      f.t.clock.now,
      { id: policy!.id, updatedAt: policy!.updatedAt },
    );
    expect(fresh).toBe(true);
  });
});
