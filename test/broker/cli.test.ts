// The operator CLI: tenant create/list with clear errors, keys printed once on standard output.
import { scryptSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../../broker/cli.js';
import { ConfigError, loadConfig } from '../../broker/config.js';
import { keyDigester } from '../../broker/core/keys.js';
import { openStore } from '../../broker/store/open-store.js';
import { startTestBroker, TEST_KEK, type TestBroker } from '../support/broker.js';
import { createTestDatabase, openDriver, type TestDatabase } from '../support/database.js';

let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase();
});
afterEach(() => db.drop());

/** The database as the broker's first start leaves it: migrated, without tenants. */
async function started() {
  const store = await openStore(
    loadConfig({ DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK }).database,
  );
  await store.close();
}

/** That no command has created or changed anything: no SQLite file, or no tenant in PostgreSQL. */
async function expectNothingCreated() {
  if (db.engine === 'sqlite') expect(existsSync(db.file!)).toBe(false);
  else expect((await cli('tenant', 'list')).err).toContain('No tenants yet');
}

/** The database as a command's message names it: a SQLite file by its path, a PostgreSQL URL without password. */
function shownDb(): string {
  if (db.engine === 'sqlite') return db.url;
  const url = new URL(db.url);
  if (url.password) url.password = '***';
  return url.toString();
}

async function cli(...argv: string[]) {
  return cliWith({}, ...argv);
}

/** The CLI with standard output that throws away what it is given (closed, or /dev/null) when `discardsOut`. */
async function cliWith(options: { discardsOut?: boolean; env?: Record<string, string> }, ...argv: string[]) {
  let out = '';
  let err = '';
  const code = await runCli(argv, {
    env: { DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK, ...options.env },
    out: (s) => {
      out += s;
    },
    err: (s) => {
      err += s;
    },
    serve: async () => 0,
    discardsOut: () => options.discardsOut ?? false,
  });
  return { code, out, err };
}

