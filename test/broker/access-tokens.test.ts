// Access tokens: RFC 9068 claims verified with a standard library, use as credentials, introspection,
// revocation, minting from API keys, discovery metadata and signing-key rotation.
import { type KeyObject, randomUUID, sign } from 'node:crypto';
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  jwtVerify,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../broker/cli.js';
import { startTestBroker, TEST_KEK, type TestBroker } from '../support/broker.js';
import { deferred } from '../support/deferred.js';
import { type Federation, startFederation } from '../support/federation.js';
import { listening } from '../support/http-server.js';
import { tamperPayload } from '../support/jws-surgery.js';

let f: Federation;
const HOUR = 3600_000;

beforeAll(async () => {
  f = await startFederation();
  await f.policy('deploy', {
    permissions: ['harden-runner:read', 'audit-log:read'],
    max_session_duration_seconds: 1200,
  });
});
afterAll(() => f.close());

async function exchanged(): Promise<string> {
  const res = await f.exchange(f.issuer.sign());
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

const json = async <T = Record<string, unknown>>(res: Response | Promise<Response>) =>
  (await (await res).json()) as T;
/** The tenant's newest audit event of `type`. */
const newestEvent = async (type: string) =>
  (
    await json<{ events: { details: Record<string, unknown> }[] }>(
      f.t.request('GET', `/v1/audit-events?type=${type}&limit=1`, { key: f.key }),
    )
  ).events[0];
const form = (token: string) => ({
  body: new URLSearchParams({ token }).toString(),
  headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
});

describe('exchanged access tokens', () => {
  it('verify against /.well-known/jwks.json with jose and carry the claims of DESIGN §3', async () => {
    const token = await exchanged();
    const jwks = await json<{ keys: Record<string, string>[] }>(f.t.request('GET', '/.well-known/jwks.json'));
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks as never), {
      issuer: 'https://broker.test',
      audience: 'acme-corp.api.stepsecurity.io',
      typ: 'at+jwt',
      algorithms: ['ES256'],
      currentDate: new Date(f.t.clock.now),
    });
    const key = jwks.keys.find((k) => k.kid === protectedHeader.kid)!;
    expect(protectedHeader.kid).toBe(await calculateJwkThumbprint(key as never));
    expect(payload).toMatchObject({
      sub: 'repo:acme/infra:environment:production',
      client_id: expect.any(String),
      tenant: 'acme-corp',
      scope: 'harden-runner:read audit-log:read',
      permissions: ['harden-runner:read', 'audit-log:read'],
      jti: expect.any(String),
      policy: 'deploy',
      repository: 'acme/infra',
      repository_owner: 'acme',
      ref: 'refs/heads/main',
      run_id: '27476101517',
    });
    expect(payload.exp! - payload.iat!).toBe(1200);
  });

  it('verify, exchanged and minted alike, as a resource server does: JWKS found through the metadata, over HTTP', async () => {
    const server = await listening(f.t.broker.app.fetch);
    try {
      const socket = server.url;
      const meta = (await (await fetch(`${socket}/.well-known/oauth-authorization-server`)).json()) as {
        issuer: string;
        jwks_uri: string;
      };
      // The public URL is https://broker.test; the socket stands in for it.
      const jwks = createRemoteJWKSet(new URL(new URL(meta.jwks_uri).pathname, socket));
      const exchangedBody = await json<{ access_token: string; expires_in: number }>(
        f.exchange(f.issuer.sign()),
      );
      const mintedBody = await json<{ access_token: string; expires_in: number }>(
        f.t.request('POST', '/v1/tokens', { key: f.key, json: { duration_seconds: 600 } }),
      );
      for (const body of [exchangedBody, mintedBody]) {
        const { payload } = await jwtVerify(body.access_token, jwks, {
          issuer: meta.issuer,
          audience: 'acme-corp.api.stepsecurity.io',
          typ: 'at+jwt',
          algorithms: ['ES256'],
          requiredClaims: ['sub', 'client_id', 'jti', 'iat', 'exp', 'scope'],
          currentDate: new Date(f.t.clock.now),
        });
        expect(payload.exp! - payload.iat!).toBe(body.expires_in);
      }
    } finally {
      await server.close();
    }
  });

  it('authenticate with their permissions, and stop working once revoked (a token may revoke itself)', async () => {
    const token = await exchanged();
    const me = await json<{ credential: { kind: string; name: string }; permissions: string[] }>(
      f.t.request('GET', '/v1/whoami', { key: token }),
    );
    expect(me.credential).toMatchObject({ kind: 'access-token', name: 'trust policy deploy' });
    expect(me.permissions).toEqual(['harden-runner:read', 'audit-log:read']);
    expect((await f.t.request('GET', '/v1/audit-events', { key: token })).status).toBe(200);
    expect((await f.t.request('GET', '/v1/api-keys', { key: token })).status).toBe(403);

    const revoked = await f.t.request('POST', '/v1/tokens/revoke', { key: token, ...form(token) });
    expect(revoked.status).toBe(200);
    const after = await f.t.request('GET', '/v1/whoami', { key: token });
    expect(after.status).toBe(401);
    expect(await after.json()).toMatchObject({
      code: 'unauthenticated',
      detail: expect.stringContaining('revoked'),
    });
    expect(await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(token) }))).toEqual({
      active: false,
    });
    const events = await json<{ events: { type: string; actor: { kind: string } }[] }>(
      f.t.request('GET', '/v1/audit-events?type=token.revoked', { key: f.key }),
    );
    expect(events.events[0]?.actor.kind).toBe('access-token');
  });

  it('a token sent with white space around it, or as "Bearer <token>", is introspected and revoked all the same', async () => {
    for (const pasted of [(t: string) => ` ${t}\n`, (t: string) => `Bearer ${t}`]) {
      const token = await exchanged();
      expect(
        await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(pasted(token)) })),
      ).toMatchObject({ active: true });
      const revoked = await f.t.request('POST', '/v1/tokens/revoke', { key: f.key, ...form(pasted(token)) });
      expect(revoked.status).toBe(200);
      expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(401);
    }
  });

  it('introspect as active for the same tenant and inactive for another', async () => {
    const token = await exchanged();
    const active = await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(token) }));
    expect(active).toMatchObject({
      active: true,
      tenant: 'acme-corp',
      scope: 'harden-runner:read audit-log:read',
    });
    const other = await f.t.createTenant('other');
    expect(
      await json(f.t.request('POST', '/v1/tokens/introspect', { key: other.key, ...form(token) })),
    ).toEqual({
      active: false,
    });
    expect(
      await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form('garbage') })),
    ).toEqual({
      active: false,
    });
    // Introspection describes access tokens: an API key, working or not, is none (GET /v1/whoami describes it).
    expect(await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(f.key) }))).toEqual({
      active: false,
    });
  });

  it("cannot be revoked by another tenant's credential: answered 200 (RFC 7009), the token keeps working", async () => {
    const token = await exchanged();
    const other = await f.t.createTenant('foreign');
    const revoke = await f.t.request('POST', '/v1/tokens/revoke', { key: other.key, ...form(token) });
    expect(revoke.status).toBe(200);
    expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(200);
    const { jti } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
    expect(await f.t.broker.store.tokens.isRevoked(jti)).toBe(false);
    const events = await json<{ events: unknown[] }>(
      f.t.request('GET', '/v1/audit-events?type=token.revoked', { key: other.key }),
    );
    expect(events.events).toEqual([]);
  });

  it('take the token as a form (RFC 7662) or as JSON, and name it when it is missing', async () => {
    const token = await exchanged();
    const asJson = await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, json: { token } }));
    expect(asJson).toMatchObject({ active: true });
    const missing = await f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form('') });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ code: 'invalid_request', errors: [{ field: 'token' }] });
    // A token sent in the URL is not read: the answer says where it goes, rather than that none was sent.
    for (const path of ['/v1/tokens/introspect', '/v1/tokens/revoke']) {
      const inUrl = await f.t.request('POST', `${path}?token=${token}`, { key: f.key });
      expect(inUrl.status).toBe(400);
      expect(await inUrl.json()).toMatchObject({
        errors: [{ field: 'token', message: expect.stringContaining('required in the request body') }],
      });
      // So is one beside a body that holds the rest of the request, or nothing: a form's hint, an empty JSON object.
      for (const body of [
        {
          body: 'token_type_hint=access_token',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        },
        { ...form('') },
        { json: {} },
      ]) {
        const beside = await f.t.request('POST', `${path}?token=${token}`, { key: f.key, ...body });
        expect(beside.status).toBe(400);
        expect(await beside.json()).toMatchObject({
          code: 'invalid_request',
          errors: [{ field: 'token', message: expect.stringContaining('required in the request body') }],
        });
      }
    }
    // Still unrevoked: nothing was taken from the URL.
    expect(
      await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, json: { token } })),
    ).toMatchObject({
      active: true,
    });
    expect(
      await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, json: { token } })),
    ).toMatchObject({
      active: true,
    });
    // RFC 6749 §3.1: a parameter is sent once. Which of two tokens is meant cannot be told: neither is taken.
    for (const path of ['/v1/tokens/introspect', '/v1/tokens/revoke']) {
      const twice = await f.t.request('POST', path, {
        key: f.key,
        body: `token=${token}&token=${token}`,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      });
      expect(twice.status).toBe(400);
      expect(await twice.json()).toMatchObject({
        errors: [{ field: 'token', message: 'sent more than once: send each parameter once' }],
      });
    }
  });

  it("revoking another credential's token needs api-keys:write", async () => {
    const token = await exchanged();
    const reader = await json<{ key: string }>(
      f.t.request('POST', '/v1/api-keys/tenant-read-only/primary/rotate', { key: f.key }),
    );
    const denied = await f.t.request('POST', '/v1/tokens/revoke', { key: reader.key, ...form(token) });
    expect(denied.status).toBe(403);
    expect(await denied.json()).toMatchObject({ missing_permission: 'api-keys:write' });
    expect(await newestEvent('permission.denied')).toMatchObject({
      actor: { kind: 'tenant-read-only' },
      details: { permission: 'api-keys:write', route: '/v1/tokens/revoke' },
    });
    expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(200);
    expect((await f.t.request('POST', '/v1/tokens/revoke', { key: f.key, ...form(token) })).status).toBe(200);
    expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(401);
  });

  it('the API key that minted a token may revoke it (RFC 7009: the client it was issued to), but not a token of another key', async () => {
    const bot = await json<{ key: string }>(
      f.t.request('POST', '/v1/fine-grained-keys', {
        key: f.key,
        json: { name: 'ci-bot', expiration: '7d', permissions: ['harden-runner:read'] },
      }),
    );
    const minted = await json<{ access_token: string }>(f.t.request('POST', '/v1/tokens', { key: bot.key }));
    const others = await json<{ access_token: string }>(f.t.request('POST', '/v1/tokens', { key: f.key }));
    const foreign = await f.t.request('POST', '/v1/tokens/revoke', {
      key: bot.key,
      ...form(others.access_token),
    });
    expect(foreign.status).toBe(403);
    expect((await f.t.request('GET', '/v1/whoami', { key: others.access_token })).status).toBe(200);
    const own = await f.t.request('POST', '/v1/tokens/revoke', {
      key: bot.key,
      ...form(minted.access_token),
    });
    expect(own.status).toBe(200);
    expect((await f.t.request('GET', '/v1/whoami', { key: minted.access_token })).status).toBe(401);
    expect(await newestEvent('token.revoked')).toMatchObject({
      actor: { kind: 'fine-grained', name: 'ci-bot' },
    });
  });

  it('an API key sent to be revoked is refused, saying how that key is revoked, rather than answered as if revoked', async () => {
    const bot = await json<{ id: string; key: string }>(
      f.t.request('POST', '/v1/fine-grained-keys', {
        key: f.key,
        json: { name: 'leaked-bot', expiration: '7d', permissions: ['harden-runner:read'] },
      }),
    );
    const registry = await json<{ key: string }>(
      f.t.request('POST', '/v1/api-keys/secure-registry/secondary/rotate', { key: f.key }),
    );
    const other = await f.t.createTenant('other-revoker');
    const cases = [
      [bot.key, f.key, `DELETE /v1/fine-grained-keys/${bot.id}`],
      [registry.key, f.key, 'POST /v1/api-keys/secure-registry/secondary/rotate'],
      // A key of another tenant, or none at all: how such keys are revoked, naming nothing of that tenant.
      [bot.key, other.key, 'DELETE /v1/fine-grained-keys/{id}'],
      [`${bot.key.slice(0, -1)}!`, f.key, 'DELETE /v1/fine-grained-keys/{id}'],
      // Pasted with white space around it, or as its Authorization header's value, it is still that key.
      [` ${bot.key}`, f.key, `DELETE /v1/fine-grained-keys/${bot.id}`],
      [`\t${registry.key}\n`, f.key, 'POST /v1/api-keys/secure-registry/secondary/rotate'],
      [`Bearer ${bot.key}`, f.key, `DELETE /v1/fine-grained-keys/${bot.id}`],
    ] as const;
    for (const [token, caller, how] of cases) {
      for (const body of [form(token), { json: { token } }]) {
        const res = await f.t.request('POST', '/v1/tokens/revoke', { key: caller, ...body });
        expect(res.status).toBe(400);
        const problem = await json<{ code: string; detail: string; errors: { field: string }[] }>(res);
        expect(problem).toMatchObject({ code: 'invalid_request', errors: [{ field: 'token' }] });
        expect(problem.detail).toContain(how);
        expect(problem.detail).not.toContain(token.slice(4, 36));
        if (caller === other.key) expect(problem.detail).not.toContain(bot.id);
      }
    }
    // Nothing was revoked: the keys still work, until revoked as the answer says.
    expect((await f.t.request('GET', '/v1/whoami', { key: bot.key })).status).toBe(200);
    expect((await f.t.request('GET', '/v1/whoami', { key: registry.key })).status).toBe(200);
  });

  it('introspection and revocation refusals carry the OAuth error (RFC 7662, RFC 7009), as application/json to a client taking only that', async () => {
    const token = await exchanged();
    const reader = await json<{ key: string }>(
      f.t.request('POST', '/v1/api-keys/tenant-read-only/secondary/rotate', { key: f.key }),
    );
    const cases = [
      // The caller's credential (its client authentication) fails: 401 invalid_client, with the Bearer challenge.
      ['/v1/tokens/revoke', undefined, form(token), 401, 'unauthenticated', 'invalid_client'],
      ['/v1/tokens/introspect', 'ssa_unknown', form(token), 401, 'unauthenticated', 'invalid_client'],
      // A token issued to another client, without the permission to revoke it.
      ['/v1/tokens/revoke', reader.key, form(token), 403, 'forbidden', 'unauthorized_client'],
      ['/v1/tokens/introspect', f.key, form(''), 400, 'invalid_request', 'invalid_request'],
      ['/v1/tokens/revoke', f.key, form(reader.key), 400, 'invalid_request', 'invalid_request'],
      [
        '/v1/tokens/revoke',
        f.key,
        { body: 'token', headers: { 'Content-Type': 'text/plain' } },
        415,
        'unsupported_media_type',
        'invalid_request',
      ],
    ] as const;
    for (const [path, key, body, status, code, error] of cases) {
      // OAuth client libraries ask for application/json; the action names both; curl and fetch take anything.
      for (const [accept, type] of [
        [undefined, 'application/problem+json'],
        ['*/*', 'application/problem+json'],
        ['application/json', 'application/json'],
        ['application/json, application/problem+json', 'application/problem+json'],
        ['application/problem+json', 'application/problem+json'],
      ] as const) {
        const res = await f.t.request('POST', path, {
          key,
          ...body,
          headers: { ...body.headers, ...(accept ? { Accept: accept } : {}) },
        });
        const where = `${path} ${code} Accept: ${accept}`;
        expect([where, res.status, res.headers.get('Content-Type'), res.headers.get('Vary')]).toEqual([
          where,
          status,
          type,
          'Accept',
        ]);
        const problem = await json<Record<string, string>>(res);
        expect(problem, where).toMatchObject({ code, error });
        // The detail, in the characters RFC 6749 allows there.
        expect(problem.error_description, where).toMatch(/^[\x20\x21\x23-\x5B\x5D-\x7E]+$/);
        if (status === 401) expect(res.headers.get('WWW-Authenticate'), where).toMatch(/^Bearer /);
      }
    }
    // The refused revocation revoked nothing.
    expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(200);
  });

  it('revoking one token in several requests at once records one revocation', async () => {
    const minted = await json<{ access_token: string }>(f.t.request('POST', '/v1/tokens', { key: f.key }));
    const { jti } = JSON.parse(Buffer.from(minted.access_token.split('.')[1]!, 'base64url').toString());
    const revokes = await Promise.all(
      [1, 2, 3].map(() =>
        f.t.request('POST', '/v1/tokens/revoke', { key: f.key, ...form(minted.access_token) }),
      ),
    );
    expect(revokes.map((r) => r.status)).toEqual([200, 200, 200]);
    const { events } = await json<{ events: { target: { id: string } }[] }>(
      f.t.request('GET', '/v1/audit-events?type=token.revoked&limit=200', { key: f.key }),
    );
    expect(events.filter((e) => e.target.id === jti)).toHaveLength(1);
  });

  it('are no OIDC tokens, nor OIDC tokens credentials: each is refused where the other is taken', async () => {
    const token = await exchanged();
    const asOidc = await f.exchange(token);
    expect(asOidc.status).toBe(401);
    expect(await asOidc.json()).toMatchObject({ code: 'invalid_token' });
    const oidc = f.issuer.sign();
    const asCredential = await f.t.request('GET', '/v1/whoami', { key: oidc });
    expect(asCredential.status).toBe(401);
    expect(await asCredential.json()).toMatchObject({ code: 'unauthenticated' });
    // Neither attempt used anything up: the OIDC token is still exchanged once.
    expect((await f.exchange(oidc)).status).toBe(200);
  });

  it('a token whose claims were rewritten under its signature authenticates nothing and introspects inactive', async () => {
    const token = await exchanged();
    expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(200);
    const widened = tamperPayload(token, {
      scope: 'api-keys:read api-keys:write',
      permissions: ['api-keys:read', 'api-keys:write'],
    });
    for (const path of ['/v1/whoami', '/v1/api-keys']) {
      const res = await f.t.request('GET', path, { key: widened });
      expect(res.status, path).toBe(401);
      expect(await res.json()).toMatchObject({
        code: 'unauthenticated',
        detail: 'access token rejected: signature does not verify',
      });
    }
    expect(
      await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(widened) })),
    ).toEqual({
      active: false,
    });
  });

  it('expire: refused after exp', async () => {
    const token = await exchanged();
    f.t.clock.now += 1200_000;
    expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(401);
  });
});

