// The yardstick the targets are stated against: a straightforward jose + SQLite exchange handler, as one would
// first write it — Hono, jose's jwtVerify and SignJWT, better-sqlite3 on the event loop. It keeps the broker's
// durability (the replay record and an audit row are committed, WAL with synchronous=FULL, before the token is
// returned) and nothing else: no strict token parsing, no tenants, rate limit, request log or metrics.
//
// Environment: PORT, REFERENCE_DATABASE (a file path), REFERENCE_POLICIES (how many fleet policies),
// REFERENCE_ISSUER and REFERENCE_JWKS_URI (the local issuer), REFERENCE_AUDIENCE; for experiments,
// REFERENCE_SYNCHRONOUS (SQLite's synchronous setting, default FULL).
import { randomUUID } from 'node:crypto';
import { serve } from '@hono/node-server';
import Database from 'better-sqlite3';
import { Hono } from 'hono';
import { createRemoteJWKSet, exportJWK, generateKeyPair, type JWTPayload, jwtVerify, SignJWT } from 'jose';
import { fleetEntry } from './fleet.js';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

const issuer = required('REFERENCE_ISSUER');
const audience = required('REFERENCE_AUDIENCE');
const jwks = createRemoteJWKSet(new URL(required('REFERENCE_JWKS_URI')));
const { privateKey, publicKey } = await generateKeyPair('ES256');
const kid = (await exportJWK(publicKey)).x?.slice(0, 16) ?? 'reference';

const db = new Database(required('REFERENCE_DATABASE'));
db.pragma('journal_mode = WAL');
const synchronous = process.env.REFERENCE_SYNCHRONOUS ?? 'FULL';
if (!/^(OFF|NORMAL|FULL|EXTRA)$/.test(synchronous)) throw new Error(`REFERENCE_SYNCHRONOUS: ${synchronous}?`);
db.pragma(`synchronous = ${synchronous}`);
db.exec(`
  CREATE TABLE IF NOT EXISTS policies (id TEXT PRIMARY KEY, name TEXT NOT NULL, repository TEXT NOT NULL,
    claims TEXT NOT NULL, permissions TEXT NOT NULL);
  CREATE INDEX IF NOT EXISTS policies_repository ON policies (repository);
  CREATE TABLE IF NOT EXISTS replay (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, event TEXT NOT NULL);
`);
const insertPolicy = db.prepare('INSERT INTO policies VALUES (?, ?, ?, ?, ?)');
db.transaction((count: number) => {
  for (let k = 0; k < count; k++) {
    const { policy } = fleetEntry(k);
    const repository = String(policy.claims.repository);
    insertPolicy.run(
      randomUUID(),
      policy.name,
      repository,
      JSON.stringify(policy.claims),
      JSON.stringify(policy.permissions),
    );
  }
})(Number(required('REFERENCE_POLICIES')));

const findPolicies = db.prepare<[string], { id: string; name: string; claims: string; permissions: string }>(
  'SELECT id, name, claims, permissions FROM policies WHERE repository = ?',
);
const insertReplay = db.prepare('INSERT OR IGNORE INTO replay VALUES (?, ?)');
const insertAudit = db.prepare('INSERT INTO audit (at, event) VALUES (?, ?)');
const record = db.transaction((jti: string, expiresAt: number, event: string) => {
  const fresh = insertReplay.run(jti, expiresAt).changes === 1;
  insertAudit.run(Date.now(), event);
  return fresh;
});

/** A policy's pin matches when every claim it names is equal; a workflow path without `@` matches any ref. */
function matches(pins: Record<string, string>, claims: JWTPayload): boolean {
  return Object.entries(pins).every(([name, want]) => {
    const have = claims[name];
    if (typeof have !== 'string') return false;
    if (name === 'job_workflow_ref' && !want.includes('@')) return have.startsWith(`${want}@`);
    return have === want;
  });
}

const app = new Hono();
app.post('/v1/oidc/token', async (c) => {
  const body = await c.req.json<{ oidc_token?: string }>();
  if (typeof body.oidc_token !== 'string') return c.json({ code: 'invalid_request' }, 400);
  let claims: JWTPayload;
  try {
    ({ payload: claims } = await jwtVerify(body.oidc_token, jwks, {
      issuer,
      audience,
      algorithms: ['RS256'],
      clockTolerance: 60,
    }));
  } catch {
    return c.json({ code: 'invalid_token' }, 401);
  }
  const repository = String(claims.repository);
  const policy = findPolicies
    .all(repository)
    .find((p) => matches(JSON.parse(p.claims) as Record<string, string>, claims));
  if (!policy) return c.json({ code: 'no_matching_policy' }, 403);
  const jti = randomUUID();
  const fresh = record(
    String(claims.jti),
    (Number(claims.exp) + 60) * 1000,
    JSON.stringify({ type: 'token.exchanged', policy: policy.id, repository, oidc_jti: claims.jti, jti }),
  );
  if (!fresh) return c.json({ code: 'token_replayed' }, 400);
  const permissions = JSON.parse(policy.permissions) as string[];
  const accessToken = await new SignJWT({ permissions, scope: permissions.join(' ') })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid })
    .setIssuer('http://127.0.0.1')
    .setSubject(String(claims.sub))
    .setAudience(audience)
    .setJti(jti)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(privateKey);
  return c.json({ access_token: accessToken, token_type: 'Bearer', expires_in: 3600, policy: policy.name });
});

serve({ fetch: app.fetch, hostname: '127.0.0.1', port: Number(process.env.PORT ?? 0) }, (info) => {
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: info.port })}\n`);
});
process.on('SIGTERM', () => {
  db.close();
  process.exit(0);
});
