// The OpenAPI 3.1 document and an interactive reference (Swagger UI) served by the broker itself — no CDN.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { OpenAPIHono } from '@hono/zod-openapi';
import { BrokerError } from '../errors.js';
import type { BrokerEnv } from './context.js';
import { noneMatchNames } from './entity-tags.js';
import { OAUTH_ERROR_STATUSES } from './problems.js';
import { publicPath } from './schemas.js';

export const API_INFO = {
  title: 'oidc-auth broker',
  version: '1.0.0',
  description:
    'Exchanges GitHub Actions OIDC tokens for short-lived API tokens under trust policies, and manages a ' +
    "tenant's API keys. Errors are RFC 9457 problem+json documents with a stable `code`. On the OAuth endpoints " +
    '(token, introspection, revocation) a 4xx refusal but 429 also carries the RFC 6749 `error` and ' +
    '`error_description`, and is `application/json` to a client that accepts that type but not ' +
    '`application/problem+json`.',
};

/** What a request body can be answered with on a route that takes one. */
const BODY_ERRORS = {
  '400': 'The body is not valid JSON, or a field is wrong; `errors` names each field (`invalid_request`).',
  '415':
    'The body is not `application/json` (or a form where the route takes one) (`unsupported_media_type`).',
} as const;

/** What any request can be answered with, whatever its route: the app checks a body's framing and size before routing. */
const REQUEST_ERRORS = {
  '413':
    'The request has a body larger than 64 KiB (`payload_too_large`), on any route, before routing or credentials.',
  '501':
    'The body is sent with a transfer coding other than `chunked` (`Transfer-Encoding: gzip, chunked`), which the ' +
    'broker implements none of (`not_implemented`), on any route, before routing or credentials; the body is not ' +
    'read and the connection is closed.',
} as const;

const problem = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
});

/** What every answer of a route that takes a credential carries, once the route is reached (see auth.ts). */
const NO_STORE = {
  description: 'No cache may keep an answer to a credential: `no-store`.',
  required: true,
  schema: { type: 'string', example: 'no-store' },
};

export function openApiDocument(app: OpenAPIHono<BrokerEnv>) {
  const document = app.getOpenAPI31Document({ openapi: '3.1.0', info: API_INFO });
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    for (const operation of Object.values(item) as {
      requestBody?: unknown;
      security?: unknown[];
      responses?: Record<
        string,
        { description?: string; headers?: Record<string, unknown>; content?: Record<string, unknown> }
      >;
    }[]) {
      if (!operation?.responses) continue;
      for (const [status, description] of Object.entries(operation.requestBody ? BODY_ERRORS : {})) {
        operation.responses[status] ??= problem(description);
      }
      // Every answer from the guard on; a body too large, or in a transfer coding, is refused before it.
      if (operation.security?.length) {
        for (const response of Object.values(operation.responses)) {
          response.headers ??= {};
          response.headers['Cache-Control'] ??= NO_STORE;
        }
      }
      for (const [status, description] of Object.entries(REQUEST_ERRORS)) {
        operation.responses[status] ??= problem(description);
      }
      // An OAuth endpoint's refusals that carry an OAuth error come as application/json to a client that takes
      // only that (problems.ts).
      const oauthStatuses = OAUTH_ERROR_STATUSES.get(path);
      if (!oauthStatuses) continue;
      for (const [status, response] of Object.entries(operation.responses)) {
        const problemJson = response.content?.['application/problem+json'];
        if (oauthStatuses.has(Number(status)) && problemJson) {
          response.content = { ...response.content, 'application/json': problemJson };
        }
      }
    }
  }
  return document;
}

const ASSETS = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
} as const;

// Every URL relative to the page (/v1/reference), so that the page works where a proxy serves the broker under a
// path prefix (BROKER_PUBLIC_URL=https://host/broker) as it does at the root. The icon named, the browser does not
// ask for /favicon.ico, which the broker would answer 404 on every visit (and a proxy under a prefix, not at all).
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>oidc-auth broker — API reference</title>
<link rel="icon" type="image/png" href="reference/assets/favicon-32x32.png">
<link rel="stylesheet" href="reference/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="reference/assets/swagger-ui-bundle.js"></script>
<script src="reference/assets/init.js"></script>
</body>
</html>
`;

// Authorize's field (Swagger UI's Input) has autocomplete off: the browser otherwise keeps the key typed into it, in
// its profile on disk, once the dialog's form is submitted, to suggest it again. An operation's fields are in no form.
const INIT = `window.ui = SwaggerUIBundle({
  url: 'openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  persistAuthorization: false,
  tryItOutEnabled: true,
  plugins: [
    () => ({
      wrapComponents: {
        Input: (Input, system) => (props) => system.React.createElement(Input, { ...props, autoComplete: 'off' }),
      },
    }),
  ],
});
`;

// The page takes API keys typed into it. In place of the policy every other answer has, so it says again that no
// other site may frame it; base-uri and form-action, which default-src does not cover, keep a <base> from moving its
// relative URLs and a form from sending what it holds to another origin. Swagger UI sets inline style attributes.
const CSP =
  "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

export function registerDocRoutes(app: OpenAPIHono<BrokerEnv>, publicUrl: string): void {
  // Encoded once and cached: an answer a client is slow to read holds a reference to these bytes, not a copy.
  let document: Uint8Array<ArrayBuffer> | undefined;
  const assets = new Map<string, { body: Uint8Array<ArrayBuffer>; etag: string }>();
  const assetDir = () => dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

  app.get('/v1/openapi.json', (c) => {
    // Under a path prefix, the server is that path (OpenAPI's default, "/", would send Try it out past the broker).
    const prefix = publicPath(publicUrl);
    document ??= new TextEncoder().encode(
      JSON.stringify({ ...openApiDocument(app), ...(prefix ? { servers: [{ url: prefix }] } : {}) }),
    );
    return c.body(document, 200, { 'Content-Type': 'application/json' });
  });
  app.get('/v1/reference', (c) => c.html(PAGE, 200, { 'Content-Security-Policy': CSP }));
  app.get('/v1/reference/assets/init.js', (c) =>
    c.body(INIT, 200, { 'Content-Type': 'text/javascript; charset=utf-8' }),
  );
  // Revalidated on every visit (a 304 while unchanged), not kept for a time: an upgrade that brings another Swagger
  // UI under the same URL is taken at once, and a replica of either version answers for its own bytes.
  app.get('/v1/reference/assets/:file', async (c) => {
    const file = c.req.param('file');
    if (!Object.hasOwn(ASSETS, file)) throw new BrokerError('not_found', `no asset ${file}`);
    let asset = assets.get(file);
    if (!asset) {
      const body = new Uint8Array(await readFile(join(assetDir(), file)));
      asset = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
      assets.set(file, asset);
    }
    const headers = { 'Cache-Control': 'no-cache', ETag: asset.etag };
    if (noneMatchNames(c.req.header('If-None-Match'), asset.etag)) return c.body(null, 304, headers);
    return c.body(asset.body, 200, { ...headers, 'Content-Type': ASSETS[file as keyof typeof ASSETS] });
  });
}