describe('POST /v1/tokens', () => {
  it('mints from an API key: all its permissions by default, 1 h, audited', async () => {
    const res = await f.t.request('POST', '/v1/tokens', { key: f.key, json: {} });
    expect(res.status).toBe(201);
    const body = await json<{ access_token: string; expires_in: number; permissions: string[] }>(res);
    expect(body.expires_in).toBe(3600);
    expect(body.permissions).toContain('api-keys:write');
    const me = await json<{ credential: { kind: string } }>(
      f.t.request('GET', '/v1/whoami', { key: body.access_token }),
    );
    expect(me.credential.kind).toBe('access-token');
    const events = await json<{ events: { type: string }[] }>(
      f.t.request('GET', '/v1/audit-events?type=token.minted', { key: f.key }),
    );
    expect(events.events.length).toBeGreaterThan(0);
  });

  it('takes a request without a body as {}, as the document says it may be left out', async () => {
    const res = await f.t.request('POST', '/v1/tokens', { key: f.key });
    expect(res.status).toBe(201);
    expect(await json<{ expires_in: number }>(res)).toMatchObject({ expires_in: 3600 });
    const documented = await json<{
      paths: Record<string, { post: { requestBody: { required?: boolean } } }>;
    }>(f.t.request('GET', '/v1/openapi.json'));
    expect(documented.paths['/v1/tokens']!.post.requestBody.required).not.toBe(true);
  });

  it('a lifetime or permissions sent as query parameters are refused by name, never ignored for the defaults', async () => {
    const before = await newestEvent('token.minted');
    const res = await f.t.request('POST', '/v1/tokens?duration_seconds=300&permissions=audit-log:read', {
      key: f.key,
    });
    expect(res.status).toBe(400);
    const body = await json<{ code: string; errors: { field: string; message: string }[] }>(res);
    expect(body.code).toBe('invalid_request');
    expect(body.errors.map((e) => e.field)).toEqual(['duration_seconds', 'permissions']);
    expect(body.errors[0]!.message).toContain('unknown query parameter');
    // No token of every permission for an hour was minted instead.
    expect(await newestEvent('token.minted')).toEqual(before);
  });

  it('a lifetime out of bounds, or of the wrong type, is told the bounds, once', async () => {
    for (const duration_seconds of [0, -5, 12 * 3600 + 1, 1.5, 1e308, '60', null]) {
      const res = await f.t.request('POST', '/v1/tokens', { key: f.key, json: { duration_seconds } });
      expect(res.status).toBe(400);
      expect((await json<{ errors: unknown[] }>(res)).errors).toEqual([
        {
          field: 'duration_seconds',
          message: expect.stringContaining('a whole number of seconds from 1 to 43200 (12 h)'),
        },
      ]);
    }
  });

  it('grants only a subset of the key, at most 12 h, never past the key’s expiry', async () => {
    const fg = await json<{ key: string }>(
      f.t.request('POST', '/v1/fine-grained-keys', {
        key: f.key,
        json: { name: 'ci', expires_in_days: 1, permissions: ['harden-runner:read'] },
      }),
    );
    const escalate = await f.t.request('POST', '/v1/tokens', {
      key: fg.key,
      json: { permissions: ['harden-runner:write'] },
    });
    expect(escalate.status).toBe(403);
    expect(await escalate.json()).toMatchObject({ code: 'permission_escalation' });
    expect(await newestEvent('permission.denied')).toMatchObject({
      actor: { kind: 'fine-grained', name: 'ci' },
      details: { code: 'permission_escalation', missing: ['harden-runner:write'], route: '/v1/tokens' },
    });
    const tooLong = await f.t.request('POST', '/v1/tokens', {
      key: fg.key,
      json: { duration_seconds: 12 * 3600 + 1 },
    });
    expect(tooLong.status).toBe(400);
    f.t.clock.now += 23 * HOUR;
    const capped = await json<{ expires_in: number }>(
      f.t.request('POST', '/v1/tokens', { key: fg.key, json: { duration_seconds: 12 * 3600 } }),
    );
    expect(capped.expires_in).toBeLessThanOrEqual(3600);
    expect(capped.expires_in).toBeGreaterThan(3500);
    // With less than a second left, no token could outlive its own issue: refused, never an already-expired one.
    f.t.clock.now += HOUR - 500;
    const tooLate = await f.t.request('POST', '/v1/tokens', { key: fg.key, json: {} });
    expect(tooLate.status).toBe(401);
    expect(await tooLate.json()).toMatchObject({
      code: 'unauthenticated',
      detail: expect.stringContaining('expires'),
    });
  });

  it('never past the key’s expiry even when the clock moves on while the token is minted', async () => {
    // Every read of this clock is 400 ms after the last one, as on a busy broker.
    let ms = Date.now();
    let ticking = false;
    const clock = {
      get now() {
        if (ticking) ms += 400;
        return ms;
      },
      set now(value: number) {
        ms = value;
      },
    };
    const t = await startTestBroker({ clock });
    try {
      const { key } = await t.createTenant('busy-clock');
      const fg = await json<{ key: string; expires_at: string }>(
        t.request('POST', '/v1/fine-grained-keys', {
          key,
          json: { name: 'ci', expires_in_days: 1, permissions: ['harden-runner:read'] },
        }),
      );
      const keyExpires = Date.parse(fg.expires_at);
      ms = keyExpires - 10_010;
      ticking = true;
      const res = await t.request('POST', '/v1/tokens', { key: fg.key, json: { duration_seconds: 43_200 } });
      ticking = false;
      expect(res.status).toBe(201);
      const minted = await json<{ access_token: string; expires_at: string; expires_in: number }>(res);
      const claims = JSON.parse(Buffer.from(minted.access_token.split('.')[1]!, 'base64url').toString());
      expect(claims.exp * 1000).toBeLessThanOrEqual(keyExpires);
      expect(Date.parse(minted.expires_at)).toBe(claims.exp * 1000);
      expect(minted.expires_in).toBe(claims.exp - claims.iat);

      // A second left when the request is checked, none by the time it is signed: refused, not an expired token.
      ms = keyExpires - 2_000;
      ticking = true;
      const late = await t.request('POST', '/v1/tokens', { key: fg.key, json: {} });
      ticking = false;
      expect(late.status).toBe(401);
      expect(await late.json()).toMatchObject({
        detail: expect.stringContaining('too late to mint a token'),
      });
    } finally {
      await t.close();
    }
  });

  it('die with the key that minted them: rotating the slot or revoking the key revokes its tokens', async () => {
    const mint = async (key: string) =>
      (await json<{ access_token: string }>(f.t.request('POST', '/v1/tokens', { key, json: {} })))
        .access_token;
    const works = async (token: string) => (await f.t.request('GET', '/v1/whoami', { key: token })).status;
    const active = async (token: string) =>
      (
        await json<{ active: boolean }>(
          f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(token) }),
        )
      ).active;

    const rotate = () =>
      json<{ key: string }>(
        f.t.request('POST', '/v1/api-keys/tenant-read-only/secondary/rotate', { key: f.key }),
      );
    const first = await rotate();
    const fromFirst = await mint(first.key);
    const second = await rotate();
    const fromSecond = await mint(second.key);
    expect(await works(fromFirst)).toBe(401);
    expect(await active(fromFirst)).toBe(false);
    expect(await works(fromSecond)).toBe(200);
    expect((await newestEvent('api_key.rotated'))?.details).toMatchObject({ access_tokens_revoked: 1 });

    const fg = await json<{ id: string; key: string }>(
      f.t.request('POST', '/v1/fine-grained-keys', {
        key: f.key,
        json: { name: 'short-lived', expires_in_days: 7, permissions: ['audit-log:read'] },
      }),
    );
    const fromFg = [await mint(fg.key), await mint(fg.key)];
    const exchangedToken = await exchanged();
    expect((await f.t.request('DELETE', `/v1/fine-grained-keys/${fg.id}`, { key: f.key })).status).toBe(204);
    for (const token of fromFg) expect(await works(token)).toBe(401);
    expect((await newestEvent('fine_grained_key.revoked'))?.details).toMatchObject({
      access_tokens_revoked: 2,
    });
    // Tokens of other credentials, and exchanged ones, are untouched.
    expect(await works(fromSecond)).toBe(200);
    expect(await works(exchangedToken)).toBe(200);
  });

  it('exchanged tokens die with the trust policy that granted them: deleting it ends them, replacing its claims does not', async () => {
    // A repository the tenant trusts is compromised: its policy is deleted, and what the policy granted stops too.
    const works = async (token: string) => (await f.t.request('GET', '/v1/whoami', { key: token })).status;
    const created = await json<{ policy: { id: string } }>(
      f.t.request('POST', '/v1/oidc/policies', {
        key: f.key,
        json: {
          name: 'compromised',
          claims: { repository: 'acme/compromised', ref: 'refs/heads/main' },
          permissions: ['harden-runner:read'],
        },
      }),
    );
    const id = created.policy.id;
    const fromCompromised = async () => {
      const res = await f.exchange(
        f.issuer.sign({ repository: 'acme/compromised', repository_id: '99001' }),
        { policy: 'compromised' },
      );
      expect(res.status).toBe(200);
      return (await json<{ access_token: string }>(res)).access_token;
    };
    const granted = [await fromCompromised(), await fromCompromised()];
    // The policies that granted the repository tokens are the targets of its exchanges' events.
    const exchanges = await json<{ events: { target: { id: string }; details: Record<string, unknown> }[] }>(
      f.t.request('GET', '/v1/audit-events?type=token.exchanged&limit=200', { key: f.key }),
    );
    const grantedBy = exchanges.events
      .filter((e) => e.details.repository === 'acme/compromised')
      .map((e) => e.target.id);
    expect(grantedBy).toEqual([id, id]);
    const otherPolicy = await exchanged();
    const minted = (
      await json<{ access_token: string }>(f.t.request('POST', '/v1/tokens', { key: f.key, json: {} }))
    ).access_token;

    // A replace takes effect on the next exchange; the tokens already issued stay valid.
    const replaced = await f.t.request('PUT', `/v1/oidc/policies/${id}`, {
      key: f.key,
      json: {
        name: 'compromised',
        claims: { repository: 'acme/compromised', ref: 'refs/heads/release' },
        permissions: ['harden-runner:read'],
      },
    });
    expect(replaced.status).toBe(200);
    for (const token of granted) expect(await works(token)).toBe(200);

    expect((await f.t.request('DELETE', `/v1/oidc/policies/${id}`, { key: f.key })).status).toBe(204);
    for (const token of granted) {
      expect(await works(token)).toBe(401);
      const refused = await json<{ code: string; detail: string }>(
        f.t.request('GET', '/v1/whoami', { key: token }),
      );
      expect(refused).toMatchObject({
        code: 'unauthenticated',
        detail: expect.stringContaining('the trust policy that granted it was deleted'),
      });
      expect(
        await json(f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(token) })),
      ).toEqual({ active: false });
    }
    // Tokens another policy granted, or a key minted, are untouched.
    expect(await works(otherPolicy)).toBe(200);
    expect(await works(minted)).toBe(200);
  });

  it('narrowing a trust policy narrows the tokens it granted at once; widening it widens none', async () => {
    // A repository's policy grants it policy administration; the administrator takes that away by replacing the
    // policy: the token already in the repository's hands loses it on its next request, as a role's sessions do.
    const created = await json<{ policy: { id: string } }>(
      f.t.request('POST', '/v1/oidc/policies', {
        key: f.key,
        json: {
          name: 'narrowed',
          claims: { repository: 'acme/narrowed', ref: 'refs/heads/main' },
          permissions: ['oidc-federation:write', 'harden-runner:read'],
        },
      }),
    );
    const id = created.policy.id;
    const res = await f.exchange(f.issuer.sign({ repository: 'acme/narrowed', repository_id: '99003' }), {
      policy: 'narrowed',
    });
    expect(res.status).toBe(200);
    const token = (await json<{ access_token: string }>(res)).access_token;
    const whoami = async () =>
      json<{ permissions: string[] }>(f.t.request('GET', '/v1/whoami', { key: token }));
    const introspect = async () =>
      json<{ active: boolean; scope: string; permissions: string[] }>(
        f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(token) }),
      );
    expect((await whoami()).permissions).toEqual([
      'harden-runner:read',
      'oidc-federation:read',
      'oidc-federation:write',
    ]);
    expect((await f.t.request('GET', '/v1/oidc/policies', { key: token })).status).toBe(200);

    const replace = (permissions: string[]) =>
      f.t.request('PUT', `/v1/oidc/policies/${id}`, {
        key: f.key,
        json: {
          name: 'narrowed',
          claims: { repository: 'acme/narrowed', ref: 'refs/heads/main' },
          permissions,
        },
      });
    expect((await replace(['oidc-federation:read', 'harden-runner:read', 'audit-log:read'])).status).toBe(
      200,
    );
    // What the policy no longer allows is gone; what it newly allows was never granted.
    expect((await whoami()).permissions).toEqual(['harden-runner:read', 'oidc-federation:read']);
    const refused = await f.t.request('POST', '/v1/oidc/policies', {
      key: token,
      json: { name: 'made-by-ci', claims: { repository: 'acme/other' }, permissions: ['harden-runner:read'] },
    });
    expect(refused.status).toBe(403);
    expect(await json(refused)).toMatchObject({ code: 'forbidden' });
    expect((await f.t.request('GET', '/v1/oidc/policies', { key: token })).status).toBe(200);
    expect((await f.t.request('GET', '/v1/audit-events', { key: token })).status).toBe(403);
    // Introspection answers what the token may do now, for services that ask the broker.
    expect(await introspect()).toMatchObject({
      active: true,
      scope: 'harden-runner:read oidc-federation:read',
      permissions: ['harden-runner:read', 'oidc-federation:read'],
    });

    // Nothing left in common: the token still names its holder, and may do nothing.
    expect((await replace(['audit-log:read'])).status).toBe(200);
    expect((await whoami()).permissions).toEqual([]);
    expect((await f.t.request('GET', '/v1/oidc/policies', { key: token })).status).toBe(403);
    expect(await introspect()).toMatchObject({ active: true, scope: '', permissions: [] });

    // Widened again, it gives back what the token was granted, no more.
    expect((await replace(['read-write-all'])).status).toBe(200);
    expect((await whoami()).permissions).toEqual([
      'harden-runner:read',
      'oidc-federation:read',
      'oidc-federation:write',
    ]);
    // The signed token itself is unchanged: a service verifying it offline sees what was granted.
    const signed = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { scope: string };
    expect(signed.scope).toBe('harden-runner:read oidc-federation:read oidc-federation:write');
  });

  it('narrowing a policy from write to read leaves the read to a token an earlier version granted the write alone', async () => {
    // Versions before scope carried each write's read minted `harden-runner:write` alone; the broker let such a
    // token read too. Replacing its policy with `harden-runner:read` takes the write and leaves the read.
    const created = await json<{ policy: { id: string } }>(
      f.t.request('POST', '/v1/oidc/policies', {
        key: f.key,
        json: {
          name: 'write-then-read',
          claims: { repository: 'acme/write-then-read', ref: 'refs/heads/main' },
          permissions: ['harden-runner:write'],
        },
      }),
    );
    const id = created.policy.id;
    const key = await f.t.broker.deps.accessTokens.signingKey();
    const token = forge(
      key,
      { iat: f.t.clock.now, exp: f.t.clock.now + HOUR / 2 },
      {
        sub: 'repo:acme/write-then-read:ref:refs/heads/main',
        client_id: id,
        policy: 'write-then-read',
        repository: 'acme/write-then-read',
        scope: 'harden-runner:write',
        permissions: ['harden-runner:write'],
      },
    );
    const whoami = async () =>
      json<{ permissions: string[] }>(f.t.request('GET', '/v1/whoami', { key: token }));
    const introspect = async () =>
      json<{ active: boolean; scope: string; permissions: string[] }>(
        f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(token) }),
      );
    expect((await whoami()).permissions).toEqual(['harden-runner:read', 'harden-runner:write']);
    expect(await introspect()).toMatchObject({
      scope: 'harden-runner:read harden-runner:write',
      permissions: ['harden-runner:read', 'harden-runner:write'],
    });

    const replaced = await f.t.request('PUT', `/v1/oidc/policies/${id}`, {
      key: f.key,
      json: {
        name: 'write-then-read',
        claims: { repository: 'acme/write-then-read', ref: 'refs/heads/main' },
        permissions: ['harden-runner:read'],
      },
    });
    expect(replaced.status).toBe(200);
    expect((await whoami()).permissions).toEqual(['harden-runner:read']);
    expect(await introspect()).toMatchObject({
      active: true,
      scope: 'harden-runner:read',
      permissions: ['harden-runner:read'],
    });
  });

  it('a change asked for with an exchanged token whose policy is deleted while it is in flight changes nothing', async () => {
    // The repository's policy grants api-keys:write; its token asks for a fine-grained key, and the admin deletes
    // the policy as the request is on its way: the key must not be made, as it would outlive the deletion.
    const created = await json<{ policy: { id: string } }>(
      f.t.request('POST', '/v1/oidc/policies', {
        key: f.key,
        json: {
          name: 'key-maker',
          claims: { repository: 'acme/key-maker', ref: 'refs/heads/main' },
          permissions: ['api-keys:write'],
        },
      }),
    );
    const id = created.policy.id;
    const exchangedRes = await f.exchange(
      f.issuer.sign({ repository: 'acme/key-maker', repository_id: '99002' }),
      { policy: 'key-maker' },
    );
    expect(exchangedRes.status).toBe(200);
    const token = (await json<{ access_token: string }>(exchangedRes)).access_token;
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string };

    // Held once the token has been verified (its policy looked up), until the policy is deleted.
    const { policies } = f.t.broker.store;
    const get = policies.get;
    const authenticated = deferred();
    const proceed = deferred();
    policies.get = async (tenantId, policyId) => {
      const found = await get(tenantId, policyId);
      if (policyId === id) {
        policies.get = get;
        authenticated.resolve();
        await proceed.promise;
      }
      return found;
    };
    try {
      const answer = f.t.request('POST', '/v1/fine-grained-keys', {
        key: token,
        json: { name: 'outliving', expiration: '1y', permissions: ['api-keys:write'] },
      });
      await authenticated.promise;
      expect((await f.t.request('DELETE', `/v1/oidc/policies/${id}`, { key: f.key })).status).toBe(204);
      proceed.resolve();
      const res = await answer;
      expect(res.status).toBe(401);
      expect(await json(res)).toMatchObject({
        code: 'unauthenticated',
        detail: expect.stringMatching(/nothing/),
      });
    } finally {
      policies.get = get;
    }
    const keys = await json<{ keys: { name: string }[] }>(
      f.t.request('GET', '/v1/fine-grained-keys', { key: f.key }),
    );
    expect(keys.keys.map((k) => k.name)).not.toContain('outliving');
    const made = await json<{ events: { actor: { id: string } }[] }>(
      f.t.request('GET', '/v1/audit-events?type=fine_grained_key.created&limit=200', { key: f.key }),
    );
    expect(made.events.filter((e) => e.actor.id === claims.jti)).toEqual([]);
  });

  it("a mint that overlaps its key's revocation hands out no token", async () => {
    const fg = await json<{ id: string; key: string }>(
      f.t.request('POST', '/v1/fine-grained-keys', {
        key: f.key,
        json: { name: 'racing', expires_in_days: 7, permissions: ['audit-log:read'] },
      }),
    );
    // The mint has authenticated the key and is signing when the key is revoked.
    const tokens = f.t.broker.deps.accessTokens;
    const sign = tokens.mint;
    const signing = deferred();
    const inMint = deferred();
    tokens.mint = async (input) => {
      inMint.resolve();
      await signing.promise;
      return sign(input);
    };
    try {
      const minting = f.t.request('POST', '/v1/tokens', { key: fg.key, json: {} });
      await inMint.promise;
      expect((await f.t.request('DELETE', `/v1/fine-grained-keys/${fg.id}`, { key: f.key })).status).toBe(
        204,
      );
      signing.resolve();
      const res = await minting;
      expect(res.status).toBe(401);
      expect(await res.text()).not.toContain('access_token');
    } finally {
      tokens.mint = sign;
    }
  });

  it('an access token cannot mint another; the refusal is audited', async () => {
    const token = await exchanged();
    const res = await f.t.request('POST', '/v1/tokens', { key: token, json: {} });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ required_credential: 'api-key' });
    expect(await newestEvent('permission.denied')).toMatchObject({
      actor: { kind: 'access-token' },
      details: { required_credential: 'api-key', route: '/v1/tokens' },
    });
  });
});

