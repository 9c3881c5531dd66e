// Input validation: every mistake is reported clearly, all at once, before any network call.
import { describe, expect, it } from 'vitest';
import { parseInputs } from '../../src/inputs.js';
import { run } from '../../src/run.js';
import { mainHarness, useBroker } from './support/harness.js';

const broker = useBroker();

function errorsFor(inputs: Record<string, string>): string[] {
  const parsed = parseInputs((name) => inputs[name] ?? '');
  return parsed.ok ? [] : parsed.errors;
}

describe('parseInputs', () => {
  it('applies the documented defaults', () => {
    expect(parseInputs((name) => ({ tenant: 'acme' })[name] ?? '')).toEqual({
      ok: true,
      inputs: {
        tenant: 'acme',
        audience: 'acme.api.stepsecurity.io',
        apiUrl: 'https://agent.api.stepsecurity.io/v1',
        permissions: [],
        policy: undefined,
        durationSeconds: undefined,
        exportEnv: false,
        revoke: true,
      },
    });
  });

  it('splits permissions on commas, spaces and new lines and drops repeats', () => {
    const parsed = parseInputs(
      (name) =>
        ({ tenant: 'acme', permissions: 'audit-log:read, harden-runner:write\n  read-all audit-log:read' })[
          name
        ] ?? '',
    );
    expect(parsed.ok && parsed.inputs.permissions).toEqual([
      'audit-log:read',
      'harden-runner:write',
      'read-all',
    ]);
  });

  it('requires a tenant that is a DNS label', () => {
    expect(errorsFor({})).toEqual([expect.stringContaining('Input `tenant` is required')]);
    expect(errorsFor({ tenant: 'Acme Corp' })).toEqual([
      expect.stringContaining('Input `tenant` is "Acme Corp", which is not a tenant name'),
    ]);
    expect(errorsFor({ tenant: '-acme' })).toHaveLength(1);
    expect(errorsFor({ tenant: 'a'.repeat(64) })).toHaveLength(1);
    expect(errorsFor({ tenant: 'a'.repeat(63) })).toEqual([]);
  });

  it.each([
    ['Acme', 'acme'],
    ['ACME-Prod', 'acme-prod'],
    ['acme_prod', 'acme-prod'],
  ])('suggests the tenant name %s was probably meant as', (value, meant) => {
    expect(errorsFor({ tenant: value })).toEqual([
      `Input \`tenant\` is "${value}", which is not a tenant name: use lower-case letters, digits and inner ` +
        `hyphens, at most 63 characters. Did you mean \`${meant}\`?`,
    ]);
  });

  it.each([
    'https://acme.api.stepsecurity.io',
    'acme.api.stepsecurity.io',
    'https://acme.api.stepsecurity.io/',
  ])('takes the tenant out of its audience or URL %s', (value) => {
    const [error] = errorsFor({ tenant: value });
    expect(error).toContain(`Input \`tenant\` is "${value}", which is not a tenant name`);
    expect(error).toContain("takes the tenant's name alone");
    expect(error).toContain('Did you mean `acme`?');
  });

  it('says where a URL given as the tenant belongs, without guessing a name from it', () => {
    const [error] = errorsFor({ tenant: 'https://agent.api.stepsecurity.io/v1' });
    expect(error).toContain("takes the tenant's name alone");
    expect(error).toContain("the broker's URL goes in `api-url`");
    expect(error).not.toContain('Did you mean');
  });

  it.each([
    ['Audit-Log:Read', 'Did you mean `audit-log:read`?'],
    ['"audit-log:read"', 'Did you mean `audit-log:read`?'],
    ['["audit-log:read"]', 'Did you mean `audit-log:read`?'],
    ['audit-log:write', '`audit-log` is read only: did you mean `audit-log:read`?'],
    ['harden-runner:admin', 'Did you mean `harden-runner:read` or `harden-runner:write`?'],
    ['READ-ALL', 'Did you mean `read-all`?'],
    ['harden-runer:read', 'Did you mean `harden-runner:read`?'],
    ['oidc-federaton:write', 'Did you mean `oidc-federation:write`?'],
    ['read-al', 'Did you mean `read-all`?'],
    ['audit-logs:write', '`audit-log` is read only: did you mean `audit-log:read`?'],
    [
      'audit-log:read;harden-runner:read',
      'Separate permissions with commas, spaces or new lines: did you mean `audit-log:read, harden-runner:read`?',
    ],
    [
      'audit-log:read|read-all',
      'Separate permissions with commas, spaces or new lines: did you mean `audit-log:read, read-all`?',
    ],
  ])('suggests the permission %s was probably meant as', (value, hint) => {
    expect(errorsFor({ tenant: 'acme', permissions: value })[0]).toContain(
      `Input \`permissions\` contains "${value}", which is not a permission. ${hint}`,
    );
  });

  it("says a permission has no space after its colon, as a job's permissions: block has", () => {
    const errors = errorsFor({ tenant: 'acme', permissions: 'harden-runner: read\naudit-log : read' });
    expect(errors).toEqual([
      'Input `permissions` writes "harden-runner: read", "audit-log : read" with spaces around the colon, as a ' +
        "job's `permissions:` block does; an id has none: did you mean `harden-runner:read, audit-log:read`?",
    ]);
    // Only the ids so written are named; another mistake in the same input is reported as before.
    expect(errorsFor({ tenant: 'acme', permissions: 'Harden-Runner: Write, scan:read' })).toEqual([
      expect.stringContaining('did you mean `harden-runner:write`?'),
      expect.stringContaining('Input `permissions` contains "scan:read", which is not a permission.'),
    ]);
  });

  it('says to write permissions without YAML list dashes', () => {
    const errors = errorsFor({ tenant: 'acme', permissions: '- audit-log:read\n- harden-runner:read' });
    expect(errors).toEqual([
      expect.stringContaining(
        'Input `permissions` is a YAML list; write the ids separated by commas, spaces or new lines, without ' +
          'the dashes, e.g. `audit-log:read, harden-runner:read`.',
      ),
    ]);
  });

  it('lists the valid ids and shortcuts once, however many permissions are wrong', () => {
    const errors = errorsFor({ tenant: 'acme', permissions: 'deploy:write, scan:read, audit-log:read' });
    expect(errors).toHaveLength(2);
    expect(errors.join('\n').match(/Valid ids:/g)).toHaveLength(1);
    expect(errors[1]).toContain('shortcuts: read-all, read-write-all.');
  });

  it('names an unknown permission and lists the valid ids and shortcuts', () => {
    const [error] = errorsFor({ tenant: 'acme', permissions: 'audit-log:read, audit-log:write' });
    expect(error).toContain('"audit-log:write", which is not a permission');
    expect(error).toContain('harden-runner:read, harden-runner:write');
    expect(error).toContain('shortcuts: read-all, read-write-all');
  });

  it('suggests :read or :write for a bare category', () => {
    expect(errorsFor({ tenant: 'acme', permissions: 'harden-runner' })[0]).toContain(
      'Did you mean `harden-runner:read` or `harden-runner:write`?',
    );
  });

  it('suggests only :read for a read-only category', () => {
    const [error] = errorsFor({ tenant: 'acme', permissions: 'audit-log' });
    expect(error).toContain('"audit-log", which is not a permission. Did you mean `audit-log:read`?');
    expect(error).not.toContain('`audit-log:write`');
  });

  it.each([
    ['3600s', '3600'],
    ['900 s', '900'],
    ['15m', '900'],
    ['1h', '3600'],
  ])('suggests the seconds a duration-seconds of %s stands for', (value, seconds) => {
    expect(errorsFor({ tenant: 'acme', 'duration-seconds': value })).toEqual([
      `Input \`duration-seconds\` is "${value}"; it must be a whole number of seconds from 1 to 3600, or left empty for the policy's default. Did you mean \`${seconds}\`?`,
    ]);
  });

  it.each(['0', '3601', '1.5', '-5', '2h', '90m', 'abc', '1e3'])('rejects duration-seconds %s', (value) => {
    expect(errorsFor({ tenant: 'acme', 'duration-seconds': value })).toEqual([
      `Input \`duration-seconds\` is "${value}"; it must be a whole number of seconds from 1 to 3600, or left empty for the policy's default.`,
    ]);
  });

  it.each(['1', '3600'])('accepts duration-seconds %s', (value) => {
    expect(errorsFor({ tenant: 'acme', 'duration-seconds': value })).toEqual([]);
  });

  it.each([
    'http://broker.example.com/v1',
    'http://10.0.0.5:8080/v1',
    'http://127.0.0.1.example.com/v1',
    'ftp://broker.example.com/v1',
  ])('rejects the non-https api-url %s', (url) => {
    expect(errorsFor({ tenant: 'acme', 'api-url': url })[0]).toContain('Input `api-url` must use https://');
  });

  it.each([
    'http://127.0.0.1:8080/v1',
    'http://127.0.0.2:8080/v1',
    'http://[::1]:8080/v1',
    'http://localhost:8080/v1',
  ])('accepts the loopback api-url %s', (url) => {
    expect(errorsFor({ tenant: 'acme', 'api-url': url })).toEqual([]);
  });

  it.each([
    ['https://broker.example.com', 'https://broker.example.com/v1'],
    ['https://broker.example.com/', 'https://broker.example.com/v1'],
    ['https://broker.example.com/api', 'https://broker.example.com/api/v1'],
    ['https://broker.example.com/v1/oidc/token', 'https://broker.example.com/v1'],
    ['https://broker.example.com/v2', 'https://broker.example.com/v1'],
    ['https://broker.example.com/V1', 'https://broker.example.com/v1'],
    ['https://broker.example.com/V1/oidc/token', 'https://broker.example.com/v1'],
    ['http://127.0.0.1:8080', 'http://127.0.0.1:8080/v1'],
  ])('rejects the api-url %s, which does not end in /v1, showing the expected form', (url, expected) => {
    expect(errorsFor({ tenant: 'acme', 'api-url': url })).toEqual([
      `Input \`api-url\` is "${url}", which does not end in \`/v1\`: give the broker's base URL, e.g. ` +
        `\`${expected}\` (the default is \`https://agent.api.stepsecurity.io/v1\`).`,
    ]);
  });

  it.each(['https://broker.example.com/v1/', 'https://broker.example.com/stepsecurity/v1'])(
    'accepts the api-url %s',
    (url) => {
      expect(errorsFor({ tenant: 'acme', 'api-url': url })).toEqual([]);
    },
  );

  it.each([
    ['agent.api.stepsecurity.io/v1', 'https://agent.api.stepsecurity.io/v1'],
    ['broker.example.com', 'https://broker.example.com/v1'],
  ])('suggests https:// for the api-url %s, given without a scheme', (url, meant) => {
    expect(errorsFor({ tenant: 'acme', 'api-url': url })).toEqual([
      `Input \`api-url\` is "${url}", which is not a URL; did you mean \`${meant}\`?`,
    ]);
  });

  it('rejects an api-url that is not a URL or carries credentials', () => {
    expect(errorsFor({ tenant: 'acme', 'api-url': 'broker.example.com' })[0]).toContain('which is not a URL');
    expect(errorsFor({ tenant: 'acme', 'api-url': 'https://u:p@broker.example.com/v1' })[0]).toContain(
      'without credentials',
    );
  });

  it.each([
    'https://deploy:hunter2@broker.example.com/api',
    'https://broker.example.com/api?token=hunter2',
    'https://u:hunter2@bro ker',
    // A password holding `/`, `?`, `#` or `@` makes the value no URL at all.
    'https://deploy:hun/ter2@broker.example.com/v1',
    'https://deploy:hun#ter2@broker.example.com/v1',
    'https://deploy:hun?ter2@broker.example.com/v1',
    'https://deploy:hun@ter2@broker.example.com/v1',
    'deploy:hunter2@broker.example.com/v1',
  ])('never repeats a credential or query string of the api-url %s in its errors', (url) => {
    const errors = errorsFor({ tenant: 'acme', 'api-url': url });
    expect(errors.length).toBeGreaterThan(0);
    for (const error of errors) expect(error).not.toMatch(/hun|ter2/);
  });

  it('rejects booleans other than true and false', () => {
    expect(errorsFor({ tenant: 'acme', 'export-env': 'yes', revoke: 'no' })).toEqual([
      'Input `export-env` is "yes"; it must be `true` or `false`.',
      'Input `revoke` is "no"; it must be `true` or `false`.',
    ]);
  });

  it.each([
    ['white space', 'acme api', 'acme api'],
    ['a zero-width space', 'acme.api.stepsecurity.io\u200b', 'acme.api.stepsecurity.io\\u200b'],
    ['a character outside ASCII', 'acme.api.stepsecurity.io\u2019', 'acme.api.stepsecurity.io\u2019'],
  ])(
    'refuses an audience with %s, which no tenant can have, before asking GitHub for it',
    (_, audience, shown) => {
      expect(errorsFor({ tenant: 'acme', audience })).toEqual([
        `Input \`audience\` is "${shown}", which cannot be a tenant's audience: use at most 255 printable ASCII ` +
          "characters without white space, e.g. `acme.api.stepsecurity.io`, or leave it empty for the tenant's default.",
      ]);
    },
  );

  it('rejects an audience with whitespace and an overlong policy name', () => {
    expect(errorsFor({ tenant: 'acme', audience: 'a b' })[0]).toContain('Input `audience`');
    expect(errorsFor({ tenant: 'acme', policy: 'p'.repeat(101) })[0]).toContain('Input `policy`');
  });

  it.each([
    ['a tab', 'deploy\tmain', 'deploy\\u0009main'],
    ['a line break', 'deploy\nmain', 'deploy\\u000amain'],
    ['a bidirectional override', 'deploy\u202emain', 'deploy\\u202emain'],
  ])('refuses a policy name with %s, as the broker would, showing the character', (_, policy, shown) => {
    expect(errorsFor({ tenant: 'acme', policy })).toEqual([
      `Input \`policy\` is "${shown}", which cannot be the name of a trust policy: a name holds no control, ` +
        'line-separator, bidirectional-override or unpaired-surrogate characters. Write the name on one line, ' +
        "exactly as the tenant's policies show it.",
    ]);
  });

  it.each([
    ['a zero-width space', '\u200b', '\\u200b'],
    ['a word joiner', '\u2060', '\\u2060'],
    ['a soft hyphen', '\u00ad', '\\u00ad'],
    ['variation selectors', '\ufe0f\u{e0100}', '\\ufe0f\\u{e0100}'],
  ])(
    'refuses a policy name of only %s, which the broker refuses too, showing each character',
    (_, policy, shown) => {
      expect(errorsFor({ tenant: 'acme', policy })).toEqual([
        `Input \`policy\` is "${shown}", which shows as nothing: it holds only invisible characters, and no trust ` +
          "policy has such a name. Write the policy's name as the tenant's policies show it, or leave the input " +
          'empty for the broker to choose the policy that matches the job.',
      ]);
      // Beside characters that show, they are the name that shows, as the broker compares names.
      const parsed = parseInputs((name) => ({ tenant: 'acme', policy: `deploy${policy}` })[name] ?? '');
      expect(parsed.ok && parsed.inputs.policy).toBe(`deploy${policy}`);
    },
  );

  it('shows a character that is invisible in a quoted value, and suggests the value without it', () => {
    // A zero-width space, as a name copied from a chat message or a web page can carry.
    expect(errorsFor({ tenant: 'acme\u200b' })).toEqual([
      'Input `tenant` is "acme\\u200b", which is not a tenant name: use lower-case letters, digits and inner ' +
        'hyphens, at most 63 characters. Did you mean `acme`?',
    ]);
    expect(errorsFor({ tenant: 'acme', permissions: '\u200baudit-log:read' })[0]).toMatch(
      /^Input `permissions` contains "\\u200baudit-log:read", which is not a permission\. Did you mean `audit-log:read`\?/,
    );
    expect(errorsFor({ tenant: 'acme', revoke: 'false\u200b', 'duration-seconds': '900\u200b' })).toEqual([
      'Input `duration-seconds` is "900\\u200b"; it must be a whole number of seconds from 1 to 3600, or ' +
        "left empty for the policy's default.",
      'Input `revoke` is "false\\u200b"; it must be `true` or `false`.',
    ]);
  });

  it('counts a policy name in characters, as the broker does: 100 outside the BMP is a valid name', () => {
    expect(errorsFor({ tenant: 'acme', policy: '\u{1d49c}'.repeat(100) })).toEqual([]);
    expect(errorsFor({ tenant: 'acme', policy: '\u{1d49c}'.repeat(101) })[0]).toContain('Input `policy`');
  });
});

