// The operator CLI `oidc-broker`: its commands in one table, dispatched from argv. Takes its IO as arguments.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { createBroker } from './broker.js';
import { type Command, commandOf, notACommand, UsageError, usage } from './cli-commands.js';
import {
  type BrokerConfig,
  ConfigError,
  type DatabaseConfig,
  describeUnknownSetting,
  loadConfig,
} from './config.js';
import { rotateBuiltinKey } from './core/api-keys.js';
import { nearestWord } from './core/edit-distance.js';
import { keyDigester, withoutSecrets } from './core/keys.js';
import { OPERATOR } from './core/principal.js';
import { KeyEncryptionKeyNotLost, type KeyTurn, replaceSigningKeys } from './core/signing-keys.js';
import { createTenant } from './core/tenants.js';
import { messageOf } from './errors.js';
import { openApiDocument } from './http/docs.js';
import { openConfiguredSigningKeys, resolveKeyEncryptionKey } from './key-encryption-key.js';
import { adoptKeyPepper, checkKeyPepper } from './key-pepper.js';
import { createLogger, silentLogger } from './logger.js';
import {
  NEWER_SCHEMA,
  namesakesShown,
  openStore,
  POLICY_NAMESAKES,
  shownDatabaseUrl,
} from './store/open-store.js';

export interface CliIo {
  env: Record<string, string | undefined>;
  out(text: string): void;
  err(text: string): void;
  /** Runs the server until it is told to stop; resolves to the exit code. */
  serve(config: BrokerConfig): Promise<number>;
  /** Whether what `out` writes is thrown away: standard output is closed, or /dev/null. */
  discardsOut?(): boolean;
}

const HELP_FLAGS = new Set(['--help', '-h']);

/**
 * Whether the command line asks for help: `help` as the command, or `--help`/`-h` anywhere before a `--`, as after a
 * command (`oidc-broker tenant create --help`). Then only the usage is printed: nothing is created or rotated.
 */
function asksForHelp(argv: string[]): boolean {
  if (argv[0] === 'help') return true;
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).some((arg) => HELP_FLAGS.has(arg));
}

/** Every command, once: dispatch, the subcommands a group names and the usage text all come from here. */
const COMMANDS: readonly Command<CliIo>[] = [
  {
    name: 'serve',
    help: 'run the broker (configured by environment variables)',
    isDefault: true,
    run: (io) => io.serve(loadConfig(io.env)),
  },
  {
    name: 'tenant create',
    args: 'NAME [--audience A] [--disable CATEGORY]...',
    help: 'create a tenant; prints its Tenant API key (primary) once',
    run: tenantCreate,
  },
  {
    name: 'tenant list',
    args: '[--json]',
    help:
      'list tenants: a table, or with --json an array of {name, audience, disabled_categories, created_at} ' +
      '(an ISO time)',
    run: tenantList,
  },
  {
    name: 'tenant rotate-key',
    args: 'NAME [--slot primary|secondary]',
    help:
      'give the tenant a new Tenant API key in that slot (primary when left out) and print it once; ' +
      "the slot's old key and the tokens minted from it stop working",
    run: tenantRotateKey,
  },
  {
    name: 'signing-key rotate',
    help:
      "add a new signing key, in every replica's JWKS within a minute, that signs from 7 minutes on; " +
      'the old one stays published until every token it signed has expired',
    run: rotateSigningKey,
  },
  {
    name: 'signing-key replace',
    args: '[--withdraw]',
    help:
      'when the key-encryption key is lost or leaked: add a signing key under the configured one that signs at once, ' +
      'retire the others and erase their private keys; they stay published until every token they signed has ' +
      'expired, or, with --withdraw (after a leak), are deleted at once and what they signed stops working',
    run: replaceSigningKey,
  },
  {
    name: 'key-pepper adopt',
    help:
      'make the configured BROKER_KEY_PEPPER (or none) the one API keys are stored under; every API key issued ' +
      'before then stops working, and each tenant needs a new one (tenant rotate-key)',
    run: adoptPepper,
  },
  { name: 'openapi', help: 'print the OpenAPI document', run: printOpenApi },
];