describe('oidc-broker tenant', () => {
  it('create prints only the Tenant API key on stdout, explains on stderr, and list shows the tenant', async () => {
    const created = await cli('tenant', 'create', 'acme-corp', '--disable', 'apps-and-pats');
    expect(created.code).toBe(0);
    expect(created.out).toMatch(/^ssa_[0-9A-Za-z]{38}\n$/);
    expect(created.err).toContain('acme-corp.api.stepsecurity.io');
    expect(created.err).toContain('shown only this once');
    // Which database it went into: a command run without the broker's DATABASE_URL makes a key no broker takes.
    expect(created.err).toContain(`in ${shownDb()}.`);
    const listed = await cli('tenant', 'list');
    expect(listed.out).toMatch(
      /^NAME\s+AUDIENCE\s+DISABLED\s+CREATED\nacme-corp\s+acme-corp\.api\.stepsecurity\.io\s+apps-and-pats\s/,
    );
    expect(listed.out).not.toContain(created.out.trim());
  });

  it('list --json prints the fields the table shows as an array of objects, times in ISO form, [] when none', async () => {
    await started();
    const empty = await cli('tenant', 'list', '--json');
    expect([empty.code, empty.out, empty.err]).toEqual([0, '[]\n', '']);
    await cli('tenant', 'create', 'acme-corp', '--disable', 'apps-and-pats', '--disable', 'secure-registry');
    await cli('tenant', 'create', 'globex', '--audience', 'https://github.com/globex');
    const table = (await cli('tenant', 'list')).out.trim().split('\n').slice(1);
    const created = table.map((row) => row.split(/\s+/).at(-1));
    const listed = await cli('tenant', 'list', '--json');
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.out)).toEqual([
      {
        name: 'acme-corp',
        audience: 'acme-corp.api.stepsecurity.io',
        disabled_categories: ['apps-and-pats', 'secure-registry'],
        created_at: created[0],
      },
      {
        name: 'globex',
        audience: 'https://github.com/globex',
        disabled_categories: [],
        created_at: created[1],
      },
    ]);
    expect(created[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect((await cli('help')).out).toMatch(/tenant list \[--json\]/);
    const misused = await cli('tenant', 'list', 'acme-corp');
    expect([misused.code, misused.out]).toEqual([2, '']);
  });

  it('create honours --audience and refuses a duplicate audience', async () => {
    expect((await cli('tenant', 'create', 'one', '--audience', 'https://github.com/acme')).code).toBe(0);
    const dup = await cli('tenant', 'create', 'two', '--audience', 'https://github.com/acme');
    expect(dup.code).toBe(1);
    expect(dup.err).toContain('audience "https://github.com/acme" is already used');
    expect((await cli('tenant', 'list')).out).not.toContain('two');
  });

  it.each([
    [['tenant', 'create', 'Acme'], 'not a valid tenant name'],
    [['tenant', 'create', 'acme-'], 'not a valid tenant name'],
    [['tenant', 'create', 'ac_me'], 'not a valid tenant name'],
    [['tenant', 'create', 'a'.repeat(64)], 'not a valid tenant name'],
    [['tenant', 'create', 'acme', '--audience', 'has space'], 'not a valid audience'],
    [['tenant', 'create', 'acme', '--disable', 'api-keys'], 'not a product category'],
  ])('%o fails with a clear message', async (argv, message) => {
    const result = await cli(...argv);
    expect(result.code).toBe(1);
    expect(result.err).toContain(message);
    expect(result.out).toBe('');
  });

  it('an API key or a token given as the name or audience is refused, shown only as its hint', async () => {
    const key = (await cli('tenant', 'create', 'acme')).out.trim();
    const token = `eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.${'c2lnbmF0dXJl'.repeat(4)}`;
    for (const argv of [
      ['tenant', 'create', key],
      ['tenant', 'create', 'globex', '--audience', key],
      ['tenant', 'create', 'globex', '--audience', `https://github.com/${key}`],
      ['tenant', 'create', 'globex', '--audience', token],
    ]) {
      const result = await cli(...argv);
      expect(result.code, result.err).toBe(1);
      expect(result.err).toMatch(/^error: (name|audience) holds what looks like an? (API key|token)/);
      expect(result.err).toMatch(/never stored/);
      expect(result.err).toMatch(argv.includes(token) ? /revoke it/ : /rotate its slot/);
      expect(result.err).not.toContain(key.slice(4, 36));
      expect(result.err).not.toContain(token.split('.')[1]);
      if (!argv.includes(token)) expect(result.err).toContain(`ssa_…${key.slice(-4)}`);
      expect(result.out).toBe('');
    }
    const listed = (await cli('tenant', 'list')).out;
    expect(listed).not.toContain('globex');
    expect(listed).not.toContain(key.slice(4, 36));
    // A value that only starts like a key is an ordinary audience.
    expect((await cli('tenant', 'create', 'globex', '--audience', 'ssa_globex')).code).toBe(0);
  });

  it('no error message shows an API key given where a name or category belongs, and usage errors neither', async () => {
    const key = (await cli('tenant', 'create', 'acme')).out.trim();
    for (const argv of [
      ['tenant', 'rotate-key', key],
      ['tenant', 'create', 'globex', '--disable', key],
      ['tenant', 'create', 'globex', `--${key}`],
      ['tenant', key],
      [key],
    ]) {
      const result = await cli(...argv);
      expect(result.code, argv.join(' ')).not.toBe(0);
      expect(result.err).not.toContain(key.slice(4, 36));
      expect(result.err).toContain(`ssa_…${key.slice(-4)}`);
    }
  });

  it('a duplicate name is refused', async () => {
    await cli('tenant', 'create', 'acme');
    const dup = await cli('tenant', 'create', 'acme');
    expect(dup.code).toBe(1);
    expect(dup.err).toContain('a tenant named "acme" already exists');
  });

  it('usage errors exit 2 with the usage text', async () => {
    for (const argv of [
      ['tenant', 'create'],
      ['tenant', 'create', 'a', 'b'],
      ['tenant', 'create', 'a', '--bogus'],
      // A tenant has one audience: not silently the last of two.
      ['tenant', 'create', 'a', '--audience', 'https://github.com/acme', '--audience', 'second'],
      ['frobnicate'],
      // Nothing runs with arguments a command does not take: `rotate --force` must not rotate.
      ['signing-key', 'rotate', '--force'],
      ['tenant', 'list', 'extra'],
      ['openapi', 'extra'],
      ['serve', '--port', '8080'],
    ]) {
      const result = await cli(...argv);
      expect(result.code).toBe(2);
      expect(result.err).toContain('usage: oidc-broker');
    }
    await expectNothingCreated();
    expect(
      (await cli('tenant', 'create', 'a', '--audience', 'https://github.com/acme', '--audience', 'second'))
        .err,
    ).toContain('error: --audience is given more than once');
  });

  it.each([
    [['tenant'], '"tenant" needs a subcommand: create, list or rotate-key'],
    [
      ['tenant', 'delete', 'acme'],
      '"tenant delete" is not a command; "tenant" takes create, list or rotate-key',
    ],
    [['signing-key'], '"signing-key" needs a subcommand: rotate or replace'],
  ])('%o names the subcommands that exist', async (argv, message) => {
    const result = await cli(...argv);
    expect(result.code).toBe(2);
    expect(result.err).toContain(message);
  });

  it.each([
    [['tenat', 'list'], 'unknown command "tenat list"; did you mean "tenant list"?'],
    [['tenat'], 'unknown command "tenat"; did you mean "tenant"?'],
    [['signing-kye', 'rotaet'], 'unknown command "signing-kye rotaet"; did you mean "signing-key rotate"?'],
    [['opnapi'], 'unknown command "opnapi"; did you mean "openapi"?'],
    [
      ['tenant', 'lsit'],
      '"tenant lsit" is not a command; "tenant" takes create, list or rotate-key; did you mean "tenant list"?',
    ],
  ])('%o, misspelt, is answered with the command it is nearest, and runs nothing', async (argv, message) => {
    const result = await cli(...argv);
    expect(result).toMatchObject({ code: 2, out: '' });
    expect(result.err).toContain(`error: ${message}\n`);
  });

  it.each([
    [
      ['tenant', 'list', '--jsn'],
      'unknown option "--jsn"; "tenant list" takes --json; did you mean "--json"?',
    ],
    [
      ['tenant', 'create', 'acme', '--audiense', 'https://github.com/acme'],
      'unknown option "--audiense"; "tenant create" takes --audience or --disable; did you mean "--audience"?',
    ],
    [
      ['tenant', 'rotate-key', 'acme', '--solt=secondary'],
      'unknown option "--solt"; "tenant rotate-key" takes --slot; did you mean "--slot"?',
    ],
    [
      ['signing-key', 'replace', '--withdrw'],
      'unknown option "--withdrw"; "signing-key replace" takes --withdraw; did you mean "--withdraw"?',
    ],
    [['tenant', 'list', '--frobnicate'], 'unknown option "--frobnicate"; "tenant list" takes --json\n'],
    [['tenant', 'list', '-j'], 'unknown option "-j"; "tenant list" takes --json\n'],
  ])(
    '%o, an option misspelt or unknown, names the options the command takes and the one it is nearest, and runs nothing',
    async (argv, message) => {
      const result = await cli(...argv);
      expect(result).toMatchObject({ code: 2, out: '' });
      expect(result.err).toContain(`error: ${message}`);
      await expectNothingCreated();
    },
  );

  it.each([[['frobnicate']], [['tenat', 'frobnicate']], [['tenant', 'delete', 'acme']]])(
    '%o, far from every command, is not guessed at',
    async (argv) => {
      expect((await cli(...argv)).err).not.toContain('did you mean');
    },
  );
});

