// Issuer signing keys behind POST /v1/oidc/token: outages, rotation, unknown-kid floods and hanging key sets.
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type Federation, startFederation } from '../support/federation.js';
import type { ServeMode } from '../support/local-issuer.js';

const open: Federation[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((f) => f.close()));
});

/** A broker with policy `infra`; keys fetched once when `warm`. */
async function federation(warm: boolean): Promise<Federation> {
  const f = await startFederation();
  open.push(f);
  await f.policy('infra');
  if (warm) {
    expect((await f.exchange(f.issuer.sign())).status).toBe(200);
    expect(f.issuer.jwksRequests).toBe(1);
  }
  return f;
}

async function outcome(f: Federation, token: string) {
  const res = await f.exchange(token);
  const text = await res.text();
  return { status: res.status, code: (JSON.parse(text) as { code?: string }).code, text };
}

const payloadIssuer = (f: Federation): string =>
  JSON.parse(Buffer.from(f.issuer.sign().split('.')[1]!, 'base64url').toString()).iss;

const withKid = (f: Federation, kid: string) => f.issuer.sign({}, { key: 'attacker', header: { kid } });

describe('issuer outages', () => {
  it('with cached keys, exchanges keep working while the issuer fails, even once the cache is stale', async () => {
    const f = await federation(true);
    f.issuer.serve('fail');
    f.t.clock.now += 11 * 60_000;
    expect((await outcome(f, f.issuer.sign())).status).toBe(200);
    expect((await outcome(f, f.issuer.sign())).status).toBe(200);
    // The stale cache was refreshed in the background, once (the second exchange fell in the cooldown), and
    // that refresh failed.
    await vi.waitFor(() => expect(f.issuer.jwksRequests).toBe(2));
    // A kid the cache does not hold cannot be told from a key the issuer rotated in while it was down: the
    // broker says it cannot verify now (503, which the action retries), not that the token is forged.
    f.t.clock.now += 31_000;
    const unknown = await outcome(f, withKid(f, 'new-key'));
    expect(unknown).toMatchObject({ status: 503, code: 'issuer_unavailable' });
    expect(unknown.text).toContain("signing key 'new-key' is not among the cached keys");
    expect(f.issuer.jwksRequests).toBe(3);
    // Within the cooldown nothing is fetched, and the answer stays the same.
    expect(await outcome(f, withKid(f, 'other-key'))).toMatchObject({
      status: 503,
      code: 'issuer_unavailable',
    });
    expect(f.issuer.jwksRequests).toBe(3);
  });

  it('/metrics counts failed fetches of the issuer keys by issuer and reason, though exchanges go on with cached keys', async () => {
    const f = await federation(true);
    const failures = async () =>
      [
        ...(await (await f.t.request('GET', '/metrics')).text()).matchAll(
          /^issuer_key_fetch_failures_total\{issuer="([^"]+)",reason="([^"]+)"\} (\d+)$/gm,
        ),
      ].map(([, issuer, reason, count]) => ({ issuer, reason, count: Number(count) }));
    // Every kind of failure is there from the start at 0, so that the first one is an increase an alert sees.
    const before = await failures();
    expect(before.map((s) => s.reason)).toEqual(
      expect.arrayContaining(['network', 'timeout', 'http_status']),
    );
    expect(before.every((s) => s.issuer === payloadIssuer(f) && s.count === 0)).toBe(true);
    f.issuer.serve('fail');
    f.t.clock.now += 11 * 60_000;
    // Nothing a client sees: only the log said so, and an alert could not.
    expect((await outcome(f, f.issuer.sign())).status).toBe(200);
    await vi.waitFor(() => expect(f.issuer.jwksRequests).toBe(2));
    await vi.waitFor(async () =>
      expect((await failures()).filter((s) => s.count > 0)).toEqual([
        { issuer: payloadIssuer(f), reason: expect.stringMatching(/^\w+$/), count: 1 },
      ]),
    );
    expect(await failures()).toHaveLength(before.length);
  });

  it('once the issuer answers again, an unknown kid is an unknown key again: 401', async () => {
    const f = await federation(true);
    f.issuer.serve('fail');
    f.t.clock.now += 31_000;
    expect(await outcome(f, withKid(f, 'new-key'))).toMatchObject({
      status: 503,
      code: 'issuer_unavailable',
    });
    f.issuer.serve('ok');
    f.t.clock.now += 31_000;
    expect(await outcome(f, withKid(f, 'new-key'))).toMatchObject({ status: 401, code: 'invalid_token' });
    expect(f.issuer.jwksRequests).toBe(3);
    // Within the cooldown after a good fetch, still a refusal, without a fetch.
    expect(await outcome(f, withKid(f, 'another-key'))).toMatchObject({ status: 401, code: 'invalid_token' });
    expect(f.issuer.jwksRequests).toBe(3);
  });

  for (const mode of ['fail', 'oversized', 'redirect'] as const satisfies ServeMode[]) {
    it(`B15 a ${mode} refetch keeps the cached keys; the new kid is refused as unverifiable for now`, async () => {
      const f = await federation(true);
      const old = f.issuer.current;
      f.issuer.rotate({ keepOld: true });
      f.issuer.serve(mode);
      f.t.clock.now += 31_000;
      const refused = await outcome(f, f.issuer.sign());
      expect(refused).toMatchObject({ status: 503, code: 'issuer_unavailable' });
      expect(refused.text).not.toContain('access_token');
      expect(f.issuer.jwksRequests).toBe(2);
      const oldToken = f.issuer.sign({}, { key: old.privateKey, header: { kid: old.kid } });
      expect((await outcome(f, oldToken)).status).toBe(200);
      expect(f.issuer.requests).not.toContain('/redirected-jwks');
    });
  }

  it('never fetched and the issuer down: 503 issuer_unavailable, nothing used up, fine once it is back', async () => {
    const f = await federation(false);
    f.issuer.serve('fail');
    const token = f.issuer.sign();
    const down = await outcome(f, token);
    expect(down).toMatchObject({ status: 503, code: 'issuer_unavailable' });
    expect(down.text).not.toContain('access_token');
    expect(down.text).not.toContain(f.issuer.url);
    f.issuer.serve('ok');
    f.t.clock.now += 31_000;
    expect((await outcome(f, token)).status).toBe(200);
  });
});