describe('revocation on a replica whose clock runs behind (by less than the minute replicas may differ)', () => {
  /** Replica `b` on the same database, its clock 30 s behind `f`'s; both clocks move together. */
  async function withReplicaBehind(run: (b: TestBroker, advance: (ms: number) => void) => Promise<void>) {
    const clock = { now: f.t.clock.now - 30_000 };
    const b = await startTestBroker({ db: f.t.db, clock, env: { BROKER_PUBLIC_URL: 'https://broker.test' } });
    try {
      await run(b, (ms) => {
        f.t.clock.now += ms;
        clock.now += ms;
      });
    } finally {
      await b.close();
    }
  }
  const works = async (b: TestBroker, token: string) =>
    (await b.request('GET', '/v1/whoami', { key: token })).status;

  it('rotating the slot that minted a token stops it there too, though it has expired by the clock of the replica that rotates', async () => {
    await withReplicaBehind(async (b, advance) => {
      const reader = await json<{ key: string }>(
        f.t.request('POST', '/v1/api-keys/tenant-read-only/primary/rotate', { key: f.key }),
      );
      const minted = await json<{ access_token: string }>(
        b.request('POST', '/v1/tokens', { key: reader.key, json: { duration_seconds: 60 } }),
      );
      // 45 s on: 15 s left by b's clock, expired 15 s ago by f's.
      advance(45_000);
      expect(await works(b, minted.access_token)).toBe(200);
      expect(
        (await f.t.request('POST', '/v1/api-keys/tenant-read-only/primary/rotate', { key: f.key })).status,
      ).toBe(200);
      expect(await works(b, minted.access_token)).toBe(401);
    });
  });

  it('revoking a fine-grained key stops its tokens there too, in the same way', async () => {
    await withReplicaBehind(async (b, advance) => {
      const bot = await json<{ id: string; key: string }>(
        f.t.request('POST', '/v1/fine-grained-keys', {
          key: f.key,
          json: { name: 'skewed', expires_in_days: 7, permissions: ['audit-log:read'] },
        }),
      );
      const minted = await json<{ access_token: string }>(
        b.request('POST', '/v1/tokens', { key: bot.key, json: { duration_seconds: 60 } }),
      );
      advance(45_000);
      expect(await works(b, minted.access_token)).toBe(200);
      expect((await f.t.request('DELETE', `/v1/fine-grained-keys/${bot.id}`, { key: f.key })).status).toBe(
        204,
      );
      expect(await works(b, minted.access_token)).toBe(401);
    });
  });

  it('a token revoked there is refused there too, though it has expired by the clock of the replica that revokes', async () => {
    await withReplicaBehind(async (b, advance) => {
      const minted = await json<{ access_token: string }>(
        b.request('POST', '/v1/tokens', { key: f.key, json: { duration_seconds: 60 } }),
      );
      advance(45_000);
      expect(await works(b, minted.access_token)).toBe(200);
      const revoked = await f.t.request('POST', '/v1/tokens/revoke', {
        key: f.key,
        ...form(minted.access_token),
      });
      expect(revoked.status).toBe(200);
      expect(await works(b, minted.access_token)).toBe(401);
      const introspected = await json<{ active: boolean }>(
        b.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(minted.access_token) }),
      );
      expect(introspected.active).toBe(false);
    });
  });
});

