// The interactive API reference works offline: assets come from the broker, and Authorize + Try it out reach the API.

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_KEK } from '../support/broker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { GITHUB_ISSUER, type LocalIssuer, startLocalIssuer } from '../support/local-issuer.js';
import { type BrokerProcess, createTenantKey, startBrokerProcess } from '../support/process.js';

const CHROMIUM = {
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--host-resolver-rules=MAP broker.test 127.0.0.1',
    // So that a page of another (made-up, so public) origin may frame the broker on loopback, as one on the
    // internet may frame a broker on the internet: Chrome otherwise refuses any such frame itself.
    '--disable-features=LocalNetworkAccessChecks',
  ],
};

let db: TestDatabase;
let broker: BrokerProcess;
let browser: Browser;
let key: string;
/**
 * The broker under a name that is not loopback, as users reach it: Swagger UI treats a document on localhost and
 * 127.0.0.1 apart (it would show other hosts' to validator.swagger.io, in a layout this page does not use).
 */
const site = () => broker.url.replace('127.0.0.1', 'broker.test');
/** GitHub's stand-in, for an exchange tried from the page with a real job token. */
let issuer: LocalIssuer;

beforeAll(async () => {
  db = await createTestDatabase('sqlite');
  issuer = await startLocalIssuer({ audience: 'acme.api.stepsecurity.io' });
  const env = {
    DATABASE_URL: db.url,
    BROKER_KEY_ENCRYPTION_KEY: TEST_KEK,
    BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: issuer.jwksUri }]),
  };
  key = await createTenantKey(env);
  broker = await startBrokerProcess(env);
  browser = await chromium.launch(CHROMIUM);
});
afterAll(async () => {
  await browser?.close();
  await broker?.stop();
  await issuer?.close();
  await db?.drop();
});

/** Opens the reference and gives Authorize the tenant's key, as a user does. */
async function authorized(page: Page, origin = broker.url): Promise<void> {
  await page.goto(`${origin}/v1/reference`);
  await page.getByRole('heading', { name: /oidc-auth broker/ }).waitFor();
  await page.getByRole('button', { name: 'Authorize' }).first().click();
  await page.locator('.auth-container input').first().fill(key);
  await page.locator('.auth-btn-wrapper button.authorize').click();
  await page.locator('.auth-btn-wrapper button.btn-done').click();
}

/**
 * Opens an operation (its id in the page: tag and operationId), in `contentType` if given, and runs Execute; `edit`
 * changes the body the page prefilled (a JSON body, or a form's text fields) before it is sent. What the page shows:
 * the body it prefilled (as JSON), the answer's status and body.
 */
async function execute(
  page: Page,
  id: string,
  { contentType, edit }: { contentType?: string; edit?: (body: Record<string, unknown>) => void } = {},
) {
  const operation = page.locator(`#operations-${id}`);
  if (!(await operation.evaluate((e) => e.classList.contains('is-open'))))
    await operation.locator('.opblock-summary').click();
  const clear = operation.getByRole('button', { name: 'Clear' });
  if ((await clear.count()) > 0) await clear.click();
  if (contentType) await operation.locator('.body-param-content-type select').selectOption(contentType);
  const editor = operation.locator('textarea.body-param__text');
  const fields = operation.locator(
    '.opblock-section-request-body tr[data-property-name]:has(input[type=text])',
  );
  let prefilled: string | undefined;
  if ((await editor.count()) > 0) {
    prefilled = await editor.inputValue();
    const body = JSON.parse(prefilled) as Record<string, unknown>;
    edit?.(body);
    if (edit) await editor.fill(JSON.stringify(body, null, 2));
  } else if ((await fields.count()) > 0) {
    const form = Object.fromEntries(
      await fields.evaluateAll((rows) =>
        rows.map((row) => [row.dataset.propertyName, row.querySelector('input')!.value] as const),
      ),
    ) as Record<string, string>;
    prefilled = JSON.stringify(form, null, 1);
    const body: Record<string, unknown> = { ...form };
    edit?.(body);
    for (const [name, value] of Object.entries(body))
      if (value !== form[name])
        await operation.locator(`tr[data-property-name="${name}"] input[type=text]`).fill(String(value));
  }
  await operation.getByRole('button', { name: 'Execute' }).click();
  const answer = operation.locator('.responses-wrapper .live-responses-table tbody tr.response').first();
  const text = answer.locator('.response-col_description pre').first();
  await text.waitFor();
  const status = Number(await answer.locator('.response-col_status').textContent());
  const body = (await text.textContent()) ?? '';
  // Closed again: the page redraws every open operation whenever one changes.
  await operation.locator('.opblock-summary').click();
  return { prefilled, status, body };
}

