// The broker as a real process: first start, persistence across restarts, config errors, graceful shutdown.

import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Agent, type IncomingHttpHeaders, request } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startFakeProxy } from '../action/support/fake-proxy.js';
import { selfSignedCertificate, type TestCertificate } from '../action/support/tls-cert.js';
import { TEST_KEK } from '../support/broker.js';
import { createTestDatabase, openDriver, type TestDatabase } from '../support/database.js';
import {
  BROKER_ENTRY,
  type BrokerProcess,
  createTenantKey,
  EPHEMERAL_PORT,
  runBroker,
  runNode,
  startBrokerProcess,
} from '../support/process.js';

let db: TestDatabase;
let running: BrokerProcess[] = [];
const env = () => ({ DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK });

async function start(extra: Record<string, string> = {}) {
  const p = await startBrokerProcess({ ...env(), ...extra });
  running.push(p);
  return p;
}

const call = (p: BrokerProcess, path: string, key: string, init: RequestInit = {}) =>
  fetch(`${p.url}${path}`, { ...init, headers: { Authorization: `Bearer ${key}`, ...init.headers } });

/**
 * Runs `count` processes that each import the built broker's modules (`imports`: name → path under build/broker),
 * wait for the same moment, then run `body`, as replicas of a deployment do when they start at once. Resolves to
 * each one's exit code, standard output and standard error. Each has its own number in REPLICA (0, 1, …).
 */
function atTheSameMoment(
  count: number,
  imports: Record<string, string>,
  body: string,
  env: Record<string, string>,
) {
  const at = Date.now() + 1500;
  const script = [
    ...Object.entries(imports).map(
      ([name, path]) =>
        `const { ${name} } = await import(${JSON.stringify(new URL(`../../build/broker/${path}`, import.meta.url).href)});`,
    ),
    `while (Date.now() < ${at});`,
    body,
  ].join('\n');
  const run = async (_: unknown, replica: number) => {
    const node = runNode(['--input-type=module', '-e', script], { ...env, REPLICA: String(replica) });
    return { code: await node.closed, stdout: node.stdout(), stderr: node.stderr() };
  };
  return Promise.all(Array.from({ length: count }, run));
}

async function createFineGrainedKey(p: BrokerProcess, key: string, name: string): Promise<string> {
  const created = await call(p, '/v1/fine-grained-keys', key, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name, expiration: '7d', permissions: ['audit-log:read'] }),
  });
  expect(created.status).toBe(201);
  return ((await created.json()) as { key: string }).key;
}

