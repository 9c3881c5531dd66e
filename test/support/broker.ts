// An in-process broker on a fresh database, with captured logs and request helpers for HTTP-level tests.
import { type Broker, createBroker } from '../../broker/broker.js';
import { loadConfig } from '../../broker/config.js';
import { createTenant } from '../../broker/core/tenants.js';
import { createLogger } from '../../broker/logger.js';
import type { Tenant } from '../../broker/store/store.js';
import { createTestDatabase, type Engine, type TestDatabase } from './database.js';

export const TEST_KEK = '11'.repeat(32);

export interface RequestOptions {
  key?: string;
  json?: unknown;
  body?: string;
  headers?: Record<string, string>;
}

export interface TestBroker {
  broker: Broker;
  db: TestDatabase;
  logs: string[];
  clock: { now: number };
  request(method: string, path: string, options?: RequestOptions): Promise<Response>;
  createTenant(
    name: string,
    options?: { audience?: string; disable?: string[] },
  ): Promise<{ tenant: Tenant; key: string }>;
  close(): Promise<void>;
}

export async function startTestBroker(
  options: {
    engine?: Engine;
    env?: Record<string, string>;
    db?: TestDatabase;
    clock?: { now: number };
    /** How the broker reaches issuers (e.g. routing a GHES host to a local issuer). */
    fetch?: typeof fetch;
  } = {},
): Promise<TestBroker> {
  const db = options.db ?? (await createTestDatabase(options.engine));
  const config = loadConfig({ DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK, ...options.env });
  const logs: string[] = [];
  const clock = options.clock ?? { now: Date.now() };
  const broker = await createBroker(config, {
    logger: createLogger({ write: (line: string) => logs.push(line) }, 'debug'),
    now: () => clock.now,
    fetch: options.fetch,
  });
  return {
    broker,
    db,
    logs,
    clock,
    request(method, path, { key, json, body, headers = {} } = {}) {
      const init: RequestInit = { method, headers: { ...headers } };
      const h = init.headers as Record<string, string>;
      if (key) h.Authorization = `Bearer ${key}`;
      if (json !== undefined) {
        h['Content-Type'] ??= 'application/json';
        init.body = JSON.stringify(json);
      } else if (body !== undefined) {
        init.body = body;
      }
      return Promise.resolve(broker.app.request(`http://broker.test${path}`, init));
    },
    async createTenant(name, { audience, disable } = {}) {
      const result = await createTenant(
        { name, audience, disabledCategories: disable },
        {
          store: broker.store,
          digest: broker.deps.digest,
          now: () => clock.now,
          audienceSuffix: config.audienceSuffix,
        },
      );
      if (!result.ok) throw new Error(result.message);
      return { tenant: result.tenant, key: result.key };
    },
    async close() {
      await broker.close();
      if (!options.db) await db.drop();
    },
  };
}