// SQLite's whatever engine the suite runs: a PostgreSQL database is never made by connecting to it.
describe('a DATABASE_URL naming a SQLite file that is not there', () => {
  let file: TestDatabase;
  beforeEach(async () => {
    file = await createTestDatabase('sqlite');
  });
  afterEach(() => file.drop());
  const cliOnFile = (...argv: string[]) => cliWith({ env: { DATABASE_URL: file.url } }, ...argv);

  it.each([
    [['tenant', 'list']],
    [['tenant', 'rotate-key', 'acme']],
    [['signing-key', 'rotate']],
    [['signing-key', 'replace']],
    [['key-pepper', 'adopt']],
  ])('%o refuses, naming the file, and creates no empty database to report on', async (argv) => {
    const result = await cliOnFile(...argv);
    expect(result).toMatchObject({ code: 1, out: '' });
    expect(result.err).toContain(`error: DATABASE_URL ${file.url} names no database file`);
    expect(result.err).toContain('nothing was created');
    expect(existsSync(file.file!)).toBe(false);
    expect(existsSync(join(dirname(file.file!), 'key-encryption-key'))).toBe(false);
  });

  it('tenant create makes it, as serve does', async () => {
    expect((await cliOnFile('tenant', 'create', 'acme')).code).toBe(0);
    expect((await cliOnFile('tenant', 'list')).out).toContain('acme');
  });
});

describe('a misspelt setting', () => {
  it('every command that reads the configuration names it on standard error, with the setting it means', async () => {
    await started();
    let err = '';
    const code = await runCli(['tenant', 'list'], {
      env: { DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK, BROKER_KEY_PEPER: 'pepper-s3cret' },
      out: () => {},
      err: (s) => {
        err += s;
      },
      serve: async () => 0,
    });
    expect(code).toBe(0);
    expect(err).toContain(
      'warning: BROKER_KEY_PEPER is not a setting of the broker and is ignored; did you mean BROKER_KEY_PEPPER?\n',
    );
    expect(err).not.toContain('s3cret');
  });
});

