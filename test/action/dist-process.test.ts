// The committed bundle run as the runner runs it: node dist/main and dist/post against fake GitHub and broker.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type FakeBroker, startFakeBroker } from './support/fake-broker.js';
import { type FakeGitHubOidc, startFakeGitHubOidc } from './support/fake-github.js';
import { type FakeProxy, startFakeProxy } from './support/fake-proxy.js';
import { type ActionRunner, createActionRunner, workflowCommands } from './support/runner-process.js';
import { selfSignedCertificate } from './support/tls-cert.js';

const ACCESS_TOKEN = 'eyJhbGciOiJFUzI1NiJ9.process-test-access-token.c2lnbmF0dXJl';

describe('dist/ as a process', () => {
  let github: FakeGitHubOidc;
  let broker: FakeBroker;
  let runner: ActionRunner;

  beforeAll(async () => {
    github = await startFakeGitHubOidc((audience) => `github-oidc-token-for-${audience}`);
    broker = await startFakeBroker(ACCESS_TOKEN);
    runner = await createActionRunner({ idToken: github });
  });
  afterAll(async () => {
    await runner?.close();
    await broker?.close();
    await github?.close();
  });

  it('issues a masked token in main and revokes it in post', async () => {
    const main = await runner.run('main', {
      tenant: 'acme',
      'api-url': broker.apiUrl,
      permissions: 'audit-log:read',
      'export-env': 'true',
    });

    expect(main.stderr).toBe('');
    expect(main.exitCode).toBe(0);
    expect(github.audiences).toEqual(['acme.api.stepsecurity.io']);
    const exchange = broker.requests.find((r) => r.path === '/v1/oidc/token');
    expect(JSON.parse(exchange!.body)).toEqual({
      oidc_token: 'github-oidc-token-for-acme.api.stepsecurity.io',
      tenant: 'acme',
      permissions: ['audit-log:read'],
    });

    expect(main.outputs).toEqual({
      token: ACCESS_TOKEN,
      'expires-at': expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      permissions: 'audit-log:read',
      policy: 'process-test',
    });
    expect(main.env).toEqual({ STEPSECURITY_API_TOKEN: ACCESS_TOKEN });
    expect(main.state).toEqual({
      token: ACCESS_TOKEN,
      'expires-at': main.outputs['expires-at'],
      'expires-at-runner-clock': expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      'api-url': broker.apiUrl,
    });

    // The runner masks a value from the moment it reads ::add-mask::; the token must not be printed before.
    const lines = main.stdout.split('\n');
    const firstMention = lines.findIndex((line) => line.includes(ACCESS_TOKEN));
    expect(lines[firstMention]).toBe(`::add-mask::${ACCESS_TOKEN}`);
    expect(lines.filter((line) => line.includes(ACCESS_TOKEN))).toHaveLength(1);
    expect(main.summary).toContain('StepSecurity API token issued');
    expect(main.summary).not.toContain(ACCESS_TOKEN);

    const post = await runner.run('post', { tenant: 'acme', 'api-url': broker.apiUrl });

    expect(post.exitCode).toBe(0);
    expect(post.stdout).toContain('Revoked the StepSecurity API token.');
    const revoke = broker.requests.find((r) => r.path === '/v1/tokens/revoke');
    expect(revoke?.headers.authorization).toBe(`Bearer ${ACCESS_TOKEN}`);
    expect(new URLSearchParams(revoke!.body).get('token')).toBe(ACCESS_TOKEN);
  });

  it('says in the job summary, besides the warning, when post cannot revoke the token', async () => {
    const leaving = await startFakeBroker(ACCESS_TOKEN);
    const main = await runner.run('main', { tenant: 'acme', 'api-url': leaving.apiUrl });
    expect(main.exitCode).toBe(0);
    expect(main.summary).toContain('| Revoked when the job ends | yes |');
    // The broker is gone by the time the job ends.
    await leaving.close();

    const post = await runner.run('post', { tenant: 'acme', 'api-url': leaving.apiUrl });

    expect(post.exitCode).toBe(0);
    expect(post.stdout).toContain('::warning::Could not revoke the StepSecurity API token');
    expect(post.summary).toContain('### StepSecurity API token not revoked');
    expect(post.summary).toContain(`Not revoked; valid until ${main.outputs['expires-at']}`);
    expect(post.summary).toContain('ECONNREFUSED');
    expect(post.summary).not.toContain(ACCESS_TOKEN);
  }, 60_000);

  it('fails the step with the id-token explanation when the job cannot get an OIDC token', async () => {
    const noIdToken = await createActionRunner();
    try {
      const before = broker.requests.length;
      const main = await noIdToken.run('main', { tenant: 'acme', 'api-url': broker.apiUrl });

      expect(main.exitCode).toBe(1);
      expect(main.stdout).toContain('::error::This job cannot request a GitHub OIDC token');
      expect(main.stdout).toContain('id-token: write');
      expect(main.summary).toContain('```yaml');
      expect(main.outputs).toEqual({});
      expect(broker.requests).toHaveLength(before);

      const post = await noIdToken.run('post', { tenant: 'acme' });
      expect(post.exitCode).toBe(0);
      expect(post.stdout).toContain('Nothing to revoke');
    } finally {
      await noIdToken.close();
    }
  });

  // Slow by design: the unanswered request has the whole 20 s of an attempt before the action asks again.
  it("asks GitHub's OIDC token service again when a request gets no answer in time", async () => {
    const stalling = await startFakeGitHubOidc((audience) => `second-token-for-${audience}`, { stall: 1 });
    const patient = await createActionRunner({ idToken: stalling });
    try {
      const main = await patient.run('main', { tenant: 'acme', 'api-url': broker.apiUrl });

      expect(main.exitCode, main.stdout).toBe(0);
      expect(main.stdout).toMatch(
        /GitHub's OIDC token service did not answer in time; retrying in \d\.\d s \(attempt 2 of 6\)\./,
      );
      expect(stalling.unanswered).toEqual(['acme.api.stepsecurity.io']);
      expect(stalling.issued).toEqual(['second-token-for-acme.api.stepsecurity.io']);
      const exchange = broker.requests.findLast((r) => r.path === '/v1/oidc/token');
      expect(JSON.parse(exchange!.body).oidc_token).toBe('second-token-for-acme.api.stepsecurity.io');
      expect(main.outputs.token).toBe(ACCESS_TOKEN);
    } finally {
      await patient.close();
      await stalling.close();
    }
  }, 60_000);

  it('reports a runner file that is gone in the job summary too, and revokes the token it could not hand on', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oidc-auth-gone-'));
    const gone = join(dir, '_runner_file_commands', 'set_output_1');
    const emptied = await createActionRunner({ idToken: github, env: { GITHUB_OUTPUT: gone } });
    try {
      const main = await emptied.run('main', { tenant: 'acme', 'api-url': broker.apiUrl });

      expect(main.exitCode).toBe(1);
      expect(main.stderr).toBe('');
      expect(main.stdout).toContain(`::error::oidc-auth failed unexpectedly: Missing file at path: ${gone}`);
      expect(main.summary).toContain('### StepSecurity API token not issued');
      expect(main.summary).toContain(`oidc-auth failed unexpectedly: Missing file at path: ${gone}`);
      expect(main.summary).toContain('the post step revokes it when the job ends');
      expect(main.summary).not.toContain(ACCESS_TOKEN);

      const post = await emptied.run('post', { tenant: 'acme', 'api-url': broker.apiUrl });
      expect(post.exitCode).toBe(0);
      expect(post.stdout).toContain('Revoked the StepSecurity API token.');
    } finally {
      await emptied.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('fails on invalid inputs before calling GitHub or the broker', async () => {
    const before = { github: github.audiences.length, broker: broker.requests.length };
    const main = await runner.run('main', {
      tenant: 'acme',
      'duration-seconds': '86400',
      'api-url': broker.apiUrl,
    });

    expect(main.exitCode).toBe(1);
    expect(main.stdout).toContain('`duration-seconds` is "86400"');
    expect(github.audiences).toHaveLength(before.github);
    expect(broker.requests).toHaveLength(before.broker);
  });

  describe('over TLS', () => {
    /** A runner whose machine trusts the broker's certificate through NODE_EXTRA_CA_CERTS; `env` adds to it. */
    /** A test against the TLS broker: `step` runs the action's main or post step with the tenant and its URL. */
    type Check = (
      tlsBroker: FakeBroker,
      step: (name: 'main' | 'post') => ReturnType<ActionRunner['run']>,
    ) => Promise<void>;

    async function withTlsBroker(
      certFor: { dns?: string[]; ip?: string[] },
      host: string,
      test: Check,
      env: Record<string, string> = {},
    ) {
      const dir = await mkdtemp(join(tmpdir(), 'oidc-auth-ca-'));
      const certificate = selfSignedCertificate('broker', certFor);
      await writeFile(join(dir, 'ca.pem'), certificate.cert);
      const tlsBroker = await startFakeBroker(ACCESS_TOKEN, { ...certificate, host });
      const tlsRunner = await createActionRunner({
        idToken: github,
        env: { NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem'), ...env },
      });
      try {
        await test(tlsBroker, (name) => tlsRunner.run(name, { tenant: 'acme', 'api-url': tlsBroker.apiUrl }));
      } finally {
        await tlsRunner.close();
        await tlsBroker.close();
        await rm(dir, { recursive: true, force: true });
      }
    }

    it('exchanges and revokes over HTTPS, verifying the certificate against the trusted CA', async () => {
      await withTlsBroker({ dns: ['localhost'] }, 'localhost', async (tlsBroker, step) => {
        const main = await step('main');
        expect(main.stderr).toBe('');
        expect(main.exitCode).toBe(0);
        expect(main.outputs.token).toBe(ACCESS_TOKEN);

        const post = await step('post');
        expect(post.exitCode).toBe(0);
        expect(post.stdout).toContain('Revoked the StepSecurity API token.');
        expect(tlsBroker.requests.map((r) => r.path)).toEqual(['/v1/oidc/token', '/v1/tokens/revoke']);
      });
    });

    it('refuses a trusted certificate issued for another host name, without retrying', async () => {
      await withTlsBroker({ dns: ['broker.example'] }, '127.0.0.1', async (tlsBroker, step) => {
        const main = await step('main');

        expect(main.exitCode).toBe(1);
        expect(main.stdout).toContain(
          `::error::The TLS connection to ${tlsBroker.apiUrl}/oidc/token failed: ERR_TLS_CERT_ALTNAME_INVALID.`,
        );
        expect(main.stdout).toContain('Tried 1 time.');
        expect(main.outputs).toEqual({});
        expect(tlsBroker.requests).toEqual([]);
      });
    });

    describe("through the runner's proxy settings", () => {
      let proxy: FakeProxy;
      beforeAll(async () => {
        proxy = await startFakeProxy();
      });
      afterAll(() => proxy?.close());
      afterEach(() => {
        proxy.connects.length = 0;
      });
      // broker.invalid resolves nowhere (RFC 6761): only a proxy, which tunnels to this machine, reaches it.
      const throughProxy = (env: Record<string, string>, test: Check) =>
        withTlsBroker({ dns: ['broker.invalid'] }, 'broker.invalid', test, env);

      it('sends the exchange and the revocation through HTTPS_PROXY', async () => {
        await throughProxy({ HTTPS_PROXY: proxy.url }, async (tlsBroker, step) => {
          const authority = new URL(tlsBroker.apiUrl).host;
          const main = await step('main');
          expect(main.exitCode, main.stdout).toBe(0);
          expect(main.outputs.token).toBe(ACCESS_TOKEN);
          expect(proxy.connects).toEqual([authority]);

          const post = await step('post');
          expect(post.stdout).toContain('Revoked the StepSecurity API token.');
          expect(proxy.connects).toEqual([authority, authority]);
          expect(tlsBroker.requests.map((r) => r.path)).toEqual(['/v1/oidc/token', '/v1/tokens/revoke']);
        });
      });

      it('takes a proxy given as host:port, without a scheme, as an http:// proxy', async () => {
        await throughProxy({ https_proxy: `localhost:${proxy.port}` }, async (tlsBroker, step) => {
          const main = await step('main');
          expect(main.exitCode, main.stdout).toBe(0);
          expect(proxy.connects).toEqual([new URL(tlsBroker.apiUrl).host]);
        });
      });

      // 0.0.0.0 reaches this machine, yet is no loopback name that is never proxied: only NO_PROXY exempts it.
      it.each([
        ['names', 'github.example,0.0.0.0'],
        ['holds in a CIDR range', 'github.example, 0.0.0.0/8'],
      ])('connects directly to a broker whose address NO_PROXY %s', async (_, noProxy) => {
        await withTlsBroker(
          { ip: ['0.0.0.0'] },
          '0.0.0.0',
          async (tlsBroker, step) => {
            const main = await step('main');
            expect(main.exitCode, main.stdout).toBe(0);
            const post = await step('post');
            expect(post.stdout).toContain('Revoked the StepSecurity API token.');
            expect(tlsBroker.requests).toHaveLength(2);
            expect(proxy.connects).toEqual([]);
          },
          { HTTPS_PROXY: proxy.url, NO_PROXY: noProxy },
        );
      });

      it('fails at once, naming the variable, when the proxy setting is not a usable proxy URL', async () => {
        await throughProxy(
          { HTTPS_PROXY: `socks5://user:s3cret@127.0.0.1:${proxy.port}` },
          async (tlsBroker, step) => {
            const main = await step('main');
            expect(main.exitCode).toBe(1);
            expect(main.stdout).toContain('::error::The proxy setting HTTPS_PROXY cannot be used');
            expect(main.stdout).toContain('socks5:');
            // The value can hold a proxy password: it is not repeated.
            expect(main.stdout).not.toContain('s3cret');
            expect(main.stdout).not.toContain('retrying');
            expect(tlsBroker.requests).toEqual([]);
            expect(proxy.connects).toEqual([]);
          },
        );
      });

      it('fails at once, naming the variable and the status, when the proxy refuses the tunnel', async () => {
        const refusing = await startFakeProxy({ refuse: 407 });
        try {
          await throughProxy(
            { HTTPS_PROXY: `http://ci-bot:s3cret@127.0.0.1:${refusing.port}` },
            async (tlsBroker, step) => {
              const main = await step('main');
              expect(main.exitCode).toBe(1);
              expect(main.stdout).toContain(
                `::error::The proxy http://127.0.0.1:${refusing.port} (HTTPS_PROXY) refused a tunnel to ` +
                  `${new URL(tlsBroker.apiUrl).host}: HTTP 407.`,
              );
              expect(main.stdout).not.toContain('s3cret');
              expect(main.stdout).not.toContain('retrying');
              expect(refusing.connects).toHaveLength(1);
              expect(tlsBroker.requests).toEqual([]);
            },
          );
        } finally {
          await refusing.close();
        }
      });

      it('fails at once, naming the variable, when the proxy password is not valid percent-encoding', async () => {
        await throughProxy(
          { HTTPS_PROXY: `http://user:s3cret%@127.0.0.1:${proxy.port}` },
          async (tlsBroker, step) => {
            const main = await step('main');
            expect(main.exitCode).toBe(1);
            expect(main.stdout).toContain('::error::The proxy setting HTTPS_PROXY cannot be used');
            expect(main.stdout).toContain('not valid percent-encoding');
            expect(main.stdout).not.toContain('s3cret');
            expect(main.stdout).not.toContain('retrying');
            expect(tlsBroker.requests).toEqual([]);
            expect(proxy.connects).toEqual([]);
          },
        );
      });
    });
  });

  it("never lets the broker's text start a workflow command, so the token stays masked", async () => {
    const injecting = await startFakeBroker(ACCESS_TOKEN, undefined, {
      exchanges: [
        {
          status: 503,
          headers: { 'content-type': 'application/problem+json' },
          body: JSON.stringify({
            status: 503,
            code: 'busy\n::stop-commands::pause',
            title: 'x\r##[warning]t',
          }),
        },
      ],
      grant: { policy: 'p\n::warning::injected by policy name', tenant: 'acme ##[stop-commands]x' },
    });
    try {
      const main = await runner.run('main', { tenant: 'acme', 'api-url': injecting.apiUrl });

      expect(main.exitCode, main.stdout).toBe(0);
      expect(main.stdout).toContain('injected by policy name');
      // Only the action's own commands: the OIDC token's mask and the URL it was asked at, twice, then the mask
      // of the access token; nothing the broker wrote, and nothing that stops the runner reading the masks.
      expect(workflowCommands(main.stdout)).toEqual(['debug', 'add-mask', 'debug', 'add-mask', 'add-mask']);
      const lines = main.stdout.split(/\r\n|\r|\n/);
      expect(lines.find((line) => line.includes(ACCESS_TOKEN))).toBe(`::add-mask::${ACCESS_TOKEN}`);
    } finally {
      await injecting.close();
    }
  });
});