describe('a replica configured with another BROKER_PUBLIC_URL (misconfigured, or while the URL changes)', () => {
  /** Replica `b` on the same database and clock, whose tokens carry another `iss`. */
  async function withOtherUrl(run: (b: TestBroker) => Promise<void>) {
    const b = await startTestBroker({
      db: f.t.db,
      clock: f.t.clock,
      env: { BROKER_PUBLIC_URL: 'https://broker-b.test' },
    });
    try {
      await run(b);
    } finally {
      await b.close();
    }
  }

  it('revokes a token the other replica minted, on every replica, rather than answering 200 and revoking nothing', async () => {
    await withOtherUrl(async (b) => {
      const token = await exchanged();
      expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(200);
      const revoked = await b.request('POST', '/v1/tokens/revoke', { key: f.key, ...form(token) });
      expect(revoked.status).toBe(200);
      expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(401);
      const introspected = await json<{ active: boolean }>(
        f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(token) }),
      );
      expect(introspected.active).toBe(false);
    });
  });

  it("refuses the other replica's tokens naming both URLs, so the operator sees the replicas disagree", async () => {
    await withOtherUrl(async (b) => {
      const token = await exchanged();
      const res = await b.request('GET', '/v1/whoami', { key: token });
      expect(res.status).toBe(401);
      const { detail } = await json<{ detail: string }>(res);
      expect(detail).toContain('https://broker.test');
      expect(detail).toContain('https://broker-b.test');
      expect(detail).toContain('BROKER_PUBLIC_URL');
    });
  });
});