/** The configuration a command runs with, after a warning for each variable that looks like a setting and is none. */
function commandConfig(io: CliIo): BrokerConfig {
  const config = loadConfig(io.env);
  for (const setting of config.unknownSettings) io.err(`warning: ${describeUnknownSetting(setting)}\n`);
  return config;
}

/**
 * Opens the store, saying so on standard error when a newer version of the broker has migrated it. A SQLite file
 * that is not there is made only by a command that creates (`tenant create`, as `serve`): any other would make an
 * empty database where DATABASE_URL, or the directory it is run from, is not the broker's, and report on that one
 * (`No tenants yet`, `no tenant named "acme"`, a signing key rotated that no broker uses).
 */
async function openStoreFor(database: BrokerConfig['database'], io: CliIo, options: { creates?: true } = {}) {
  if (
    !options.creates &&
    database.engine === 'sqlite' &&
    database.path !== ':memory:' &&
    !existsSync(database.path)
  )
    throw new Error(
      `DATABASE_URL ${storedIn(database)} names no database file, and only serve and tenant create make one: ` +
        "nothing was created. Run the command with the broker's DATABASE_URL (a relative path is taken from the " +
        'current directory)',
    );
  const store = await openStore(database);
  if (store.unknownMigrations?.length) {
    io.err(`warning: ${NEWER_SCHEMA} (migrations ${store.unknownMigrations.join(', ')})\n`);
  }
  if (store.policyNamesakes?.length) {
    io.err(
      `warning: ${POLICY_NAMESAKES}:\n${namesakesShown(store.policyNamesakes)
        .map((g) => `  ${g}\n`)
        .join('')}`,
    );
  }
  return store;
}

export async function runCli(argv: string[], given: CliIo): Promise<number> {
  // What the CLI writes to standard error may echo an argument: a key pasted there shows as its hint. Keys it
  // prints on purpose go to standard output.
  const io: CliIo = { ...given, err: (text) => given.err(withoutSecrets(text)) };
  try {
    if (asksForHelp(argv)) {
      io.out(usage(COMMANDS));
      return 0;
    }
    const found = commandOf(COMMANDS, argv);
    if (!found) throw notACommand(COMMANDS, argv);
    const { command, args } = found;
    // Nothing runs with arguments its command does not take (`signing-key rotate --force` must not rotate).
    if (command.args === undefined && args.length > 0)
      throw new UsageError(`"${command.name}" takes no further arguments`);
    return await command.run(io, args);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`error: ${error.message}\n\n${usage(COMMANDS)}`);
      return 2;
    }
    if (error instanceof ConfigError) {
      io.err(`error: invalid configuration: ${error.message}\n`);
      return 78;
    }
    io.err(`error: ${messageOf(error)}\n`);
    return 1;
  }
}

/**
 * A key is shown only once: where standard output throws it away, the command changes nothing and says why. (A
 * write to standard output that fails later is told by the composition root, which sees the stream's errors.)
 */
function keyWouldBeLost(io: CliIo): boolean {
  if (!io.discardsOut?.()) return false;
  io.err(
    'error: standard output is closed or /dev/null, where the Tenant API key, shown only once, would be lost; ' +
      'nothing was changed. Send standard output to a terminal, a file or a pipe\n',
  );
  return true;
}

/**
 * Parses `command`'s arguments; what parseArgs refuses is a usage error (exit 2), and so is an option given twice
 * that is not a list: not silently the last (`rotate-key acme --slot primary --slot secondary` must not guess).
 */
function parseUsage<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  args: string[],
  options: T,
) {
  const parsed = (() => {
    try {
      return parseArgs({ args, allowPositionals: true, strict: true, options, tokens: true });
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')
        throw unknownOption(command, args, options);
      throw new UsageError((error as Error).message);
    }
  })();
  const seen = new Set<string>();
  for (const token of parsed.tokens) {
    if (token.kind !== 'option' || options?.[token.name]?.multiple) continue;
    if (seen.has(token.name)) throw new UsageError(`--${token.name} is given more than once`);
    seen.add(token.name);
  }
  return parsed;
}

