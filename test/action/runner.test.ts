// The runner protocols the bundle speaks: inputs, masks, file commands, escaped workflow commands, summary.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { EOL, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ActionIO } from '../../src/deps.js';
import { createRunnerIO, keyValueMessage, randomUUID } from '../../src/runner.js';
import { parseFileCommands, workflowCommands } from './support/runner-process.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let dir: string;
let env: Record<string, string | undefined>;
let stdout: string;
let exitCode: number | undefined;
let io: ActionIO;

const files = () => ({
  GITHUB_OUTPUT: join(dir, 'output'),
  GITHUB_STATE: join(dir, 'state'),
  GITHUB_ENV: join(dir, 'env'),
  GITHUB_STEP_SUMMARY: join(dir, 'summary'),
});
const read = (name: keyof ReturnType<typeof files>) => readFile(files()[name], 'utf8');

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oidc-auth-runner-io-'));
  await Promise.all(Object.values(files()).map((file) => writeFile(file, '')));
  env = { ...files() };
  stdout = '';
  exitCode = undefined;
  io = createRunnerIO({
    env,
    write: (text) => {
      stdout += text;
    },
    setExitCode: (code) => {
      exitCode = code;
    },
  });
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('inputs and state', () => {
  it('reads INPUT_<NAME> upper-cased with spaces as underscores, trimmed, empty when unset', () => {
    env['INPUT_API-URL'] = '  https://broker.example/v1 \n';
    env.INPUT_MY_INPUT = 'value';

    expect(io.getInput('api-url')).toBe('https://broker.example/v1');
    expect(io.getInput('my input')).toBe('value');
    expect(io.getInput('policy')).toBe('');
  });

  it('reads STATE_<name> as saved by the main step, empty when unset', () => {
    env['STATE_expires-at'] = '2025-06-01T12:15:00.000Z';

    expect(io.getState('expires-at')).toBe('2025-06-01T12:15:00.000Z');
    expect(io.getState('token')).toBe('');
  });
});

describe('file commands', () => {
  it('appends outputs, state and env as name<<ghadelimiter_<uuid> blocks the runner parses', async () => {
    io.setOutput('token', 'abc');
    io.setOutput('multi', 'line one\nline two');
    io.saveState('api-url', 'https://broker.example/v1');
    io.exportVariable('STEPSECURITY_API_TOKEN', 'abc');

    expect(parseFileCommands(await read('GITHUB_OUTPUT'))).toEqual({
      token: 'abc',
      multi: 'line one\nline two',
    });
    expect(parseFileCommands(await read('GITHUB_STATE'))).toEqual({ 'api-url': 'https://broker.example/v1' });
    expect(parseFileCommands(await read('GITHUB_ENV'))).toEqual({ STEPSECURITY_API_TOKEN: 'abc' });
    expect(env.STEPSECURITY_API_TOKEN).toBe('abc');
    expect(stdout).toBe('');

    const [head, value, end, rest] = (await read('GITHUB_STATE')).split(EOL);
    const delimiter = head!.slice('api-url<<'.length);
    expect(delimiter).toMatch(/^ghadelimiter_/);
    expect(delimiter.slice('ghadelimiter_'.length)).toMatch(UUID_V4);
    expect([value, end, rest]).toEqual(['https://broker.example/v1', delimiter, '']);
  });

  it('uses a fresh delimiter for every value', async () => {
    io.setOutput('a', '1');
    io.setOutput('b', '2');

    const delimiters = (await read('GITHUB_OUTPUT')).split(EOL).filter((line) => line.includes('<<'));
    expect(new Set(delimiters.map((line) => line.split('<<')[1])).size).toBe(2);
  });

  it('refuses a name or value that contains the delimiter, so a value cannot end its block early', () => {
    const uuid = () => '00000000-0000-4000-8000-000000000000';
    const delimiter = `ghadelimiter_${uuid()}`;

    expect(keyValueMessage('token', 'abc', uuid)).toBe(`token<<${delimiter}${EOL}abc${EOL}${delimiter}`);
    expect(() => keyValueMessage('token', `abc\n${delimiter}\nINJECTED<<x`, uuid)).toThrow(
      `Unexpected input: value should not contain the delimiter "${delimiter}"`,
    );
    expect(() => keyValueMessage(`x${delimiter}`, 'abc', uuid)).toThrow(
      `Unexpected input: name should not contain the delimiter "${delimiter}"`,
    );
  });

  it('fails when the runner named a file that does not exist', () => {
    env.GITHUB_OUTPUT = join(dir, 'missing');

    expect(() => io.setOutput('token', 'abc')).toThrow(`Missing file at path: ${join(dir, 'missing')}`);
  });

  it('falls back to the stdout commands, with escaped properties, when the runner offers no file', () => {
    env.GITHUB_OUTPUT = undefined;
    env.GITHUB_STATE = undefined;
    env.GITHUB_ENV = undefined;

    io.setOutput('a:b,c', 'x%y\nz');
    io.saveState('token', 'abc');
    io.exportVariable('NAME', 'v');

    expect(stdout).toBe(
      `${EOL}::set-output name=a%3Ab%2Cc::x%25y%0Az${EOL}::save-state name=token::abc${EOL}` +
        `::set-env name=NAME::v${EOL}`,
    );
  });
});