describe('oidc-broker help', () => {
  /** The commands the usage text lists: the lower-case words that start each entry. */
  const listedIn = (usage: string) =>
    usage
      .split('\n')
      .filter((line) => /^ {2}\S/.test(line))
      .map((line) => {
        const words = line
          .trim()
          .split(/\s{2,}/)[0]!
          .split(' ');
        const end = words.findIndex((word) => !/^[a-z][a-z-]*$/.test(word));
        return end === -1 ? words : words.slice(0, end);
      });

  it('lists every command, and every command it lists runs: it reaches the command, which checks its arguments', async () => {
    const help = await cli('help');
    expect(help.code).toBe(0);
    const commands = listedIn(help.out);
    expect(commands.map((words) => words.join(' '))).toEqual([
      'serve',
      'tenant create',
      'tenant list',
      'tenant rotate-key',
      'signing-key rotate',
      'signing-key replace',
      'key-pepper adopt',
      'openapi',
    ]);
    for (const words of commands) {
      const result = await cli(...words, '--no-such-option');
      expect(result.code, words.join(' ')).toBe(2);
      expect(result.err, words.join(' ')).toMatch(
        new RegExp(
          `^error: ("${words.join(' ')}" takes no further arguments|unknown option "--no-such-option"; "${words.join(' ')}" takes )`,
        ),
      );
    }
    // With no command at all, the server runs, as the usage says.
    expect(help.out).toContain('\nWith no command, serve runs.\n');
    expect(await cli()).toEqual({ code: 0, out: '', err: '' });
  });

  it('--help or -h after a command prints the usage on standard output, exits 0 and runs nothing', async () => {
    const usage = (await cli('help')).out;
    let served = false;
    const serving = (...argv: string[]) =>
      runCli(argv, {
        env: { DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK },
        out: () => {},
        err: () => {},
        serve: async () => {
          served = true;
          return 0;
        },
      });
    for (const argv of [
      ['tenant', 'create', '--help'],
      ['tenant', 'create', 'acme', '-h'],
      ['tenant', 'rotate-key', 'acme', '--help'],
      ['tenant', 'list', '--help'],
      ['tenant', '--help'],
      ['signing-key', 'rotate', '--help'],
      ['openapi', '-h'],
    ]) {
      expect(await cli(...argv), argv.join(' ')).toEqual({ code: 0, out: usage, err: '' });
    }
    expect(await serving('serve', '--help')).toBe(0);
    expect(served).toBe(false);
    // Nothing was created, and the help text asked for is never taken as a tenant name after `--`.
    await expectNothingCreated();
    expect((await cli('tenant', 'create', '--', '--help')).code).toBe(1);
  });

  it('a group missing its subcommand names those the usage lists for it', async () => {
    const commands = listedIn((await cli('--help')).out);
    const groups = new Set(commands.filter((words) => words.length === 2).map(([group]) => group!));
    expect([...groups]).toEqual(['tenant', 'signing-key', 'key-pepper']);
    for (const group of groups) {
      const subcommands = commands.filter(([first]) => first === group).map((words) => words[1]!);
      const list = subcommands.join(', ').replace(/, ([^,]+)$/, ' or $1');
      expect((await cli(group)).err).toContain(`"${group}" needs a subcommand: ${list}\n`);
    }
  });
});

describe('oidc-broker signing-key rotate', () => {
  it('its help says, as the rotation does, that the new key reaches the JWKS within a minute, not at once', async () => {
    const help = (await cli('help')).out;
    const entry = help.slice(help.indexOf('signing-key rotate'), help.indexOf('  signing-key replace'));
    await started();
    const rotated = await cli('signing-key', 'rotate');
    expect(rotated.err).toContain("in every replica's JWKS within a minute");
    // Which database it rotated, as tenant create names it: a command run with another DATABASE_URL rotates a key no
    // broker of this one uses.
    expect(rotated.err).toContain(`New signing key ${rotated.out.trim()} in ${shownDb()} is in`);
    expect(entry).toContain("in every replica's JWKS within a minute");
    expect(entry).not.toMatch(/\bnow\b/);
  });

  it('run again before the first new key signs, says that key signs only between the two times, after the current one', async () => {
    await started();
    const first = await cli('signing-key', 'rotate');
    const second = await cli('signing-key', 'rotate');
    expect([first.code, second.code]).toEqual([0, 0]);
    const [k1, k2] = [first.out.trim(), second.out.trim()];
    const signsFrom = (err: string) => /signs from (\S+), once/.exec(err)![1]!;
    const current = /\. (\S+) signs until then and stays published/.exec(first.err)![1]!;
    expect(second.err).toContain(`New signing key ${k2} in`);
    expect(second.err).not.toContain(`${k1} signs until then`);
    expect(second.err).toContain(
      `${current} signs until ${signsFrom(first.err)}, then ${k1} (added by an earlier rotation) only until ` +
        `${signsFrom(second.err)}, when the new key takes over. Each stays published until the tokens it signed ` +
        'have expired',
    );
  });
});

