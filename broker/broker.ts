// Wires configuration → store → core → HTTP app; shared by the server process, the CLI and tests.
import type { AppDeps, BrokerApp } from './app.js';
import { createApp } from './app.js';
import type { BrokerConfig } from './config.js';
import { createAccessTokens } from './core/access-tokens.js';
import { createIssuerKeys, FETCH_ERROR_KINDS } from './core/issuer-keys.js';
import { keyDigester } from './core/keys.js';
import { createRateLimiter } from './core/rate-limit.js';
import type { SigningKeys } from './core/signing-keys.js';
import { createTenantDirectory } from './core/tenant-directory.js';
import { createTenant } from './core/tenants.js';
import { createEgressFetch } from './egress-fetch.js';
import { openConfiguredSigningKeys } from './key-encryption-key.js';
import { checkKeyPepper } from './key-pepper.js';
import type { Logger } from './logger.js';
import { createMetrics } from './metrics.js';
import { recordPublicUrl } from './public-url.js';
import { NEWER_SCHEMA, namesakesShown, openStore, POLICY_NAMESAKES } from './store/open-store.js';
import type { Store } from './store/store.js';

export interface Broker {
  app: BrokerApp;
  store: Store;
  deps: AppDeps;
  /**
   * Periodic upkeep: forgets replay and revocation records of tokens that have expired, and audit events past
   * their retention (BROKER_AUDIT_RETENTION_DAYS) when it is set.
   */
  maintain(): Promise<void>;
  /**
   * The broker is shutting down: from now on /readyz answers 503, so that load balancers stop sending it requests,
   * while it still serves those they send meanwhile.
   */
  drain(): void;
  close(): Promise<void>;
}

export interface BrokerOptions {
  logger: Logger;
  now?: () => number;
  processMetrics?: boolean;
  /** An already-open store (tests share one between brokers); otherwise the configured database is opened. */
  store?: Store;
  /** How the broker reaches issuers' JWKS endpoints (tests count and fake requests); else through the egress proxy. */
  fetch?: typeof fetch;
}

export async function createBroker(config: BrokerConfig, options: BrokerOptions): Promise<Broker> {
  const store = options.store ?? (await openStore(config.database));
  if (store.unknownMigrations?.length) {
    // A rollback runs on the newer schema; that is often fine (migrations add), but the operator should know.
    options.logger.warn(NEWER_SCHEMA, { migrations: store.unknownMigrations });
  }
  if (store.policyNamesakes?.length) {
    options.logger.warn(POLICY_NAMESAKES, { policies: namesakesShown(store.policyNamesakes) });
  }
  const now = options.now ?? Date.now;
  let signingKeys: SigningKeys;
  try {
    // Before any key is digested: under another pepper, every key would be answered 401 as unknown.
    const { adopted } = await checkKeyPepper(config, store);
    if (adopted) {
      options.logger.info(
        'the database now records the BROKER_KEY_PEPPER its API keys are stored under: the one configured; a broker or oidc-broker command started with another refuses to start',
        { pepper: config.keyPepper === undefined ? 'unset' : 'set' },
      );
    }
    await recordPublicUrl(config, store, options.logger);
    signingKeys = await openConfiguredSigningKeys(config, store, options.logger, now);
  } catch (error) {
    // A store this call opened closes with the failure, so a PostgreSQL pool does not hold the exit back.
    if (!options.store) await store.close();
    throw error;
  }
  const tenants = createTenantDirectory(store);
  const metrics = createMetrics({ processMetrics: options.processMetrics });
  metrics.expectIssuerKeyFailures(
    config.trustedIssuers.map((trusted) => trusted.issuer),
    FETCH_ERROR_KINDS,
  );
  let draining = false;
  const deps: AppDeps = {
    config,
    store,
    issuerKeys: createIssuerKeys({
      issuers: config.trustedIssuers,
      fetch: options.fetch ?? createEgressFetch(config.egressProxy),
      now,
      logger: options.logger.child({ component: 'issuer-keys' }),
      onFetchFailure: (issuer, reason) => metrics.observeIssuerKeyFailure(issuer, reason),
    }),
    signingKeys,
    accessTokens: createAccessTokens({ store, tenants, signingKeys, issuer: config.publicUrl, now }),
    tenants,
    exchangeRateLimiter: createRateLimiter({ ...config.rateLimit, now }),
    logger: options.logger,
    metrics,
    digest: keyDigester(config.keyPepper),
    now,
    draining: () => draining,
  };
  let maintaining: Promise<void> | undefined;
  const purge = async () => {
    // Kept PURGE_MARGIN_MS past their end, so that a replica whose clock runs behind this one's still finds
    // the replay record of a token it sees as within its leeway.
    const purged = await store.tokens.purgeExpired(now() - PURGE_MARGIN_MS);
    if (purged > 0) options.logger.info('purged expired replay and revocation records', { count: purged });
    const retentionDays = config.auditRetentionDays;
    if (retentionDays === undefined) return;
    const events = await store.audit.purgeOlderThan(now() - retentionDays * DAY_MS);
    if (events > 0) {
      options.logger.info('purged audit events past their retention', {
        count: events,
        retention_days: retentionDays,
      });
    }
  };
  return {
    app: createApp(deps),
    store,
    deps,
    // One run at a time: a purge of a large backlog may outlast the interval between runs.
    maintain: () =>
      (maintaining ??= purge().finally(() => {
        maintaining = undefined;
      })),
    drain: () => {
      draining = true;
    },
    close: () => store.close(),
  };
}

const DAY_MS = 86_400_000;

/** How long replay and revocation records outlive the tokens they guard: the clock skew tolerated between replicas. */
export const PURGE_MARGIN_MS = 5 * 60_000;

/**
 * Creates tenant `demo`, so that a first `npm start` on an empty database has something to call; undefined when
 * a replica starting at the same moment created it first.
 */
export async function createDemoTenant(
  broker: Broker,
  config: BrokerConfig,
): Promise<{ name: string; audience: string; key: string } | undefined> {
  const created = await createTenant(
    { name: 'demo' },
    {
      store: broker.store,
      digest: broker.deps.digest,
      now: broker.deps.now,
      audienceSuffix: config.audienceSuffix,
    },
  );
  if (!created.ok) {
    // Another replica starting on the same empty database created it first.
    if (created.field === 'name') return undefined;
    throw new Error(`the demo tenant could not be created: ${created.message}`);
  }
  return { name: created.tenant.name, audience: created.tenant.audience, key: created.key };
}