describe('workflow commands', () => {
  it('masks with ::add-mask::, escaping the value so it stays on one line', () => {
    io.setSecret('tok%en\r\nsecond');

    expect(stdout).toBe(`::add-mask::tok%25en%0D%0Asecond${EOL}`);
  });

  it('writes info as plain lines and debug, warning and error as escaped commands', () => {
    io.info('plain ::text:: 100%');
    io.debug('debug\nline');
    io.warning('Could not revoke: 50% done\r\nnext');

    expect(stdout.split(EOL)).toEqual([
      'plain ::text:: 100%',
      '::debug::debug%0Aline',
      '::warning::Could not revoke: 50%25 done%0D%0Anext',
      '',
    ]);
  });

  it('keeps info to one line of text that the runner cannot read as a command', () => {
    io.info('The broker answered 503 busy\n::stop-commands::pause; retrying');
    io.info('policy p\r::warning::injected\r\n##[add-mask]x');
    io.info('  ::error::starts like a command');
    io.info('tenant acme ##[stop-commands]x, a tab\tand \u001b[31mcolour\u2028');

    expect(stdout.split(EOL)).toEqual([
      'The broker answered 503 busy\\n::stop-commands::pause; retrying',
      'policy p\\r::warning::injected\\r\\n##\\[add-mask]x',
      '  \\::error::starts like a command',
      'tenant acme ##\\[stop-commands]x, a tab\tand \\u001b[31mcolour\\u2028',
      '',
    ]);
    expect(workflowCommands(stdout)).toEqual([]);
  });

  it('fails the step with an error annotation and exit code 1', () => {
    io.setFailed('The inputs are invalid.\n  - tenant');

    expect(stdout).toBe(`::error::The inputs are invalid.%0A  - tenant${EOL}`);
    expect(exitCode).toBe(1);
  });
});

describe('job summary', () => {
  it('appends Markdown to GITHUB_STEP_SUMMARY', async () => {
    await io.appendSummary('### First\n');
    await io.appendSummary('### Second\n');

    expect(await read('GITHUB_STEP_SUMMARY')).toBe('### First\n### Second\n');
  });

  it('rejects when the runner offers no summary file, or the file is missing', async () => {
    env.GITHUB_STEP_SUMMARY = undefined;
    await expect(io.appendSummary('x')).rejects.toThrow(
      'Unable to find environment variable for $GITHUB_STEP_SUMMARY.',
    );

    env.GITHUB_STEP_SUMMARY = join(dir, 'missing');
    await expect(io.appendSummary('x')).rejects.toThrow(
      `Unable to access summary file: '${join(dir, 'missing')}'`,
    );
  });
});

describe('randomUUID', () => {
  it('gives version 4 UUIDs, each different', () => {
    const ids = Array.from({ length: 50 }, () => randomUUID());

    for (const id of ids) expect(id).toMatch(UUID_V4);
    expect(new Set(ids).size).toBe(50);
  });
});