/** The logs are JSON lines without the keys, and neither the database file nor its WAL holds them. */
function expectNoRawKeys(logs: string, databaseFiles: string[], keys: string[]) {
  for (const line of logs.trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
  for (const key of keys) expect(logs).not.toContain(key);
  for (const file of databaseFiles.flatMap((f) => [f, `${f}-wal`])) {
    if (!existsSync(file)) continue;
    const bytes = readFileSync(file);
    for (const key of keys) expect(bytes.includes(key)).toBe(false);
  }
}

/**
 * A request the broker is serving, whose body of `length` bytes is not sent yet: a graceful stop waits for it (up
 * to its 10 s grace). Resolves once the broker has read its headers (it answered `100 Continue`).
 */
async function requestInFlight(p: BrokerProcess, key: string, length = 100) {
  const url = new URL(`${p.url}/v1/fine-grained-keys`);
  const req = request({
    host: url.hostname,
    port: url.port,
    path: url.pathname,
    method: 'POST',
    headers: {
      Authorization: `Bearer ${key}`,
      'Content-Type': 'application/json',
      'Content-Length': length,
      Expect: '100-continue',
    },
  });
  req.on('error', () => {});
  req.flushHeaders();
  await new Promise((resolve) => req.once('continue', resolve));
  return req;
}

beforeEach(async () => {
  db = await createTestDatabase();
});
afterEach(async () => {
  await Promise.all(running.map((p) => p.stop('SIGKILL')));
  running = [];
  await db.drop();
});

describe('broker process', () => {
  it('with DATABASE_URL unset, creates tenant demo, prints its key once, and keeps data across restarts', async () => {
    // `npm start` on a fresh checkout: no DATABASE_URL, no key-encryption key, ./data in the working directory.
    const dir = mkdtempSync(join(tmpdir(), 'broker-first-run-'));
    try {
      const first = await startBrokerProcess({}, dir);
      running.push(first);
      expect(first.stderr()).toContain('Created tenant "demo" (audience demo.api.stepsecurity.io)');
      const key = /\b(ssa_[0-9A-Za-z]{38})\b/.exec(first.stderr())?.[1];
      expect(key).toBeDefined();
      const fineGrained = await createFineGrainedKey(first, key!, 'survivor');
      // The audit log, the policies and the key digests are the operator's alone, as a PostgreSQL data directory is.
      const data = join(dir, 'data');
      expect(statSync(data).mode & 0o777).toBe(0o700);
      for (const file of ['broker.db', 'broker.db-wal']) {
        expect(statSync(join(data, file)).mode & 0o777, file).toBe(0o600);
      }
      expect(await first.stop()).toBe(0);

      const second = await startBrokerProcess({}, dir);
      running.push(second);
      expect(second.stderr()).not.toContain('ssa_');
      expect((await call(second, '/v1/whoami', key!)).status).toBe(200);
      expect((await call(second, '/v1/whoami', fineGrained)).status).toBe(200);
      await second.stop();
      expectNoRawKeys(
        first.stdout() + second.stdout(),
        [join(dir, 'data', 'broker.db')],
        [key!, fineGrained],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('forgets expired replay records as it starts, not only once it has been up ten minutes', async () => {
    // A broker restarted more often than that (frequent deploys, a crash loop) would otherwise never forget any.
    expect(await (await start()).stop()).toBe(0);
    const driver = openDriver(db);
    try {
      await driver.run('INSERT INTO used_jtis (issuer, jti, expires_at) VALUES (?, ?, ?)', [
        'https://token.actions.githubusercontent.com',
        'expired-long-ago',
        1,
      ]);
    } finally {
      await driver.close();
    }
    const broker = await start();
    for (let waited = 0; !broker.stdout().includes('purged expired replay'); waited += 50) {
      if (waited > 10_000) throw new Error(`no purge within 10 s of starting:\n${broker.stdout()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(broker.stdout()).toMatch(/"msg":"purged expired replay and revocation records","count":1\b/);
    expect(await broker.stop()).toBe(0);
  });

  it('stopped while that first upkeep runs, it stops cleanly: the rest is forgotten at the next start', async () => {
    expect(await (await start()).stop()).toBe(0);
    const driver = openDriver(db);
    try {
      await driver.run(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
         INSERT INTO used_jtis (issuer, jti, expires_at) SELECT 'https://token.actions.githubusercontent.com', 'j' || i, 1 FROM n`,
      );
    } finally {
      await driver.close();
    }
    const broker = await start();
    expect(await broker.stop()).toBe(0);
    expect(broker.stdout()).toContain('"msg":"stopped"');
    expect(broker.stdout()).not.toContain('maintenance failed');

    const next = await start();
    for (let waited = 0; !next.stdout().includes('purged expired replay'); waited += 50) {
      if (waited > 20_000) throw new Error(`no purge within 20 s of starting:\n${next.stdout()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(await next.stop()).toBe(0);
    const check = openDriver(db);
    try {
      const row = await check.get<{ remaining: unknown }>(
        'SELECT COUNT(*) AS remaining FROM used_jtis WHERE expires_at < 2',
      );
      expect(Number(row?.remaining)).toBe(0);
    } finally {
      await check.close();
    }
  });

  it('on a configured empty database creates no tenant, prints no key and logs how to create one', async () => {
    const first = await start();
    expect(first.stderr()).not.toContain('ssa_');
    expect(first.stdout()).toContain(
      '"msg":"the database has no tenants yet; create one with: oidc-broker tenant create NAME"',
    );
    expect(await first.stop()).toBe(0);

    const key = await createTenantKey(env());
    const second = await start();
    expect(second.stdout()).not.toContain('no tenants');
    const fineGrained = await createFineGrainedKey(second, key, 'survivor');
    expect(await second.stop()).toBe(0);

    const third = await start();
    expect((await call(third, '/v1/whoami', key)).status).toBe(200);
    expect((await call(third, '/v1/whoami', fineGrained)).status).toBe(200);
    await third.stop();
    const logs = first.stdout() + second.stdout() + third.stdout();
    expectNoRawKeys(logs, db.file ? [db.file] : [], [key, fineGrained]);
  });

  it.each([
    [{ PORT: 'abc' }, 'PORT: expected a whole number'],
    [{ BROKER_TRUSTED_ISSUERS: '{' }, 'BROKER_TRUSTED_ISSUERS: expected a JSON list'],
  ])('refuses to start with %o and says why', async (bad, message) => {
    const run = runBroker(['serve'], { ...env(), ...bad });
    expect(await run.exited).not.toBe(0);
    expect(run.stderr()).toContain(message);
  });

  it('starts with a misspelt setting, logging that it is ignored and what it most likely means', async () => {
    const p = await start({
      BROKER_PUBLIC_ULR: 'https://broker.example.com',
      BROKER_KEY_PEPER: 'pepper-s3cret',
    });
    const warnings = p
      .stdout()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.msg === 'unknown setting ignored');
    expect(warnings).toEqual([
      expect.objectContaining({
        level: 'warn',
        variable: 'BROKER_KEY_PEPER',
        did_you_mean: 'BROKER_KEY_PEPPER',
      }),
      expect.objectContaining({
        level: 'warn',
        variable: 'BROKER_PUBLIC_ULR',
        did_you_mean: 'BROKER_PUBLIC_URL',
      }),
    ]);
    expect(p.stdout() + p.stderr()).not.toContain('s3cret');
    expect(await p.stop()).toBe(0);
  });

  it('finishes in-flight requests on SIGTERM, sent once or again, then exits cleanly', async () => {
    const key = await createTenantKey(env());
    const p = await start();
    const body = JSON.stringify({ name: 'in-flight', expiration: '7d', permissions: ['audit-log:read'] });
    const req = await requestInFlight(p, key, Buffer.byteLength(body));
    const response = new Promise<number>((resolve, reject) => {
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
    });
    // Supervisors and init shims may repeat the signal: the second changes nothing.
    p.child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 100));
    p.child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 200));
    req.end(body);
    expect(await response).toBe(201);
    expect(await p.exited).toBe(0);
    expect(p.stdout()).toContain('"msg":"shutting down"');
    expect(p.stdout()).toContain('"msg":"stopped"');
    const restarted = await start();
    const list = (await (await call(restarted, '/v1/fine-grained-keys', key)).json()) as {
      keys: { name: string }[];
    };
    expect(list.keys.map((k) => k.name)).toEqual(['in-flight']);
  });

  it.each(['SIGTERM', 'SIGINT'] as const)(
    'a Ctrl-C while %s has the broker waiting for in-flight requests stops it at once (exit 130), and logs so',
    async (first) => {
      const key = await createTenantKey(env());
      const p = await start();
      const req = await requestInFlight(p, key);
      p.child.kill(first);
      await vi.waitFor(() => expect(p.stdout()).toContain('"msg":"shutting down"'), {
        timeout: 10_000,
        interval: 50,
      });
      // A SIGINT within half a second of a Ctrl-C is the same key press, delivered twice under npm start.
      if (first === 'SIGINT') await new Promise((resolve) => setTimeout(resolve, 1_000));
      p.child.kill('SIGINT');
      expect(await p.exited).toBe(130);
      // The log, written to a pipe here, ends saying so: the line written just before the exit is not lost.
      const lines = p.stdout().trim().split('\n');
      expect(JSON.parse(lines.at(-1)!)).toMatchObject({
        level: 'warn',
        msg: 'stopping at once',
        signal: 'SIGINT',
      });
      expect(p.stdout()).not.toContain('"msg":"stopped"');
      req.destroy();
    },
  );

  it.each([
    ['a SIGTERM to npm', (npm: ChildProcess) => npm.kill('SIGTERM')],
    // A terminal sends it to the whole process group, and npm passes it on as well: the broker gets it twice.
    ['Ctrl-C (SIGINT to the process group)', (npm: ChildProcess) => process.kill(-npm.pid!, 'SIGINT')],
  ])(
    'under npm start, %s stops the broker cleanly instead of leaving it serving or killing it',
    async (_, signal) => {
      const npm = spawn('npm', ['start'], {
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env(), ...EPHEMERAL_PORT },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      let out = '';
      npm.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const exited = new Promise<void>((resolve) => npm.on('exit', () => resolve()));
      await vi.waitFor(() => expect(out).toContain('"msg":"listening"'), { timeout: 60_000, interval: 100 });
      const pid = Number(/"pid":(\d+)/.exec(out)?.[1]);
      signal(npm);
      await exited;
      await vi.waitFor(() => expect(out).toContain('"msg":"stopped"'), { timeout: 20_000, interval: 100 });
      // The broker itself is gone, not re-parented and still serving.
      await vi.waitFor(() => expect(() => process.kill(pid, 0)).toThrow(), { timeout: 5_000, interval: 50 });
    },
    90_000,
  );

  it('a port in use or a host it cannot listen on is a configuration error naming PORT or HOST', async () => {
    const first = await start();
    const port = new URL(first.url).port;
    const taken = runBroker(['serve'], { ...env(), PORT: port });
    expect(await taken.exited).toBe(78);
    expect(taken.stderr()).toMatch(new RegExp(`PORT: port ${port} is already in use`));
    const unknown = runBroker(['serve'], { ...env(), ...EPHEMERAL_PORT, HOST: 'no-such-host.invalid' });
    expect(await unknown.exited).toBe(78);
    expect(unknown.stderr()).toMatch(/HOST: cannot listen on no-such-host\.invalid/);
  });
});

describe('the server whose log stream closes', () => {
  it('stops as for SIGTERM, saying why on standard error, and exits 1 for its supervisor to restart it', async () => {
    const p = await start();
    // The reader of its standard output goes away (`oidc-broker serve | shipper`, the shipper gone).
    p.child.stdout?.destroy();
    // The next line it logs fails: one after it started (a warning about the issuers' keys, say), or a request's.
    await fetch(`${p.url}/healthz`).catch(() => undefined);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/^error: standard output, the broker's log, failed \(EPIPE\); stopping$/m);
    expect(p.stderr()).not.toMatch(/^\s+at /m);
  });
});

describe('the command in a pipeline', () => {
  it('stops quietly when its reader stops early (oidc-broker openapi | head)', async () => {
    const run = runBroker(['openapi'], env());
    run.child.stdout.destroy();
    expect(await run.closed).toBe(0);
    expect(run.stderr()).toBe('');
  });

  it('fails, saying the key is lost, when its reader stops before a key shown once was written', async () => {
    const run = runBroker(['tenant', 'create', 'acme'], env());
    run.child.stdout.destroy();
    expect(await run.closed).toBe(1);
    expect(run.stderr()).toContain(
      'so it is lost; `oidc-broker tenant rotate-key NAME` gives the tenant a new one',
    );
  });
});

/**
 * Runs the built CLI through a shell that redirects its standard output (`>/dev/full`, `>&-`): Node would put
 * /dev/null in place of a standard output closed by spawn() itself, as it does in place of one closed by a shell.
 */
function runRedirected(redirect: string, args: string[]) {
  const child = spawn(
    '/bin/sh',
    ['-c', `exec "$@" ${redirect}`, 'sh', process.execPath, BROKER_ENTRY, ...args],
    {
      env: { PATH: process.env.PATH ?? '', ...env() },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stderr: err })),
  );
}

const tenantNames = async () => {
  const listed = runBroker(['tenant', 'list'], env());
  await listed.closed;
  return listed.stdout();
};

describe('a key shown once, where standard output cannot take it', () => {
  const lost = 'so it is lost; `oidc-broker tenant rotate-key NAME` gives the tenant a new one';

  it.skipIf(!existsSync('/dev/full'))(
    'standard output on a full disk: the key is lost, the command says so and fails, without a stack trace',
    async () => {
      const created = await runRedirected('>/dev/full', ['tenant', 'create', 'acme']);
      expect(created.code).toBe(1);
      expect(created.stderr).toContain('ENOSPC');
      expect(created.stderr).toContain(lost);
      expect(created.stderr).not.toMatch(/^\s+at /m);
      // Created, as the message implies; rotate-key is the way back in, and fails the same way here.
      expect(await tenantNames()).toContain('acme');
      const rotated = await runRedirected('>/dev/full', ['tenant', 'rotate-key', 'acme']);
      expect(rotated.code).toBe(1);
      expect(rotated.stderr).toContain(lost);
      expect(rotated.stderr).not.toMatch(/^\s+at /m);
      // Other commands fail too, with a message rather than a stack trace.
      const openapi = await runRedirected('>/dev/full', ['openapi']);
      expect(openapi.code).toBe(1);
      expect(openapi.stderr).toMatch(/^error: standard output did not take what was written to it \(ENOSPC/);
      expect(openapi.stderr).not.toMatch(/^\s+at /m);
    },
  );

  it.each(['>&-', '>/dev/null'])(
    'standard output closed or /dev/null (%s): refused before anything is created',
    async (redirect) => {
      const created = await runRedirected(redirect, ['tenant', 'create', 'acme']);
      expect(created.code).toBe(1);
      expect(created.stderr).toContain(
        'error: standard output is closed or /dev/null, where the Tenant API key, shown only once, would be lost; ' +
          'nothing was changed',
      );
      expect(await tenantNames()).not.toContain('acme');
      const key = await createTenantKey(env());
      const rotated = await runRedirected(redirect, ['tenant', 'rotate-key', 'acme']);
      expect(rotated.code).toBe(1);
      expect(rotated.stderr).toContain('nothing was changed');
      const p = await start();
      expect((await call(p, '/v1/whoami', key)).status).toBe(200);
    },
  );
});

/** A GET over `agent` (a new connection when it is false): its status, headers and body, and whether it reused one. */
function get(p: BrokerProcess, path: string, agent: Agent | false) {
  return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string; reused: boolean }>(
    (resolve, reject) => {
      const req = request(`${p.url}${path}`, { agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, reused: req.reusedSocket }),
        );
      });
      req.on('error', reject);
      req.end();
    },
  );
}

/** Whether a new connection to the broker's port is taken: `connected`, or the error's code (`ECONNREFUSED`). */
function dial(p: BrokerProcess) {
  const { hostname, port } = new URL(p.url);
  return new Promise<string>((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

/** The answer a request in flight (`requestInFlight`) gets once its body is sent: status and headers. */
function answerOf(req: ReturnType<typeof request>) {
  return new Promise<{ status: number; headers: IncomingHttpHeaders }>((resolve, reject) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
  });
}

/** Once the broker has stopped taking connections. */
const portClosed = (p: BrokerProcess) =>
  vi.waitFor(async () => expect(await dial(p)).toBe('ECONNREFUSED'), { timeout: 5_000, interval: 20 });

const logged = (p: BrokerProcess, msg: string) =>
  vi.waitFor(() => expect(p.stdout()).toContain(`"msg":"${msg}"`), { timeout: 10_000, interval: 20 });

/** The public half of a new RSA-2048 key, as a JWK's n and e. */
function rsaPublicJwk(): { n: string; e: string } {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const { n, e } = publicKey.export({ format: 'jwk' });
  return { n: n!, e: e! };
}

const keyBody = (name: string) => JSON.stringify({ name, expiration: '7d', permissions: ['audit-log:read'] });

describe('the shutdown delay (BROKER_SHUTDOWN_DELAY_SECONDS)', () => {
  it('serves on through it, not ready and closing each connection after its answer; then stops as without it, exit 0', async () => {
    const key = await createTenantKey(env());
    const p = await start({ BROKER_SHUTDOWN_DELAY_SECONDS: '3' });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      expect(await get(p, '/readyz', agent)).toMatchObject({
        status: 200,
        headers: { connection: 'keep-alive' },
      });
      const signalled = Date.now();
      p.child.kill('SIGTERM');
      await logged(p, 'shutting down');
      // The same signal again at once (a supervisor or an init shim repeating it) does not end the delay.
      p.child.kill('SIGTERM');
      expect(
        JSON.parse(
          p
            .stdout()
            .split('\n')
            .find((l) => l.includes('"msg":"shutting down"'))!,
        ),
      ).toMatchObject({
        signal: 'SIGTERM',
        delay_seconds: 3,
      });

      // A connection kept alive from before: its next request is answered, and the connection closed after it.
      const ready = await get(p, '/readyz', agent);
      expect(ready).toMatchObject({ status: 503, reused: true, headers: { connection: 'close' } });
      expect(ready.headers['content-type']).toBe('application/problem+json');
      expect(JSON.parse(ready.body)).toMatchObject({
        code: 'not_ready',
        detail: expect.stringMatching(/shutting down/),
      });
      // A new connection is taken and served, and closed after its answer too.
      expect(await get(p, '/healthz', false)).toMatchObject({
        status: 200,
        headers: { connection: 'close' },
      });
      expect(await get(p, '/v1/whoami', false)).toMatchObject({
        status: 401,
        headers: { connection: 'close' },
      });
      // A request begun within the delay and still in flight when it ends is finished.
      const body = keyBody('within-the-delay');
      const req = await requestInFlight(p, key, Buffer.byteLength(body));
      const answer = answerOf(req);
      expect(await dial(p)).toBe('connected');

      await logged(p, 'shutdown delay over');
      expect(Date.now() - signalled).toBeGreaterThanOrEqual(3_000);
      await portClosed(p);
      expect(p.child.exitCode).toBeNull();
      req.end(body);
      expect(await answer).toMatchObject({ status: 201, headers: { connection: 'close' } });
      expect(await p.exited).toBe(0);
      expect(p.stdout()).toContain('"msg":"stopped"');
      expect(p.stdout()).not.toContain('did not finish in time');
    } finally {
      agent.destroy();
    }
  });

  it('a second SIGTERM within it ends it at once; requests in flight still finish, exit 0', async () => {
    const key = await createTenantKey(env());
    const p = await start({ BROKER_SHUTDOWN_DELAY_SECONDS: '120' });
    const signalled = Date.now();
    p.child.kill('SIGTERM');
    await logged(p, 'shutting down');
    const body = keyBody('cut-short');
    const req = await requestInFlight(p, key, Buffer.byteLength(body));
    const answer = answerOf(req);
    // More than half a second later: another signal, not the first delivered twice.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(await dial(p)).toBe('connected');
    p.child.kill('SIGTERM');
    await logged(p, 'shutdown delay cut short');
    expect(
      JSON.parse(
        p
          .stdout()
          .split('\n')
          .find((l) => l.includes('cut short'))!,
      ),
    ).toMatchObject({
      signal: 'SIGTERM',
    });
    await portClosed(p);
    req.end(body);
    expect((await answer).status).toBe(201);
    expect(await p.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(20_000);
  });

  it('a log stream that fails within it ends it, exit 1, as it stops the broker at any other time', async () => {
    const p = await start({ BROKER_SHUTDOWN_DELAY_SECONDS: '120' });
    const signalled = Date.now();
    p.child.kill('SIGTERM');
    await logged(p, 'shutting down');
    p.child.stdout?.destroy();
    // The next line it logs fails: this request's.
    await fetch(`${p.url}/healthz`).catch(() => undefined);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/^error: standard output, the broker's log, failed \(EPIPE\); stopping$/m);
    expect(Date.now() - signalled).toBeLessThan(20_000);
  });

  it('a Ctrl-C (SIGINT) within it stops the broker at once, exit 130, as it does at any time while it stops', async () => {
    const p = await start({ BROKER_SHUTDOWN_DELAY_SECONDS: '120' });
    p.child.kill('SIGTERM');
    await logged(p, 'shutting down');
    p.child.kill('SIGINT');
    expect(await p.exited).toBe(130);
    expect(JSON.parse(p.stdout().trim().split('\n').at(-1)!)).toMatchObject({
      msg: 'stopping at once',
      signal: 'SIGINT',
    });
  });

  it('a Ctrl-C (SIGINT) as the first signal does not wait for it: no load balancer is waiting at a terminal', async () => {
    const p = await start({ BROKER_SHUTDOWN_DELAY_SECONDS: '120' });
    p.child.kill('SIGINT');
    expect(await p.exited).toBe(0);
    expect(p.stdout()).not.toContain('delay_seconds');
  });

  it('unset (0), the broker stops taking connections as the signal arrives, as it always did', async () => {
    const key = await createTenantKey(env());
    const p = await start();
    const body = keyBody('no-delay');
    const req = await requestInFlight(p, key, Buffer.byteLength(body));
    const answer = answerOf(req);
    p.child.kill('SIGTERM');
    await logged(p, 'shutting down');
    expect(p.stdout()).not.toContain('delay_seconds');
    await portClosed(p);
    req.end(body);
    expect((await answer).status).toBe(201);
    expect(await p.exited).toBe(0);
    expect(p.stdout()).not.toContain('shutdown delay');
  });

  it.each(['30s', '301', ''])('refuses %j at start, exit 78, naming it', async (value) => {
    const run = runBroker(['serve'], { ...env(), ...EPHEMERAL_PORT, BROKER_SHUTDOWN_DELAY_SECONDS: value });
    expect(await run.closed).toBe(78);
    expect(run.stderr()).toMatch(/BROKER_SHUTDOWN_DELAY_SECONDS: /);
  });
});

describe('the egress proxy (HTTPS_PROXY)', () => {
  it("fetches the issuer's keys through it, trusting NODE_EXTRA_CA_CERTS for the issuer's certificate", async () => {
    // issuer.test resolves nowhere: only the proxy, which tunnels every CONNECT to 127.0.0.1, reaches it.
    const { cert, key } = selfSignedCertificate('issuer.test', { dns: ['issuer.test'] });
    const jwks = JSON.stringify({
      keys: [{ kty: 'RSA', kid: 'k1', alg: 'RS256', use: 'sig', ...rsaPublicJwk() }],
    });
    const issuer = createHttpsServer({ cert, key }, (_req, res) => res.end(jwks));
    await new Promise<void>((resolve) => issuer.listen(0, '127.0.0.1', resolve));
    const proxy = await startFakeProxy();
    const dir = mkdtempSync(join(tmpdir(), 'egress-'));
    writeFileSync(join(dir, 'ca.pem'), cert);
    try {
      const port = (issuer.address() as AddressInfo).port;
      const p = await start({
        HTTPS_PROXY: proxy.url.replace('//', '//egress:s3cret@'),
        NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem'),
        BROKER_TRUSTED_ISSUERS: JSON.stringify([
          {
            issuer: 'https://token.actions.githubusercontent.com',
            jwks_uri: `https://issuer.test:${port}/jwks`,
          },
        ]),
      });
      await logged(p, 'issuer signing keys refreshed');
      expect(proxy.connects).toEqual([`issuer.test:${port}`]);
      expect(p.stdout()).toMatch(/"msg":"issuer signing keys refreshed".*"keys":1/);
      expect(p.stdout()).not.toContain('s3cret');
    } finally {
      issuer.closeAllConnections();
      issuer.close();
      await proxy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a setting that names no usable proxy at start, exit 78, naming it without its password', async () => {
    const run = runBroker(['serve'], {
      ...env(),
      ...EPHEMERAL_PORT,
      https_proxy: 'socks5://egress:s3cret@proxy:1080',
    });
    expect(await run.closed).toBe(78);
    expect(run.stderr()).toMatch(
      /https_proxy: names a socks5: proxy, but only http:\/\/ and https:\/\/ proxies/,
    );
    expect(run.stderr() + run.stdout()).not.toContain('s3cret');
  });
});

describe('request size over a real socket', () => {
  it('refuses a body over 64 KiB whether it declares its length or streams it in chunks', async () => {
    const key = await createTenantKey(env());
    const p = await start();
    const big = JSON.stringify({
      name: 'x'.repeat(70_000),
      expiration: '7d',
      permissions: ['audit-log:read'],
    });
    const declared = await call(p, '/v1/fine-grained-keys', key, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: big,
    });
    expect(declared.status).toBe(413);
    const chunks = new ReadableStream({
      start(controller) {
        for (let i = 0; i < big.length; i += 8192)
          controller.enqueue(new TextEncoder().encode(big.slice(i, i + 8192)));
        controller.close();
      },
    });
    const streamed = await call(p, '/v1/fine-grained-keys', key, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: chunks,
      duplex: 'half',
    } as RequestInit);
    expect(streamed.status).toBe(413);
    expect(await streamed.json()).toMatchObject({ code: 'payload_too_large' });
    const small = await call(p, '/v1/fine-grained-keys', key, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'ok', expiration: '7d', permissions: ['audit-log:read'] }),
    });
    expect(small.status).toBe(201);
  });
});

