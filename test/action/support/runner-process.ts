// Runs the bundled action (dist/) as the GitHub runner does: a node process per step, file commands, INPUT_* vars.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readActionYml } from './action-yml.js';

const ROOT = new URL('../../../', import.meta.url).pathname;

export interface StepResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  /** What the step wrote with GITHUB_OUTPUT, GITHUB_STATE and GITHUB_ENV, and to the job summary. */
  outputs: Record<string, string>;
  state: Record<string, string>;
  env: Record<string, string>;
  summary: string;
}

export interface ActionRunner {
  /** Runs one step with the action's declared defaults under the given inputs; post gets main's saved state. */
  run(step: 'main' | 'post', inputs: Record<string, string>): Promise<StepResult>;
  close(): Promise<void>;
}

export interface RunnerOptions {
  /** ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN; omit both to run like a job without `id-token: write`. */
  idToken?: { requestUrl: string; requestToken: string };
  /** The node binary; ACTION_NODE, else the one running the tests. */
  node?: string;
  /** More environment for every step, e.g. NODE_EXTRA_CA_CERTS as a runner's machine could set it. */
  env?: Record<string, string>;
}

export async function createActionRunner(options: RunnerOptions = {}): Promise<ActionRunner> {
  const dir = await mkdtemp(join(tmpdir(), 'oidc-auth-runner-'));
  const files = {
    GITHUB_OUTPUT: join(dir, 'output'),
    GITHUB_STATE: join(dir, 'state'),
    GITHUB_ENV: join(dir, 'env'),
    GITHUB_STEP_SUMMARY: join(dir, 'summary'),
  };
  const defaults = await actionDefaults();
  const node = options.node ?? process.env.ACTION_NODE ?? process.execPath;
  let savedState: Record<string, string> = {};

  return {
    async run(step, inputs) {
      await Promise.all(Object.values(files).map((file) => writeFile(file, '')));
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? '',
        HOME: dir,
        RUNNER_TEMP: dir,
        GITHUB_ACTIONS: 'true',
        ...files,
        ...options.env,
      };
      if (options.idToken) {
        env.ACTIONS_ID_TOKEN_REQUEST_URL = options.idToken.requestUrl;
        env.ACTIONS_ID_TOKEN_REQUEST_TOKEN = options.idToken.requestToken;
      }
      for (const [name, value] of Object.entries({ ...defaults, ...inputs })) {
        env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] = value;
      }
      if (step === 'post') {
        for (const [name, value] of Object.entries(savedState)) env[`STATE_${name}`] = value;
      }
      const { exitCode, stdout, stderr } = await spawnNode(node, join(ROOT, `dist/${step}/index.js`), env);
      const read = (file: string) => readFile(file, 'utf8');
      const result: StepResult = {
        exitCode,
        stdout,
        stderr,
        outputs: parseFileCommands(await read(files.GITHUB_OUTPUT)),
        state: parseFileCommands(await read(files.GITHUB_STATE)),
        env: parseFileCommands(await read(files.GITHUB_ENV)),
        summary: await read(files.GITHUB_STEP_SUMMARY),
      };
      if (step === 'main') savedState = result.state;
      return result;
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

function spawnNode(node: string, script: string, env: Record<string, string>) {
  return new Promise<{ exitCode: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    // Asynchronous on purpose: the fake endpoints the step calls live in this process.
    const child = spawn(node, [script], { env, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (exitCode) => resolve({ exitCode, stdout, stderr }));
  });
}

/** Parses the `name<<DELIMITER` blocks a step appends to GITHUB_OUTPUT, GITHUB_STATE and GITHUB_ENV. */
export function parseFileCommands(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const match = /^([^<]+)<<(.+)$/.exec(lines[i]!);
    if (!match) continue;
    const [, name, delimiter] = match;
    const end = lines.indexOf(delimiter!, i + 1);
    values[name!] = lines.slice(i + 1, end).join('\n');
    i = end;
  }
  return values;
}

/** The inputs action.yml gives a default, as the runner passes them to every step. */
async function actionDefaults(): Promise<Record<string, string>> {
  const { inputs } = await readActionYml(join(ROOT, 'action.yml'));
  return Object.fromEntries(
    Object.entries(inputs).flatMap(([name, input]) =>
      input.default === undefined ? [] : [[name, input.default]],
    ),
  );
}

/**
 * The names of the workflow commands the runner reads from a step's stdout, in order, by its parsing rules: a
 * line that starts with `::name …::` after leading white space, or else one that holds `##[name …]` anywhere
 * (the older form, still honoured). The runner splits stdout into lines at CR, LF and CRLF.
 */
export function workflowCommands(stdout: string): string[] {
  const names: string[] = [];
  for (const line of stdout.split(/\r\n|\r|\n/)) {
    const command = /^\s*::(.*?)::/.exec(line) ?? /##\[(.*?)\]/.exec(line);
    if (command) names.push(command[1]!.split(' ')[0]!);
  }
  return names;
}