describe('oidc-broker signing-key replace', () => {
  const LOST_KEK = TEST_KEK;
  const NEW_KEK = '44'.repeat(32);
  const kidOf = (token: string) =>
    (JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
  const jwksKids = async (t: TestBroker) =>
    (
      (await (await t.request('GET', '/.well-known/jwks.json')).json()) as { keys: { kid: string }[] }
    ).keys.map((k) => k.kid);

  it('refuses, changing nothing, while the configured key-encryption key still opens the signing keys', async () => {
    const key = (await cli('tenant', 'create', 'acme')).out.trim();
    const t = await startTestBroker({ db });
    try {
      const kids = await jwksKids(t);
      // Run by mistake against a healthy broker, it would erase the private keys every replica signs with.
      const refused = await cli('signing-key', 'replace');
      expect(refused.code).toBe(1);
      expect(refused.out).toBe('');
      expect(refused.err).toContain('still opens the stored signing keys');
      expect(refused.err).toContain('oidc-broker signing-key rotate');
      t.clock.now += 61_000;
      expect(await jwksKids(t)).toEqual(kids);
      expect((await t.request('POST', '/v1/tokens', { key })).status).toBe(201);
    } finally {
      await t.close();
    }
  });

  it('--withdraw, for a leaked key-encryption key: the old keys leave the JWKS at once, and what they signed stops working', async () => {
    const key = (await cli('tenant', 'create', 'acme')).out.trim();
    const before = await startTestBroker({ db });
    const old = (
      (await (await before.request('POST', '/v1/tokens', { key })).json()) as { access_token: string }
    ).access_token;
    await before.close();
    // Whoever copied the database and the leaked key can sign with the old key: nothing it signed is to be believed.
    const replaced = await cliWith(
      { env: { BROKER_KEY_ENCRYPTION_KEY: NEW_KEK } },
      'signing-key',
      'replace',
      '--withdraw',
    );
    expect(replaced.code, replaced.err).toBe(0);
    const kid = replaced.out.trim();
    expect(replaced.err).toContain('withdrawn');
    const after = await startTestBroker({ db, env: { BROKER_KEY_ENCRYPTION_KEY: NEW_KEK } });
    try {
      expect(await jwksKids(after)).toEqual([kid]);
      expect((await after.request('GET', '/v1/whoami', { key: old })).status).toBe(401);
      expect((await after.request('POST', '/v1/tokens', { key })).status).toBe(201);
    } finally {
      await after.close();
    }
  });

  it('takes --withdraw and no other argument', async () => {
    const refused = await cli('signing-key', 'replace', '--force');
    expect(refused.code).toBe(2);
    expect(refused.out).toBe('');
  });

  it('brings back a broker whose key-encryption key is lost, keeping the tokens already signed valid', async () => {
    const key = (await cli('tenant', 'create', 'acme')).out.trim();
    const before = await startTestBroker({ db });
    const mint = async (t: TestBroker) =>
      ((await (await t.request('POST', '/v1/tokens', { key })).json()) as { access_token: string })
        .access_token;
    const old = await mint(before);
    await before.close();

    // The key it was stored under is gone: the broker refuses, and says what to do when it cannot be restored.
    const refused = await startTestBroker({ db, env: { BROKER_KEY_ENCRYPTION_KEY: NEW_KEK } }).catch(
      (e) => e,
    );
    expect(refused).toBeInstanceOf(Error);
    expect(String(refused.message)).toContain('oidc-broker signing-key replace');

    const replaced = await cliWith({ env: { BROKER_KEY_ENCRYPTION_KEY: NEW_KEK } }, 'signing-key', 'replace');
    expect(replaced.code, replaced.err).toBe(0);
    const kid = replaced.out.trim();
    expect(replaced.err).toContain(kidOf(old));
    expect(replaced.err).toContain(`New signing key ${kid} in ${shownDb()} signs from now on`);

    const after = await startTestBroker({ db, env: { BROKER_KEY_ENCRYPTION_KEY: NEW_KEK } });
    try {
      // The new key signs at once; the old one still verifies what it signed, and is still published.
      const fresh = await mint(after);
      expect(kidOf(fresh)).toBe(kid);
      expect((await after.request('GET', '/v1/whoami', { key: fresh })).status).toBe(200);
      expect((await after.request('GET', '/v1/whoami', { key: old })).status).toBe(200);
      expect(await jwksKids(after)).toEqual(expect.arrayContaining([kid, kidOf(old)]));
      // The old private key is no longer in the database under the lost (or leaked) key-encryption key.
      const driver = openDriver(db);
      const rows = await driver.all<{ kid: string; private_key: string }>(
        'SELECT kid, private_key FROM signing_keys',
      );
      await driver.close();
      expect(rows.find((r) => r.kid === kidOf(old))?.private_key).not.toMatch(/^v1\./);
      // Until every token it signed has expired.
      after.clock.now += 12 * 3600_000 + 3 * 60_000;
      expect(await jwksKids(after)).toEqual([kid]);
    } finally {
      await after.close();
    }
    // The lost key cannot be used any more: nothing it could decrypt is left to sign with.
    const stale = await startTestBroker({ db, env: { BROKER_KEY_ENCRYPTION_KEY: LOST_KEK } }).catch((e) => e);
    expect(stale).toBeInstanceOf(Error);
  });

  it('a replica still running with the old key-encryption key answers 503 saying to restart it, not 500', async () => {
    const key = (await cli('tenant', 'create', 'acme')).out.trim();
    const running = await startTestBroker({ db });
    try {
      expect((await running.request('POST', '/v1/tokens', { key })).status).toBe(201);
      const replaced = await cliWith(
        { env: { BROKER_KEY_ENCRYPTION_KEY: NEW_KEK } },
        'signing-key',
        'replace',
      );
      expect(replaced.code, replaced.err).toBe(0);
      // Once it has read the new signing key, which it cannot decrypt.
      running.clock.now += 61_000;
      const refused = await running.request('POST', '/v1/tokens', { key });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('Retry-After')).toBe('1');
      const problem = (await refused.json()) as { code: string; detail: string };
      expect(problem.code).toBe('not_ready');
      expect(problem.detail).toContain('key-encryption key');
      expect(problem.detail).toContain('restart');
      expect(running.logs.join('\n')).toContain('BROKER_KEY_ENCRYPTION_KEY');
    } finally {
      await running.close();
    }
  });
});