describe('development key-encryption key', () => {
  it('processes starting together on a new SQLite file share one generated key and one signing key', async () => {
    const sqlite = await createTestDatabase('sqlite');
    try {
      const results = await atTheSameMoment(
        8,
        { createBroker: 'broker.js', loadConfig: 'config.js', silentLogger: 'logger.js' },
        [
          'const broker = await createBroker(loadConfig(process.env), { logger: silentLogger });',
          'process.stdout.write(JSON.stringify(await broker.deps.signingKeys.jwks()));',
          'await broker.close();',
        ].join('\n'),
        { DATABASE_URL: sqlite.url },
      );
      expect(results.map((r) => [r.code, r.stderr])).toEqual(results.map(() => [0, '']));
      expect(new Set(results.map((r) => r.stdout)).size).toBe(1);
      const file = join(dirname(sqlite.file!), 'key-encryption-key');
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(readFileSync(file, 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    } finally {
      await sqlite.drop();
    }
  });

  it('is generated beside the SQLite database with mode 0600 and a warning, and reused after a restart', async () => {
    const sqlite = await createTestDatabase('sqlite');
    try {
      const first = await startBrokerProcess({ DATABASE_URL: sqlite.url });
      running.push(first);
      const file = join(dirname(sqlite.file!), 'key-encryption-key');
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(first.stdout()).toMatch(/"level":"warn","msg":"generated a development key-encryption key/);
      const jwks = await (await fetch(`${first.url}/.well-known/jwks.json`)).json();
      await first.stop();

      const second = await startBrokerProcess({ DATABASE_URL: sqlite.url });
      running.push(second);
      expect(second.stdout()).not.toContain('generated a development key-encryption key');
      expect(await (await fetch(`${second.url}/.well-known/jwks.json`)).json()).toEqual(jwks);
      await second.stop();

      // A different key cannot decrypt the stored signing key: the broker refuses to start and says why.
      const wrong = runBroker(['serve'], {
        DATABASE_URL: sqlite.url,
        BROKER_KEY_ENCRYPTION_KEY: '33'.repeat(32),
      });
      expect(await wrong.exited).toBe(78);
      expect(wrong.stderr()).toContain('BROKER_KEY_ENCRYPTION_KEY: cannot decrypt signing key');
      expect(wrong.stderr()).toContain('the key-encryption key is not the one it was stored under');
      expect(wrong.stderr()).toContain('BROKER_KEY_ENCRYPTION_KEY when set');

      // A file others can read, or one that does not hold exactly a 32-byte hex key, is refused as configuration.
      const original = readFileSync(file, 'utf8');
      for (const [content, mode, why] of [
        [original, 0o644, 'readable by others'],
        [`${original.trim()}zz\n`, 0o600, '64 hex characters'],
        [`${original.trim()}\ngarbage\n`, 0o600, '64 hex characters'],
      ] as const) {
        writeFileSync(file, content);
        chmodSync(file, mode);
        const refused = runBroker(['serve'], { DATABASE_URL: sqlite.url, ...EPHEMERAL_PORT });
        expect(await refused.exited).toBe(78);
        expect(refused.stderr()).toContain(why);
      }
      // A lost file is not generated anew while the database holds keys encrypted under it.
      rmSync(file);
      const lost = runBroker(['serve'], { DATABASE_URL: sqlite.url, ...EPHEMERAL_PORT });
      expect(await lost.exited).toBe(78);
      expect(lost.stderr()).toContain('is missing, but the database holds signing keys');
      expect(existsSync(file)).toBe(false);
      writeFileSync(file, original, { mode: 0o600 });
      const restored = await startBrokerProcess({ DATABASE_URL: sqlite.url });
      running.push(restored);
      expect(await (await fetch(`${restored.url}/.well-known/jwks.json`)).json()).toEqual(jwks);
      await restored.stop();
    } finally {
      await sqlite.drop();
    }
  });
});

describe('replicas starting together', () => {
  it('on a new database all open it, whichever migrates it', async () => {
    const results = await atTheSameMoment(
      8,
      { openStore: 'store/open-store.js', loadConfig: 'config.js' },
      'const store = await openStore(loadConfig(process.env).database);\nawait store.close();',
      env(),
    );
    expect(results.map((r) => [r.code, r.stderr])).toEqual(results.map(() => [0, '']));
  });
});

describe('the key pepper', () => {
  it('replicas starting together record one check of it; one started with another pepper exits 78 naming it', async () => {
    const pepper = { BROKER_KEY_PEPPER: 'pepper-s3cret' };
    const results = await atTheSameMoment(
      4,
      { createBroker: 'broker.js', loadConfig: 'config.js', silentLogger: 'logger.js' },
      'const broker = await createBroker(loadConfig(process.env), { logger: silentLogger });\nawait broker.close();',
      { ...env(), ...pepper },
    );
    expect(results.map((r) => [r.code, r.stderr])).toEqual(results.map(() => [0, '']));
    const driver = openDriver(db);
    try {
      expect(await driver.all('SELECT name FROM broker_settings ORDER BY name')).toEqual([
        { name: 'key_pepper_check' },
        { name: 'public_url' },
      ]);
    } finally {
      await driver.close();
    }
    const key = await createTenantKey({ ...env(), ...pepper });

    const wrong = runBroker(['serve'], { ...env(), ...EPHEMERAL_PORT, BROKER_KEY_PEPPER: 'pepper-typ0' });
    expect(await wrong.closed).toBe(78);
    expect(wrong.stderr()).toMatch(
      /^error: invalid configuration: BROKER_KEY_PEPPER: is not the pepper the API keys in this database were stored under/,
    );
    const unset = runBroker(['serve'], { ...env(), ...EPHEMERAL_PORT });
    expect(await unset.closed).toBe(78);
    expect(unset.stderr()).toContain('BROKER_KEY_PEPPER: is not set');
    for (const p of [wrong, unset]) {
      expect(p.stdout()).not.toContain('"msg":"listening"');
      for (const value of ['s3cret', 'typ0']) expect(p.stderr() + p.stdout()).not.toContain(value);
    }
    const right = await start(pepper);
    expect((await call(right, '/v1/whoami', key)).status).toBe(200);
  });
});

describe('BROKER_PUBLIC_URL other than the one the last broker on the database started with', () => {
  it('starts, logging one warning naming both values and what to do; the newest start is the one recorded', async () => {
    const warnings = (p: BrokerProcess) =>
      p
        .stdout()
        .split('\n')
        .filter((line) => line.includes('BROKER_PUBLIC_URL'))
        .map((line) => JSON.parse(line) as Record<string, unknown>);
    const first = await start({ BROKER_PUBLIC_URL: 'https://broker.test' });
    const again = await start({ BROKER_PUBLIC_URL: 'https://broker.test' });
    expect([...warnings(first), ...warnings(again)]).toEqual([]);

    const other = await start({ BROKER_PUBLIC_URL: 'https://other.broker.test/oidc' });
    expect(warnings(other)).toEqual([
      expect.objectContaining({
        level: 'warn',
        public_url: 'https://other.broker.test/oidc',
        recorded_public_url: 'https://broker.test',
        msg: expect.stringMatching(
          /refuse the tokens this one mints.*restart every replica with the new value/,
        ),
      }),
    ]);
    // It is the one recorded now: a replica restarted with the first value is told so in its turn, and the next
    // start with that value no more.
    const back = await start({ BROKER_PUBLIC_URL: 'https://broker.test' });
    expect(warnings(back)).toEqual([
      expect.objectContaining({
        public_url: 'https://broker.test',
        recorded_public_url: 'https://other.broker.test/oidc',
      }),
    ]);
    expect(warnings(await start({ BROKER_PUBLIC_URL: 'https://broker.test' }))).toEqual([]);
  });

  it('of two replicas first started together after the upgrade with different values, one warns', async () => {
    // A database from before the value was recorded: migrated, nothing recorded.
    await createTenantKey(env());
    const driver = openDriver(db);
    try {
      await driver.run("DELETE FROM broker_settings WHERE name = 'public_url'", []);
    } finally {
      await driver.close();
    }
    // Each one's reads of a setting answer only at one moment for both, so both have read before either writes.
    const bothRead = Date.now() + 5000;
    const results = await atTheSameMoment(
      2,
      {
        createBroker: 'broker.js',
        loadConfig: 'config.js',
        createLogger: 'logger.js',
        openStore: 'store/open-store.js',
      },
      [
        "const publicUrl = 'https://broker-' + process.env.REPLICA + '.test';",
        'const config = loadConfig({ ...process.env, BROKER_PUBLIC_URL: publicUrl });',
        'const store = await openStore(config.database);',
        'const { get } = store.settings;',
        `store.settings.get = async (name) => { const value = await get(name); while (Date.now() < ${bothRead}) await new Promise((r) => setTimeout(r, 5)); return value; };`,
        "const broker = await createBroker(config, { logger: createLogger(process.stdout, 'warn'), store });",
        'await broker.close();',
        'await store.close();',
      ].join('\n'),
      env(),
    );
    expect(results.map((r) => [r.code, r.stderr])).toEqual([
      [0, ''],
      [0, ''],
    ]);
    const warned = results
      .flatMap((r) => r.stdout.split('\n').filter((line) => line.includes('BROKER_PUBLIC_URL')))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(warned).toEqual([
      expect.objectContaining({
        level: 'warn',
        public_url: expect.stringMatching(/^https:\/\/broker-[01]\.test$/),
      }),
    ]);
    const other =
      warned[0]!.public_url === 'https://broker-0.test' ? 'https://broker-1.test' : 'https://broker-0.test';
    expect(warned[0]!.recorded_public_url).toBe(other);
    // The one that warned recorded its own afterwards, as any later start does.
    const after = openDriver(db);
    try {
      expect(await after.get("SELECT value FROM broker_settings WHERE name = 'public_url'", [])).toEqual({
        value: warned[0]!.public_url,
      });
    } finally {
      await after.close();
    }
  });
});

describe('two broker processes on one database', () => {
  it("see each other's writes at once and lose no update", async () => {
    const key = await createTenantKey(env());
    const a = await start();
    const b = await start();
    const post = (p: BrokerProcess, name: string) =>
      call(p, '/v1/fine-grained-keys', key, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name, expiration: '7d', permissions: ['audit-log:read'] }),
      });

    const created = (await (await post(a, 'made-on-a')).json()) as { id: string; key: string };
    expect((await call(b, '/v1/whoami', created.key)).status).toBe(200);
    expect((await call(b, `/v1/fine-grained-keys/${created.id}`, key, { method: 'DELETE' })).status).toBe(
      204,
    );
    expect((await call(a, '/v1/whoami', created.key)).status).toBe(401);

    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => post(i % 2 ? a : b, `concurrent-${i}`).then((r) => r.status)),
    );
    expect(results.every((s) => s === 201)).toBe(true);
    const list = (await (await call(a, '/v1/fine-grained-keys', key)).json()) as { keys: { name: string }[] };
    expect(new Set(list.keys.map((k) => k.name)).size).toBe(40);

    const rotated = await Promise.all(
      [a, b, a, b].map(async (p) => {
        const r = await call(p, '/v1/api-keys/tenant-read-only/primary/rotate', key, { method: 'POST' });
        return ((await r.json()) as { key: string }).key;
      }),
    );
    const working = [];
    for (const k of rotated) if ((await call(b, '/v1/whoami', k)).status === 200) working.push(k);
    expect(working).toHaveLength(1);
    const audit = (await (await call(a, '/v1/audit-events?type=api_key.rotated', key)).json()) as {
      events: unknown[];
    };
    expect(audit.events).toHaveLength(4);
  });
});