/** Rotates the broker's signing key with the CLI, as an operator does: the new kid and when it signs. */
async function rotateSigningKey(g: Federation): Promise<{ newKid: string; activeFrom: number }> {
  let out = '';
  let err = '';
  const code = await runCli(['signing-key', 'rotate'], {
    env: { DATABASE_URL: g.t.db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK },
    out: (s) => {
      out += s;
    },
    err: (s) => {
      err += s;
    },
    serve: async () => 0,
  });
  expect(code).toBe(0);
  const from = /signs from (\S+), once verifiers/.exec(err)?.[1];
  expect(from).toBeDefined();
  return { newKid: out.trim(), activeFrom: Date.parse(from!) };
}

/** A token signed with a broker key by someone holding it: claims of a genuine token, times as given, any changed. */
function forge(
  key: { kid: string; privateKey: KeyObject },
  times: { iat: number; exp: number },
  changed: Record<string, unknown> = {},
): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const claims = {
    iss: 'https://broker.test',
    sub: 'forger',
    aud: 'acme-corp.api.stepsecurity.io',
    client_id: 'forger',
    tenant: 'acme-corp',
    scope: 'audit-log:read',
    permissions: ['audit-log:read'],
    jti: randomUUID(),
    iat: Math.floor(times.iat / 1000),
    exp: Math.floor(times.exp / 1000),
    ...changed,
  };
  const input = `${b64({ alg: 'ES256', typ: 'at+jwt', kid: key.kid })}.${b64(claims)}`;
  const signature = sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