describe('a database a newer version migrated', () => {
  it('every command says so on standard error, and still works', async () => {
    expect((await cli('tenant', 'create', 'acme')).code).toBe(0);
    // As a newer version leaves it: a migration this one does not have.
    const driver = openDriver(db);
    await driver.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [
      99,
      'later',
      1,
    ]);
    await driver.close();
    const listed = await cli('tenant', 'list');
    expect(listed.code).toBe(0);
    expect(listed.out).toContain('acme');
    expect(listed.err).toContain('which this one does not know (migrations 99)');
  });
});

/** The status a broker answers `key` with on GET /v1/whoami. */
const whoami = (t: TestBroker, key: string) => t.request('GET', '/v1/whoami', { key }).then((r) => r.status);

describe('oidc-broker tenant rotate-key', () => {
  it('gives a tenant whose key is lost a new one: printed once, the old key and its tokens stop, audited', async () => {
    const lost = (await cli('tenant', 'create', 'acme')).out.trim();
    const t = await startTestBroker({ db });
    try {
      const minted = (await (await t.request('POST', '/v1/tokens', { key: lost })).json()) as {
        access_token: string;
      };
      const rotated = await cli('tenant', 'rotate-key', 'acme');
      expect(rotated.code).toBe(0);
      expect(rotated.out).toMatch(/^ssa_[0-9A-Za-z]{38}\n$/);
      expect(rotated.err).toContain('Tenant API key (primary slot) of acme');
      expect(rotated.err).toContain('shown only this once');
      const fresh = rotated.out.trim();
      expect(await whoami(t, lost)).toBe(401);
      expect(await whoami(t, minted.access_token)).toBe(401);
      expect(await whoami(t, fresh)).toBe(200);
      const { events } = (await (
        await t.request('GET', '/v1/audit-events?type=api_key.rotated', { key: fresh })
      ).json()) as { events: { actor: unknown; target: unknown; details: Record<string, unknown> }[] };
      expect(events).toEqual([
        expect.objectContaining({
          actor: { kind: 'operator', id: 'cli' },
          target: { type: 'api_key', id: 'tenant/primary' },
          details: expect.objectContaining({ hint: `ssa_…${fresh.slice(-4)}`, access_tokens_revoked: 1 }),
        }),
      ]);
      expect(JSON.stringify(events)).not.toContain(fresh);
      // No request made it: like tenant.created, it carries no request_id.
      expect(events[0]?.details).not.toHaveProperty('request_id');
    } finally {
      await t.broker.close();
    }
  });

  it('--slot secondary fills the secondary slot and leaves the primary working', async () => {
    const primary = (await cli('tenant', 'create', 'acme')).out.trim();
    const t = await startTestBroker({ db });
    try {
      const secondary = (await cli('tenant', 'rotate-key', 'acme', '--slot', 'secondary')).out.trim();
      expect(await whoami(t, primary)).toBe(200);
      const me = (await (await t.request('GET', '/v1/whoami', { key: secondary })).json()) as {
        credential: { slot: string };
      };
      expect(me.credential.slot).toBe('secondary');
    } finally {
      await t.broker.close();
    }
  });

  it.each([
    [['tenant', 'rotate-key'], 2, 'exactly one NAME'],
    [['tenant', 'rotate-key', 'acme', '--slot', 'tertiary'], 2, '--slot must be primary or secondary'],
    [['tenant', 'rotate-key', 'nobody'], 1, 'no tenant named "nobody"'],
    // Which slot to empty is not guessed from the last of two.
    [
      ['tenant', 'rotate-key', 'acme', '--slot', 'primary', '--slot', 'secondary'],
      2,
      '--slot is given more than once',
    ],
    [
      ['tenant', 'rotate-key', 'acme', '--slot=secondary', '--slot', 'secondary'],
      2,
      '--slot is given more than once',
    ],
  ])('%o fails with exit %i and a clear message, changing nothing', async (argv, code, message) => {
    const key = (await cli('tenant', 'create', 'acme')).out.trim();
    const result = await cli(...argv);
    expect(result).toMatchObject({ code, out: '' });
    expect(result.err).toContain(message);
    const t = await startTestBroker({ db });
    try {
      expect(await whoami(t, key)).toBe(200);
    } finally {
      await t.broker.close();
    }
  });
});

