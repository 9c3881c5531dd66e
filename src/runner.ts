// The runner's side of a step, by GitHub's documented protocols: inputs, masks, file commands, logs, summary.
import { accessSync, appendFileSync, closeSync, constants, existsSync, openSync, readSync } from 'node:fs';
import { EOL } from 'node:os';
import type { ActionIO } from './deps.js';
import { createStdoutWriter } from './stdout.js';

/** What the runner gives the step's process; `process.env`, stdout and `process.exitCode` in the bundle. */
export interface RunnerHost {
  /** The step's environment; exportVariable also sets the variable here, for the rest of this step. */
  env: Record<string, string | undefined>;
  /** Writes to stdout, where the runner reads workflow commands line by line. */
  write(text: string): void;
  setExitCode(code: number): void;
}

/** ActionIO as @actions/core implements it, without loading the toolkit. */
export function createRunnerIO(host: RunnerHost): ActionIO {
  const { env } = host;
  const command = (name: string, properties: Record<string, string>, message: string) =>
    host.write(`${formatCommand(name, properties, message)}${EOL}`);
  // Outside a runner that offers the file, fall back to the older stdout command, as the toolkit does.
  const fileOrCommand = (file: string, fallback: string, name: string, value: string) => {
    if (env[`GITHUB_${file}`]) fileCommand(env, file, keyValueMessage(name, value));
    else command(fallback, { name }, value);
  };
  return {
    getInput: (name) => (env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] || '').trim(),
    setSecret: (value) => command('add-mask', {}, value),
    setOutput(name, value) {
      if (!env.GITHUB_OUTPUT) host.write(EOL);
      fileOrCommand('OUTPUT', 'set-output', name, value);
    },
    exportVariable(name, value) {
      env[name] = value;
      fileOrCommand('ENV', 'set-env', name, value);
    },
    saveState: (name, value) => fileOrCommand('STATE', 'save-state', name, value),
    getState: (name) => env[`STATE_${name}`] || '',
    info: (message) => host.write(`${plainLine(message)}${EOL}`),
    debug: (message) => command('debug', {}, message),
    warning: (message) => command('warning', {}, message),
    setFailed(message) {
      host.setExitCode(1);
      command('error', {}, message);
    },
    async appendSummary(markdown) {
      const file = env.GITHUB_STEP_SUMMARY;
      if (!file) {
        throw new Error(
          'Unable to find environment variable for $GITHUB_STEP_SUMMARY. Check if your runtime environment ' +
            'supports job summaries.',
        );
      }
      // Synchronous like the other file commands: node:fs is loaded already, node:fs/promises would cost a load.
      try {
        accessSync(file, constants.R_OK | constants.W_OK);
      } catch {
        throw new Error(
          `Unable to access summary file: '${file}'. Check if the file has correct read/write permissions.`,
        );
      }
      appendFileSync(file, markdown, { encoding: 'utf8' });
    },
  };
}

/**
 * The message as one line of log text that the runner cannot read as a workflow command, whatever it holds
 * (messages quote the broker's answers): line breaks and other control characters are shown escaped, a `::`
 * that would start the line becomes `\::`, and `##[`, which starts the older command form anywhere in a line,
 * becomes `##\[`. So no answer can stop the runner's commands and have later masks ignored, or fake a warning.
 */
function plainLine(message: string): string {
  return message
    .replace(/[\p{Cc}\u2028\u2029]/gu, (c) => CONTROL_ESCAPES[c] ?? unicodeEscape(c))
    .replace(/^(\s*):(?=:)/, '$1\\:')
    .replace(/##\[/g, '##\\[');
}

const CONTROL_ESCAPES: Record<string, string> = { '\t': '\t', '\n': '\\n', '\r': '\\r' };

function unicodeEscape(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

/** `::name key=value,key=value::message`, escaped so a value cannot end the line or start another command. */
function formatCommand(name: string, properties: Record<string, string>, message: string): string {
  const props = Object.entries(properties)
    .filter(([, value]) => value)
    .map(([key, value]) => `${key}=${escapeProperty(value)}`)
    .join(',');
  return `::${name}${props ? ` ${props}` : ''}::${escapeData(message)}`;
}

function escapeData(value: string): string {
  return value.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

function escapeProperty(value: string): string {
  return escapeData(value).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

/**
 * `name<<delimiter`, the value, `delimiter`: a heredoc with a random delimiter, so a value cannot close the
 * block early and inject further names. A name or value that contains the delimiter is refused.
 */
export function keyValueMessage(name: string, value: string, uuid: () => string = randomUUID): string {
  const delimiter = `ghadelimiter_${uuid()}`;
  if (name.includes(delimiter)) {
    throw new Error(`Unexpected input: name should not contain the delimiter "${delimiter}"`);
  }
  if (value.includes(delimiter)) {
    throw new Error(`Unexpected input: value should not contain the delimiter "${delimiter}"`);
  }
  return `${name}<<${delimiter}${EOL}${value}${EOL}${delimiter}`;
}

function fileCommand(env: RunnerHost['env'], file: string, message: string): void {
  const path = env[`GITHUB_${file}`]!;
  // The runner creates the file before the step starts; a missing one means the path is wrong.
  if (!existsSync(path)) throw new Error(`Missing file at path: ${path}`);
  appendFileSync(path, `${message}${EOL}`, { encoding: 'utf8' });
}

/**
 * A version 4 UUID from the operating system's random source. Reading /dev/urandom (Linux and macOS runners)
 * spares loading node:crypto, a few milliseconds of every step; Windows uses the Web Crypto API.
 */
export function randomUUID(): string {
  const bytes = Buffer.alloc(16);
  try {
    const fd = openSync('/dev/urandom', 'r');
    try {
      if (readSync(fd, bytes, 0, 16, null) !== 16) return crypto.randomUUID();
    } finally {
      closeSync(fd);
    }
  } catch {
    return crypto.randomUUID();
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The IO of the step's own process: its environment, its stdout and its exit code. */
export function processRunnerIO(): ActionIO {
  return createRunnerIO({
    env: process.env,
    write: createStdoutWriter(() => process.stdout),
    setExitCode: (code) => {
      process.exitCode = code;
    },
  });
}
