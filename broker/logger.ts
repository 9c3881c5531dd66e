// Structured JSON logs, one object a line. Callers pass fields, never raw keys or tokens.
import { messageOf } from './errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LineSink {
  write(line: string): unknown;
}

/**
 * What JSON leaves raw in a string that breaks or disguises a line where logs are read: the C1 controls (NEL ends a
 * line for some readers), the line and paragraph separators, and the bidirectional controls (a terminal shows the
 * text after an override reversed). Text a client or an issuer sent reaches some fields.
 */
const DISGUISING = /[\u0080-\u009F\u061C\u200E\u200F\u2028\u2029\u202A-\u202E\u2066-\u2069]/g;

/** A JSON text with those characters written as the escapes that mean them, so its value is the same. */
const disguisingEscaped = (json: string): string =>
  json.replace(DISGUISING, (c) => `\\u${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`);

export function createLogger(sink: LineSink, level: LogLevel, base: LogFields = {}, now = Date.now): Logger {
  const min = RANK[level];
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (RANK[lvl] < min) return;
    const line = {
      time: new Date(now()).toISOString(),
      level: lvl,
      msg,
      ...base,
      ...(fields && plain(fields)),
    };
    sink.write(`${disguisingEscaped(JSON.stringify(line))}\n`);
  };
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (fields) => createLogger(sink, level, { ...base, ...fields }, now),
  };
}

/**
 * Errors among the fields serialise as their class and message. Mapped here rather than with a JSON.stringify
 * replacer, which would run a function for every key of every line.
 */
function plain(fields: LogFields): LogFields {
  for (const key in fields) {
    const value = fields[key];
    if (value instanceof Error) return { ...fields, [key]: { type: value.name, message: messageOf(value) } };
  }
  return fields;
}

/**
 * Gathers lines and writes them once per turn of the event loop: one system call for many requests instead of
 * one each. `flush()` writes what is pending at once (on shutdown).
 */
export function bufferedSink(out: LineSink): LineSink & { flush(): void } {
  let pending: string[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const text = pending.join('');
    pending = [];
    out.write(text);
  };
  return {
    write(line) {
      pending.push(line);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    flush,
  };
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};