describe('a key shown once, with standard output closed or /dev/null', () => {
  const refusal =
    'standard output is closed or /dev/null, where the Tenant API key, shown only once, would be lost';

  it('tenant create refuses before anything is created', async () => {
    const created = await cliWith({ discardsOut: true }, 'tenant', 'create', 'acme');
    expect(created).toMatchObject({ code: 1, out: '' });
    expect(created.err).toContain(refusal);
    expect(created.err).toContain('nothing was changed');
    expect((await cli('tenant', 'list')).out).not.toContain('acme');
    // The name is still free.
    expect((await cli('tenant', 'create', 'acme')).code).toBe(0);
  });

  it('tenant rotate-key refuses, and the key in the slot goes on working', async () => {
    const key = (await cli('tenant', 'create', 'acme')).out.trim();
    const rotated = await cliWith({ discardsOut: true }, 'tenant', 'rotate-key', 'acme');
    expect(rotated).toMatchObject({ code: 1, out: '' });
    expect(rotated.err).toContain(refusal);
    const t = await startTestBroker({ db });
    try {
      expect((await t.request('GET', '/v1/whoami', { key })).status).toBe(200);
    } finally {
      await t.broker.close();
    }
  });

  it('usage errors are still told first, and commands that print no key run', async () => {
    expect((await cliWith({ discardsOut: true }, 'tenant', 'create')).code).toBe(2);
    await started();
    expect((await cliWith({ discardsOut: true }, 'tenant', 'list')).code).toBe(0);
  });
});