/** An access token the tenant's key mints, as a user has one at hand. */
async function mintToken(): Promise<string> {
  const minted = await fetch(`${broker.url}/v1/tokens`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ permissions: ['harden-runner:read'] }),
  });
  return ((await minted.json()) as { access_token: string }).access_token;
}

describe('/v1/reference', () => {
  it('renders from the broker alone and calls the API with the authorized key', async () => {
    const page = await browser.newPage();
    // Errors the page logs, a script's or a refusal of its Content-Security-Policy's, and those it throws.
    const errors: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    page.on('pageerror', (error) => errors.push(error.message));
    const foreign: string[] = [];
    await page.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (url.origin === site()) return route.continue();
      foreign.push(url.href);
      return route.abort();
    });
    await authorized(page, site());
    // The reference opens with "Try it out" enabled, so Execute is there at once.
    const whoami = await execute(page, 'Identity-whoami');
    expect(JSON.parse(whoami.body)).toMatchObject({
      tenant: { name: 'acme' },
      credential: { kind: 'tenant' },
    });
    expect(foreign).toEqual([]);
    // The key lives in the page only: nothing another visit to the page could read back.
    const stored = await page.evaluate<string>(
      'JSON.stringify([{ ...localStorage }, { ...sessionStorage }])',
    );
    expect(stored).not.toContain(key.slice(4));
    // The page runs under its own Content-Security-Policy, nothing it does is refused, and no script fails.
    expect(errors).toEqual([]);
  });

  it('asks the broker for nothing it does not serve, its icon included', async () => {
    // Without a route on the page (the browser does not ask for an icon through one), as a user opens it.
    const page = await browser.newPage();
    const logged = broker.stdout().length;
    const requests = () =>
      broker
        .stdout()
        .slice(logged)
        .split('\n')
        .filter((line) => line.includes('"msg":"request"'))
        .map((line) => {
          const { route, status } = JSON.parse(line) as { route: string; status: number };
          return { route, status };
        });
    await page.goto(`${site()}/v1/reference`);
    await page.getByRole('heading', { name: /oidc-auth broker/ }).waitFor();
    // The page, its stylesheet, its two scripts and its document; then, once it has loaded, the browser's icon.
    await expect.poll(() => requests().length).toBe(6);
    expect(requests().filter((r) => r.status !== 200)).toEqual([]);
    await page.close();
  });

  it('prefills every JSON request body with one the broker takes as it stands', async () => {
    // In order: the exchange uses the policy the page's own example creates.
    const operations = [
      'Trust_policies-createPolicy',
      'Trust_policies-evaluatePolicies',
      'Fine-grained_keys-createFineGrainedKey',
      'Tokens-mintToken',
      'OIDC_federation-exchangeToken',
    ];
    const document = (await (await fetch(`${broker.url}/v1/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { operationId: string; tags: string[]; requestBody?: unknown }>>;
    };
    // Every operation with a JSON body and no path parameter (PUT /v1/oidc/policies/{id} takes createPolicy's);
    // introspection and revocation take JSON too, but the page offers their form first.
    const withBodies = Object.entries(document.paths).flatMap(([path, item]) =>
      Object.values(item)
        .filter(
          (op) => !path.includes('{') && JSON.stringify(op.requestBody ?? {}).includes('application/json'),
        )
        .map((op) => `${op.tags[0]!.replaceAll(' ', '_')}-${op.operationId}`),
    );
    expect(withBodies.filter((id) => !/introspect|revoke/i.test(id)).sort()).toEqual([...operations].sort());

    const page = await browser.newPage();
    await authorized(page);
    const answers: Record<string, { status: number; placeholders: string[] }> = {};
    let exchanged = '';
    for (const id of operations) {
      // The user pastes a job's OIDC token into the exchange's body, and changes nothing else.
      const answer = await execute(page, id, {
        edit: (body) => {
          if (id.endsWith('exchangeToken')) body.oidc_token = issuer.sign({});
        },
      });
      // "string" is what the page writes for a string the document gives no example of.
      const placeholders = [...(answer.prefilled ?? '').matchAll(/"(\w+)": "string"/g)].map((m) => m[1]!);
      answers[id] = { status: answer.status, placeholders };
      if (id.endsWith('exchangeToken')) exchanged = answer.body;
    }
    expect(answers).toEqual({
      'Trust_policies-createPolicy': { status: 201, placeholders: [] },
      'Trust_policies-evaluatePolicies': { status: 200, placeholders: [] },
      'Fine-grained_keys-createFineGrainedKey': { status: 201, placeholders: [] },
      'Tokens-mintToken': { status: 201, placeholders: [] },
      'OIDC_federation-exchangeToken': { status: 200, placeholders: [] },
    });
    // A token for the policy's lifetime, not the smallest the schema allows.
    expect((JSON.parse(exchanged) as { expires_in: number }).expires_in).toBeGreaterThan(60);
  });

  it('prefills the OAuth forms so that pasting the token is all they need', async () => {
    // The policy the page's example creates (it may be there already: the same one).
    const policy = await fetch(`${broker.url}/v1/oidc/policies`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({
        name: 'deploy-infra',
        claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
        permissions: ['harden-runner:read'],
      }),
    });
    expect([201, 409]).toContain(policy.status);
    const page = await browser.newPage();
    await authorized(page);
    const form = 'application/x-www-form-urlencoded';
    const placeholders = (prefilled = '') => [...prefilled.matchAll(/"(\w+)": "string"/g)].map((m) => m[1]!);
    const exchange = await execute(page, 'OIDC_federation-exchangeToken', {
      contentType: form,
      edit: (body) => {
        body.subject_token = issuer.sign({});
      },
    });
    // A token to look at and revoke, as a user has one at hand.
    const token = await mintToken();
    const introspection = await execute(page, 'Tokens-introspectToken', {
      edit: (body) => {
        body.token = token;
      },
    });
    const revocation = await execute(page, 'Tokens-revokeToken', {
      edit: (body) => {
        body.token = token;
      },
    });
    // The token pasted over is the one field the page may leave to its "string".
    expect({
      exchange: [exchange.status, placeholders(exchange.prefilled).filter((f) => f !== 'subject_token')],
      introspection: [
        introspection.status,
        placeholders(introspection.prefilled).filter((f) => f !== 'token'),
      ],
      revocation: [revocation.status, placeholders(revocation.prefilled).filter((f) => f !== 'token')],
    }).toEqual({ exchange: [200, []], introspection: [200, []], revocation: [200, []] });
    expect(JSON.parse(introspection.body)).toMatchObject({ active: true, scope: 'harden-runner:read' });
  });

  it('leaves nothing typed into it, a key or a token, in the browser profile on disk', async () => {
    // A profile on disk, as a user's browser has: it keeps what a form's text fields were given, to suggest it again.
    const profile = mkdtempSync(join(tmpdir(), 'reference-profile-'));
    try {
      const token = await mintToken();
      const context = await chromium.launchPersistentContext(profile, CHROMIUM);
      try {
        const page = await context.newPage();
        await authorized(page);
        const introspection = await execute(page, 'Tokens-introspectToken', {
          edit: (body) => {
            body.token = token;
          },
        });
        expect(JSON.parse(introspection.body)).toMatchObject({ active: true });
      } finally {
        await context.close();
      }
      const holding = readdirSync(profile, { recursive: true, withFileTypes: true })
        .filter((entry) => entry.isFile())
        .map((entry) => join(entry.parentPath, entry.name))
        .filter((file) => {
          const bytes = readFileSync(file);
          return bytes.includes(key) || bytes.includes(token);
        })
        .map((file) => file.slice(profile.length + 1));
      expect(holding).toEqual([]);
    } finally {
      rmSync(profile, { recursive: true, force: true });
    }
  });

  it('does not render inside a frame of another site', async () => {
    const page = await browser.newPage();
    const other = 'http://other.test/';
    await page.route(other, (route) =>
      route.fulfill({
        contentType: 'text/html',
        body: `<iframe name="reference" src="${broker.url}/v1/reference"></iframe>`,
      }),
    );
    const answered = page.waitForResponse(`${broker.url}/v1/reference`);
    await page.goto(other);
    expect((await answered).status()).toBe(200);
    // The frame the browser shows in the iframe once it has refused the answer (an error page) may be attached a
    // moment after the answer arrived: looked up through the iframe until it is there.
    const frameOf = async () => (await (await page.$('iframe[name="reference"]'))?.contentFrame()) ?? null;
    await expect.poll(async () => (await frameOf()) !== null, { timeout: 10_000 }).toBe(true);
    const frame = (await frameOf())!;
    await frame.waitForLoadState();
    // The browser refused to show the answer in the frame: it holds the browser's error page, not the reference.
    expect(frame.url()).not.toContain(broker.url);
    expect(await frame.locator('#swagger-ui').count()).toBe(0);
  });
});