describe('run with invalid inputs', () => {
  it('reports every invalid input at once and makes no network call', async () => {
    const h = mainHarness({
      tenant: 'acme',
      permissions: 'deploy:write',
      'duration-seconds': '7200',
      'api-url': 'http://broker.example.com/v1',
    });

    expect(await run(h.deps)).toBe(false);

    expect(h.io.failures).toHaveLength(1);
    const message = h.io.failures[0]!;
    expect(message).toContain('nothing was sent to the broker');
    expect(message).toContain('"deploy:write"');
    expect(message).toContain('`duration-seconds` is "7200"');
    expect(message).toContain('`api-url` must use https://');
    expect(h.oidcAudiences).toEqual([]);
    expect(broker.requests).toEqual([]);
    expect(h.io.summary[0]).toContain('"deploy:write"');
  });

  it('refuses a policy input that shows as nothing before asking for a token or calling the broker', async () => {
    const h = mainHarness({ tenant: 'acme', policy: '\u200b\u2060\u00ad\ufe0f' });

    expect(await run(h.deps)).toBe(false);

    expect(h.io.failures).toHaveLength(1);
    expect(h.io.failures[0]).toContain('nothing was sent to the broker');
    expect(h.io.failures[0]).toContain(
      'Input `policy` is "\\u200b\\u2060\\u00ad\\ufe0f", which shows as nothing',
    );
    expect(h.oidcAudiences).toEqual([]);
    expect(broker.requests).toEqual([]);
  });

  it('refuses an api-url without /v1 before asking for a token or calling the broker', async () => {
    const h = mainHarness({ tenant: 'acme', 'api-url': 'https://broker.example.com' });

    expect(await run(h.deps)).toBe(false);

    expect(h.io.failures[0]).toContain('nothing was sent to the broker');
    expect(h.io.failures[0]).toContain(
      '`api-url` is "https://broker.example.com", which does not end in `/v1`',
    );
    expect(h.oidcAudiences).toEqual([]);
    expect(broker.requests).toEqual([]);
    expect(h.io.summary[0]).toContain('`https://broker.example.com/v1`');
  });
});
