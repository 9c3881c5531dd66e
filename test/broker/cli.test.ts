// The operator CLI: tenant create/list with clear errors, keys printed once on standard output.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../../broker/cli.js';
import { TEST_KEK } from '../support/broker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase();
});
afterEach(() => db.drop());

async function cli(...argv: string[]) {
  let out = '';
  let err = '';
  const code = await runCli(argv, {
    env: { DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK },
    out: (s) => {
      out += s;
    },
    err: (s) => {
      err += s;
    },
    serve: async () => 0,
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
    const listed = await cli('tenant', 'list');
    expect(listed.out).toMatch(
      /^NAME\s+AUDIENCE\s+DISABLED\s+CREATED\nacme-corp\s+acme-corp\.api\.stepsecurity\.io\s+apps-and-pats\s/,
    );
    expect(listed.out).not.toContain(created.out.trim());
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
      // Nothing runs with arguments a command does not take: `rotate --help` must not rotate.
      ['signing-key', 'rotate', '--help'],
      ['tenant', 'list', 'extra'],
      ['openapi', 'extra'],
      ['serve', '--help'],
    ]) {
      const result = await cli(...argv);
      expect(result.code).toBe(2);
      expect(result.err).toContain('usage: oidc-broker');
    }
    expect((await cli('tenant', 'list')).err).toContain('No tenants yet');
  });
});
