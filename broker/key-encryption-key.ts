// The key-encryption key for signing keys at rest: from configuration, or a generated development file.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type BrokerConfig, ConfigError } from './config.js';
import type { Logger } from './logger.js';

export const DEV_KEK_FILE = 'key-encryption-key';

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
  const file = join(dirname(config.database.path), DEV_KEK_FILE);
  if (existsSync(file)) {
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
  if (database.holdsSigningKeys) {
    throw new ConfigError(
      file,
      'is missing, but the database holds signing keys encrypted under the key it held: restore the file, or set ' +
        'BROKER_KEY_ENCRYPTION_KEY to that key',
    );
  }
  mkdirSync(dirname(file), { recursive: true });
  const key = randomBytes(32);
  writeFileSync(file, `${key.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  logger.warn(
    'generated a development key-encryption key; set BROKER_KEY_ENCRYPTION_KEY (openssl rand -hex 32) in production',
    { file },
  );
  return key;
}
