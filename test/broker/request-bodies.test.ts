// JSON request bodies are UTF-8 (RFC 8259): bytes that are not are refused, never stored as U+FFFD; multipart
// bodies, which no route takes, are refused as such; a body its client cut off is refused like any other.
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';

let t: TestBroker;
let key: string;
let server: ReturnType<typeof serve>;
let url: string;

beforeAll(async () => {
  t = await startTestBroker();
  key = (await t.createTenant('acme')).key;
  // Over a real socket too: the broker reads such bodies straight from it, not through a web Request.
  server = serve({ fetch: t.broker.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((resolve) => server.once('listening', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await t.close();
});

const utf8 = (text: string) => new TextEncoder().encode(text);
// "bad" + 0xFF 0xFE (never valid in UTF-8) + "name"
const invalid = new Uint8Array([
  ...utf8('{"name":"bad'),
  0xff,
  0xfe,
  ...utf8('name","expiration":"7d",'),
  ...utf8('"permissions":["audit-log:read"]}'),
]);

async function keyNames(): Promise<string[]> {
  const listed = await t.request('GET', '/v1/fine-grained-keys', { key });
  return ((await listed.json()) as { keys: { name: string }[] }).keys.map((k) => k.name);
}

const senders = {
  'in-process': (path: string, body: Uint8Array) =>
    t.broker.app.request(`http://broker.test${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body,
    }),
  'over a socket': (path: string, body: Uint8Array) =>
    fetch(`${url}${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json; charset=utf-8' },
      body,
    }),
};

describe.each(Object.entries(senders))('a JSON body that is not UTF-8 (%s)', (_, send) => {
  it('is refused with 400 naming the encoding, and nothing is stored', async () => {
    const before = await keyNames();
    const res = await send('/v1/fine-grained-keys', invalid);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      detail: expect.stringMatching(/UTF-8/),
    });
    expect(await keyNames()).toEqual(before);
  });

  it('while the same body in UTF-8, byte-order mark and all, is taken as sent', async () => {
    const name = `Déploy ${Math.random().toString(36).slice(2, 6)} \uFFFD`;
    const body = new Uint8Array([
      0xef,
      0xbb,
      0xbf,
      ...utf8(JSON.stringify({ name, expiration: '7d', permissions: ['audit-log:read'] })),
    ]);
    const res = await send('/v1/fine-grained-keys', body);
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ name });
  });
});

describe.each(Object.entries(senders))('an empty body sent as JSON (%s)', (_, send) => {
  it('is told it is empty, and where a body may be left out, that Content-Type goes with it', async () => {
    for (const path of ['/v1/fine-grained-keys', '/v1/tokens']) {
      const res = await send(path, new Uint8Array(0));
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        detail: expect.stringMatching(/body is empty.*JSON object.*Content-Type/),
      });
    }
  });
});

