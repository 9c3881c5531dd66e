// The README's troubleshooting headings quote the step's errors: each must be the start of one the action writes.
import { readFile, stat } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import type { Problem } from '../../src/broker-client.js';
import { explain, explainCrash, type Failure } from '../../src/explain.js';
import { requestIdToken } from '../../src/id-token.js';
import { parseInputs } from '../../src/inputs.js';

const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
const actionSection = readme.slice(
  readme.indexOf('## The action'),
  readme.indexOf('\n## ', readme.indexOf('## The action') + 1),
);

const problem = (status: number, code: string, extensions: Record<string, unknown> = {}): Failure => ({
  kind: 'problem',
  url: 'https://broker.test/v1/oidc/token',
  status,
  problem: { code, detail: `${code} detail`, ...extensions } as Problem,
  attempts: 1,
});

/** The message a token request that does not answer in time fails with. */
async function idTokenTimeout(): Promise<string> {
  const error = await requestIdToken('aud', 10, {
    env: { ACTIONS_ID_TOKEN_REQUEST_URL: 'https://token.example/?v=1', ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'x' },
    fetch: (_url, init) =>
      new Promise((_resolve, reject) =>
        init.signal?.addEventListener('abort', () => reject(init.signal?.reason)),
      ),
    now: () => Date.now(),
    sleep: async () => {},
    io: { debug: () => {}, setSecret: () => {} },
  }).catch((e: Error) => e);
  return (error as Error).message;
}

/** One failure of every kind and broker code the action explains. */
async function everyFailure(): Promise<Failure[]> {
  const parsed = parseInputs((name) => (name === 'tenant' ? 'Acme' : ''));
  return [
    { kind: 'inputs', errors: parsed.ok ? [] : parsed.errors },
    { kind: 'no-id-token' },
    { kind: 'id-token', message: 'Error message: Failed to get ID Token.', retryable: true },
    { kind: 'id-token', message: await idTokenTimeout(), timedOut: true },
    { kind: 'id-token', message: 'Error message: self-signed', tlsCode: 'SELF_SIGNED_CERT_IN_CHAIN' },
    { kind: 'proxy', variable: 'HTTPS_PROXY', message: 'HTTPS_PROXY names a socks5: proxy' },
    {
      kind: 'tunnel',
      variable: 'HTTPS_PROXY',
      proxy: 'http://proxy.corp:3128',
      target: 'broker.example:443',
      status: 407,
      withCredentials: false,
    },
    {
      kind: 'proxy-unreachable',
      variable: 'HTTPS_PROXY',
      proxy: 'http://proxy.corp:3128',
      target: 'broker.example:443',
      code: 'ECONNREFUSED',
      message: 'connect ECONNREFUSED',
      tls: false,
    },
    {
      kind: 'network',
      url: 'https://b/v1/oidc/token',
      code: 'ENOTFOUND',
      message: 'x',
      tls: false,
      timedOut: false,
    },
    {
      kind: 'network',
      url: 'https://b/v1/oidc/token',
      code: 'CERT_HAS_EXPIRED',
      message: 'x',
      tls: true,
      timedOut: false,
    },
    { kind: 'unexpected', url: 'https://b/v1/oidc/token', status: 404, contentType: 'text/html' },
    problem(401, 'audience_mismatch', { audience: 'a', expected_audience: 'b' }),
    problem(401, 'audience_mismatch'),
    problem(403, 'no_matching_policy', { claims: {} }),
    problem(403, 'permission_not_allowed', { not_allowed: ['api-keys:write'], claims: {} }),
    problem(409, 'ambiguous_policy', { policies: ['a', 'b'] }),
    problem(401, 'token_replayed'),
    problem(429, 'rate_limited'),
    problem(401, 'invalid_token'),
    problem(503, 'issuer_unavailable'),
    problem(503, 'not_ready'),
    problem(400, 'invalid_request', { errors: [{ field: 'permissions[0]', message: 'unknown' }] }),
    problem(400, 'invalid_request'),
  ];
}

/** The quoted messages of the `#### "…"` headings: `…` stands for any text, backticks are Markdown only. */
function quotedHeadings(): string[] {
  return actionSection
    .split('\n')
    .filter((line) => line.startsWith('#### "'))
    .flatMap((line) => [...line.matchAll(/"([^"]+)"/g)].map((m) => m[1]!.replace(/`/g, '')));
}

describe('README troubleshooting', () => {
  it('quotes, in each heading, the start of an error the action writes', async () => {
    const parsed = parseInputs((name) => (name === 'tenant' ? 'acme' : ''));
    const inputs = parsed.ok ? parsed.inputs : undefined;
    const titles = [
      ...(await everyFailure()).map((failure) => explain(failure, inputs)),
      explainCrash(
        new Error('Missing file at path: /home/runner/work/_temp/_runner_file_commands/set_output_1'),
      ),
    ].map((explanation) => explanation.title.replace(/`/g, ''));
    const headings = quotedHeadings();
    expect(headings.length).toBeGreaterThan(15);
    for (const heading of headings) {
      const pattern = new RegExp(
        `^${heading
          .split('…')
          .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
          .join('.+')}`,
      );
      expect(
        titles.some((title) => pattern.test(title)),
        `no error starts as the heading "${heading}"`,
      ).toBe(true);
    }
  });
});

describe('README bundle sizes', () => {
  it("gives today's sizes of dist/main and dist/post, to the nearest KB or two", async () => {
    const today = /`dist\/main` (\d+) KB, `dist\/post` (\d+) KB today/.exec(readme);
    expect(today, 'the README says how large the bundles are today').not.toBeNull();
    for (const [index, entry] of ['main', 'post'].entries()) {
      const { size } = await stat(new URL(`../../dist/${entry}/index.js`, import.meta.url));
      const documented = Number(today![index + 1]);
      expect(
        Math.abs(documented - size / 1000),
        `dist/${entry} is ${Math.round(size / 1000)} KB, the README says ${documented} KB`,
      ).toBeLessThanOrEqual(2);
    }
  });
});