describe('Retry-After of issuer_unavailable', () => {
  it('says when the broker will next try the issuer: a retry before then cannot succeed', async () => {
    const f = await federation(false);
    f.issuer.serve('fail');
    const down = await f.exchange(f.issuer.sign());
    expect(down.status).toBe(503);
    // The failed fetch starts the 30 s cooldown, in which no retry fetches the keys.
    expect(down.headers.get('Retry-After')).toBe('30');
    f.t.clock.now += 20_500;
    const later = await f.exchange(f.issuer.sign());
    expect(later.status).toBe(503);
    expect(later.headers.get('Retry-After')).toBe('10');
    expect(f.issuer.jwksRequests).toBe(1);
    // The dry run refuses a token it cannot verify in the same way.
    const dryRun = await f.t.request('POST', '/v1/oidc/policies/evaluate', {
      key: f.key,
      json: { oidc_token: f.issuer.sign() },
    });
    expect(dryRun.status).toBe(503);
    expect(dryRun.headers.get('Retry-After')).toBe('10');
  });

  it('a broker clock stepped back an hour neither says to retry in an hour nor waits that long to ask again', async () => {
    const f = await federation(false);
    f.issuer.serve('fail');
    expect((await f.exchange(f.issuer.sign())).status).toBe(503);
    f.issuer.serve('ok');
    f.t.clock.now -= 3_600_000;
    expect((await outcome(f, f.issuer.sign())).status).toBe(200);
    expect(f.issuer.jwksRequests).toBe(2);
  });
});

describe('rotation', () => {
  it("the first token with the issuer's new kid triggers one refetch and is exchanged", async () => {
    const f = await federation(true);
    const old = f.issuer.current;
    f.t.clock.now += 31_000;
    f.issuer.rotate();
    expect((await outcome(f, f.issuer.sign())).status).toBe(200);
    expect(f.issuer.jwksRequests).toBe(2);
    expect((await outcome(f, f.issuer.sign())).status).toBe(200);
    expect(f.issuer.jwksRequests).toBe(2);
    // The refetched set replaced the cache: the withdrawn key verifies nothing any more.
    const withdrawn = f.issuer.sign({}, { key: old.privateKey, header: { kid: old.kid } });
    expect(await outcome(f, withdrawn)).toMatchObject({ status: 401, code: 'invalid_token' });
  });
});

describe('unknown-kid floods', () => {
  it('at most one refetch per 30 s cooldown, and genuine tokens keep working throughout', async () => {
    const f = await federation(true);
    f.t.clock.now += 30_000;
    for (let window = 1; window <= 3; window++) {
      const before = f.issuer.jwksRequests;
      // Three batches 10 s apart, one after another: a fetch shared by concurrent requests cannot hide a
      // missing cooldown.
      for (let batch = 0; batch < 3; batch++) {
        const flood = Array.from({ length: 100 }, () => withKid(f, randomBytes(8).toString('hex')));
        const results = await Promise.all([...flood, f.issuer.sign()].map((t) => outcome(f, t)));
        expect(results.pop()?.status).toBe(200);
        for (const r of results) expect(r).toMatchObject({ status: 401, code: 'invalid_token' });
        f.t.clock.now += 10_000;
      }
      expect(f.issuer.jwksRequests - before).toBeLessThanOrEqual(1);
    }
  });
});

describe('hanging key sets', () => {
  it('a hanging or trickling key set ends in 503 once the 5 s fetch timeout passes, not later', async () => {
    const modes = ['hang', 'slow-body'] as const;
    const brokers = await Promise.all(modes.map(() => federation(false)));
    const started = performance.now();
    const results = await Promise.all(
      brokers.map((f, i) => {
        f.issuer.serve(modes[i]!);
        return outcome(f, f.issuer.sign());
      }),
    );
    for (const r of results) expect(r).toMatchObject({ status: 503, code: 'issuer_unavailable' });
    // Real time: the fetch deadline is a real timer, the test clock only drives cache ages.
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(4_500);
    expect(elapsed).toBeLessThan(10_000);
  }, 20_000);

  it('with cached keys, a hanging refresh of a stale cache does not hold up the exchange', async () => {
    const f = await federation(true);
    f.issuer.serve('hang');
    f.t.clock.now += 11 * 60_000;
    const started = performance.now();
    expect((await outcome(f, f.issuer.sign())).status).toBe(200);
    expect(performance.now() - started).toBeLessThan(4_000);
    // The refresh was really started (and is the one left hanging).
    await vi.waitFor(() => expect(f.issuer.jwksRequests).toBe(2));
  });
});