/** The first option in `args` that `command` does not take, named with the options it takes and the one it is nearest. */
function unknownOption(command: string, args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  const names = Object.keys(options);
  const { tokens } = parseArgs({ args, allowPositionals: true, strict: false, options, tokens: true });
  const unknown = tokens.find((token) => token.kind === 'option' && !names.includes(token.name));
  const given = unknown?.kind === 'option' ? unknown.rawName : '';
  // A short option (`-j`) is a letter, not a misspelling of a name.
  const meant = given.startsWith('--') ? nearestWord(given.slice(2), names) : undefined;
  const takes = names
    .map((name) => `--${name}`)
    .join(', ')
    .replace(/, ([^,]+)$/, ' or $1');
  return new UsageError(
    `unknown option "${given}"; "${command}" takes ${takes}${meant ? `; did you mean "--${meant}"?` : ''}`,
  );
}

async function tenantCreate(io: CliIo, args: string[]): Promise<number> {
  const { values, positionals } = parseUsage('tenant create', args, {
    audience: { type: 'string' },
    disable: { type: 'string', multiple: true },
  });
  if (positionals.length !== 1) throw new UsageError('tenant create takes exactly one NAME');
  if (keyWouldBeLost(io)) return 1;
  const config = commandConfig(io);
  const store = await openStoreFor(config.database, io, { creates: true });
  try {
    await checkKeyPepper(config, store, { guess: false });
    const result = await createTenant(
      { name: positionals[0]!, audience: values.audience, disabledCategories: values.disable },
      { store, digest: keyDigester(config.keyPepper), now: Date.now, audienceSuffix: config.audienceSuffix },
    );
    if (!result.ok) {
      io.err(`error: ${result.message}\n`);
      return 1;
    }
    const { tenant } = result;
    const disabled = tenant.disabledCategories.length
      ? `; disabled: ${tenant.disabledCategories.join(', ')}`
      : '';
    io.err(
      `Created tenant ${tenant.name} (audience ${tenant.audience}${disabled}) in ${storedIn(config.database)}.\n` +
        'Its Tenant API key (primary slot) follows on standard output. It is shown only this once: store it now.\n',
    );
    io.out(`${result.key}\n`);
    return 0;
  } finally {
    await store.close();
  }
}

/** The operator's way back in when a tenant's Tenant API keys are lost: a new key in one slot. */
async function tenantRotateKey(io: CliIo, args: string[]): Promise<number> {
  const { values, positionals } = parseUsage('tenant rotate-key', args, { slot: { type: 'string' } });
  if (positionals.length !== 1) throw new UsageError('tenant rotate-key takes exactly one NAME');
  const slot = values.slot ?? 'primary';
  if (slot !== 'primary' && slot !== 'secondary') throw new UsageError('--slot must be primary or secondary');
  if (keyWouldBeLost(io)) return 1;
  const config = commandConfig(io);
  const store = await openStoreFor(config.database, io);
  try {
    await checkKeyPepper(config, store, { guess: false });
    const name = positionals[0]!;
    const tenant = await store.tenants.byName(name);
    if (!tenant) {
      io.err(`error: no tenant named "${name}" (oidc-broker tenant list shows them)\n`);
      return 1;
    }
    const { key } = await rotateBuiltinKey({ tenantId: tenant.id, actor: OPERATOR }, 'tenant', slot, {
      store,
      digest: keyDigester(config.keyPepper),
      now: Date.now,
    });
    io.err(
      `The Tenant API key (${slot} slot) of ${tenant.name} in ${storedIn(config.database)} follows on standard ` +
        "output; the slot's previous key " +
        'and the access tokens minted from it no longer work. It is shown only this once: store it now.\n',
    );
    io.out(`${key}\n`);
    return 0;
  } finally {
    await store.close();
  }
}

/**
 * The database a command wrote to, as its message names it: a command run without the broker's DATABASE_URL (or
 * from another directory) writes to another database, whose key no broker takes. A SQLite path is made absolute.
 */
