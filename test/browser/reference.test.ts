// The interactive API reference works offline: assets come from the broker, and Authorize + Try it out reach the API.

import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_KEK } from '../support/broker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { GITHUB_ISSUER, type LocalIssuer, startLocalIssuer } from '../support/local-issuer.js';
import { type BrokerProcess, createTenantKey, startBrokerProcess } from '../support/process.js';

let db: TestDatabase;
let broker: BrokerProcess;
let browser: Browser;
let key: string;
/**
 * The broker under a name that is not loopback, as users reach it: the page does some things only off localhost and
 * 127.0.0.1 (Swagger UI's badge from validator.swagger.io, which is sent the document's URL).
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
  browser = await chromium.launch({
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
  });
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
 * Opens an operation (its id in the page: tag and operationId) and runs Execute; `edit` changes the JSON body the
 * page prefilled before it is sent. What the page shows: the body it prefilled, the answer's status and body.
 */
async function execute(page: Page, id: string, edit?: (body: Record<string, unknown>) => void) {
  const operation = page.locator(`#operations-${id}`);
  await operation.locator('.opblock-summary').click();
  const editor = operation.locator('textarea.body-param__text');
  const prefilled = (await editor.count()) > 0 ? await editor.inputValue() : undefined;
  if (prefilled !== undefined && edit) {
    const body = JSON.parse(prefilled) as Record<string, unknown>;
    edit(body);
    await editor.fill(JSON.stringify(body, null, 2));
  }
  await operation.getByRole('button', { name: 'Execute' }).click();
  const answer = operation.locator('.responses-wrapper .live-responses-table tbody tr.response').first();
  const text = answer.locator('.response-col_description pre').first();
  await text.waitFor();
  const status = Number(await answer.locator('.response-col_status').textContent());
  return { prefilled, status, body: (await text.textContent()) ?? '' };
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
      const answer = await execute(page, id, (body) => {
        if (id.endsWith('exchangeToken')) body.oidc_token = issuer.sign({});
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