describe.each(Object.entries(senders))('a JSON body naming a member twice in one object (%s)', (_, send) => {
  // Parsers disagree on which of the two counts: a reviewer reading the body may see the other one.
  it.each([
    [
      'at the top',
      '{"name":"deploy","name":"deploy-all","expiration":"7d","permissions":["audit-log:read"]}',
      'name',
    ],
    [
      'written with an escape',
      '{"name":"deploy","na\\u006de":"deploy-all","expiration":"7d","permissions":["audit-log:read"]}',
      'name',
    ],
  ])('%s: 400 naming the member, and nothing is stored', async (_, body, member) => {
    const before = await keyNames();
    const res = await send('/v1/fine-grained-keys', utf8(body));
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      detail: `the request body names the member "${member}" twice in one object: send each member once`,
    });
    expect(await keyNames()).toEqual(before);
  });

  it('a key in the repeated name is shown as its hint, wherever the name is cut short', async () => {
    for (const pad of [0, 50, 65, 70, 90]) {
      const name = `${'x'.repeat(pad)}${key}`;
      const res = await send(
        '/v1/fine-grained-keys',
        utf8(JSON.stringify({ [name]: 1 }).replace('}', `,"${name}":2}`)),
      );
      expect(res.status).toBe(400);
      const text = await res.text();
      expect(text, `pad ${pad}`).toContain('twice');
      expect(text, `pad ${pad}`).not.toContain(key.slice(4, 20));
    }
  });

  it('within a nested object: a trust policy whose claims name the repository twice is not saved', async () => {
    const body =
      '{"name":"infra","claims":{"repository":"acme/infra","repository":"evil/infra"},"permissions":["audit-log:read"]}';
    const res = await send('/v1/oidc/policies', utf8(body));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { detail: string }).detail).toContain('"repository" twice');
    const listed = await t.request('GET', '/v1/oidc/policies', { key });
    expect(((await listed.json()) as { policies: unknown[] }).policies).toEqual([]);
  });

  it('while the same name in two objects, or in a body that is no JSON at all, is answered as before', async () => {
    // "policy" at the top and inside claims: two objects, no repeat; the claim is unknown, and said to be.
    const evaluate = await send(
      '/v1/oidc/policies/evaluate',
      utf8('{"claims":{"repository":"acme/infra","policy":"infra"},"policy":"infra"}'),
    );
    expect(evaluate.status).toBe(400);
    expect(await evaluate.json()).toMatchObject({ errors: [{ field: 'claims.policy' }] });
    const broken = await send('/v1/fine-grained-keys', utf8('{"name":"a","name":'));
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as { detail: string }).detail).not.toContain('twice');
  });
});

