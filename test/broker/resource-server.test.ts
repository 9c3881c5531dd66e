// The broker's access tokens as a resource server meets them: verified offline with jose against the JWKS that the
// RFC 8414 metadata names, authorised by their `scope` (RFC 9068 §4), or introspected (RFC 7662).
import { createLocalJWKSet, type JWTPayload, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Federation, startFederation } from '../support/federation.js';

let f: Federation;

beforeAll(async () => {
  f = await startFederation();
  await f.policy('deploy', { permissions: ['harden-runner:write', 'audit-log:read'] });
});
afterAll(() => f.close());

const json = async <T = Record<string, unknown>>(res: Response | Promise<Response>) =>
  (await (await res).json()) as T;
const form = (token: string) => ({
  body: new URLSearchParams({ token }).toString(),
  headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
});

/** What a resource server reads of a token: its verified claims, with the JWKS and issuer from the metadata. */
async function verified(token: string): Promise<JWTPayload & { scope: string; permissions: string[] }> {
  const meta = await json<{ issuer: string; jwks_uri: string }>(
    f.t.request('GET', '/.well-known/oauth-authorization-server'),
  );
  const jwks = await json(f.t.request('GET', new URL(meta.jwks_uri).pathname));
  const { payload } = await jwtVerify(token, createLocalJWKSet(jwks as never), {
    issuer: meta.issuer,
    audience: 'acme-corp.api.stepsecurity.io',
    typ: 'at+jwt',
    algorithms: ['ES256'],
    currentDate: new Date(f.t.clock.now),
  });
  return payload as JWTPayload & { scope: string; permissions: string[] };
}

describe('scope, as a resource server authorises by it', () => {
  it('lists what the token may do, a write with its read, however the token was obtained', async () => {
    const bot = await json<{ key: string }>(
      f.t.request('POST', '/v1/fine-grained-keys', {
        key: f.key,
        json: { name: 'deployer', expiration: '7d', permissions: ['harden-runner:write'] },
      }),
    );
    const issued = {
      'exchanged, the whole allowlist': f.exchange(f.issuer.sign()),
      'exchanged, asking for the write': f.exchange(f.issuer.sign(), {
        permissions: ['harden-runner:write'],
      }),
      'minted, every permission of the key': f.t.request('POST', '/v1/tokens', { key: bot.key }),
      'minted, asking for the write': f.t.request('POST', '/v1/tokens', {
        key: bot.key,
        json: { permissions: ['harden-runner:write'] },
      }),
    };
    for (const [how, answer] of Object.entries(issued)) {
      const body = await json<{ access_token: string; scope: string; permissions: string[] }>(answer);
      const claims = await verified(body.access_token);
      // What the broker itself lets the token do: write implies read (DESIGN §2).
      const me = await json<{ permissions: string[] }>(
        f.t.request('GET', '/v1/whoami', { key: body.access_token }),
      );
      expect(me.permissions, how).toContain('harden-runner:read');
      const scope = claims.scope.split(' ');
      expect([how, scope.sort()], how).toEqual([how, [...me.permissions].sort()]);
      expect([how, claims.permissions], how).toEqual([how, claims.scope.split(' ')]);
      // The answer describes the token it carries, and introspection describes it so too.
      expect([how, body.scope, body.permissions]).toEqual([how, claims.scope, claims.permissions]);
      const introspected = await json<{ scope: string; permissions: string[] }>(
        f.t.request('POST', '/v1/tokens/introspect', { key: f.key, ...form(body.access_token) }),
      );
      expect([how, introspected.scope, introspected.permissions]).toEqual([
        how,
        claims.scope,
        claims.permissions,
      ]);
    }
  });
});