describe('discovery and signing keys', () => {
  it('publishes RFC 8414 metadata', async () => {
    const meta = await json(f.t.request('GET', '/.well-known/oauth-authorization-server'));
    expect(meta).toMatchObject({
      issuer: 'https://broker.test',
      token_endpoint: 'https://broker.test/v1/oidc/token',
      jwks_uri: 'https://broker.test/.well-known/jwks.json',
      revocation_endpoint: 'https://broker.test/v1/tokens/revoke',
      introspection_endpoint: 'https://broker.test/v1/tokens/introspect',
      grant_types_supported: ['urn:ietf:params:oauth:grant-type:token-exchange'],
      token_endpoint_auth_methods_supported: ['none'],
      // RFC 8414 §2: left out, revocation would default to client_secret_basic, which the broker does not take.
      // Both endpoints take an API key or access token as a bearer credential (a value of the Access Token Types
      // registry, which RFC 8414 allows here).
      introspection_endpoint_auth_methods_supported: ['Bearer'],
      revocation_endpoint_auth_methods_supported: ['Bearer'],
    });
  });

  it('behind a path prefix, also answers the RFC 8414 §3 path of its issuer, which a proxy forwards as it is, and no other', async () => {
    const prefixed = await startTestBroker({ env: { BROKER_PUBLIC_URL: 'https://host/broker' } });
    try {
      // A client of issuer https://host/broker asks https://host/.well-known/oauth-authorization-server/broker; a
      // proxy rule for /.well-known/ forwards that path unchanged.
      const rfc8414 = await prefixed.request('GET', '/.well-known/oauth-authorization-server/broker');
      expect(rfc8414.status).toBe(200);
      const meta = await json(rfc8414);
      expect(meta).toMatchObject({
        issuer: 'https://host/broker',
        token_endpoint: 'https://host/broker/v1/oidc/token',
      });
      // The path the prefix is stripped from gives the same document.
      expect(await json(prefixed.request('GET', '/.well-known/oauth-authorization-server'))).toEqual(meta);
      expect((await prefixed.request('POST', '/.well-known/oauth-authorization-server/broker')).status).toBe(
        405,
      );
      for (const other of ['/other', '/broker/', '/broker/v1', '/Broker']) {
        const res = await prefixed.request('GET', `/.well-known/oauth-authorization-server${other}`);
        expect([other, res.status]).toEqual([other, 404]);
      }
    } finally {
      await prefixed.close();
    }
    // At the root there is no other path; nor is there one for a prefix with a parameter-like segment but its own.
    expect((await f.t.request('GET', '/.well-known/oauth-authorization-server/broker')).status).toBe(404);
    const odd = await startTestBroker({ env: { BROKER_PUBLIC_URL: 'https://host/tenants/:id' } });
    try {
      expect((await odd.request('GET', '/.well-known/oauth-authorization-server/tenants/:id')).status).toBe(
        200,
      );
      expect((await odd.request('GET', '/.well-known/oauth-authorization-server/tenants/acme')).status).toBe(
        404,
      );
    } finally {
      await odd.close();
    }
  });

  it('starts behind a prefix holding a % that begins no escape (BROKER_PUBLIC_URL=https://host/a%zz), and answers its RFC 8414 path', async () => {
    // The configuration takes such a path as a URL parser writes it; the router leaves the `%zz` undecoded.
    const odd = await startTestBroker({ env: { BROKER_PUBLIC_URL: 'https://host/a%zz/%C3%A9' } });
    try {
      const res = await odd.request('GET', '/.well-known/oauth-authorization-server/a%zz/%C3%A9');
      expect(res.status).toBe(200);
      expect(await json(res)).toMatchObject({ issuer: 'https://host/a%zz/%C3%A9' });
    } finally {
      await odd.close();
    }
  });

  it("the OpenAPI document declares the metadata's members, so that a generated client can read them", async () => {
    type Schema = { $ref?: string; properties: Record<string, unknown>; required: string[] };
    const meta = await json(f.t.request('GET', '/.well-known/oauth-authorization-server'));
    const document = await json<{
      paths: Record<string, { get: { responses: { 200: { content: Record<string, { schema: Schema }> } } } }>;
      components: { schemas: Record<string, Schema> };
    }>(f.t.request('GET', '/v1/openapi.json'));
    const declared =
      document.paths['/.well-known/oauth-authorization-server']!.get.responses[200].content[
        'application/json'
      ]!.schema;
    const schema = declared.$ref ? document.components.schemas[declared.$ref.split('/').pop()!]! : declared;
    expect(Object.keys(schema.properties).sort()).toEqual(Object.keys(meta).sort());
    expect(schema.required.sort()).toEqual(Object.keys(meta).sort());
  });

  it('rotation publishes the new key before it signs; old tokens keep working; the old key leaves 12 h after', async () => {
    // Its own broker: the CLI stamps the rotation with the real time, so the fake clock must still agree with it.
    const g = await startFederation();
    try {
      await g.policy('deploy', { permissions: ['harden-runner:read'] });
      const exchange = async () =>
        ((await json(g.exchange(g.issuer.sign()))) as { access_token: string }).access_token;
      const kids = async () =>
        (await json<{ keys: { kid: string }[] }>(g.t.request('GET', '/.well-known/jwks.json'))).keys.map(
          (k) => k.kid,
        );
      const before = await exchange();
      const oldKid = decodeProtectedHeader(before).kid;
      const { newKid, activeFrom } = await rotateSigningKey(g);
      expect(newKid).not.toBe(oldKid);
      // Published within a minute, signing only once a verifier that cached the JWKS (max-age 300) has fetched it again
      // from a replica that has reloaded its keys (every minute), with a minute for clocks that differ.
      expect(activeFrom - g.t.clock.now).toBeGreaterThanOrEqual((60 + 300 + 60) * 1000 - 5_000);

      g.t.clock.now += 61_000; // replicas look for new keys every minute
      expect(await kids()).toEqual(expect.arrayContaining([oldKid, newKid]));
      expect(decodeProtectedHeader(await exchange()).kid).toBe(oldKid);
      g.t.clock.now = activeFrom - 1;
      expect(decodeProtectedHeader(await exchange()).kid).toBe(oldKid);
      g.t.clock.now = activeFrom;
      const after = await exchange();
      expect(decodeProtectedHeader(after).kid).toBe(newKid);
      expect((await g.t.request('GET', '/v1/whoami', { key: after })).status).toBe(200);
      expect((await g.t.request('GET', '/v1/whoami', { key: before })).status).toBe(200);
      // A replica may sign with the old key until it reloads (up to a minute after activeFrom): a 12 h token it
      // signed then is still valid 12 h later, so the key stays published that minute longer, and a little more.
      g.t.clock.now = activeFrom + 12 * HOUR;
      expect(await kids()).toEqual(expect.arrayContaining([oldKid, newKid]));
      g.t.clock.now += 2 * 60_000;
      expect(await kids()).toEqual([newKid]);
    } finally {
      await g.close();
    }
  });

  it('a leaked signing key forges nothing once rotated: no token it signs after retiring, nothing once unpublished', async () => {
    const g = await startFederation();
    try {
      const whoami = async (token: string) => (await g.t.request('GET', '/v1/whoami', { key: token })).status;
      const leaked = await g.t.broker.deps.signingKeys.active();
      const signedBefore = forge(leaked, { iat: g.t.clock.now, exp: g.t.clock.now + 12 * HOUR });
      expect(await whoami(signedBefore)).toBe(200);
      const { activeFrom } = await rotateSigningKey(g);

      // Still published (tokens it signed are valid): one signed a minute after it retired (a replica that had
      // not reloaded could) is accepted, one signed later is not.
      g.t.clock.now = activeFrom + 60_000;
      expect(await whoami(forge(leaked, { iat: g.t.clock.now, exp: g.t.clock.now + HOUR }))).toBe(200);
      g.t.clock.now = activeFrom + 3 * 60_000;
      expect(await whoami(forge(leaked, { iat: g.t.clock.now, exp: g.t.clock.now + HOUR }))).toBe(401);
      // Backdated to before it retired, a token lives 12 h at most, so it cannot reach past the key's end.
      const backdated = forge(leaked, { iat: activeFrom - 60_000, exp: activeFrom + 30 * 24 * HOUR });
      expect(await whoami(backdated)).toBe(401);
      expect(await whoami(signedBefore)).toBe(200);

      // Once no token it signed can be valid, it is gone from the JWKS and verifies nothing: refused for its key,
      // before its times are looked at.
      g.t.clock.now = activeFrom + 12 * HOUR + 3 * 60_000;
      const res = await g.t.request('GET', '/v1/whoami', {
        key: forge(leaked, { iat: g.t.clock.now - 3600_000, exp: g.t.clock.now + 3600_000 }),
      });
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ detail: expect.stringContaining('unknown signing key') });
    } finally {
      await g.close();
    }
  });

  it.each([
    ['issued in the future', (now: number) => ({ iat: now + 5 * 60_000, exp: now + HOUR })],
    ['living longer than 12 h', (now: number) => ({ iat: now - 60_000, exp: now + 12 * HOUR })],
  ])('a token %s is refused, even with a valid signature', async (_, times) => {
    const key = await f.t.broker.deps.signingKeys.active();
    expect((await f.t.request('GET', '/v1/whoami', { key: forge(key, times(f.t.clock.now)) })).status).toBe(
      401,
    );
    const fine = forge(key, { iat: f.t.clock.now, exp: f.t.clock.now + HOUR });
    expect((await f.t.request('GET', '/v1/whoami', { key: fine })).status).toBe(200);
  });

  it('a token issued up to 60 s ahead of this clock (replicas may differ that much) is taken, not a millisecond more', async () => {
    const key = await f.t.broker.deps.signingKeys.active();
    // On a whole second, which iat counts in; ahead of where the clock stands, which only moves forward.
    const second = (Math.ceil(f.t.clock.now / 1000) + 1) * 1000;
    const token = forge(key, { iat: second + 60_000, exp: second + HOUR });
    f.t.clock.now = second - 1;
    const early = await f.t.request('GET', '/v1/whoami', { key: token });
    expect(early.status).toBe(401);
    expect(await early.json()).toMatchObject({ detail: 'access token rejected: issued in the future' });
    f.t.clock.now = second;
    expect((await f.t.request('GET', '/v1/whoami', { key: token })).status).toBe(200);
  });

  it('a token signed for one tenant authenticates nothing at another: its tenant must be the one whose audience it carries', async () => {
    const key = await f.t.broker.deps.signingKeys.active();
    const { tenant: other } = await f.t.createTenant('audience-other');
    const times = { iat: f.t.clock.now, exp: f.t.clock.now + HOUR };
    const whoami = (token: string) => f.t.request('GET', '/v1/whoami', { key: token });
    // Signed as the broker signs the other tenant's tokens, it is that tenant's.
    const genuine = await whoami(forge(key, times, { tenant: other.name, aud: other.audience }));
    expect(genuine.status).toBe(200);
    expect(await genuine.json()).toMatchObject({ tenant: { name: 'audience-other' } });
    // acme-corp's audience under the other tenant's name, and the other's audience under acme-corp's name.
    for (const changed of [{ tenant: other.name }, { aud: other.audience }]) {
      const res = await whoami(forge(key, times, changed));
      expect(res.status, JSON.stringify(changed)).toBe(401);
      expect(await res.json()).toMatchObject({
        code: 'unauthenticated',
        detail: 'access token rejected: unknown tenant',
      });
    }
  });
});
