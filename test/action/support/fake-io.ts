// An in-memory runner for the action's flows: records every core-like call, in order.
import type { ActionIO } from '../../../src/deps.js';

export interface Call {
  fn: keyof ActionIO;
  args: string[];
}

export interface FakeIO extends ActionIO {
  calls: Call[];
  outputs: Record<string, string>;
  secrets: string[];
  state: Record<string, string>;
  env: Record<string, string>;
  summary: string[];
  warnings: string[];
  failures: string[];
  logs: string[];
}

/** `inputs` as a workflow author writes them under `with:`; `state` as a main step left it for post. */
export function createFakeIO(inputs: Record<string, string>, state: Record<string, string> = {}): FakeIO {
  const io: FakeIO = {
    calls: [],
    outputs: {},
    secrets: [],
    state: { ...state },
    env: {},
    summary: [],
    warnings: [],
    failures: [],
    logs: [],
    getInput(name) {
      record('getInput', name);
      return inputs[name] ?? '';
    },
    setSecret(value) {
      record('setSecret', value);
      io.secrets.push(value);
    },
    setOutput(name, value) {
      record('setOutput', name, value);
      io.outputs[name] = value;
    },
    exportVariable(name, value) {
      record('exportVariable', name, value);
      io.env[name] = value;
    },
    saveState(name, value) {
      record('saveState', name, value);
      io.state[name] = value;
    },
    getState(name) {
      record('getState', name);
      return io.state[name] ?? '';
    },
    info(message) {
      record('info', message);
      io.logs.push(message);
    },
    debug(message) {
      record('debug', message);
      io.logs.push(message);
    },
    warning(message) {
      record('warning', message);
      io.warnings.push(message);
    },
    setFailed(message) {
      record('setFailed', message);
      io.failures.push(message);
    },
    async appendSummary(markdown) {
      record('appendSummary', markdown);
      io.summary.push(markdown);
    },
  };
  function record(fn: keyof ActionIO, ...args: string[]) {
    io.calls.push({ fn, args });
  }
  return io;
}

/** The calls, other than setSecret itself, whose arguments contain `secret`. */
export function callsRevealing(io: FakeIO, secret: string): Call[] {
  return io.calls.filter((c) => c.fn !== 'setSecret' && c.args.some((a) => a.includes(secret)));
}

/** The places a token is meant to reach in full: its mask, the outputs, the post step's state and the job's env. */
const HANDS_ON: ReadonlySet<keyof ActionIO> = new Set([
  'setSecret',
  'setOutput',
  'saveState',
  'exportVariable',
]);

/**
 * The calls that show part of `secret` (any 12 characters in a row of it), other than those that hand it on. The
 * runner masks only the whole value, so a prefix or suffix in a log line or the job summary is shown in clear.
 */
export function callsRevealingPart(io: FakeIO, secret: string, length = 12): Call[] {
  const parts = Array.from({ length: secret.length - length + 1 }, (_, i) => secret.slice(i, i + length));
  return io.calls.filter(
    (c) => !HANDS_ON.has(c.fn) && c.args.some((a) => parts.some((part) => a.includes(part))),
  );
}
