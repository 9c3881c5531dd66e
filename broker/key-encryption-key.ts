// The key-encryption key for signing keys at rest: from configuration, or a generated development file.
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type BrokerConfig, ConfigError } from './config.js';
import { openSigningKeys, type SigningKeys, UndecryptableSigningKey } from './core/signing-keys.js';
import type { Logger } from './logger.js';
import type { Store } from './store/store.js';

const DEV_KEK_FILE = 'key-encryption-key';

/**
 * With BROKER_KEY_ENCRYPTION_KEY set, that key. Otherwise (SQLite only — config refuses PostgreSQL without
 * one) a key kept in a 0600 file beside the database, generated on first start, with a warning. A missing file
 * is generated only while the database holds no signing keys: the keys it holds were encrypted under the lost
 * one, and a new file would only stand in the way of restoring it.
 */
export function resolveKeyEncryptionKey(
  config: BrokerConfig,
  logger: Logger,
  database: { holdsSigningKeys: boolean },
): Buffer {
  if (config.keyEncryptionKey) return config.keyEncryptionKey;
  if (config.database.engine !== 'sqlite') throw new Error('BROKER_KEY_ENCRYPTION_KEY is required');
  if (config.database.path === ':memory:') return randomBytes(32);
  const file = devKeyFile(config.database.path);
  if (existsSync(file)) return readKeyFile(file);
  if (database.holdsSigningKeys) {
    throw new ConfigError(
      file,
      'is missing, but the database holds signing keys encrypted under the key it held: restore the file, or set ' +
        'BROKER_KEY_ENCRYPTION_KEY to that key; if it is lost, run oidc-broker signing-key replace',
    );
  }
  mkdirSync(dirname(file), { recursive: true });
  // Written in full under a name of its own, then linked into place: processes starting together on a new
  // database never read a half-written file, and the one whose link lands first decides the key for all.
  const key = randomBytes(32);
  const draft = `${file}.${process.pid}.${randomBytes(6).toString('hex')}`;
  writeFileSync(draft, `${key.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  try {
    linkSync(draft, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return readKeyFile(file);
  } finally {
    unlinkSync(draft);
  }
  logger.warn(
    'generated a development key-encryption key; set BROKER_KEY_ENCRYPTION_KEY (openssl rand -hex 32) in production',
    { file },
  );
  return key;
}

/** The development key-encryption-key file beside a SQLite database. */
function devKeyFile(databasePath: string): string {
  return join(dirname(databasePath), DEV_KEK_FILE);
}

function readKeyFile(file: string): Buffer {
  // Refused like a bad variable (exit 78), as ssh refuses a private key others can read.
  if (statSync(file).mode & 0o077) {
    throw new ConfigError(file, 'the key-encryption key file is readable by others; chmod 600 it');
  }
  const text = readFileSync(file, 'utf8').trim();
  if (!/^[0-9a-f]{64}$/i.test(text)) {
    throw new ConfigError(file, 'must hold exactly 64 hex characters (a 32-byte key) and nothing else');
  }
  return Buffer.from(text, 'hex');
}

/**
 * The broker's signing keys under the configured key-encryption key. A key that cannot decrypt the stored ones
 * is a configuration error (exit 78) naming where it came from: the variable, or the development file.
 */
export async function openConfiguredSigningKeys(
  config: BrokerConfig,
  store: Store,
  logger: Logger,
  now: () => number,
): Promise<SigningKeys> {
  const holdsSigningKeys = (await store.signingKeys.list()).length > 0;
  const kek = resolveKeyEncryptionKey(config, logger, { holdsSigningKeys });
  try {
    return await openSigningKeys({ store, kek, now });
  } catch (error) {
    if (!(error instanceof UndecryptableSigningKey)) throw error;
    const source =
      config.keyEncryptionKey || config.database.engine !== 'sqlite'
        ? 'BROKER_KEY_ENCRYPTION_KEY'
        : devKeyFile(config.database.path);
    throw new ConfigError(source, error.message);
  }
}
