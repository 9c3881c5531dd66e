// The OpenAPI document: generated from the route schemas, committed, served as-is, and complete.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';

const committed = JSON.parse(readFileSync(new URL('../../broker/openapi.json', import.meta.url), 'utf8'));
let t: TestBroker;

beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(() => t.close());

describe('OpenAPI document', () => {
  it('the committed broker/openapi.json matches the routes (run `npm run openapi` after changing a route)', async () => {
    const served = await (await t.request('GET', '/v1/openapi.json')).json();
    expect(served).toEqual(committed);
  });

  it('is OpenAPI 3.1 with bearer auth on every /v1 route except the public ones', () => {
    expect(committed.openapi).toBe('3.1.0');
    expect(committed.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    for (const [path, item] of Object.entries(
      committed.paths as Record<string, Record<string, { security?: unknown }>>,
    )) {
      for (const [method, op] of Object.entries(item)) {
        const isPublic = !path.startsWith('/v1/') || ['/v1/oidc/token'].includes(path);
        // The role, if any, is the permission the route needs (openapi-conformance.test.ts holds the broker to it).
        if (!isPublic)
          expect(op.security, `${method.toUpperCase()} ${path}`).toEqual([{ bearerAuth: expect.any(Array) }]);
      }
    }
  });

  it('every operation has its own operationId, which generated clients name their functions after', async () => {
    const served = (await (await t.request('GET', '/v1/openapi.json')).json()) as {
      paths: Record<string, Record<string, { operationId?: string }>>;
    };
    const ids = Object.entries(served.paths).flatMap(([path, item]) =>
      Object.entries(item).map(
        ([method, op]) => [`${method.toUpperCase()} ${path}`, op.operationId] as const,
      ),
    );
    for (const [where, id] of ids) expect(id, where).toMatch(/^[a-z][A-Za-z]+$/);
    expect(new Set(ids.map(([, id]) => id)).size).toBe(ids.length);
    expect(Object.fromEntries(ids)).toMatchObject({
      'POST /v1/oidc/token': 'exchangeToken',
      'POST /v1/tokens/introspect': 'introspectToken',
      'POST /v1/api-keys/{kind}/{slot}/rotate': 'rotateApiKey',
      'DELETE /v1/fine-grained-keys/{id}': 'revokeFineGrainedKey',
    });
  });

  it('every operation that takes a body documents the answers any body can get: 400, 413 and 415', async () => {
    const key = (await t.createTenant('openapi-bodies')).key;
    for (const [path, item] of Object.entries(
      committed.paths as Record<string, Record<string, { requestBody?: unknown; responses: object }>>,
    )) {
      for (const [method, op] of Object.entries(item)) {
        if (!op.requestBody) continue;
        const where = `${method.toUpperCase()} ${path}`;
        expect(Object.keys(op.responses), where).toEqual(expect.arrayContaining(['400', '413', '415']));
      }
    }
    // And they are real: malformed JSON, a body over 64 KiB, a body of another type, on a body route.
    const send = (body: string, type: string) =>
      t.request('POST', '/v1/oidc/policies', { key, body, headers: { 'Content-Type': type } });
    expect((await send('{', 'application/json')).status).toBe(400);
    expect((await send(`{"x":"${'a'.repeat(70_000)}"}`, 'application/json')).status).toBe(413);
    expect((await send('name=x', 'text/plain')).status).toBe(415);
  });

  it('every operation documents 413: a body over 64 KiB is refused before routing or credentials, on any route', async () => {
    const key = (await t.createTenant('openapi-large-bodies')).key;
    for (const [path, item] of Object.entries(
      committed.paths as Record<string, Record<string, { responses: object }>>,
    )) {
      for (const [method, op] of Object.entries(item)) {
        expect(Object.keys(op.responses), `${method.toUpperCase()} ${path}`).toContain('413');
      }
    }
    const large = `{"x":"${'a'.repeat(70_000)}"}`;
    for (const [method, path] of [
      ['POST', '/v1/api-keys/tenant-read-only/primary/rotate'],
      ['DELETE', `/v1/fine-grained-keys/${crypto.randomUUID()}`],
    ]) {
      for (const credential of [key, undefined]) {
        const res = await t.request(method!, path!, { key: credential, body: large });
        expect(res.status, `${method} ${path}`).toBe(413);
        expect(await res.json()).toMatchObject({ code: 'payload_too_large' });
      }
    }
  });

  it('every operation documents 501: a body in a transfer coding but chunked is refused before routing or credentials', async () => {
    const key = (await t.createTenant('openapi-transfer-codings')).key;
    const served = (await (await t.request('GET', '/v1/openapi.json')).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, { content?: object }> }>>;
    };
    for (const [path, item] of Object.entries(served.paths)) {
      for (const [method, op] of Object.entries(item)) {
        expect(op.responses['501']?.content, `${method.toUpperCase()} ${path}`).toEqual({
          'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } },
        });
      }
    }
    for (const [method, path] of [
      ['POST', '/v1/oidc/token'],
      ['POST', '/v1/api-keys/tenant-read-only/primary/rotate'],
      ['DELETE', `/v1/fine-grained-keys/${crypto.randomUUID()}`],
    ]) {
      for (const credential of path === '/v1/oidc/token' ? [undefined] : [key, undefined]) {
        const res = await t.request(method!, path!, {
          key: credential,
          body: '{}',
          headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'gzip, chunked' },
        });
        expect(res.status, `${method} ${path}`).toBe(501);
        expect(await res.json()).toMatchObject({ code: 'not_implemented' });
      }
    }
  });

  it('a body of another type is refused naming each type the operation takes', async () => {
    const key = (await t.createTenant('openapi-media-types')).key;
    const operations = Object.entries(
      committed.paths as Record<string, Record<string, { requestBody?: { content: object } }>>,
    ).flatMap(([path, item]) =>
      Object.entries(item).flatMap(([method, op]) => (op.requestBody ? [{ path, method, op }] : [])),
    );
    expect(operations.length).toBeGreaterThan(5);
    for (const { path, method, op } of operations) {
      const where = `${method.toUpperCase()} ${path}`;
      // The exchange takes no credential but the OIDC token, and refuses an Authorization header.
      const res = await t.request(method.toUpperCase(), path.replace('{id}', crypto.randomUUID()), {
        key: path === '/v1/oidc/token' ? undefined : key,
        body: 'name=x',
        headers: { 'Content-Type': 'text/plain' },
      });
      expect(res.status, where).toBe(415);
      const { detail } = (await res.json()) as { detail: string };
      for (const type of Object.keys(op.requestBody!.content)) expect(detail, where).toContain(type);
    }
  });

  it('the reference page, where a key is typed, cannot be framed by another site and runs only its own scripts', async () => {
    const res = await t.request('GET', '/v1/reference');
    expect(res.headers.get('Content-Type')).toBe('text/html; charset=UTF-8');
    const directives = new Map(
      (res.headers.get('Content-Security-Policy') ?? '').split(';').map((d) => {
        const [name, ...sources] = d.trim().split(/\s+/);
        return [name, sources.join(' ')] as const;
      }),
    );
    expect(directives.get('frame-ancestors')).toBe("'none'");
    expect(res.headers.get('X-Frame-Options')).toBe('DENY');
    expect(directives.get('default-src')).toBe("'self'");
    expect(directives.has('script-src')).toBe(false);
    expect(directives.get('connect-src')).toBe("'self'");
    // Neither falls back to default-src: a <base> could move the page's relative URLs, a form send a key elsewhere.
    expect(directives.get('base-uri')).toBe("'none'");
    expect(directives.get('form-action')).toBe("'self'");
    expect(res.headers.get('X-Content-Type-Options')).toBe('nosniff');
    expect(res.headers.get('Referrer-Policy')).toBe('no-referrer');
    const init = await (await t.request('GET', '/v1/reference/assets/init.js')).text();
    expect(init).toContain('persistAuthorization: false');
  });

  it("the page's assets are revalidated, not kept a day: after an upgrade a browser takes the new ones at once", async () => {
    const first = await t.request('GET', '/v1/reference/assets/swagger-ui-bundle.js');
    expect(first.status).toBe(200);
    expect(first.headers.get('Cache-Control')).toBe('no-cache');
    const etag = first.headers.get('ETag')!;
    expect(etag).toMatch(/^"[0-9A-Za-z_-]{27}"$/);
    // Unchanged, it is not sent again; a proxy that compressed it on the way marks its tag weak, which still counts.
    for (const tag of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const again = await t.request('GET', '/v1/reference/assets/swagger-ui-bundle.js', {
        headers: { 'If-None-Match': tag },
      });
      expect(again.status, tag).toBe(304);
      expect(await again.text()).toBe('');
      expect(again.headers.get('ETag')).toBe(etag);
    }
    // Another version's tag, or one of another asset, gets the asset.
    const css = (await t.request('GET', '/v1/reference/assets/swagger-ui.css')).headers.get('ETag')!;
    expect(css).not.toBe(etag);
    for (const tag of ['"an-earlier-bundle"', css, 'not a tag']) {
      const res = await t.request('GET', '/v1/reference/assets/swagger-ui-bundle.js', {
        headers: { 'If-None-Match': tag },
      });
      expect(res.status, tag).toBe(200);
      expect((await res.arrayBuffer()).byteLength).toBeGreaterThan(100_000);
    }
  });

  it('an asset the reference page does not have is 404, not a 405 that allows GET', async () => {
    const res = await t.request('GET', '/v1/reference/assets/nope.js');
    expect(res.status).toBe(404);
    expect(res.headers.get('Allow')).toBeNull();
    expect((await t.request('GET', '/v1/reference/assets/swagger-ui.css')).status).toBe(200);
  });

  it('behind a path prefix (BROKER_PUBLIC_URL=https://host/broker), the reference loads its assets, its document and calls the API under it', async () => {
    const prefixed = await startTestBroker({ env: { BROKER_PUBLIC_URL: 'https://host/broker' } });
    try {
      // What the browser asks, as the proxy in front of the broker answers it: under /broker, with /broker stripped.
      const viaProxy = async (url: URL) => {
        expect(url.href.startsWith('https://host/broker/'), url.href).toBe(true);
        return prefixed.request('GET', url.pathname.slice('/broker'.length));
      };
      const pageUrl = new URL('https://host/broker/v1/reference');
      const page = await (await viaProxy(pageUrl)).text();
      const assets = [...page.matchAll(/(?:href|src)="([^"]+)"/g)].map((m) => new URL(m[1]!, pageUrl));
      expect(assets).toHaveLength(4);
      for (const asset of assets) expect((await viaProxy(asset)).status, asset.href).toBe(200);
      // Swagger UI loads the document from the URL init.js names, relative to the page.
      const init = await (await viaProxy(new URL('reference/assets/init.js', pageUrl))).text();
      const documentUrl = new URL(/url: '([^']+)'/.exec(init)![1]!, pageUrl);
      const served = await viaProxy(documentUrl);
      expect(served.status).toBe(200);
      // Try it out sends an operation to the document's server (OpenAPI: "/" when none), plus its path.
      const document = (await served.json()) as { servers?: { url: string }[] };
      const server = new URL(document.servers?.[0]?.url ?? '/', documentUrl);
      expect(`${server.href.replace(/\/$/, '')}/v1/whoami`).toBe('https://host/broker/v1/whoami');
    } finally {
      await prefixed.close();
    }
  });

  it('documents the trust-policy request with its limits, as the fine-grained key request has them', () => {
    const schema = committed.components.schemas.TrustPolicyInput;
    expect(schema.required).toEqual(expect.arrayContaining(['name', 'claims', 'permissions']));
    expect(schema.properties.name).toMatchObject({ minLength: 1, maxLength: 100 });
    expect(schema.properties.description).toMatchObject({ maxLength: 500 });
    expect(schema.properties.permissions).toMatchObject({ type: 'array', minItems: 1 });
    expect(schema.properties.max_session_duration_seconds).toMatchObject({ minimum: 0, maximum: 3600 });
  });

  it('documents null for every optional member of the trust-policy request, as it is taken, and for no other', async () => {
    const served = (await (await t.request('GET', '/v1/openapi.json')).json()) as {
      components: {
        schemas: Record<string, { required?: string[]; properties: Record<string, { type?: unknown }> }>;
      };
    };
    const nullable = (schema: string) => {
      const { properties, required = [] } = served.components.schemas[schema]!;
      return Object.fromEntries(
        Object.entries(properties)
          .filter(([name]) => !required.includes(name))
          .map(([name, p]) => [name, Array.isArray(p.type) && p.type.includes('null')]),
      );
    };
    for (const schema of ['TrustPolicyInput', 'TrustPolicyClaims'])
      for (const [name, isNullable] of Object.entries(nullable(schema)))
        expect(isNullable, `${schema}.${name}`).toBe(true);
    const input = served.components.schemas.TrustPolicyInput!;
    for (const name of input.required ?? [])
      expect([input.properties[name]?.type].flat(), name).not.toContain('null');
    // The dry run and the exchange refuse null, and say so.
    for (const schema of ['EvaluatePoliciesRequest'])
      for (const [name, isNullable] of Object.entries(nullable(schema)))
        expect(isNullable, `${schema}.${name}`).toBe(false);
  });

  it('documents the fine-grained key request with its limits', () => {
    const schema = committed.components.schemas.CreateFineGrainedKey;
    expect(schema.required).toEqual(expect.arrayContaining(['name', 'permissions']));
    expect(schema.properties.expires_in_days).toMatchObject({ minimum: 1, maximum: 365 });
    expect(schema.properties.expiration.enum).toEqual(['7d', '30d', '90d', '1y']);
    expect(schema.additionalProperties).toBe(false);
  });
});
