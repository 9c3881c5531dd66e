// Wires configuration → store → core → HTTP app; shared by the server process, the CLI and tests.
import type { AppDeps, BrokerApp } from './app.js';
import { createApp } from './app.js';
import type { BrokerConfig } from './config.js';
import { keyDigester } from './core/keys.js';
import { createTenant } from './core/tenants.js';
import type { Logger } from './logger.js';
import { createMetrics } from './metrics.js';
import { openStore } from './store/open-store.js';
import type { Store } from './store/store.js';

export interface Broker {
  app: BrokerApp;
  store: Store;
  deps: AppDeps;
  close(): Promise<void>;
}

export interface BrokerOptions {
  logger: Logger;
  now?: () => number;
  processMetrics?: boolean;
  /** An already-open store (tests share one between brokers); otherwise the configured database is opened. */
  store?: Store;
}

export async function createBroker(config: BrokerConfig, options: BrokerOptions): Promise<Broker> {
  const store = options.store ?? (await openStore(config.database));
  const deps: AppDeps = {
    store,
    logger: options.logger,
    metrics: createMetrics({ processMetrics: options.processMetrics }),
    digest: keyDigester(config.keyPepper),
    now: options.now ?? Date.now,
  };
  return { app: createApp(deps), store, deps, close: () => store.close() };
}

/** On an empty database, creates tenant `demo` so a first `npm start` has something to call. */
export async function ensureDemoTenant(
  broker: Broker,
  config: BrokerConfig,
): Promise<{ name: string; audience: string; key: string } | undefined> {
  if ((await broker.store.tenants.list()).length > 0) return undefined;
  const created = await createTenant(
    { name: 'demo' },
    {
      store: broker.store,
      digest: broker.deps.digest,
      now: broker.deps.now,
      audienceSuffix: config.audienceSuffix,
    },
  );
  if (!created.ok) return undefined;
  return { name: created.tenant.name, audience: created.tenant.audience, key: created.key };
}