describe('BROKER_KEY_PEPPER other than the one the API keys in the database were stored under', () => {
  const PEPPER = 'pepper-s3cret';
  const OTHER = 'pepper-typ0';
  const withPepper = (pepper?: string): { env: Record<string, string> } => ({
    env: pepper === undefined ? {} : { BROKER_KEY_PEPPER: pepper },
  });

  /** As an earlier version leaves the database: its keys, and no record of the pepper they were stored under. */
  async function forgetPepper() {
    const driver = openDriver(db);
    await driver.run('DELETE FROM broker_settings');
    await driver.close();
  }

  /** No tenant `globex` was created, and `key` still works under the pepper it was made with. */
  async function expectNothingChanged(key: string) {
    expect((await cli('tenant', 'list')).out).not.toContain('globex');
    const t = await startTestBroker({ db, ...withPepper(PEPPER) });
    try {
      expect(await whoami(t, key)).toBe(200);
    } finally {
      await t.broker.close();
    }
  }

  /** Refused as configuration (exit 78), naming the setting and never a value, having changed nothing. */
  function expectRefused(result: { code: number; out: string; err: string }, why: string) {
    expect(result.code, result.err).toBe(78);
    expect(result.out).toBe('');
    expect(result.err).toMatch(/^error: invalid configuration: BROKER_KEY_PEPPER: /);
    expect(result.err).toContain(why);
    expect(result.err).toContain('oidc-broker key-pepper adopt');
    for (const value of [PEPPER, OTHER, 's3cret', 'typ0']) expect(result.err).not.toContain(value);
  }

  it('set to another pepper, unset, or set where there was none: every command that digests keys refuses', async () => {
    const key = (await cliWith(withPepper(PEPPER), 'tenant', 'create', 'acme')).out.trim();
    // What the database keeps is a salted digest, never the pepper.
    const driver = openDriver(db);
    const stored = await driver.all<{ value: string }>('SELECT value FROM broker_settings');
    await driver.close();
    expect(stored).toEqual([{ value: expect.stringMatching(/^[0-9a-f]{32}\.[0-9a-f]{64}$/) }]);
    for (const [pepper, why] of [
      [OTHER, 'is not the pepper the API keys in this database were stored under'],
      [undefined, 'is not set, but the API keys in this database were stored under a pepper'],
    ] as const) {
      expectRefused(await cliWith(withPepper(pepper), 'tenant', 'create', 'globex'), why);
      expectRefused(await cliWith(withPepper(pepper), 'tenant', 'rotate-key', 'acme'), why);
      const broker = await startTestBroker({ db, ...withPepper(pepper) }).catch((error: unknown) => error);
      expect(broker).toBeInstanceOf(ConfigError);
      expect((broker as ConfigError).message).toContain(why);
    }
    // Nothing was created or rotated: the key works with the pepper it was made under.
    await expectNothingChanged(key);
  });

  it('the check it records cannot be tested against a guessed pepper with one HMAC, as a key digest of a known input could', async () => {
    expect((await cliWith(withPepper(PEPPER), 'tenant', 'create', 'acme')).code).toBe(0);
    const driver = openDriver(db);
    const [row] = await driver.all<{ value: string }>('SELECT value FROM broker_settings');
    await driver.close();
    const [salt, value] = row!.value.split('.') as [string, string];
    // Whoever reads the database knows the label and the salt: a plain digest would let them try a pepper a time.
    expect(value).not.toBe(keyDigester(PEPPER)(`oidc-broker key pepper check ${salt}`));
    const slow = scryptSync(keyDigester(PEPPER)(`oidc-broker key pepper check ${salt}`), salt, 32, {
      N: 2 ** 14,
      r: 8,
      p: 1,
    });
    expect(value).toBe(slow.toString('hex'));
  });

  it('a database whose keys were stored without a pepper refuses one', async () => {
    expect((await cli('tenant', 'create', 'acme')).code).toBe(0);
    expectRefused(
      await cliWith(withPepper(PEPPER), 'tenant', 'create', 'globex'),
      'is set, but the API keys in this database were stored without a pepper',
    );
  });

  it('a database of an earlier version, which records no pepper, adopts the one the broker is started with', async () => {
    const key = (await cliWith(withPepper(PEPPER), 'tenant', 'create', 'acme')).out.trim();
    await forgetPepper();
    const t = await startTestBroker({ db, ...withPepper(PEPPER) });
    try {
      expect(await whoami(t, key)).toBe(200);
      expect(t.logs.join('\n')).toMatch(
        /"level":"info","msg":"the database now records the BROKER_KEY_PEPPER its API keys are stored under[^"]*","pepper":"set"/,
      );
    } finally {
      await t.broker.close();
    }
    expectRefused(
      await cliWith(withPepper(OTHER), 'tenant', 'create', 'globex'),
      'is not the pepper the API keys in this database were stored under',
    );
    // key-pepper adopt on such a database records the pepper it is run with, and says so.
    await forgetPepper();
    const recorded = await cliWith(withPepper(PEPPER), 'key-pepper', 'adopt');
    expect(recorded).toMatchObject({ code: 0, out: '' });
    expect(recorded.err).toContain('recorded no pepper for its API keys');
    expect(recorded.err).not.toContain(PEPPER);
    expect((await cliWith(withPepper(PEPPER), 'tenant', 'rotate-key', 'acme')).code).toBe(0);
  });

  it('on a database of an earlier version that holds API keys, tenant commands record no pepper: only the broker or key-pepper adopt does', async () => {
    const key = (await cliWith(withPepper(PEPPER), 'tenant', 'create', 'acme')).out.trim();
    await forgetPepper();
    // Run without the broker's pepper, the command cannot tell it is not theirs: recorded, it would make the broker's
    // own replicas refuse to start, saying the keys were stored without one.
    for (const args of [
      ['tenant', 'create', 'globex'],
      ['tenant', 'rotate-key', 'acme'],
    ]) {
      const refused = await cliWith(withPepper(undefined), ...args);
      expect(refused.code, refused.err).toBe(78);
      expect(refused.out).toBe('');
      expect(refused.err).toMatch(/^error: invalid configuration: BROKER_KEY_PEPPER: /);
      expect(refused.err).toContain('records no pepper');
    }
    await expectNothingChanged(key);
    // Once the broker has recorded its pepper, the commands run with it.
    expect((await cliWith(withPepper(PEPPER), 'tenant', 'create', 'globex')).code).toBe(0);
  });

  it("key-pepper adopt makes the configured pepper the database's, saying that every API key must be issued anew", async () => {
    const old = (await cliWith(withPepper(PEPPER), 'tenant', 'create', 'acme')).out.trim();
    expect((await cliWith(withPepper(PEPPER), 'tenant', 'create', 'globex')).code).toBe(0);
    // With the pepper it already has, nothing changes.
    const same = await cliWith(withPepper(PEPPER), 'key-pepper', 'adopt');
    expect(same).toMatchObject({ code: 0, out: '' });
    expect(same.err).toContain('are stored under; nothing was changed');

    const adopted = await cliWith(withPepper(OTHER), 'key-pepper', 'adopt');
    expect(adopted.code, adopted.err).toBe(0);
    expect(adopted.out).toBe('');
    expect(adopted.err).toContain('no API key issued before authenticates any more');
    expect(adopted.err).toContain('oidc-broker tenant rotate-key NAME');
    expect(adopted.err).toContain('acme, globex');
    expect(adopted.err).toContain('restart every replica');
    // Which database: run without the broker's DATABASE_URL, it would have changed another one.
    for (const said of [same.err, adopted.err])
      expect(said).toContain(db.engine === 'sqlite' ? ` ${db.url} ` : `${new URL(db.url).pathname} `);
    for (const value of [PEPPER, OTHER]) expect(adopted.err).not.toContain(value);

    // The old pepper is now the one refused; under the new one the old key is unknown, and a rotated key works.
    expect((await cliWith(withPepper(PEPPER), 'tenant', 'rotate-key', 'acme')).code).toBe(78);
    const fresh = (await cliWith(withPepper(OTHER), 'tenant', 'rotate-key', 'acme')).out.trim();
    const t = await startTestBroker({ db, ...withPepper(OTHER) });
    try {
      expect(await whoami(t, old)).toBe(401);
      expect(await whoami(t, fresh)).toBe(200);
    } finally {
      await t.broker.close();
    }
  });
});
