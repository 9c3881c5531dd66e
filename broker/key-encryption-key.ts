// The key-encryption key for signing keys at rest: from configuration, or a generated development file.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { BrokerConfig } from './config.js';
import type { Logger } from './logger.js';

export const DEV_KEK_FILE = 'key-encryption-key';

/**
 * With BROKER_KEY_ENCRYPTION_KEY set, that key. Otherwise (SQLite only — config refuses PostgreSQL without
 * one) a key kept in a 0600 file beside the database, generated on first start, with a warning.
 */
export function resolveKeyEncryptionKey(config: BrokerConfig, logger: Logger): Buffer {
  if (config.keyEncryptionKey) return config.keyEncryptionKey;
  if (config.database.engine !== 'sqlite') throw new Error('BROKER_KEY_ENCRYPTION_KEY is required');
  if (config.database.path === ':memory:') return randomBytes(32);
  const file = join(dirname(config.database.path), DEV_KEK_FILE);
  if (existsSync(file)) {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) logger.warn('key-encryption key file is readable by others; chmod 600 it', { file });
    const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
    if (key.length !== 32) throw new Error(`${file} does not hold a 32-byte hex key`);
    return key;
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