describe('a member or parameter whose name, written bare, would not show or would read as a path', () => {
  // Written bare, the name vanished from the answer (": unknown field", "claims.: not a claim…"): quoted, it shows.
  it.each([
    [
      'a JSON member named ""',
      '/v1/fine-grained-keys',
      { '': 1, name: 'a', expiration: '7d', permissions: ['read-all'] },
      '"": unknown field',
    ],
    ['a JSON member named " "', '/v1/tokens', { ' ': 1 }, '" ": unknown field'],
    [
      'a claim named "" in a trust policy',
      '/v1/oidc/policies',
      { name: 'empty-claim', claims: { '': 'x', repository: 'acme/infra' }, permissions: ['read-all'] },
      'claims[""]: not a claim a policy can set',
    ],
  ])('%s is named in quotes', async (_, path, json, detail) => {
    const res = await t.request('POST', path, { key, json });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(((await res.json()) as { detail: string }).detail).toContain(detail);
  });

  it.each([
    // Written bare, a name with a dot or brackets reads as a path to another field (one the route has), and one of
    // characters that do not print reads as no name.
    [
      'a JSON member named "claims.repository"',
      '/v1/oidc/policies',
      { name: 'dotted', 'claims.repository': 'acme/infra', permissions: ['read-all'] },
      '"claims.repository": unknown field',
    ],
    [
      'a claim named "repository[0]"',
      '/v1/oidc/policies',
      {
        name: 'bracketed',
        claims: { 'repository[0]': 'x', repository: 'acme/infra' },
        permissions: ['read-all'],
      },
      'claims["repository[0]"]: not a claim a policy can set',
    ],
    ['a JSON member named a zero-width space', '/v1/tokens', { '\u200b': 1 }, '"\\u200B": unknown field'],
    ['a JSON member named a control character', '/v1/tokens', { '\u0007': 1 }, '"\\u0007": unknown field'],
    // A line or paragraph separator breaks the line as a newline does, in the middle of a name as at its end.
    [
      'a JSON member with a line separator inside',
      '/v1/tokens',
      { 'a\u2028b': 1 },
      '"a\\u2028b": unknown field',
    ],
    [
      'a JSON member ending in a paragraph separator',
      '/v1/tokens',
      { 'a\u2029': 1 },
      '"a\\u2029": unknown field',
    ],
  ])('%s is named in quotes, as one name', async (_, path, json, detail) => {
    const res = await t.request('POST', path, { key, json });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(((await res.json()) as { detail: string }).detail).toContain(detail);
  });

  it('a form parameter named "" (a stray "&=x") is named in quotes too', async () => {
    const res = await t.request('POST', '/v1/oidc/token', {
      body: 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=x.y.z&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&=x',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ detail: '"": unknown field', errors: [{ field: '""' }] });
  });
});

describe('a body that is not UTF-8 is looked at only where the route reads JSON', () => {
  it.each([
    ['POST', '/v1/nowhere', true, 404],
    ['PATCH', '/v1/fine-grained-keys', true, 405],
    ['POST', '/v1/fine-grained-keys', false, 401],
  ])('%s %s (credential: %s) answers %i as it would with any body', async (method, path, withKey, status) => {
    const res = await t.broker.app.request(`http://broker.test${path}`, {
      method,
      headers: { ...(withKey ? { Authorization: `Bearer ${key}` } : {}), 'Content-Type': 'application/json' },
      body: invalid,
    });
    expect(res.status).toBe(status);
  });
});

describe('a multipart body, which no route takes', () => {
  const multipart = (fields: Record<string, string>) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.set(name, value);
    return form;
  };

  it('is refused with 415 naming the types the route takes, where a form is one of them', async () => {
    const minted = (await (await t.request('POST', '/v1/tokens', { key })).json()) as {
      access_token: string;
    };
    for (const [path, fields, types] of [
      [
        '/v1/oidc/token',
        {
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: 'x.y.z',
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        },
        'application/json or application/x-www-form-urlencoded',
      ],
      ['/v1/tokens/introspect', { token: minted.access_token }, 'application/x-www-form-urlencoded'],
      ['/v1/tokens/revoke', { token: minted.access_token }, 'application/x-www-form-urlencoded'],
    ] as const) {
      const res = await fetch(`${url}${path}`, {
        method: 'POST',
        // The exchange takes no credential but the OIDC token.
        headers: path === '/v1/oidc/token' ? {} : { Authorization: `Bearer ${key}` },
        body: multipart(fields),
      });
      expect(res.status).toBe(415);
      expect(await res.json()).toMatchObject({
        code: 'unsupported_media_type',
        detail: expect.stringContaining(types),
      });
    }
    // The revocation sent as multipart did nothing.
    expect((await t.request('GET', '/v1/whoami', { key: minted.access_token })).status).toBe(200);
  });
});

describe('a JSON body sent as a form (curl -d without a Content-Type)', () => {
  it('is refused with 415 saying it is JSON and which header to send, where a route takes forms', async () => {
    const minted = (await (await t.request('POST', '/v1/tokens', { key })).json()) as {
      access_token: string;
    };
    for (const [path, body] of [
      ['/v1/oidc/token', { oidc_token: 'x.y.z', tenant: 'acme' }],
      ['/v1/tokens/introspect', { token: minted.access_token }],
      ['/v1/tokens/revoke', { token: minted.access_token }],
    ] as const) {
      const res = await fetch(`${url}${path}`, {
        method: 'POST',
        headers: {
          ...(path === '/v1/oidc/token' ? {} : { Authorization: `Bearer ${key}` }),
          'Content-Type': 'application/x-www-form-urlencoded',
        },
        body: ` ${JSON.stringify(body, null, 2)}\n`,
      });
      expect(res.status, path).toBe(415);
      const problem = (await res.json()) as { code: string; detail: string };
      expect(problem.code).toBe('unsupported_media_type');
      expect(problem.detail).toMatch(/is JSON.*Content-Type: application\/json/);
      expect(JSON.stringify(problem)).not.toContain(minted.access_token);
    }
    // The revocation sent that way did nothing, and the same body as JSON revokes the token.
    expect((await t.request('GET', '/v1/whoami', { key: minted.access_token })).status).toBe(200);
    const revoked = await fetch(`${url}/v1/tokens/revoke`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: minted.access_token }),
    });
    expect(revoked.status).toBe(200);
    expect((await t.request('GET', '/v1/whoami', { key: minted.access_token })).status).toBe(401);
  });

  it('while a form whose value merely starts with a brace is read as the form it is', async () => {
    const res = await fetch(`${url}/v1/tokens/introspect`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'token={"a":1}',
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ active: false });
  });
});

