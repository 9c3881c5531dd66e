// A rolling update: a newer replica's migration adds columns to the tables while an older replica serves. The older
// one's statements, which PostgreSQL has prepared on its connections, must go on working.
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestBroker } from '../support/broker.js';
import { requestedEngine } from '../support/database.js';

const engine = requestedEngine();
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe(`a column added to every table by another replica's migration (${engine})`, () => {
  it('leaves every read of a replica already serving working, with the same answers', async () => {
    const t = await startTestBroker();
    cleanups.push(() => t.close());
    const { key } = await t.createTenant('acme');
    const policy = {
      name: 'deploy-infra',
      claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
      permissions: ['harden-runner:read'],
    };
    expect((await t.request('POST', '/v1/oidc/policies', { key, json: policy })).status).toBe(201);
    const fineGrained = { name: 'deploy-bot', expiration: '7d', permissions: ['harden-runner:read'] };
    expect((await t.request('POST', '/v1/fine-grained-keys', { key, json: fineGrained })).status).toBe(201);

    const reads = async () => {
      const answers: Record<string, unknown> = {};
      for (const path of [
        '/v1/whoami',
        '/v1/api-keys',
        '/v1/fine-grained-keys',
        '/v1/oidc/policies',
        '/v1/audit-events',
      ]) {
        const res = await t.request('GET', path, { key });
        answers[path] = { status: res.status, body: await res.json() };
      }
      answers.signingKeys = await t.broker.store.signingKeys.list();
      answers.tenants = await t.broker.store.tenants.list();
      answers.tenant = await t.broker.store.tenants.byName('acme');
      return answers;
    };
    // Twice: the second time each statement runs as the connection has prepared it.
    await reads();
    const before = await reads();

    if (engine === 'postgres') {
      const session = new pg.Client({ connectionString: t.db.url });
      await session.connect();
      cleanups.push(() => session.end());
      const { rows } = await session.query<{ name: string }>(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
      );
      for (const { name } of rows) await session.query(`ALTER TABLE ${name} ADD COLUMN added_later INTEGER`);
    } else {
      const { default: Database } = await import('better-sqlite3');
      const session = new Database(t.db.file!);
      cleanups.push(() => session.close());
      const tables = session
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .all() as { name: string }[];
      for (const { name } of tables) session.exec(`ALTER TABLE ${name} ADD COLUMN added_later INTEGER`);
    }

    expect(await reads()).toEqual(before);
  });
});
