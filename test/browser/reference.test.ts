// The interactive API reference works offline: assets come from the broker, and Authorize + Try it out reach the API.

import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_KEK } from '../support/broker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { type BrokerProcess, createTenantKey, startBrokerProcess } from '../support/process.js';

let db: TestDatabase;
let broker: BrokerProcess;
let browser: Browser;
let key: string;

beforeAll(async () => {
  db = await createTestDatabase('sqlite');
  const env = { DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK };
  key = await createTenantKey(env);
  broker = await startBrokerProcess(env);
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      // So that a page of another (made-up, so public) origin may frame the broker on loopback, as one on the
      // internet may frame a broker on the internet: Chrome otherwise refuses any such frame itself.
      '--disable-features=LocalNetworkAccessChecks',
    ],
  });
});
afterAll(async () => {
  await browser?.close();
  await broker?.stop();
  await db?.drop();
});

describe('/v1/reference', () => {
  it('renders from the broker alone and calls the API with the authorized key', async () => {
    const page = await browser.newPage();
    const refused: string[] = [];
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) refused.push(message.text());
    });
    const foreign: string[] = [];
    await page.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (url.origin === broker.url) return route.continue();
      foreign.push(url.href);
      return route.abort();
    });
    await page.goto(`${broker.url}/v1/reference`);
    await page.getByRole('heading', { name: /oidc-auth broker/ }).waitFor();

    await page.getByRole('button', { name: 'Authorize' }).first().click();
    await page.locator('.auth-container input').first().fill(key);
    await page.locator('.auth-btn-wrapper button.authorize').click();
    await page.locator('.auth-btn-wrapper button.btn-done').click();

    const whoami = page.locator('#operations-Identity-whoami');
    await whoami.locator('.opblock-summary').click();
    // The reference opens with "Try it out" enabled, so Execute is there at once.
    await whoami.getByRole('button', { name: 'Execute' }).click();
    const body = whoami
      .locator('.responses-wrapper .live-responses-table .response-col_description pre')
      .first();
    await body.waitFor();
    const text = (await body.textContent()) ?? '';
    expect(JSON.parse(text)).toMatchObject({ tenant: { name: 'acme' }, credential: { kind: 'tenant' } });
    expect(foreign).toEqual([]);
    // The key lives in the page only: nothing another visit to the page could read back.
    const stored = await page.evaluate<string>(
      'JSON.stringify([{ ...localStorage }, { ...sessionStorage }])',
    );
    expect(stored).not.toContain(key.slice(4));
    // The page runs under its own Content-Security-Policy and nothing it does is refused.
    expect(refused).toEqual([]);
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