describe('a PostgreSQL database that cannot be opened at start', () => {
  /** A port on this machine where nothing listens. */
  async function closedPort(): Promise<number> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    return port;
  }

  /**
   * A server that asks for a SCRAM password, as a PostgreSQL whose pg_hba.conf says scram-sha-256 does, and then
   * waits, as PostgreSQL does for up to its authentication_timeout (60 s).
   */
  async function passwordAskingServer(): Promise<{ port: number; close(): void }> {
    const message = (code: number, body: Buffer) => {
      const head = Buffer.alloc(9);
      head.write('R', 0);
      head.writeInt32BE(body.length + 8, 1);
      head.writeInt32BE(code, 5);
      return Buffer.concat([head, body]);
    };
    return fakeServer((socket) => {
      let received = 0;
      socket.on('data', (data) => {
        // The startup message: AuthenticationSASL. The client's first SCRAM message: AuthenticationSASLContinue.
        if (received++ === 0) socket.write(message(10, Buffer.from('SCRAM-SHA-256\0\0')));
        else {
          const nonce = /r=([^,]+)/.exec(data.toString('latin1'))?.[1] ?? '';
          socket.write(message(11, Buffer.from(`r=${nonce}server,s=c2FsdA==,i=4096`)));
        }
      });
    });
  }

  /** A TCP server on a loopback port that runs `onConnection` for each client; closing it drops them all. */
  async function fakeServer(
    onConnection: (socket: Socket) => void,
  ): Promise<{ port: number; close(): void }> {
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
      onConnection(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      port: (server.address() as AddressInfo).port,
      close: () => {
        for (const s of sockets) s.destroy();
        server.close();
      },
    };
  }

  const serve = (url: string) =>
    runBroker(['serve'], { ...EPHEMERAL_PORT, DATABASE_URL: url, BROKER_KEY_ENCRYPTION_KEY: TEST_KEK });

  it('exits 1 naming DATABASE_URL, without its password, and why', async () => {
    const url = `postgres://broker:s3cret-pw@127.0.0.1:${await closedPort()}/oidc?sslmode=disable`;
    const run = serve(url);
    expect(await run.closed).toBe(1);
    const port = new URL(url).port;
    expect(run.stderr()).toBe(
      `error: DATABASE_URL postgres://broker:***@127.0.0.1:${port}/oidc?… cannot be opened: connect ECONNREFUSED 127.0.0.1:${port}\n`,
    );
    expect(run.stdout() + run.stderr()).not.toContain('s3cret-pw');
  });

  it('names a Unix-socket URL by its user, database and socket directory, never its password', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'broker-no-socket-'));
    try {
      const run = serve(`postgres://broker:s3cret-pw@/oidc?host=${dir}&password=s3cret-pw&sslmode=disable`);
      expect(await run.closed).toBe(1);
      expect(run.stderr()).toMatch(
        new RegExp(
          `^error: DATABASE_URL postgres://broker:\\*\\*\\*@/oidc\\?host=${dir}&… cannot be opened: connect ENOENT `,
        ),
      );
      expect(run.stdout() + run.stderr()).not.toContain('s3cret-pw');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names why when every address of its host name refuses, as localhost on ::1 and 127.0.0.1 does', async () => {
    // A container's /etc/hosts gives localhost both addresses; Node then fails with an AggregateError whose own
    // message is empty. Here a host name is made to resolve to both before the broker starts.
    const dir = mkdtempSync(join(tmpdir(), 'broker-dual-stack-'));
    const preload = join(dir, 'dual-stack.mjs');
    writeFileSync(
      preload,
      [
        "import dns from 'node:dns';",
        'const lookup = dns.lookup;',
        'dns.lookup = (host, options, callback) => {',
        "  if (host !== 'dual-stack.test') return lookup(host, options, callback);",
        "  const done = typeof options === 'function' ? options : callback;",
        "  const all = [{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }];",
        "  process.nextTick(() => (options?.all ? done(null, all) : done(null, '::1', 6)));",
        '};',
      ].join('\n'),
    );
    try {
      const port = await closedPort();
      const run = runBroker(['serve'], {
        ...EPHEMERAL_PORT,
        DATABASE_URL: `postgres://broker:s3cret-pw@dual-stack.test:${port}/oidc`,
        BROKER_KEY_ENCRYPTION_KEY: TEST_KEK,
        NODE_OPTIONS: `--import=${preload}`,
      });
      expect(await run.closed).toBe(1);
      expect(run.stderr()).toBe(
        `error: DATABASE_URL postgres://broker:***@dual-stack.test:${port}/oidc cannot be opened: ` +
          `connect ECONNREFUSED ::1:${port}; connect ECONNREFUSED 127.0.0.1:${port}\n`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /**
   * A server that takes the client's request for TLS, as PostgreSQL with ssl=on does, and presents `cert`, which
   * no CA the broker trusts has signed, as Amazon RDS's, Cloud SQL's or Supabase's certificates are.
   */
  function tlsServer(cert: TestCertificate): Promise<{ port: number; close(): void }> {
    return fakeServer((socket) =>
      socket.once('data', () => {
        socket.write('S');
        new TLSSocket(socket, { isServer: true, cert: cert.cert, key: cert.key }).on('error', () => {});
      }),
    );
  }

  it.each(['sslmode=require', 'sslmode=verify-full'])(
    'with %s and a certificate of a CA it was not given, exits saying to name the CA with sslrootcert',
    async (sslmode) => {
      const server = await tlsServer(selfSignedCertificate('db.internal', { ip: ['127.0.0.1'] }));
      try {
        const run = serve(`postgres://broker:s3cret-pw@127.0.0.1:${server.port}/oidc?${sslmode}`);
        expect(await run.closed).toBe(1);
        expect(run.stderr()).toContain(
          `error: DATABASE_URL postgres://broker:***@127.0.0.1:${server.port}/oidc?… cannot be opened: ` +
            "self-signed certificate: the server's TLS certificate is signed by no CA the broker trusts; " +
            'name that CA in DATABASE_URL with sslrootcert=/path/to/ca.pem',
        );
        expect(run.stdout() + run.stderr()).not.toContain('s3cret-pw');
      } finally {
        server.close();
      }
    },
  );

  it('exits rather than waiting on a server that asks for a password DATABASE_URL does not give', async () => {
    const server = await passwordAskingServer();
    try {
      const run = serve(`postgres://broker@127.0.0.1:${server.port}/oidc`);
      // At once: not once the server gives up on the client, nor never.
      const exited = await Promise.race([
        run.closed,
        new Promise((resolve) => setTimeout(resolve, 10_000, 'still running')),
      ]);
      run.child.kill('SIGKILL');
      expect(exited).toBe(1);
      expect(run.stderr()).toContain(
        `error: DATABASE_URL postgres://broker@127.0.0.1:${server.port}/oidc cannot be opened: `,
      );
    } finally {
      server.close();
    }
  });
});