describe('a body with thousands of wrong fields', () => {
  it('is refused naming the first hundred and counting the rest, in an answer smaller than the body', async () => {
    const names = Array.from({ length: 6000 }, (_, i) => `f${i}`);
    const bodies = [
      ['application/json', JSON.stringify(Object.fromEntries(names.map((n) => [n, 0])))],
      ['application/x-www-form-urlencoded', names.map((n) => `${n}=1`).join('&')],
    ] as const;
    for (const [type, body] of bodies) {
      const res = await fetch(`${url}/v1/oidc/token`, {
        method: 'POST',
        headers: { 'Content-Type': type },
        body,
      });
      expect(res.status).toBe(400);
      const text = await res.text();
      expect(text.length).toBeLessThan(body.length);
      const problem = JSON.parse(text) as { detail: string; errors: { field: string }[] };
      expect(problem.errors).toHaveLength(100);
      expect(problem.errors.map((e) => e.field)).toContain('f0');
      expect(problem.detail).toMatch(/; and \d+ more$/);
    }
  });
});

describe('a media type written with the spaces and semicolons RFC 9110 allows', () => {
  it.each(['application/json ; charset=utf-8', 'application/json;', 'application/json ;charset=UTF-8 '])(
    'JSON as %j is read as JSON, in-process and over a socket',
    async (type) => {
      const body = JSON.stringify({
        name: `spaced ${type.trim()}`,
        expiration: '7d',
        permissions: ['audit-log:read'],
      });
      const headers = { Authorization: `Bearer ${key}`, 'Content-Type': type };
      const inProcess = await t.request('POST', '/v1/fine-grained-keys', { headers, body });
      expect(inProcess.status).toBe(201);
      const overSocket = await fetch(`${url}/v1/fine-grained-keys`, { method: 'POST', headers, body });
      expect(overSocket.status).toBe(201);
    },
  );

  it('a form as "application/x-www-form-urlencoded ; charset=utf-8" is read as a form', async () => {
    const minted = (await (await t.request('POST', '/v1/tokens', { key })).json()) as {
      access_token: string;
    };
    const res = await fetch(`${url}/v1/tokens/introspect`, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${key}`,
        'Content-Type': 'application/x-www-form-urlencoded ; charset=utf-8',
      },
      body: new URLSearchParams({ token: minted.access_token }).toString(),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ active: true });
  });
});

describe('a body whose client goes away before its end', () => {
  /** A body that sends `start` and then fails, as a stream does when its connection closes. */
  const cutOff = (start: string) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(utf8(start));
        controller.error(new Error('aborted'));
      },
    });

  it.each([
    ['/v1/fine-grained-keys', 'application/json', '{"name":"cut'],
    ['/v1/tokens/revoke', 'application/x-www-form-urlencoded', 'token=ey'],
  ])('%s (%s) is refused like any other body: 400, not a 500', async (path, type, start) => {
    const before = await keyNames();
    const res = await t.broker.app.request(`http://broker.test${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': type },
      body: cutOff(start),
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      detail: expect.stringContaining('cut off'),
    });
    expect(await keyNames()).toEqual(before);
    expect(t.logs.filter((line) => line.includes('"level":"error"'))).toEqual([]);
  });

  it("while a read that fails as a program's mistake does (a TypeError) is the broker's error, a 500 logged as one", async () => {
    const logged = t.logs.length;
    const res = await t.broker.app.request('http://broker.test/v1/fine-grained-keys', {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: new ReadableStream<Uint8Array>({
        start(controller) {
          controller.error(new TypeError('Body is unusable: Body has already been read'));
        },
      }),
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({ code: 'internal_error' });
    expect(t.logs.slice(logged).some((line) => line.includes('"level":"error"'))).toBe(true);
  });
});