function storedIn(database: DatabaseConfig): string {
  return database.engine === 'sqlite' && database.path !== ':memory:'
    ? `sqlite:${resolve(database.path)}`
    : shownDatabaseUrl(database);
}

async function tenantList(io: CliIo, args: string[]): Promise<number> {
  const { values, positionals } = parseUsage('tenant list', args, { json: { type: 'boolean' } });
  if (positionals.length > 0) throw new UsageError('tenant list takes no NAME; only --json');
  const store = await openStoreFor(commandConfig(io).database, io);
  try {
    const tenants = await store.tenants.list();
    if (values.json) {
      // For scripts: the table's fields, an empty array when there are none, and nothing else on standard output.
      const listed = tenants.map((t) => ({
        name: t.name,
        audience: t.audience,
        disabled_categories: t.disabledCategories,
        created_at: new Date(t.createdAt).toISOString(),
      }));
      io.out(`${JSON.stringify(listed, null, 2)}\n`);
      return 0;
    }
    if (tenants.length === 0) {
      io.err('No tenants yet. Create one with: oidc-broker tenant create NAME\n');
      return 0;
    }
    const rows = tenants.map((t) => [
      t.name,
      t.audience,
      t.disabledCategories.join(',') || '-',
      new Date(t.createdAt).toISOString(),
    ]);
    const table = [['NAME', 'AUDIENCE', 'DISABLED', 'CREATED'], ...rows];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    io.out(
      `${table
        .map((r) =>
          r
            .map((cell, i) => cell.padEnd(widths[i]!))
            .join('  ')
            .trimEnd(),
        )
        .join('\n')}\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}

async function rotateSigningKey(io: CliIo): Promise<number> {
  const config = commandConfig(io);
  const store = await openStoreFor(config.database, io);
  try {
    const logger = createLogger({ write: (line: string) => io.err(line) }, 'warn');
    const keys = await openConfiguredSigningKeys(config, store, logger, Date.now);
    const { kid, activeFrom, retired, signsUntilThen } = await keys.rotate();
    io.out(`${kid}\n`);
    const from = new Date(activeFrom).toISOString();
    io.err(
      `New signing key ${kid} in ${storedIn(config.database)} is in every replica's JWKS within a minute and signs from ` +
        `${from}, once verifiers that cache ` +
        `the JWKS have had it for their cache time. ${untilThen(signsUntilThen, retired)}\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}

/**
 * Which keys sign until a rotation's new key does: the one signing now, and, after a rotation a few minutes earlier,
 * that rotation's key, which then signs from its own time only until the new key's. A key retired before it ever
 * signs is said so.
 */
function untilThen(turns: readonly KeyTurn[], retired: readonly string[]): string {
  const iso = (at: number) => new Date(at).toISOString();
  const published =
    'stays published until the tokens it signed have expired (12 h and 2 minutes after it stops signing).';
  const never = retired.filter((kid) => !turns.some((turn) => turn.kid === kid));
  const neverSigns = never.length
    ? ` ${never.join(', ')}, added by an earlier rotation, never signs: the new key takes over before it would.`
    : '';
  const [now, ...next] = turns;
  if (!now) return neverSigns.trimStart();
  if (next.length === 0) return `${now.kid} signs until then and ${published}${neverSigns}`;
  const then = next.map((turn) => `${turn.kid} (added by an earlier rotation) only until ${iso(turn.until)}`);
  return (
    `${now.kid} signs until ${iso(now.until)}, then ${then.join(', then ')}, when the new key takes over. Each ` +
    `${published}${neverSigns}`
  );
}

/**
 * The way back when the key-encryption key the signing keys are stored under is lost, or must change: nothing is
 * decrypted; a new key under the configured key-encryption key (a new development file on SQLite without one)
 * takes over at once.
 */
async function replaceSigningKey(io: CliIo, args: string[]): Promise<number> {
  const { values, positionals } = parseUsage('signing-key replace', args, { withdraw: { type: 'boolean' } });
  if (positionals.length > 0) throw new UsageError('signing-key replace takes no NAME; only --withdraw');
  const withdraw = values.withdraw === true;
  const config = commandConfig(io);
  const store = await openStoreFor(config.database, io);
  try {
    const logger = createLogger({ write: (line: string) => io.err(line) }, 'warn');
    const kek = resolveKeyEncryptionKey(config, logger, { holdsSigningKeys: false });
    const replaced = await replaceSigningKeys({ store, kek, now: Date.now, withdraw }).catch(
      (error: unknown) => {
        if (!(error instanceof KeyEncryptionKeyNotLost)) throw error;
        io.err(`error: ${error.message}\n`);
        return undefined;
      },
    );
    if (!replaced) return 1;
    const { kid, retired } = replaced;
    io.out(`${kid}\n`);
    io.err(
      `New signing key ${kid} in ${storedIn(config.database)} signs from now on, under the configured key-encryption ` +
        'key; restart every replica with ' +
        'that key (one still running with the old one cannot sign until it is). ' +
        (retired.length === 0
          ? ''
          : withdraw
            ? `${retired.join(', ')} is withdrawn: deleted, public key and all, so every replica stops publishing it ` +
              'and refuses the tokens it signed within a minute; verifiers that cached the JWKS stop within 5 more. '
            : `${retired.join(', ')} no longer signs, its private key is erased, and it stays published until the ` +
              'tokens it signed have expired (12 h and 2 minutes; --withdraw ends that at once, after a leak). ') +
        "Verifiers that cached the JWKS meet the new key's kid before they have fetched it again, for up to 5 minutes.\n",
    );
    return 0;
  } finally {
    await store.close();
  }
}

/**
 * A deliberate change of the pepper (or its first use, or its end): the database records the configured one from
 * now on. Every key digest changes with it, so every API key issued before stops working; the command says so, and
 * which tenants need a new Tenant API key.
 */
async function adoptPepper(io: CliIo): Promise<number> {
  const config = commandConfig(io);
  const store = await openStoreFor(config.database, io);
  try {
    const pepper =
      config.keyPepper === undefined ? 'no BROKER_KEY_PEPPER' : 'BROKER_KEY_PEPPER as configured';
    const outcome = await adoptKeyPepper(config, store);
    if (outcome === 'unchanged') {
      io.err(
        `${pepper} is already the one the API keys in ${storedIn(config.database)} are stored under; nothing was ` +
          'changed.\n',
      );
      return 0;
    }
    if (outcome === 'recorded') {
      io.err(
        `The database ${storedIn(config.database)} recorded no pepper for its API keys (it is new, or of an earlier ` +
          `version); it now records ${pepper} ` +
          'as the one they are stored under. Nothing else was changed.\n',
      );
      return 0;
    }
    const tenants = (await store.tenants.list()).map((t) => t.name);
    io.err(
      `The API keys of ${storedIn(config.database)} are now stored under ${pepper}, and no API key issued before ` +
        'authenticates any ' +
        'more: Tenant, Tenant read-only and Secure Registry keys, and fine-grained keys. Access tokens already minted ' +
        'stay valid until they expire. Now restart every replica with this setting (one still running with the ' +
        'previous one goes on accepting the old keys, and one started with it refuses to start), then give each ' +
        'tenant a new Tenant API key with oidc-broker tenant rotate-key NAME' +
        (tenants.length ? ` (${tenants.join(', ')})` : '') +
        '; with it, each tenant rotates the other slots it uses and creates its fine-grained keys anew. Adopting the ' +
        'previous setting again brings back the old keys not replaced meanwhile, and stops the new ones.\n',
    );
    return 0;
  } finally {
    await store.close();
  }
}

async function printOpenApi(io: CliIo): Promise<number> {
  const config = loadConfig({ DATABASE_URL: 'sqlite::memory:' });
  const broker = await createBroker(config, { logger: silentLogger });
  try {
    io.out(`${JSON.stringify(openApiDocument(broker.app), null, 2)}\n`);
    return 0;
  } finally {
    await broker.close();
  }
}
