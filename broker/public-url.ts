// Which BROKER_PUBLIC_URL the brokers on a database were last started with, recorded there at each start.
import type { BrokerConfig } from './config.js';
import type { Logger } from './logger.js';
import type { Store } from './store/store.js';

const SETTING = 'public_url';

/**
 * Records the configured public URL as the one the brokers on this database use, and warns when the last broker
 * started on it had another: replicas with different URLs refuse each other's tokens (their `iss`). Not refused, as a
 * planned change reaches the replicas one restart at a time; the newest start's value is the one recorded.
 */
export async function recordPublicUrl(config: Pick<BrokerConfig, 'publicUrl'>, store: Store, logger: Logger) {
  // Recorded if nothing is, and read back in one step: of replicas first started together after the upgrade with
  // different values, one records its own and the others are told. Every later start takes no write lock unless
  // the value differs.
  const recorded = await store.settings.first(SETTING, config.publicUrl);
  if (recorded === config.publicUrl) return;
  await store.settings.replace(SETTING, config.publicUrl);
  logger.warn(
    'BROKER_PUBLIC_URL is not the one the broker last started on this database had: replicas still running with ' +
      'that one refuse the tokens this one mints, and this one refuses theirs (401), until all have the same. For ' +
      'a planned change, restart every replica with the new value; otherwise restart this one with the other. ' +
      "This one is now recorded as the database's",
    { public_url: config.publicUrl, recorded_public_url: recorded },
  );
}
