// Configuration is parsed once; every mistake names its variable.
import { describe, expect, it } from 'vitest';
import { describeUnknownSetting, GITHUB_ISSUER, loadConfig } from '../../broker/config.js';

describe('loadConfig', () => {
  it('on port 80 the default public URL names no port, as a URL parser writes it', () => {
    expect(loadConfig({ PORT: '80' }).publicUrl).toBe('http://localhost');
  });

  it('has working defaults: SQLite under ./data, GitHub.com trusted, 900 s sessions', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8080,
      host: '127.0.0.1',
      database: { engine: 'sqlite', path: './data/broker.db' },
      publicUrl: 'http://localhost:8080',
      audienceSuffix: 'api.stepsecurity.io',
      trustedIssuers: [{ issuer: GITHUB_ISSUER }],
      defaultSessionSeconds: 900,
      logLevel: 'info',
    });
  });

  it.each([
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ BROKER_DEFAULT_SESSION_SECONDS: '3601' }, 'BROKER_DEFAULT_SESSION_SECONDS'],
    [{ BROKER_DEFAULT_SESSION_SECONDS: '0' }, 'BROKER_DEFAULT_SESSION_SECONDS'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    // Set but empty (e.g. `DATABASE_URL: ${DATABASE_URL}` in a compose file, the host variable missing): not
    // silently the embedded SQLite file, which would also create the demo tenant and print its key.
    [{ DATABASE_URL: '' }, 'DATABASE_URL'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ BROKER_PUBLIC_URL: 'ftp://x' }, 'BROKER_PUBLIC_URL'],
    [{ BROKER_PUBLIC_URL: 'https://broker.example.com/?x=1' }, 'BROKER_PUBLIC_URL'],
    [{ BROKER_PUBLIC_URL: 'https://broker.example.com/#frag' }, 'BROKER_PUBLIC_URL'],
    [{ HOST: 'not a host' }, 'HOST'],
    [{ HOST: 'under_score.example' }, 'HOST'],
    [{ BROKER_AUDIENCE_SUFFIX: 'Not A Domain' }, 'BROKER_AUDIENCE_SUFFIX'],
    [{ BROKER_TRUSTED_ISSUERS: 'not json' }, 'BROKER_TRUSTED_ISSUERS'],
    [{ BROKER_TRUSTED_ISSUERS: '[]' }, 'BROKER_TRUSTED_ISSUERS'],
    [{ BROKER_TRUSTED_ISSUERS: '[{"issuer":"http://token.example"}]' }, 'BROKER_TRUSTED_ISSUERS[0].issuer'],
    [{ BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}/"}]` }, 'BROKER_TRUSTED_ISSUERS[0].issuer'],
    [
      { BROKER_TRUSTED_ISSUERS: '[{"issuer":"https://u:p@token.example"}]' },
      'BROKER_TRUSTED_ISSUERS[0].issuer',
    ],
    [
      { BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}","jwks_uri":"http://evil.example/jwks"}]` },
      'BROKER_TRUSTED_ISSUERS[0].jwks_uri',
    ],
    [{ BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}","jwks":"x"}]` }, 'BROKER_TRUSTED_ISSUERS[0]'],
    [
      {
        BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}","jwks_uri":"https://u:p@keys.example/jwks"}]`,
      },
      'BROKER_TRUSTED_ISSUERS[0].jwks_uri',
    ],
    [{ BROKER_KEY_ENCRYPTION_KEY: 'short' }, 'BROKER_KEY_ENCRYPTION_KEY'],
    [{ DATABASE_URL: 'postgres://u@h/db' }, 'BROKER_KEY_ENCRYPTION_KEY'],
    [{ BROKER_RATE_LIMIT_PER_MINUTE: '-5' }, 'BROKER_RATE_LIMIT_PER_MINUTE'],
    // A pool size with SQLite has no effect: most likely DATABASE_URL is missing, and the embedded file (and its
    // demo tenant) would be used instead of the PostgreSQL the operator sized the pool for.
    [{ DATABASE_POOL_SIZE: '10' }, 'DATABASE_POOL_SIZE'],
    [{ DATABASE_URL: 'sqlite:./x.db', DATABASE_POOL_SIZE: '10' }, 'DATABASE_POOL_SIZE'],
    // Set but empty is never read as unset (a secret that was not injected, a compose variable missing).
    ...[
      'PORT',
      'HOST',
      'BROKER_PUBLIC_URL',
      'BROKER_AUDIENCE_SUFFIX',
      'BROKER_TRUSTED_ISSUERS',
      'BROKER_DEFAULT_SESSION_SECONDS',
      'BROKER_KEY_ENCRYPTION_KEY',
      'BROKER_KEY_PEPPER',
      'LOG_LEVEL',
      'BROKER_RATE_LIMIT_BURST',
    ].map((name): [Record<string, string>, string] => [{ [name]: ' ' }, name]),
    // PORT=0 picks the port at start; the issuer URL must name the real one.
    [{ PORT: '0' }, 'BROKER_PUBLIC_URL'],
    // A bare ? or # leaves URL.search and URL.hash empty.
    [{ BROKER_PUBLIC_URL: 'http://127.0.0.1:9?' }, 'BROKER_PUBLIC_URL'],
    [{ BROKER_PUBLIC_URL: 'https://broker.example.com#' }, 'BROKER_PUBLIC_URL'],
    // It becomes the iss of every token, compared as a string by verifiers: only the form a URL parser gives.
    [{ BROKER_PUBLIC_URL: 'https://EXAMPLE.com' }, 'BROKER_PUBLIC_URL'],
    [{ BROKER_PUBLIC_URL: 'https://example.com:443' }, 'BROKER_PUBLIC_URL'],
    [{ BROKER_PUBLIC_URL: 'https://example.com/a b' }, 'BROKER_PUBLIC_URL'],
    [{ BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}?"}]` }, 'BROKER_TRUSTED_ISSUERS[0].issuer'],
    // Never equal to a token's iss, which is compared as a string.
    [
      { BROKER_TRUSTED_ISSUERS: '[{"issuer":"https://TOKEN.actions.githubusercontent.com"}]' },
      'BROKER_TRUSTED_ISSUERS[0].issuer',
    ],
    [{ BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}:443"}]` }, 'BROKER_TRUSTED_ISSUERS[0].issuer'],
    // Node's base64 decoder skips what it does not know: "!!!!" + 40 × "A" + "=" would be 32 zero bytes.
    [{ BROKER_KEY_ENCRYPTION_KEY: `!!!!${'A'.repeat(39)}=` }, 'BROKER_KEY_ENCRYPTION_KEY'],
    [{ BROKER_KEY_ENCRYPTION_KEY: `${'A'.repeat(20)} ${'A'.repeat(23)}` }, 'BROKER_KEY_ENCRYPTION_KEY'],
    [{ DATABASE_URL: 'postgres://u:s3cret@127.0.0.1:99999/db' }, 'DATABASE_URL'],
    [{ BROKER_AUDIENCE_SUFFIX: `${'a'.repeat(64)}.example` }, 'BROKER_AUDIENCE_SUFFIX'],
    [{ BROKER_AUDIENCE_SUFFIX: `${'abcdefghij.'.repeat(18)}example` }, 'BROKER_AUDIENCE_SUFFIX'],
  ])('%o is refused naming %s', (env, variable) => {
    expect(() => loadConfig(env)).toThrow(new RegExp(`^${variable.replace(/[[\]]/g, '\\$&')}: `));
  });

  describe('DATABASE_URL with SQLite', () => {
    it.each([
      ['sqlite:./data/broker.db', './data/broker.db'],
      ['sqlite:data/broker.db', 'data/broker.db'],
      ['sqlite:/var/lib/broker/broker.db', '/var/lib/broker/broker.db'],
      ['sqlite:///var/lib/broker/broker.db', '/var/lib/broker/broker.db'],
    ])('%s is the file %s', (url, path) => {
      expect(loadConfig({ DATABASE_URL: url }).database).toEqual({ engine: 'sqlite', path });
    });

    // Read as a path, "//data/broker.db" would be /data/broker.db: a file at the root, not the one meant.
    it.each(['sqlite://data/broker.db', 'sqlite://localhost/var/lib/broker.db'])(
      '%s names a host, and is refused saying how to write a relative or an absolute path',
      (url) => {
        expect(() => loadConfig({ DATABASE_URL: url })).toThrow(
          /^DATABASE_URL: .*names a host.*sqlite:\.\/data\/broker\.db.*sqlite:\/\/\/var\/lib\/broker\/broker\.db/,
        );
      },
    );

    // Taken as part of the path, "?mode=ro" would make a new, empty file named "broker.db?mode=ro".
    it.each([
      'sqlite:/data/broker.db?mode=ro',
      'sqlite:./data/broker.db#main',
      'sqlite:///var/lib/b.db?key=s3cret',
    ])(
      '%s has parameters, and is refused rather than read as another file, without repeating them',
      (url) => {
        expect(() => loadConfig({ DATABASE_URL: url })).toThrow(
          /^DATABASE_URL: a sqlite: URL names only its file: remove everything from "[?#]" on/,
        );
        expect(() => loadConfig({ DATABASE_URL: url })).not.toThrow(/mode|main|s3cret/);
      },
    );
  });

  it.each([
    [
      'a socket in a query parameter',
      'postgres://broker@/oidc?host=/var/run/postgresql&sslrootcert=/nonexistent/ca.pem',
      'sslrootcert file "/nonexistent/ca.pem" cannot be read (ENOENT)',
    ],
    [
      'a directory',
      'postgres://broker@db.example.com/oidc?sslmode=verify-full&sslrootcert=/tmp',
      'sslrootcert file "/tmp" cannot be read (EISDIR)',
    ],
  ])('a DATABASE_URL with %s named as its TLS file is refused naming the file', (_, url, reason) => {
    expect(() => loadConfig({ DATABASE_URL: url, BROKER_KEY_ENCRYPTION_KEY: 'ab'.repeat(32) })).toThrow(
      `DATABASE_URL: its ${reason}: check the path, and that the broker's user may read the file`,
    );
  });

  it.each(['sslrootcert', 'sslcert', 'sslkey'])(
    'a DATABASE_URL whose %s file cannot be read is refused naming the file, not as a malformed URL',
    (parameter) => {
      const url = `postgres://broker:s3cret@db.example.com:5432/oidc?sslmode=verify-full&${parameter}=/nonexistent/tls.pem`;
      let message = '';
      try {
        loadConfig({ DATABASE_URL: url, BROKER_KEY_ENCRYPTION_KEY: 'ab'.repeat(32) });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toBe(
        `DATABASE_URL: its ${parameter} file "/nonexistent/tls.pem" cannot be read (ENOENT): check the path, and that the broker's user may read the file`,
      );
    },
  );

  describe("white space around a value, as a secret file's final newline leaves", () => {
    it.each([
      ['DATABASE_URL', ' sqlite:./data/broker.db'],
      ['DATABASE_URL', 'sqlite:/var/lib/broker/broker.db \n'],
      ['PORT', '8080\n\n'],
      ['HOST', '\t0.0.0.0'],
      ['BROKER_AUDIENCE_SUFFIX', 'api.example.com '],
      ['LOG_LEVEL', 'info\r\n '],
    ])('is refused in %s, saying so rather than opening another file or quoting it', (name, value) => {
      expect(() => loadConfig({ [name]: value })).toThrow(
        new RegExp(`^${name}: has white space around it \\(spaces, tabs, .*\\); remove it$`),
      );
    });

    it('but for one final line break, which is no part of the value (as $(cat file) drops it)', () => {
      const config = loadConfig({
        DATABASE_URL: 'sqlite:/var/lib/broker/broker.db\n',
        PORT: '8080\n',
        BROKER_PUBLIC_URL: 'https://broker.example.com\n',
        LOG_LEVEL: 'warn\r\n',
        BROKER_DEFAULT_SESSION_SECONDS: '900\r\n',
      });
      expect(config.database).toEqual({ engine: 'sqlite', path: '/var/lib/broker/broker.db' });
      expect(config).toMatchObject({ port: 8080, publicUrl: 'https://broker.example.com', logLevel: 'warn' });
      expect(config.defaultSessionSeconds).toBe(900);
      const postgres = loadConfig({
        DATABASE_URL: 'postgres://broker:secret@db.example.com:5432/oidc\n',
        BROKER_KEY_ENCRYPTION_KEY: 'ab'.repeat(32),
      });
      expect(postgres.database).toMatchObject({ engine: 'postgres' });
      expect(JSON.stringify(postgres.database)).not.toContain('\\n');
    });

    it('a value refused for what it says is quoted without the line break that was dropped', () => {
      for (const [name, value, shown] of [
        ['LOG_LEVEL', 'Verbose\n', '"Verbose"'],
        ['PORT', '80a\r\n', '"80a"'],
        ['BROKER_AUDIENCE_SUFFIX', 'API.example.com\n', '"API.example.com"'],
      ]) {
        expect(() => loadConfig({ [name!]: value }), name).toThrow(`${name}: `);
        expect(() => loadConfig({ [name!]: value }), name).toThrow(shown);
      }
    });

    it('is left to the settings whose reading settles it: JSON, the key-encryption key and the pepper', () => {
      const config = loadConfig({
        BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}"}]\n`,
        BROKER_KEY_ENCRYPTION_KEY: `${'ab'.repeat(32)}\n`,
        BROKER_KEY_PEPPER: 'pepper\n',
      });
      expect(config.trustedIssuers).toEqual([{ issuer: GITHUB_ISSUER }]);
      expect(config.keyEncryptionKey?.toString('hex')).toBe('ab'.repeat(32));
      // Used as given, as it always was: keys made under it keep their digests.
      expect(config.keyPepper).toBe('pepper\n');
    });
  });

  describe('a variable that looks like a setting and is none', () => {
    it('is named, with the setting it most likely means, and its value is not repeated', () => {
      const config = loadConfig({
        BROKER_PUBLIC_ULR: 'https://broker.example.com',
        BROKER_KEY_PEPER: 'pepper-s3cret',
        DATABSE_URL: 'sqlite:./x.db',
        log_level: 'debug',
        BROKER_ISSUER: 'https://broker.example.com',
      });
      expect(config.unknownSettings).toEqual([
        { variable: 'BROKER_ISSUER' },
        { variable: 'BROKER_KEY_PEPER', didYouMean: 'BROKER_KEY_PEPPER' },
        { variable: 'BROKER_PUBLIC_ULR', didYouMean: 'BROKER_PUBLIC_URL' },
        { variable: 'DATABSE_URL', didYouMean: 'DATABASE_URL' },
        { variable: 'log_level', didYouMean: 'LOG_LEVEL' },
      ]);
      expect(config.unknownSettings.map(describeUnknownSetting)).toContain(
        'BROKER_KEY_PEPER is not a setting of the broker and is ignored; did you mean BROKER_KEY_PEPPER?',
      );
      expect(JSON.stringify(config.unknownSettings)).not.toContain('s3cret');
    });

    it('is not one the broker reads, one of a shell or container, nor one Kubernetes sets for a Service', () => {
      const config = loadConfig({
        PORT: '8080',
        LOG_LEVEL: 'info',
        HOME: '/home/broker',
        HOSTNAME: 'broker-7d9f',
        PATH: '/usr/bin',
        NODE_ENV: 'production',
        PGSSLMODE: 'verify-full',
        BROKER_SERVICE_HOST: '10.0.0.7',
        BROKER_SERVICE_PORT: '8080',
        BROKER_SERVICE_PORT_HTTP: '8080',
        BROKER_PORT: 'tcp://10.0.0.7:8080',
        BROKER_PORT_8080_TCP: 'tcp://10.0.0.7:8080',
        BROKER_PORT_8080_TCP_PROTO: 'tcp',
        BROKER_PORT_8080_TCP_PORT: '8080',
        BROKER_PORT_8080_TCP_ADDR: '10.0.0.7',
      });
      expect(config.unknownSettings).toEqual([]);
    });
  });

  describe('a DATABASE_URL parameter pg does not read', () => {
    const key = 'ab'.repeat(32);

    // Taken from other clients' URLs (JDBC's currentSchema, Prisma's schema, libpq's target_session_attrs): pg
    // ignores them, so the broker's tables would go to the public schema, and no failover would be followed.
    it('is named, with what to write instead when there is something, and its value is not repeated', () => {
      const config = loadConfig({
        DATABASE_URL:
          'postgres://broker:pw@db.example.com/oidc?sslmode=verify-full&sslrootcerts=/etc/ca.pem&currentSchema=s3cret&schema=s3cret&target_session_attrs=read-write&application_name=broker',
        BROKER_KEY_ENCRYPTION_KEY: key,
      });
      expect(config.unknownSettings).toEqual([
        { variable: 'DATABASE_URL', parameter: 'sslrootcerts', didYouMean: 'sslrootcert' },
        { variable: 'DATABASE_URL', parameter: 'currentSchema', didYouMean: 'options=-c search_path=…' },
        { variable: 'DATABASE_URL', parameter: 'schema', didYouMean: 'options=-c search_path=…' },
        { variable: 'DATABASE_URL', parameter: 'target_session_attrs' },
      ]);
      expect(config.unknownSettings.map(describeUnknownSetting)).toContain(
        'DATABASE_URL parameter "currentSchema" is not read by PostgreSQL\'s client and is ignored; did you mean options=-c search_path=…?',
      );
      expect(JSON.stringify(config.unknownSettings)).not.toContain('s3cret');
    });

    it.each([
      'postgres://broker:pw@db.example.com/oidc',
      'postgres://broker@/oidc?host=/cloudsql/p:r:i&port=5432&user=broker&password=pw',
      'postgres://db/oidc?sslmode=verify-full&sslrootcert=/dev/null&sslcert=/dev/null&sslkey=/dev/null&ssl=true&uselibpqcompat=true&sslnegotiation=postgres',
      'postgres://db/oidc?application_name=a&fallback_application_name=b&options=-c%20search_path%3Dx&client_encoding=UTF8&statement_timeout=1&lock_timeout=1&idle_in_transaction_session_timeout=1',
    ])('is none in %s', (url) => {
      expect(loadConfig({ DATABASE_URL: url, BROKER_KEY_ENCRYPTION_KEY: key }).unknownSettings).toEqual([]);
    });
  });

  describe('the egress proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)', () => {
    it("is read by the action's rules: lower case first, no scheme meaning http://, credentials kept apart", () => {
      const { egressProxy } = loadConfig({
        https_proxy: ' proxy.corp:3128 ',
        HTTPS_PROXY: 'http://ignored:1',
        HTTP_PROXY: 'http://user:p%40ss@plain.corp:8080',
        NO_PROXY: 'ghe.internal,10.0.0.0/8',
      });
      expect(egressProxy.https).toMatchObject({ variable: 'https_proxy' });
      expect(egressProxy.https?.url.href).toBe('http://proxy.corp:3128/');
      // Not read: the broker fetches nothing over http:// through a proxy.
      expect(egressProxy.http).toBeUndefined();
      expect(egressProxy.noProxy).toBe('ghe.internal,10.0.0.0/8');
    });

    it('is none unless set; empty is unset, as every tool that reads these variables takes it', () => {
      expect(loadConfig({}).egressProxy).toEqual({ noProxy: '' });
      expect(loadConfig({ HTTPS_PROXY: '', https_proxy: '', NO_PROXY: '' }).egressProxy).toEqual({
        noProxy: '',
      });
      // An empty lower-case variable leaves the upper-case one in force.
      expect(
        loadConfig({ https_proxy: '', HTTPS_PROXY: 'proxy.corp:3128' }).egressProxy.https?.variable,
      ).toBe('HTTPS_PROXY');
    });

    it.each([
      [{ HTTPS_PROXY: 'http://user:s3cret@[proxy' }, 'HTTPS_PROXY', /is set, but its value is not a URL/],
      [{ https_proxy: 'socks5://user:s3cret@proxy.corp:1080' }, 'https_proxy', /names a socks5: proxy/],
      [{ HTTPS_PROXY: 'http://user:s3cret%zz@proxy.corp:3128' }, 'HTTPS_PROXY', /not valid percent-encoding/],
    ])(
      'refuses a setting that names no usable proxy, naming the variable and not its value: %j',
      (env, variable, why) => {
        let error: unknown;
        try {
          loadConfig(env);
        } catch (e) {
          error = e;
        }
        expect(error).toMatchObject({ name: 'ConfigError', variable });
        expect((error as Error).message).toMatch(new RegExp(`^${variable}: `));
        expect((error as Error).message).toMatch(why);
        expect((error as Error).message).not.toContain('s3cret');
      },
    );

    it('does not read HTTP_PROXY, which no fetch of the broker would use: an unusable one does not stop it', () => {
      const { egressProxy } = loadConfig({
        HTTPS_PROXY: 'http://proxy.corp:3128',
        HTTP_PROXY: 'ftp://proxy.corp',
      });
      expect(egressProxy.https?.url.href).toBe('http://proxy.corp:3128/');
      expect(egressProxy.http).toBeUndefined();
    });

    it('is no unknown setting in either case, nor is a proxy setting of other tools', () => {
      const config = loadConfig({
        https_proxy: 'http://proxy.corp:3128',
        HTTP_PROXY: 'http://proxy.corp:3128',
        no_proxy: 'localhost',
        NO_PROXY: 'localhost',
        ftp_proxy: 'http://proxy.corp:3128',
        ALL_PROXY: 'socks5://proxy.corp:1080',
      });
      expect(config.unknownSettings).toEqual([]);
      expect(config.egressProxy.https?.url.href).toBe('http://proxy.corp:3128/');
    });
  });

  describe('BROKER_AUDIT_RETENTION_DAYS', () => {
    it('keeps the audit log forever unless set; set, a whole number of days from 1 to 3650', () => {
      expect(loadConfig({}).auditRetentionDays).toBeUndefined();
      for (const days of [1, 90, 400, 3650]) {
        expect(loadConfig({ BROKER_AUDIT_RETENTION_DAYS: String(days) }).auditRetentionDays).toBe(days);
      }
      expect(loadConfig({ BROKER_AUDIT_RETENTION_DAYS: '365' }).unknownSettings).toEqual([]);
    });

    it.each(['', ' ', '0', '-1', '3651', '2592000', '1.5', '90d', '1e2', '0x10', ' 90', 'forever'])(
      'refuses %j, naming the variable',
      (value) => {
        expect(() => loadConfig({ BROKER_AUDIT_RETENTION_DAYS: value })).toThrow(
          value.trim() === ''
            ? /^BROKER_AUDIT_RETENTION_DAYS: is set but empty; unset it for the default \(keep every event\)/
            : value.trim() !== value
              ? /^BROKER_AUDIT_RETENTION_DAYS: has white space around it/
              : /^BROKER_AUDIT_RETENTION_DAYS: .*from 1 to 3650, got /,
        );
      },
    );
  });

  describe('BROKER_SHUTDOWN_DELAY_SECONDS', () => {
    it('is 0 unless set (stop at once, as ever); set, a whole number of seconds from 0 to 300', () => {
      expect(loadConfig({}).shutdownDelaySeconds).toBe(0);
      for (const seconds of [0, 1, 15, 300]) {
        expect(loadConfig({ BROKER_SHUTDOWN_DELAY_SECONDS: String(seconds) }).shutdownDelaySeconds).toBe(
          seconds,
        );
      }
      expect(loadConfig({ BROKER_SHUTDOWN_DELAY_SECONDS: '10' }).unknownSettings).toEqual([]);
    });

    it.each(['', ' ', '-1', '301', '5000', '1.5', '10s', '1e1', ' 10', 'never'])(
      'refuses %j, naming the variable',
      (value) => {
        expect(() => loadConfig({ BROKER_SHUTDOWN_DELAY_SECONDS: value })).toThrow(
          value.trim() === ''
            ? /^BROKER_SHUTDOWN_DELAY_SECONDS: is set but empty; unset it for the default \(0\)/
            : value.trim() !== value
              ? /^BROKER_SHUTDOWN_DELAY_SECONDS: has white space around it/
              : /^BROKER_SHUTDOWN_DELAY_SECONDS: .*from 0 to 300, got /,
        );
      },
    );
  });

  describe('DATABASE_POOL_SIZE', () => {
    const postgres = {
      DATABASE_URL: 'postgres://broker@db:5432/broker',
      BROKER_KEY_ENCRYPTION_KEY: 'ab'.repeat(32),
    };

    it('sizes the PostgreSQL pool: 10 connections per replica unless set, from 3 to 100', () => {
      expect(loadConfig(postgres).database).toMatchObject({ engine: 'postgres', poolSize: 10 });
      for (const size of [3, 4, 25, 100]) {
        expect(loadConfig({ ...postgres, DATABASE_POOL_SIZE: String(size) }).database).toMatchObject({
          poolSize: size,
        });
      }
    });

    it.each([
      '',
      ' ',
      '0',
      '2', // the two write transactions that may hold a connection at once would leave none for reads
      '-1',
      '101',
      '2.5',
      '1e2',
      '0x10',
      '10 ',
      ' 10',
      'ten',
      '99999999999999999999999',
    ])('refuses %j, naming the variable and the range it takes', (value) => {
      expect(() => loadConfig({ ...postgres, DATABASE_POOL_SIZE: value })).toThrow(
        value.trim() === ''
          ? /^DATABASE_POOL_SIZE: is set but empty/
          : value.trim() !== value
            ? /^DATABASE_POOL_SIZE: has white space around it/
            : new RegExp(`^DATABASE_POOL_SIZE: .*from 3 to 100, got "${value.replace(/[.]/g, '\\.')}"$`),
      );
    });

    it('refuses it with SQLite, saying it applies only to PostgreSQL', () => {
      expect(() => loadConfig({ DATABASE_POOL_SIZE: '10' })).toThrow(
        /^DATABASE_POOL_SIZE: applies only to PostgreSQL.*DATABASE_URL is unset/,
      );
      expect(() => loadConfig({ DATABASE_URL: 'sqlite:./x.db', DATABASE_POOL_SIZE: '5' })).toThrow(
        /^DATABASE_POOL_SIZE: applies only to PostgreSQL, but DATABASE_URL is a sqlite: URL/,
      );
    });
  });

  it('refuses a URL with credentials without repeating the password', () => {
    for (const env of [
      {
        BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}","jwks_uri":"http://u:s3cret@evil.example/jwks"}]`,
      },
      { BROKER_PUBLIC_URL: 'https://u:s3cret@broker.example' },
      { BROKER_PUBLIC_URL: 'https://u:s3cret@bro ker.example' },
      { DATABASE_URL: 'postgres://u:s3cret@127.0.0.1:99999/db' },
      { DATABASE_URL: 'postgres://u:s3cret@[bad/db' },
    ]) {
      expect(() => loadConfig(env)).toThrow(/must not carry credentials|is not a URL|not a valid postgres/);
      expect(() => loadConfig(env)).not.toThrow(/s3cret/);
    }
  });

  // A "/", "?" or "#" left unencoded in the password ends the host: the user name would be read as the host, the
  // password's first characters as the port, and the rest of it as the database, which an error at start shows.
  it.each([
    'postgres://broker:1234/s3cret@db.example.com:5432/oidc',
    'postgres://broker:/s3cret@db.example.com:5432/oidc',
    'postgres://broker:a@b/s3cret@db.example.com/oidc',
    'postgres://broker:12?s3cret@db.example.com/oidc',
    'postgres://broker:12#s3cret@db.example.com/oidc',
  ])('refuses %s, whose password ends the host early, without repeating it', (url) => {
    const env = { DATABASE_URL: url, BROKER_KEY_ENCRYPTION_KEY: 'ab'.repeat(32) };
    expect(() => loadConfig(env)).toThrow(
      /^DATABASE_URL: has an "@" after its host: percent-encode special characters in the user name and password/,
    );
    expect(() => loadConfig(env)).not.toThrow(/s3cret|1234/);
  });

  // A database whose name has an "@" cannot be told from such a password, and pg does not decode "%40" in the
  // path: the refusal names the way that works, the name in PGDATABASE and none in the URL.
  it('refuses an "@" in the database name with the way to name such a database', () => {
    const env = {
      DATABASE_URL: 'postgres://broker:pw@db.example.com/team@oidc',
      BROKER_KEY_ENCRYPTION_KEY: 'ab'.repeat(32),
    };
    expect(() => loadConfig(env)).toThrow(
      'a database whose name has an "@" is named by PGDATABASE, with no database in the URL (postgres://USER:PASS@HOST:PORT)',
    );
    const named = loadConfig({ ...env, DATABASE_URL: 'postgres://broker:pw@db.example.com' });
    expect(named.database).toMatchObject({ engine: 'postgres', url: 'postgres://broker:pw@db.example.com' });
  });

  it.each([
    [{ BROKER_PUBLIC_URL: 'localhost:8080' }, 'BROKER_PUBLIC_URL'],
    [{ BROKER_PUBLIC_URL: 'broker.example.com' }, 'BROKER_PUBLIC_URL'],
    [{ BROKER_PUBLIC_URL: 'u:s3cret@broker.example.com' }, 'BROKER_PUBLIC_URL'],
    [
      { BROKER_TRUSTED_ISSUERS: '[{"issuer":"token.actions.githubusercontent.com"}]' },
      'BROKER_TRUSTED_ISSUERS[0].issuer',
    ],
    [
      { BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}","jwks_uri":"127.0.0.1:9000/jwks"}]` },
      'BROKER_TRUSTED_ISSUERS[0].jwks_uri',
    ],
  ])('a URL written without its scheme (%j) is told so, not read as another scheme', (env, name) => {
    expect(() => loadConfig(env)).toThrow(`${name}: has no scheme: write the whole URL, beginning https://`);
    expect(() => loadConfig(env)).not.toThrow(/s3cret|must use https|localhost:\/\/|is not a URL/);
  });

  // GitHub's documentation shows the discovery document's URL (…/_services/token/.well-known/openid-configuration);
  // pasted as the issuer, no token would ever carry it, and the keys would be looked for under it.
  it.each([
    [`${GITHUB_ISSUER}/.well-known/openid-configuration`, GITHUB_ISSUER],
    [`${GITHUB_ISSUER}/acme/.well-known/openid-configuration`, `${GITHUB_ISSUER}/acme`],
    ['https://ghe.example.com/_services/token/.well-known/jwks', 'https://ghe.example.com/_services/token'],
    ['https://token.actions.octocorp.ghe.com/.well-known/jwks', 'https://token.actions.octocorp.ghe.com'],
    // A path that starts with two slashes stays on the issuer's host, not on one named like its first segment.
    ['https://ghe.example.com//_services/token/.well-known/jwks', 'https://ghe.example.com//_services/token'],
  ])('an issuer given as its discovery or key URL, %s, is refused naming the iss: %s', (given, iss) => {
    const env = { BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: given }]) };
    expect(() => loadConfig(env)).toThrow(
      `BROKER_TRUSTED_ISSUERS[0].issuer: "${given}" is a URL under the issuer, not the iss tokens carry: write "${iss}"`,
    );
  });

  it('refuses a URL with a token in its path or query string without repeating the token', () => {
    for (const [env, why] of [
      [
        {
          BROKER_TRUSTED_ISSUERS: `[{"issuer":"${GITHUB_ISSUER}","jwks_uri":"http://10.0.0.1/jwks?token=s3cret"}]`,
        },
        '"http://10.0.0.1…" must use https',
      ],
      [{ BROKER_PUBLIC_URL: 'http://broker.example/s3cret' }, '"http://broker.example…" must use https'],
      [
        { BROKER_TRUSTED_ISSUERS: '[{"issuer":"https://issuer.example/x?sig=s3cret"}]' },
        '"https://issuer.example/x…" must be the exact iss value',
      ],
    ] as const) {
      expect(() => loadConfig(env)).toThrow(why);
      expect(() => loadConfig(env)).not.toThrow(/s3cret/);
    }
  });

  it.each([
    'postgres://u@/broker', // the local socket, as libpq reads an empty host
    'postgres://u@%2Fvar%2Frun%2Fpostgresql/broker',
    'postgres:///broker?host=/tmp',
    'postgres://u:50%off@db/broker', // a % that is no escape, as pg takes it
    'postgresql://u:p@[::1]:5432/broker?sslmode=require',
    'postgres://broker%40srv:p%2Fq@/broker?host=/cloudsql/proj:us-east1:db&application_name=ci@runner',
  ])('accepts the PostgreSQL URL %s, as pg does', (url) => {
    const key = 'ab'.repeat(32);
    expect(loadConfig({ DATABASE_URL: url, BROKER_KEY_ENCRYPTION_KEY: key }).database).toEqual({
      engine: 'postgres',
      url,
      poolSize: 10,
    });
  });

  it.each(['internal', 'corp', 'sts.example.com', `${'a'.repeat(63)}.example`])(
    'accepts the audience suffix %s: any lower-case DNS name, one label too',
    (suffix) => {
      expect(loadConfig({ BROKER_AUDIENCE_SUFFIX: suffix }).audienceSuffix).toBe(suffix);
    },
  );

  it('accepts PostgreSQL with a key-encryption key, loopback JWKS over http, GHES and enterprise issuers', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://broker@db:5432/broker',
      BROKER_KEY_ENCRYPTION_KEY: 'ab'.repeat(32),
      BROKER_TRUSTED_ISSUERS: JSON.stringify([
        { issuer: GITHUB_ISSUER, jwks_uri: 'http://127.0.0.2:9999/jwks' },
        { issuer: 'https://ghe.example.com/_services/token' },
        { issuer: `${GITHUB_ISSUER}/acme` },
      ]),
    });
    expect(config.database).toEqual({
      engine: 'postgres',
      url: 'postgres://broker@db:5432/broker',
      poolSize: 10,
    });
    expect(config.keyEncryptionKey?.length).toBe(32);
    // The same 32 bytes in base64, standard and URL-safe, and with the newline a mounted secret file leaves.
    for (const encoded of [
      Buffer.alloc(32, 0xfb).toString('base64'),
      Buffer.alloc(32, 0xfb).toString('base64url'),
      `${Buffer.alloc(32, 0xfb).toString('base64')}\n`,
      `${Buffer.alloc(32, 0xfb).toString('hex')}\n`,
    ]) {
      expect(loadConfig({ BROKER_KEY_ENCRYPTION_KEY: encoded }).keyEncryptionKey).toEqual(
        Buffer.alloc(32, 0xfb),
      );
    }
    expect(config.trustedIssuers.map((i) => i.issuer)).toEqual([
      GITHUB_ISSUER,
      'https://ghe.example.com/_services/token',
      `${GITHUB_ISSUER}/acme`,
    ]);
  });
});
