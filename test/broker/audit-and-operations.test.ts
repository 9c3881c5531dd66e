// The audit log's paging and filtering, and the operational endpoints: health, readiness, metrics.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { METHODS } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replaceSigningKeys } from '../../broker/core/signing-keys.js';
import { createMetrics } from '../../broker/metrics.js';
import { AUDIT_EVENT_TYPES } from '../../broker/store/store.js';
import { startTestBroker, TEST_KEK, type TestBroker } from '../support/broker.js';
import { createPolicy } from '../support/federation.js';

const TEST_KEK_BYTES = Buffer.from(TEST_KEK, 'hex');

let t: TestBroker;
let key: string;

beforeAll(async () => {
  t = await startTestBroker();
  key = (await t.createTenant('acme')).key;
  for (let i = 0; i < 5; i++) {
    await t.request('POST', '/v1/fine-grained-keys', {
      key,
      json: { name: `key-${i}`, expiration: '7d', permissions: ['audit-log:read'] },
    });
  }
});
afterAll(() => t.close());

type Page = {
  events: { id: string; type: string; target: { name: string } | null }[];
  next_cursor: string | null;
};
const page = async (query: string): Promise<Page> =>
  (await (await t.request('GET', `/v1/audit-events${query}`, { key })).json()) as Page;

