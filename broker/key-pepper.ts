// Whether BROKER_KEY_PEPPER is the pepper the database's API key digests were made under, by a check it records.
import { randomBytes, scrypt } from 'node:crypto';
import { promisify } from 'node:util';
import { type BrokerConfig, ConfigError } from './config.js';
import { type KeyDigester, keyDigester } from './core/keys.js';
import type { Store } from './store/store.js';

const SETTING = 'key_pepper_check';
const LABEL = 'oidc-broker key pepper check';
const STORED = /^([0-9a-f]{32})\.([0-9a-f]{64})$/;

const scryptAsync = promisify(scrypt) as (
  password: string,
  salt: string,
  length: number,
  options: object,
) => Promise<Buffer>;
/** 16 MiB and some 50 ms a guess: once per start here, and what testing a guessed pepper costs whoever reads it. */
const SCRYPT = { N: 2 ** 14, r: 8, p: 1 };

/**
 * `<salt>.<scrypt>`: scrypt of the key digest of a fixed label and a random salt, made as every API key's digest is,
 * so it matches exactly when the pepper does. A key's digest lets only whoever knows that key test guesses of the
 * pepper; this record, whose input is known, lets whoever reads the database test them, so each test costs a
 * scrypt, and the salt keeps a table for likely peppers, made once, from fitting every database.
 */
async function checkOf(digest: KeyDigester, salt = randomBytes(16).toString('hex')): Promise<string> {
  const slow = await scryptAsync(digest(`${LABEL} ${salt}`), salt, 32, SCRYPT);
  return `${salt}.${slow.toString('hex')}`;
}

/** Whether `stored` is the check of `digest`'s pepper; undefined when it is not a check this version can read. */
async function matches(stored: string, digest: KeyDigester): Promise<boolean | undefined> {
  const salt = STORED.exec(stored)?.[1];
  return salt === undefined ? undefined : (await checkOf(digest, salt)) === stored;
}

const ADOPT = 'oidc-broker key-pepper adopt';

/** Why the configured pepper is not the database's, naming only whether each is set, and the ways on. */
async function mismatch(config: BrokerConfig, stored: string): Promise<ConfigError> {
  const unpeppered = (await matches(stored, keyDigester())) === true;
  const why =
    config.keyPepper === undefined
      ? 'is not set, but the API keys in this database were stored under a pepper, so none of them would ' +
        'authenticate. Set it to that pepper (a misspelt name is ignored, with a warning)'
      : unpeppered
        ? 'is set, but the API keys in this database were stored without a pepper, so none of them would ' +
          'authenticate. Unset it'
        : 'is not the pepper the API keys in this database were stored under, so none of them would authenticate. ' +
          'Set it to that pepper, exactly as it was given (a final newline counts)';
  return new ConfigError(
    'BROKER_KEY_PEPPER',
    `${why}, for every replica and every oidc-broker command. To change the pepper on purpose, run ${ADOPT} with the ` +
      'new setting: every API key issued before then stops working',
  );
}

/**
 * Refuses (ConfigError, exit 78) a pepper other than the one the database records a check of. A database that
 * records none (new, or of a version before the check) records the configured one's: `adopted` is then true.
 * Replicas starting together record one, and each checks its own pepper against it. With `guess: false`, a database
 * that holds API keys and records none is refused instead, as nothing says which pepper they were stored under.
 */
export async function checkKeyPepper(
  config: BrokerConfig,
  store: Store,
  options: { guess?: boolean } = {},
): Promise<{ adopted: boolean }> {
  // A command run with another pepper than the broker's recording it on such a database would have the broker's own
  // replicas refuse to start, told that the keys were stored under the command's: only the broker, which serves
  // those keys, and key-pepper adopt, run to that end, make that guess.
  if (
    options.guess === false &&
    (await store.settings.get(SETTING)) === undefined &&
    (await store.tenants.list()).length > 0
  ) {
    throw new ConfigError(
      'BROKER_KEY_PEPPER',
      'this database holds API keys but records no pepper they were stored under (an earlier version made them), ' +
        'so this command cannot tell whether its own is theirs. Start the broker with its BROKER_KEY_PEPPER first, ' +
        `which records it, or run ${ADOPT} with that setting; then run this command with it`,
    );
  }
  const digest = keyDigester(config.keyPepper);
  const mine = await checkOf(digest);
  const stored = await store.settings.first(SETTING, mine);
  if (stored === mine) return { adopted: true };
  const same = await matches(stored, digest);
  if (same === undefined) {
    throw new Error(
      'the check of BROKER_KEY_PEPPER the database records is not one this version of the broker reads; a newer one stored it',
    );
  }
  if (!same) throw await mismatch(config, stored);
  return { adopted: false };
}

/**
 * Makes the configured pepper the one the database records, whatever it recorded: `unchanged` when it was that one
 * already, `recorded` when it recorded none, `changed` when another. Every API key digested under another pepper no
 * longer authenticates.
 */
export async function adoptKeyPepper(
  config: BrokerConfig,
  store: Store,
): Promise<'unchanged' | 'recorded' | 'changed'> {
  try {
    return (await checkKeyPepper(config, store)).adopted ? 'recorded' : 'unchanged';
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    await store.settings.replace(SETTING, await checkOf(keyDigester(config.keyPepper)));
    return 'changed';
  }
}