describe('GET /v1/audit-events', () => {
  it('pages newest first with an opaque cursor until the last page', async () => {
    const names: (string | undefined)[] = [];
    let cursor: string | null = '';
    let pages = 0;
    while (cursor !== null) {
      const p: Page = await page(`?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      names.push(...p.events.map((e) => e.target?.name));
      cursor = p.next_cursor;
      pages++;
    }
    expect(pages).toBe(3);
    expect(names).toEqual(['key-4', 'key-3', 'key-2', 'key-1', 'key-0', 'acme']);
  });

  it('filters by type', async () => {
    const p = await page('?type=tenant.created');
    expect(p.events.map((e) => e.type)).toEqual(['tenant.created']);
    expect(p.next_cursor).toBeNull();
  });

  it('takes an empty parameter, as a URL template leaves it, for an absent one', async () => {
    const first = await page('?type=&limit=&cursor=');
    expect(first.events.map((e) => e.target?.name)).toEqual([
      'key-4',
      'key-3',
      'key-2',
      'key-1',
      'key-0',
      'acme',
    ]);
    expect(first.next_cursor).toBeNull();
    const second = await page(`?type=&limit=2&cursor=${(await page('?limit=2')).next_cursor}`);
    expect(second.events.map((e) => e.target?.name)).toEqual(['key-2', 'key-1']);
  });

  it('a type no event has is a 400 listing the types, so a typo does not read as an empty log', async () => {
    const res = await t.request('GET', '/v1/audit-events?type=token.exchange_refused', { key });
    expect(res.status).toBe(400);
    const problem = (await res.json()) as { errors: { field: string; message: string }[] };
    expect(problem.errors).toEqual([
      { field: 'type', message: expect.stringContaining('token.exchange_denied') },
    ]);
  });

  it('a misspelt filter is a 400 naming it, not every event unfiltered', async () => {
    // Sent twice, it is still the parameter this operation does not take.
    const res = await t.request('GET', '/v1/audit-events?types=policy.created&limit=5&types=x', { key });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      errors: [
        {
          field: 'types',
          message: 'unknown query parameter; this operation takes type, outcome, since, until, limit, cursor',
        },
      ],
    });
  });

  it('accepts every type the README documents, and documents every type it accepts', async () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const table = readme.slice(readme.indexOf('| type | recorded when |'), readme.indexOf('### Error codes'));
    const documented = [...table.matchAll(/`([a-z_]+\.[a-z_]+)`/g)].map((m) => m[1]!);
    expect(new Set(documented)).toEqual(new Set(AUDIT_EVENT_TYPES));
    for (const type of documented) {
      expect((await t.request('GET', `/v1/audit-events?type=${type}`, { key })).status).toBe(200);
    }
  });

  it("a cursor of another tenant's log, or one made up, is a 400 naming cursor rather than a page from elsewhere", async () => {
    const other = await t.createTenant('other-log');
    await t.request('POST', '/v1/fine-grained-keys', {
      key: other.key,
      json: { name: 'theirs', expiration: '7d', permissions: ['audit-log:read'] },
    });
    const theirs = await (await t.request('GET', '/v1/audit-events?limit=1', { key: other.key })).json();
    const ownCursor = (await page('?limit=2')).next_cursor!;
    const ownId = Number(Buffer.from(ownCursor, 'base64url').toString().slice(1));
    const madeUp = Buffer.from(`e${ownId + 1_000_000}`).toString('base64url');
    for (const cursor of [(theirs as Page).next_cursor!, madeUp, `${ownCursor}=`, `${ownCursor}!`]) {
      const res = await t.request('GET', `/v1/audit-events?cursor=${encodeURIComponent(cursor)}`, { key });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [{ field: 'cursor', message: expect.stringContaining('next_cursor') }],
      });
    }
  });

  it.each([
    ['?limit=0', 'limit', 'must be a whole number from 1 to 200'],
    ['?limit=abc', 'limit', 'must be a whole number from 1 to 200'],
    ['?limit=201', 'limit', 'must be a whole number from 1 to 200'],
    ['?limit=2.5', 'limit', 'must be a whole number from 1 to 200'],
    // Written as a number literal, not as the whole number it stands for: read strictly, never 16 or 100.
    ['?limit=0x10', 'limit', 'must be a whole number from 1 to 200'],
    ['?limit=1e2', 'limit', 'must be a whole number from 1 to 200'],
    ['?limit=+5', 'limit', 'must be a whole number from 1 to 200'],
    ['?limit=%205', 'limit', 'must be a whole number from 1 to 200'],
    ['?cursor=bm9wZQ', 'cursor', 'not a cursor this endpoint returned'],
    [`?cursor=${'x'.repeat(33)}`, 'cursor', 'not a cursor this endpoint returned'],
    ['?type=DROP%20TABLE', 'type', 'must be one of'],
    ['?limit=2&limit=3', 'limit', 'sent more than once: send each parameter once'],
    ['?type=tenant.created&type=policy.created', 'type', 'sent more than once: send each parameter once'],
  ])('%s is a 400 naming %s: %s', async (query, field, message) => {
    const res = await t.request('GET', `/v1/audit-events${query}`, { key });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      errors: [{ field, message: expect.stringContaining(message) }],
    });
  });
});

describe("every event a request records carries that request's id", () => {
  it('key, policy and token changes: details.request_id is the X-Request-Id of the answer', async () => {
    const { key: own } = await t.createTenant('changes');
    const policy = {
      name: 'deploy',
      claims: { repository: 'acme/app', ref: 'refs/heads/main' },
      permissions: ['harden-runner:read'],
    };
    const fineGrained = { name: 'ci', expiration: '7d', permissions: ['audit-log:read'] };
    const answers = [
      await t.request('POST', '/v1/oidc/policies', { key: own, json: policy }),
      await t.request('POST', '/v1/fine-grained-keys', { key: own, json: fineGrained }),
      await t.request('POST', '/v1/tokens', { key: own }),
      await t.request('POST', '/v1/api-keys/tenant/secondary/rotate', { key: own }),
    ];
    const { id: keyId } = (await answers[1]!.clone().json()) as { id: string };
    const { access_token: token } = (await answers[2]!.clone().json()) as { access_token: string };
    answers.push(
      await t.request('DELETE', `/v1/fine-grained-keys/${keyId}`, { key: own }),
      await t.request('POST', '/v1/tokens/revoke', {
        key: own,
        body: new URLSearchParams({ token }).toString(),
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      }),
    );
    for (const answer of answers) expect(answer.status).toBeLessThan(300);
    const { events } = (await (await t.request('GET', '/v1/audit-events', { key: own })).json()) as {
      events: { type: string; details: { request_id?: string } }[];
    };
    const byType = new Map(events.map((e) => [e.type, e.details.request_id]));
    const types = [
      'policy.created',
      'fine_grained_key.created',
      'token.minted',
      'api_key.rotated',
      'fine_grained_key.revoked',
      'token.revoked',
    ];
    expect(types.map((type) => byType.get(type))).toEqual(answers.map((a) => a.headers.get('X-Request-Id')));
    // The operator's CLI made the tenant: no request, no id.
    expect(byType.get('tenant.created')).toBeUndefined();
  });
});

describe('GET /v1/audit-events by time and outcome', () => {
  // "My deploy was denied at 02:14 (Paris)": the events of those minutes, or the refusals only, without paging
  // through everything recorded since.
  let night: TestBroker;
  let nightKey: string;
  const at = (time: string) => Date.parse(time);
  beforeAll(async () => {
    night = await startTestBroker({ clock: { now: at('2026-11-27T01:10:00Z') } });
    nightKey = (await night.createTenant('night')).key;
    night.clock.now = at('2026-11-27T01:12:00Z');
    const reader = (await (
      await night.request('POST', '/v1/fine-grained-keys', {
        key: nightKey,
        json: { name: 'reader', expiration: '7d', permissions: ['audit-log:read'] },
      })
    ).json()) as { key: string };
    night.clock.now = at('2026-11-27T01:14:00Z');
    expect((await night.request('GET', '/v1/api-keys', { key: reader.key })).status).toBe(403);
    night.clock.now = at('2026-11-27T01:20:00Z');
    await night.request('POST', '/v1/fine-grained-keys', {
      key: nightKey,
      json: { name: 'later', expiration: '7d', permissions: ['audit-log:read'] },
    });
  });
  afterAll(() => night.close());

  type Listed = { events: { type: string; time: string }[]; next_cursor: string | null };
  const list = async (query: string) => {
    const res = await night.request('GET', `/v1/audit-events${query}`, { key: nightKey });
    return { status: res.status, body: (await res.json()) as Listed & { errors?: unknown } };
  };
  const types = async (query: string) => {
    const { status, body } = await list(query);
    expect(status, JSON.stringify(body)).toBe(200);
    return body.events.map((e) => e.type);
  };

  it('since and until take RFC 3339 times with an offset, both ends included', async () => {
    expect(
      await types(`?since=${encodeURIComponent('2026-11-27T02:13:00+01:00')}&until=2026-11-27T01:14:00Z`),
    ).toEqual(['permission.denied']);
    expect(await types('?until=2026-11-27T02:12:00%2B01:00')).toEqual([
      'fine_grained_key.created',
      'tenant.created',
    ]);
    expect(await types('?since=2026-11-27T01:14:00.001Z')).toEqual(['fine_grained_key.created']);
  });

  it("an offset's + left unencoded in the URL, which arrives as a space, is still that offset", async () => {
    expect(await types('?since=2026-11-27T02:13:00+01:00&until=2026-11-27T02:15:00+01:00')).toEqual([
      'permission.denied',
    ]);
  });

  it('outcome=denied lists the refusals only, and combines with the other filters', async () => {
    expect(await types('?outcome=denied')).toEqual(['permission.denied']);
    expect(await types('?outcome=success&until=2026-11-27T01:13:00Z')).toEqual([
      'fine_grained_key.created',
      'tenant.created',
    ]);
    expect(await types('?outcome=denied&type=token.exchange_denied')).toEqual([]);
  });

  it('the filters hold on every page, and a new event does not shift a page already begun', async () => {
    const first = await list('?until=2026-11-27T01:15:00Z&limit=2');
    expect(first.body.events.map((e) => e.type)).toEqual(['permission.denied', 'fine_grained_key.created']);
    night.clock.now = at('2026-11-27T01:30:00Z');
    await night.request('POST', '/v1/fine-grained-keys', {
      key: nightKey,
      json: { name: 'meanwhile', expiration: '7d', permissions: ['audit-log:read'] },
    });
    const second = await list(`?until=2026-11-27T01:15:00Z&limit=2&cursor=${first.body.next_cursor}`);
    expect(second.body).toMatchObject({ events: [{ type: 'tenant.created' }], next_cursor: null });
  });

  it.each([
    ['?since=yesterday', 'since'],
    // A time without an offset is a different moment in every time zone: refused rather than guessed at.
    ['?until=2026-11-27T02:14:00', 'until'],
    ['?since=2026-02-30T00:00:00Z', 'since'],
    ['?since=1764206040', 'since'],
    ['?outcome=refused', 'outcome'],
  ])('%s is a 400 naming %s', async (query, field) => {
    const { status, body } = await list(query);
    expect(status).toBe(400);
    expect(body).toMatchObject({ code: 'invalid_request', errors: [{ field }] });
  });

  it("RFC 3339's lower-case t and z are the same time", async () => {
    expect(await types('?since=2026-11-27t01:14:00z&until=2026-11-27t02:14:59%2B01:00')).toEqual([
      'permission.denied',
    ]);
  });

  it('a space between date and time, as `date --rfc-3339=seconds` writes, is the T RFC 3339 allows it for', async () => {
    expect(await types('?since=2026-11-27%2001:14:00%2B00:00&until=2026-11-27 02:14:59 01:00')).toEqual([
      'permission.denied',
    ]);
    // Still no offset: told so, not that the date is wrong.
    const { status, body } = await list('?since=2026-11-27%2002:14');
    expect(status).toBe(400);
    expect((body as { errors: { message: string }[] }).errors[0]?.message).toMatch(/without one/);
  });

  it.each([
    ['?since=2026-02-30T00:00:00Z', 'since'],
    ['?until=2026-11-27T02:14Z', 'until'],
    ['?since=2026-11-27T02:14:00%2B0100', 'since'],
  ])(
    '%s, which has an offset, is refused as no date and time, not for a missing offset',
    async (query, field) => {
      const { status, body } = await list(query);
      expect(status).toBe(400);
      const message = (body as { errors?: { field: string; message: string }[] }).errors?.[0];
      expect(message?.field).toBe(field);
      expect(message?.message).toMatch(/RFC 3339/);
      expect(message?.message).not.toMatch(/without one/);
    },
  );

  it('a time without an offset is refused saying so', async () => {
    const { body } = await list('?until=2026-11-27T02:14:00');
    expect((body as { errors?: { message: string }[] }).errors?.[0]?.message).toMatch(
      /without one it would be a different moment/,
    );
  });

  it('since after until is a 400 naming both, not an empty log', async () => {
    const { status, body } = await list('?since=2026-11-27T02:00:00Z&until=2026-11-27T01:00:00Z');
    expect(status).toBe(400);
    expect(body).toMatchObject({ code: 'invalid_request', errors: [{ field: 'since' }] });
  });
});

describe('GET /v1/audit-events in the order the events were recorded', () => {
  // The events of one tenant as replicas record them: several in one millisecond, and some written after later
  // ones, by a replica whose clock runs behind or by a request slow to commit.
  const T = Date.parse('2026-11-28T01:00:00Z');
  const MIN = 60_000;
  const written: { n: number; at: number; type: string; outcome: 'success' | 'denied' }[] = [
    [5, 'token.exchanged'],
    [5, 'token.exchange_denied'],
    [9, 'token.exchanged'],
    [2, 'permission.denied'],
    [5, 'token.exchanged'],
    [14, 'token.exchange_denied'],
    [1, 'token.exchanged'],
    [9, 'policy.created'],
    [7, 'token.exchange_denied'],
    [14, 'token.exchanged'],
    [3, 'token.exchanged'],
    [9, 'permission.denied'],
  ].map(([minute, type], n) => ({
    n,
    at: T + (minute as number) * MIN,
    type: type as string,
    outcome: (type as string).endsWith('denied') ? 'denied' : 'success',
  }));
  let b: TestBroker;
  let own: string;
  beforeAll(async () => {
    b = await startTestBroker({ clock: { now: T - 60 * MIN } });
    const created = await b.createTenant('replicas');
    own = created.key;
    for (const e of written)
      await b.broker.store.audit.append(
        {
          tenantId: created.tenant.id,
          type: e.type,
          outcome: e.outcome,
          actor: { kind: 'workflow', id: 'repo:acme/infra:ref:refs/heads/main' },
          details: { n: e.n },
        },
        e.at,
      );
  });
  afterAll(() => b.close());

  type Listed = { events: { time: string; details: { n?: number } }[]; next_cursor: string | null };
  /** Every page of the query, by cursor: the events' `n` (undefined for tenant.created), in the order listed. */
  const pages = async (query: string, limit: number) => {
    const listed: (number | undefined)[] = [];
    let cursor: string | null = null;
    do {
      const res = await b.request(
        'GET',
        `/v1/audit-events?limit=${limit}${query}${cursor ? `&cursor=${cursor}` : ''}`,
        { key: own },
      );
      expect(res.status).toBe(200);
      const page = (await res.json()) as Listed;
      listed.push(...page.events.map((e) => e.details.n));
      cursor = page.next_cursor;
    } while (cursor !== null);
    return listed;
  };

  it('lists newest first by the time recorded: an event written after a later one is listed below it', async () => {
    const res = await b.request('GET', '/v1/audit-events?limit=200', { key: own });
    const { events } = (await res.json()) as Listed;
    expect(events.map((e) => e.details.n)).toEqual([9, 5, 11, 7, 2, 8, 4, 1, 0, 10, 3, 6, undefined]);
    const times = events.map((e) => Date.parse(e.time));
    expect(times).toEqual([...times].sort((x, y) => y - x));
  });

  const filters = {
    type: [undefined, 'token.exchanged', 'token.exchange_denied', 'policy.created'],
    outcome: [undefined, 'denied', 'success'],
    since: [undefined, T + 5 * MIN],
    until: [undefined, T + 9 * MIN],
  };
  const combinations = filters.type.flatMap((type) =>
    filters.outcome.flatMap((outcome) =>
      filters.since.flatMap((since) => filters.until.map((until) => ({ type, outcome, since, until }))),
    ),
  );

  it.each([1, 2, 5])(
    'pages of %i with every combination of the filters list each event once, in that order',
    async (limit) => {
      for (const { type, outcome, since, until } of combinations) {
        const query = [
          type && `&type=${type}`,
          outcome && `&outcome=${outcome}`,
          since && `&since=${new Date(since).toISOString()}`,
          until && `&until=${new Date(until).toISOString()}`,
        ].join('');
        const expected = written
          .filter(
            (e) =>
              (type === undefined || e.type === type) &&
              (outcome === undefined || e.outcome === outcome) &&
              (since === undefined || e.at >= since) &&
              (until === undefined || e.at <= until),
          )
          .sort((x, y) => y.at - x.at || y.n - x.n)
          .map((e) => e.n);
        // The tenant's creation, an hour before them all: listed last, unless a filter leaves it out.
        const created = type === undefined && outcome !== 'denied' && since === undefined;
        expect(await pages(query, limit), query).toEqual(created ? [...expected, undefined] : expected);
      }
    },
  );
});

describe("a periodic export, as the README's Audit log section describes it", () => {
  it('misses no event committed while it paged, even one with a smaller id than a later page holds', async () => {
    const T = Date.parse('2026-11-28T01:00:00Z');
    const b = await startTestBroker({ clock: { now: T - 3_600_000 } });
    try {
      const { tenant, key: own } = await b.createTenant('exporter');
      const record = (n: number, at: number) =>
        b.broker.store.audit.append(
          {
            tenantId: tenant.id,
            type: 'token.exchanged',
            outcome: 'success',
            actor: { kind: 'workflow', id: 'repo:acme/infra:ref:refs/heads/main' },
            details: { n },
          },
          at,
        );
      for (let n = 0; n < 4; n++) await record(n, T + n * 1000);
      type Listed = {
        events: { id: string; time: string; details: { n: number } }[];
        next_cursor: string | null;
      };
      const have = new Map<string, { time: string; n: number }>();
      /** One export: every page from `since`, keeping the events whose id it does not have yet. */
      const exportOnce = async (since: string, between?: () => Promise<void>) => {
        let cursor: string | null = null;
        do {
          const res = await b.request(
            'GET',
            `/v1/audit-events?limit=2&since=${since}${cursor ? `&cursor=${cursor}` : ''}`,
            { key: own },
          );
          const page = (await res.json()) as Listed;
          for (const e of page.events) if (!have.has(e.id)) have.set(e.id, { time: e.time, n: e.details.n });
          cursor = page.next_cursor;
          if (cursor && between) await between();
        } while (cursor !== null);
      };
      // Between its first and second page: one event listed among the first page's (the newest), then one
      // committed after it but timed earlier (slow to commit, or a replica whose clock runs behind), on the
      // second page, with the greater id.
      let once = false;
      await exportOnce(new Date(T).toISOString(), async () => {
        if (once) return;
        once = true;
        await record(4, T + 3500);
        await record(5, T + 500);
      });
      expect([...have.values()].map((e) => e.n).sort()).toEqual([0, 1, 2, 3, 5]);
      const greatestBefore = Math.max(...[...have.keys()].map(Number));
      // The next run, from a margin before the newest time it has, catches up with the one it missed: its id
      // is below the greatest the first run took, so comparing ids with that greatest would have dropped it.
      const newest = Math.max(...[...have.values()].map((e) => Date.parse(e.time)));
      await exportOnce(new Date(newest - 5 * 60_000).toISOString());
      expect([...have.values()].map((e) => e.n).sort()).toEqual([0, 1, 2, 3, 4, 5]);
      const missed = [...have.entries()].find(([, e]) => e.n === 4)!;
      expect(Number(missed[0])).toBeLessThan(greatestBefore);
    } finally {
      await b.close();
    }
  });
});

describe('audit retention (BROKER_AUDIT_RETENTION_DAYS)', () => {
  const DAY = 86_400_000;
  const keys = async (b: TestBroker, own: string, names: string[]) => {
    for (const name of names) {
      const res = await b.request('POST', '/v1/fine-grained-keys', {
        key: own,
        json: { name, expiration: '1y', permissions: ['audit-log:read'] },
      });
      expect(res.status).toBe(201);
    }
  };
  const listed = async (b: TestBroker, own: string, query = '') =>
    (await (await b.request('GET', `/v1/audit-events${query}`, { key: own })).json()) as Page;

  it('unset, the upkeep keeps every event however old', async () => {
    const b = await startTestBroker();
    try {
      const { key: own } = await b.createTenant('forever');
      await keys(b, own, ['old']);
      b.clock.now += 20 * 365 * DAY;
      await b.broker.maintain();
      expect((await listed(b, own)).events.map((e) => e.target?.name)).toEqual(['old', 'forever']);
    } finally {
      await b.close();
    }
  });

  it('set, the upkeep deletes the events older than that, of every tenant, and keeps the newer', async () => {
    const b = await startTestBroker({ env: { BROKER_AUDIT_RETENTION_DAYS: '30' } });
    try {
      const { key: own } = await b.createTenant('kept');
      await keys(b, own, ['k-0', 'k-1', 'k-2']);
      const before = await b.createTenant('older-tenant');
      b.clock.now += 30 * DAY + 1;
      await keys(b, own, ['k-3']);
      await b.broker.maintain();
      expect(b.logs.some((l) => l.includes('"msg":"purged audit events past their retention"'))).toBe(true);
      expect((await listed(b, own)).events.map((e) => e.target?.name)).toEqual(['k-3']);
      expect((await listed(b, before.key)).events).toEqual([]);
    } finally {
      await b.close();
    }
  });

  it('an export holding the cursor of an event deleted meanwhile reaches the end of the log, not a 400', async () => {
    const b = await startTestBroker({ env: { BROKER_AUDIT_RETENTION_DAYS: '30' } });
    try {
      const { key: own } = await b.createTenant('exported');
      await keys(b, own, ['k-0', 'k-1', 'k-2']);
      // An exporter has read the first page and holds the cursor of its last event (k-1)...
      const first = await listed(b, own, '?limit=2');
      expect(first.events.map((e) => e.target?.name)).toEqual(['k-2', 'k-1']);
      const older = await b.createTenant('older-tenant');
      await keys(b, older.key, ['gone']);
      const gone = await listed(b, older.key, '?limit=1');
      b.clock.now += 30 * DAY + 1;
      await keys(b, own, ['k-3']);
      const other = await b.createTenant('newer-tenant');
      await keys(b, other.key, ['theirs']);
      const theirs = await listed(b, other.key, '?limit=1');
      // ...when the upkeep deletes every event older than 30 days, k-1 among them.
      await b.broker.maintain();
      const next = await b.request('GET', `/v1/audit-events?limit=2&cursor=${first.next_cursor}`, {
        key: own,
      });
      expect(next.status).toBe(200);
      expect(await next.json()).toEqual({ events: [], next_cursor: null });
      // Whose a deleted event was cannot be told: another tenant's pages on to the same end, showing nothing.
      const deleted = await b.request('GET', `/v1/audit-events?cursor=${gone.next_cursor}`, { key: own });
      expect(await deleted.json()).toEqual({ events: [], next_cursor: null });
      // A cursor of another tenant's log, whose event is kept, is refused as ever.
      const foreign = await b.request('GET', `/v1/audit-events?cursor=${theirs.next_cursor}`, { key: own });
      expect(foreign.status).toBe(400);
      expect(await foreign.json()).toMatchObject({
        errors: [
          { field: 'cursor', message: expect.stringContaining("not a cursor of this tenant's audit log") },
        ],
      });
    } finally {
      await b.close();
    }
  });
});

describe('secrets in what an event records', () => {
  it('a key in a name or a claim saved before such values were refused is recorded as its hint', async () => {
    const { key: own, tenant } = await t.createTenant('pasted');
    // Rows as an earlier version saved them, with the key whole: what the API refuses now.
    const store = t.broker.store;
    const fineGrainedId = randomUUID();
    await store.keys.createFineGrained(
      {
        id: fineGrainedId,
        tenantId: tenant.id,
        name: `ci ${own}`,
        hint: 'ssf_…abcd',
        permissions: ['audit-log:read'],
        createdBy: 'tenant/primary',
        createdAt: t.clock.now,
        expiresAt: t.clock.now + 86_400_000,
        lastUsedAt: null,
      },
      { digest: 'legacy', hint: 'ssf_…abcd' },
      {
        tenantId: tenant.id,
        type: 'fine_grained_key.created',
        outcome: 'success',
        actor: { kind: 'test', id: 'setup' },
      },
    );
    const policyId = randomUUID();
    await createPolicy(
      store,
      tenant.id,
      policyId,
      {
        name: `deploy ${own}`,
        claims: { repository: 'acme/infra', ref: `refs/heads/${own}`, environment: own },
      },
      t.clock.now,
    );
    expect((await t.request('DELETE', `/v1/fine-grained-keys/${fineGrainedId}`, { key: own })).status).toBe(
      204,
    );
    const replaced = await t.request('PUT', `/v1/oidc/policies/${policyId}`, {
      key: own,
      json: { name: 'deploy', claims: { repository: 'acme/infra' }, permissions: ['harden-runner:read'] },
    });
    expect(replaced.status).toBe(200);
    expect((await t.request('DELETE', `/v1/oidc/policies/${policyId}`, { key: own })).status).toBe(204);

    const body = await (await t.request('GET', '/v1/audit-events?limit=200', { key: own })).text();
    for (const type of ['fine_grained_key.revoked', 'policy.updated', 'policy.deleted'])
      expect(body).toContain(type);
    expect(body).toContain(`ssa_…${own.slice(-4)}`);
    expect(body).not.toContain(own.slice(4, 20));
  });

  it('a key or a token split by invisible characters in a refused path is recorded as its hint, or left out', async () => {
    const { key: own } = await t.createTenant('invisible');
    const created = await t.request('POST', '/v1/fine-grained-keys', {
      key: own,
      json: { name: 'reader', expiration: '7d', permissions: ['audit-log:read'] },
    });
    const reader = ((await created.json()) as { key: string }).key;
    const minted = await t.request('POST', '/v1/tokens', { key: own });
    const token = ((await minted.json()) as { access_token: string }).access_token;
    // As a chat tool wraps a long word: U+200B in the key's prefix and random part, U+2060 in the token's header.
    const splitKey = `ss\u200ba_${own.slice(4, 10)}\u200b${own.slice(10)}`;
    const splitToken = `${token.slice(0, 5)}\u2060${token.slice(5)}`;
    for (const pasted of [splitKey, splitToken]) {
      const refused = await t.request('DELETE', `/v1/fine-grained-keys/${encodeURIComponent(pasted)}`, {
        key: reader,
      });
      expect(refused.status).toBe(403);
    }
    const listed = await t.request('GET', '/v1/audit-events?type=permission.denied', { key: own });
    const { events } = (await listed.json()) as { events: { details: { path: string } }[] };
    expect(events.map((e) => e.details.path)).toEqual([
      '/v1/fine-grained-keys/[a token]',
      `/v1/fine-grained-keys/ssa_…${own.slice(-4)}`,
    ]);
  });

  it('a key pasted twice in a row is hidden whole both times, in the audit log and in error bodies', async () => {
    const { key: own } = await t.createTenant('pasted-twice');
    const created = await t.request('POST', '/v1/fine-grained-keys', {
      key: own,
      json: { name: 'reader', expiration: '7d', permissions: ['audit-log:read'] },
    });
    const reader = ((await created.json()) as { key: string }).key;
    const pasted = `${own}${own}`;
    const refused = await t.request('DELETE', `/v1/fine-grained-keys/${pasted}`, { key: reader });
    expect(refused.status).toBe(403);
    const missing = await t.request('GET', `/v1/fine-grained-keys/${pasted}`, { key: own });
    expect(missing.status).toBe(404);
    expect(await missing.text()).not.toContain(own.slice(4));
    const listed = await t.request('GET', '/v1/audit-events?type=permission.denied', { key: own });
    const { events } = (await listed.json()) as { events: { details: { path: string } }[] };
    const hint = `ssa_…${own.slice(-4)}`;
    expect(events.map((e) => e.details.path)).toEqual([`/v1/fine-grained-keys/${hint}${hint}`]);
  });

  it("a token pasted twice in a row is hidden whole, the second one's payload and signature with it", async () => {
    const { key: own } = await t.createTenant('token-twice');
    const token = `${b64url({ alg: 'ES256', kid: 'k1' })}.${b64url({ sub: 'repo:acme/infra' })}.${'S'.repeat(86)}`;
    const missing = await t.request('GET', `/v1/fine-grained-keys/${token}${token}`, { key: own });
    expect(missing.status).toBe(404);
    const body = await missing.text();
    expect(body).toContain('[a token]');
    expect(body).not.toContain(b64url({ sub: 'repo:acme/infra' }));
    expect(body).not.toContain('SSSS');
  });

  // Its "eyJ" is no token's start, and the token after it must not be taken for one that could only fail as it did.
  it.each([
    ['an API key whose random part holds "eyJ", joined by "_"', `ssa_${'A'.repeat(29)}eyJ${'B'.repeat(6)}_`],
    ['U+001E followed by "yJ", which JSON writes \\u001eyJ', '%1EyJq-'],
  ])('a token right after %s is hidden in the error body', async (_, before) => {
    const { key: own } = await t.createTenant(`after-${before.length}`);
    const payload = b64url({ sub: 'repo:acme/infra' });
    const token = `${b64url({ alg: 'RS256', kid: 'k1' })}.${payload}.${'S'.repeat(86)}`;
    const missing = await t.request('GET', `/v1/fine-grained-keys/${before}${token}`, { key: own });
    expect(missing.status).toBe(404);
    const body = await missing.text();
    expect(body).toContain('[a token]');
    expect(body).not.toContain(payload);
    expect(body).not.toContain('SSSS');
  });

  it('a path holding a control character just before a token-like run is recorded and listed intact', async () => {
    const { key: own } = await t.createTenant('escapes');
    const created = await t.request('POST', '/v1/fine-grained-keys', {
      key: own,
      json: { name: 'reader', expiration: '7d', permissions: ['audit-log:read'] },
    });
    const reader = ((await created.json()) as { key: string }).key;
    // U+001E is written \u001e in JSON, so the text reads "…\u001eyJa.eyJb.c": its "e" is not a token's.
    const refused = await t.request('DELETE', '/v1/fine-grained-keys/%1EyJa.eyJb.c', { key: reader });
    expect(refused.status).toBe(403);
    const listed = await t.request('GET', '/v1/audit-events?type=permission.denied', { key: own });
    expect(listed.status).toBe(200);
    const { events } = (await listed.json()) as { events: { details: { path: string } }[] };
    expect(events.map((e) => e.details.path)).toEqual(['/v1/fine-grained-keys/\u001eyJa.eyJb.c']);
  });
});

/** A JSON object as a token segment. */
function b64url(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

describe('operations', () => {
  it('/healthz and /readyz answer without credentials', async () => {
    expect(await (await t.request('GET', '/healthz')).json()).toEqual({ status: 'ok' });
    expect(await (await t.request('GET', '/readyz')).json()).toEqual({ status: 'ready' });
  });

  it('/metrics counts requests and latency by route pattern and status', async () => {
    await t.request('GET', '/v1/whoami', { key });
    await t.request('GET', '/v1/whoami');
    const text = await (await t.request('GET', '/metrics')).text();
    expect(text).toMatch(/http_requests_total\{method="GET",route="\/v1\/whoami",status="200"\} 1/);
    expect(text).toMatch(/http_requests_total\{method="GET",route="\/v1\/whoami",status="401"\} 1/);
    expect(text).toMatch(
      /http_request_duration_seconds_bucket\{le="0\.005",method="GET",route="\/v1\/whoami",status="200"\}/,
    );
    expect(text).toMatch(/route="\/v1\/audit-events",status="200"/);
    expect(text).not.toContain(key);
  });

  it("/metrics latency buckets reach the broker's own deadlines, so a request that waited 15 s does not read as 2.5 s", async () => {
    // histogram_quantile() answers the highest finite bound for a quantile in the +Inf bucket: with 2.5 s the last,
    // a p99 over requests given up at the 5 s connection wait or the 15 s write deadline would read 2.5 s.
    const metrics = createMetrics();
    metrics.observeRequest('POST', '/v1/oidc/token', 503, 15);
    metrics.observeRequest('GET', '/v1/whoami', 503, 5);
    const text = await metrics.registry.metrics();
    const bucket = (route: string, le: string) =>
      Number(
        new RegExp(
          `http_request_duration_seconds_bucket\\{le="${le}",method="\\w+",route="${route}",status="503"\\} (\\d+)`,
        ).exec(text)?.[1],
      );
    expect([bucket('/v1/oidc/token', '10'), bucket('/v1/oidc/token', '15')]).toEqual([0, 1]);
    expect([bucket('/v1/whoami', '2.5'), bucket('/v1/whoami', '5')]).toEqual([0, 1]);
    expect(bucket('/v1/oidc/token', '30')).toBe(1);
  });

  it('/metrics counts a request refused before its route ran (a body over 64 KiB, a transfer coding) under that route', async () => {
    const huge = `{"oidc_token":"${'a'.repeat(70_000)}"}`;
    const res = await t.request('POST', '/v1/oidc/token', {
      body: huge,
      headers: { 'Content-Type': 'application/json', 'Content-Length': String(huge.length) },
    });
    expect(res.status).toBe(413);
    const coded = await t.request('POST', '/v1/tokens/revoke', {
      body: 'token=x',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'Transfer-Encoding': 'gzip, chunked' },
    });
    expect(coded.status).toBe(501);
    await t.request('GET', '/v1/nowhere');
    // A method the path is not served with: counted under the route that serves it, not with scans for paths.
    expect((await t.request('DELETE', '/healthz')).status).toBe(405);
    expect((await t.request('PATCH', `/v1/fine-grained-keys/${randomUUID()}`)).status).toBe(405);
    const text = await (await t.request('GET', '/metrics')).text();
    expect(text).toMatch(/http_requests_total\{method="POST",route="\/v1\/oidc\/token",status="413"\} 1/);
    expect(text).toMatch(/http_requests_total\{method="POST",route="\/v1\/tokens\/revoke",status="501"\} 1/);
    expect(text).toMatch(/http_requests_total\{method="GET",route="unmatched",status="404"\} 1/);
    expect(text).toMatch(/http_requests_total\{method="DELETE",route="\/healthz",status="405"\} 1/);
    expect(text).toMatch(
      /http_requests_total\{method="PATCH",route="\/v1\/fine-grained-keys\/:id",status="405"\} 1/,
    );
    expect(text).not.toMatch(/route="unmatched",status="405"/);
  });

  it("/metrics counts a method outside HTTP's own (WebDAV's, …) as _OTHER: a scan through every method Node parses adds no series per method", async () => {
    const series = async () =>
      (await (await t.request('GET', '/metrics')).text())
        .split('\n')
        .filter((line) => line.startsWith('http_requests_total{') && line.includes('route="/healthz"'));
    const before = await series();
    // CONNECT and TRACE are methods a fetch Request cannot have.
    for (const method of METHODS.filter((m) => !['CONNECT', 'TRACE', 'GET', 'HEAD'].includes(m)))
      expect((await t.request(method, '/healthz')).status).toBe(405);
    const added = (await series()).filter((line) => !before.includes(line));
    // HTTP's own methods by name (RFC 9110 and RFC 5789's PATCH), each of the other 26 as _OTHER.
    expect(added.map((line) => /method="([^"]+)"/.exec(line)?.[1]).sort()).toEqual([
      'DELETE',
      'OPTIONS',
      'PATCH',
      'POST',
      'PUT',
      '_OTHER',
    ]);
    expect(added.find((line) => line.includes('"_OTHER"'))).toMatch(/ 26$/);
  });

  it('/metrics counts error answers by route and code, so that an alert can tell an outage from a refusal', async () => {
    // Both are 401 and both 503 on the exchange: only the code tells a misconfigured audience from a replay, or a
    // database outage from GitHub's keys being out of reach.
    const metrics = async () => (await t.request('GET', '/metrics')).text();
    const count = (text: string, route: string, code: string) =>
      Number(
        new RegExp(`http_request_errors_total\\{route="${route}",code="${code}"\\} (\\d+)\\n`).exec(
          text,
        )?.[1] ?? 0,
      );
    const before = await metrics();
    await t.request('POST', '/v1/oidc/token', { json: { oidc_token: 'not.a.token' } });
    await t.request('GET', '/v1/whoami');
    await t.request('GET', '/v1/whoami');
    const after = await metrics();
    expect(after).toContain('# TYPE http_request_errors_total counter');
    expect(
      count(after, '/v1/oidc/token', 'invalid_token') - count(before, '/v1/oidc/token', 'invalid_token'),
    ).toBe(1);
    expect(
      count(after, '/v1/whoami', 'unauthenticated') - count(before, '/v1/whoami', 'unauthenticated'),
    ).toBe(2);
    // Answers that are no error have no series here.
    expect(after).not.toMatch(/http_request_errors_total\{route="\/metrics"/);
  });

  it('every response carries a request id that problem documents repeat', async () => {
    const res = await t.request('GET', '/v1/nowhere');
    expect(res.status).toBe(404);
    const body = (await res.json()) as { request_id: string; code: string };
    expect(body.code).toBe('not_found');
    expect(res.headers.get('X-Request-Id')).toBe(body.request_id);
  });

  it('every answer tells a browser not to sniff its type, frame it or run anything in it, and sends no referrer', async () => {
    const answers = await Promise.all([
      t.request('GET', '/v1/whoami', { key }),
      t.request('GET', '/v1/whoami'),
      t.request('GET', '/v1/%3Cscript%3Ealert(1)%3C%2Fscript%3E'),
      t.request('DELETE', '/healthz'),
      t.request('POST', '/v1/oidc/token', { body: 'x', headers: { 'Content-Type': 'text/plain' } }),
      t.request('GET', '/metrics'),
      t.request('GET', '/.well-known/jwks.json'),
      t.request('GET', '/.well-known/oauth-authorization-server'),
      t.request('GET', '/v1/openapi.json'),
      t.request('GET', '/v1/reference/assets/swagger-ui.css'),
    ]);
    for (const res of answers) {
      const where = `${res.status} ${res.headers.get('Content-Type')}`;
      expect(res.headers.get('X-Content-Type-Options'), where).toBe('nosniff');
      expect(res.headers.get('X-Frame-Options'), where).toBe('DENY');
      expect(res.headers.get('Content-Security-Policy'), where).toBe(
        "default-src 'none'; frame-ancestors 'none'",
      );
      expect(res.headers.get('Referrer-Policy'), where).toBe('no-referrer');
      // Nothing invites a page on another origin to read an answer with a user's key.
      expect(res.headers.get('Access-Control-Allow-Origin'), where).toBeNull();
    }
  });

  it('no cache, not even the browser running Try it out, keeps an answer of a route that takes a credential', async () => {
    const reader = (await (
      await t.request('POST', '/v1/fine-grained-keys', {
        key,
        json: { name: 'reader', expiration: '7d', permissions: ['harden-runner:read'] },
      })
    ).json()) as { key: string };
    const answers = {
      audit: await t.request('GET', '/v1/audit-events', { key }),
      whoami: await t.request('GET', '/v1/whoami', { key }),
      keys: await t.request('GET', '/v1/fine-grained-keys', { key }),
      policies: await t.request('GET', '/v1/oidc/policies', { key }),
      config: await t.request('GET', '/v1/oidc/config', { key }),
      missing: await t.request('GET', `/v1/fine-grained-keys/${randomUUID()}`, { key }),
      forbidden: await t.request('GET', '/v1/audit-events', { key: reader.key }),
      unauthenticated: await t.request('GET', '/v1/audit-events'),
    };
    for (const [name, res] of Object.entries(answers)) {
      expect(res.headers.get('Cache-Control'), `${name}: ${res.status}`).toBe('no-store');
    }
    expect(answers.forbidden.status).toBe(403);
    // Public documents stay as cacheable as before.
    expect((await t.request('GET', '/.well-known/jwks.json')).headers.get('Cache-Control')).toBe(
      'public, max-age=300',
    );
    expect((await t.request('GET', '/v1/openapi.json')).headers.get('Cache-Control')).toBeNull();
  });

  it('/readyz answers 503 not_ready when the database is gone', async () => {
    const other = await startTestBroker();
    await other.broker.store.close();
    const res = await other.request('GET', '/readyz');
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ code: 'not_ready' });
    await other.db.drop();
  });

  it('/readyz answers 503 not_ready when the SQLite file it opened was deleted or replaced', async () => {
    const other = await startTestBroker({ engine: 'sqlite' });
    try {
      expect((await other.request('GET', '/readyz')).status).toBe(200);
      // Writes would go to the unlinked file and be lost: the broker is not ready.
      for (const suffix of ['', '-wal', '-shm']) rmSync(`${other.db.file}${suffix}`, { force: true });
      const res = await other.request('GET', '/readyz');
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ code: 'not_ready' });
    } finally {
      await other.close();
    }
  });

  it('/readyz answers 503 not_ready once the broker is shutting down, without asking the database; /healthz 200', async () => {
    const other = await startTestBroker();
    try {
      other.broker.drain();
      other.broker.store.ping = () => Promise.reject(new Error('not asked'));
      const res = await other.request('GET', '/readyz');
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({
        code: 'not_ready',
        detail: expect.stringContaining('shutting down'),
      });
      expect((await other.request('GET', '/healthz')).status).toBe(200);
      expect(other.logs.join('\n')).not.toContain('readiness check failed');
    } finally {
      await other.close();
    }
  });

  it.each([
    // A database that accepts the connection and never answers (e.g. a paused PostgreSQL).
    [
      'the database stops answering',
      (broker: TestBroker) => {
        broker.broker.store.ping = () => new Promise<void>(() => {});
      },
    ],
    [
      'the reload of the signing keys it is due stops answering',
      (broker: TestBroker) => {
        broker.broker.store.signingKeys.list = () => new Promise(() => {});
        broker.clock.now += 61_000;
      },
    ],
  ])('/readyz answers 503 not_ready when %s, rather than hang', async (_, silence) => {
    const replica = await startTestBroker();
    try {
      silence(replica);
      const res = await replica.request('GET', '/readyz');
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({
        code: 'not_ready',
        detail: expect.stringContaining('within'),
      });
    } finally {
      await replica.close();
    }
  });

  it('/readyz answers 503 not_ready, naming the key-encryption key, on a replica that cannot sign with the key in use', async () => {
    const replica = await startTestBroker();
    try {
      expect((await replica.request('GET', '/readyz')).status).toBe(200);
      // oidc-broker signing-key replace, run with a new key-encryption key while this replica runs on the old one.
      const newKek = randomBytes(32);
      await replaceSigningKeys({ store: replica.broker.store, kek: newKek, now: () => replica.clock.now });
      // From its next reload of the keys, within a minute, as its exchanges.
      replica.clock.now += 61_000;
      const res = await replica.request('GET', '/readyz');
      expect(res.status).toBe(503);
      const problem = (await res.json()) as { code: string; detail: string };
      expect(problem.code).toBe('not_ready');
      expect(problem.detail).toContain('cannot sign tokens');
      expect(problem.detail).toContain('restart it with the new BROKER_KEY_ENCRYPTION_KEY');
      expect(replica.logs.join('\n')).toContain('readiness check failed');
      expect((await replica.request('GET', '/healthz')).status).toBe(200);
      // A probe a second reads the signing keys no more often than the replica's own minutely reload.
      const list = replica.broker.store.signingKeys.list.bind(replica.broker.store.signingKeys);
      let reads = 0;
      replica.broker.store.signingKeys.list = () => {
        reads++;
        return list();
      };
      for (let second = 0; second < 120; second++) {
        replica.clock.now += 1000;
        expect((await replica.request('GET', '/readyz')).status).toBe(503);
      }
      expect(reads).toBe(2);
      // Restarted with the new key, it is ready.
      const restarted = await startTestBroker({
        db: replica.db,
        env: { BROKER_KEY_ENCRYPTION_KEY: newKek.toString('hex') },
      });
      expect((await restarted.request('GET', '/readyz')).status).toBe(200);
      await restarted.close();
      // And so is this one, should the keys move back to the key-encryption key it runs with.
      await replaceSigningKeys({
        store: replica.broker.store,
        kek: TEST_KEK_BYTES,
        now: () => replica.clock.now,
      });
      replica.clock.now += 61_000;
      expect((await replica.request('GET', '/readyz')).status).toBe(200);
    } finally {
      await replica.close();
    }
  });

  it('/readyz stays 200 on every replica through a signing key rotation, before and after the new key signs', async () => {
    const first = await startTestBroker();
    const second = await startTestBroker({ db: first.db, clock: first.clock });
    try {
      const { activeFrom } = await first.broker.deps.signingKeys.rotate();
      const probes: number[] = [];
      for (; first.clock.now < activeFrom + 120_000; first.clock.now += 20_000) {
        for (const replica of [first, second]) probes.push((await replica.request('GET', '/readyz')).status);
      }
      expect(new Set(probes)).toEqual(new Set([200]));
      expect(probes.length).toBeGreaterThan(40);
    } finally {
      await second.close();
      await first.close();
    }
  });

  it("a load balancer's X-Request-Id and traceparent reach the request's log lines, if well-formed, beside the broker's id", async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const minted = await t.request('POST', '/v1/tokens', { key });
    const token = ((await minted.json()) as { access_token: string }).access_token;
    const linesOf = async (headers: Record<string, string>) => {
      const logged = t.logs.length;
      const res = await t.request('GET', '/v1/whoami', { key, headers });
      const lines = t.logs.slice(logged).map((line) => JSON.parse(line) as Record<string, unknown>);
      // The broker's own id stays the one the answer and the audit log carry.
      for (const line of lines) expect(line.request_id).toBe(res.headers.get('X-Request-Id'));
      expect(lines.map((line) => line.msg)).toEqual(['authenticated', 'request']);
      return lines;
    };
    const given = await linesOf({
      'X-Request-Id': 'Root=1-67891233-abcdef012345678912345678',
      traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
    });
    for (const line of given) {
      expect(line).toMatchObject({
        upstream_request_id: 'Root=1-67891233-abcdef012345678912345678',
        trace_id: traceId,
      });
    }
    // Too long, or holding what a log line should not, or no trace context: left out rather than logged raw.
    for (const headers of <Record<string, string>[]>[
      { 'X-Request-Id': 'x'.repeat(10_000), traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` },
      { 'X-Request-Id': 'a"b\\c\u00e9', traceparent: `00-${traceId.toUpperCase()}-00f067aa0ba902b7-01` },
      { 'X-Request-Id': '', traceparent: 'x'.repeat(10_000) },
      // A secret pasted into the header by mistake has only allowed characters, and is no id to log.
      { 'X-Request-Id': key },
      { 'X-Request-Id': token },
    ]) {
      for (const line of await linesOf(headers)) {
        expect(line).not.toHaveProperty('upstream_request_id');
        expect(line).not.toHaveProperty('trace_id');
      }
    }
  });

  it("each request's log line has its method, route, status and duration, and a refusal's code", async () => {
    const logged = t.logs.length;
    await t.request('GET', '/v1/whoami', { key });
    await t.request('GET', '/v1/whoami');
    await t.request('POST', '/v1/oidc/token', { json: { oidc_token: 'x', policy: '' } });
    await t.request('GET', '/nowhere');
    const lines = t.logs
      .slice(logged)
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.msg === 'request');
    expect(lines.map(({ method, route, status, code }) => ({ method, route, status, code }))).toEqual([
      { method: 'GET', route: '/v1/whoami', status: 200, code: undefined },
      { method: 'GET', route: '/v1/whoami', status: 401, code: 'unauthenticated' },
      { method: 'POST', route: '/v1/oidc/token', status: 400, code: 'invalid_request' },
      { method: 'GET', route: 'unmatched', status: 404, code: 'not_found' },
    ]);
    for (const line of lines) expect(line.duration_ms).toEqual(expect.any(Number));
  });
});
