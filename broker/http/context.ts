// What every route handler shares: the Hono environment, the validation hook and the JSON error path.
import type { Hook } from '@hono/zod-openapi';
import type { z } from 'zod';
import type { Principal } from '../core/principal.js';
import { BrokerError, type ErrorCode, type FieldError } from '../errors.js';
import type { Logger } from '../logger.js';

export interface BrokerEnv {
  Variables: {
    requestId: string;
    log: Logger;
    principal: Principal;
    /** The code of the problem the request was answered with, for its log line. */
    problemCode?: ErrorCode;
  };
}

export const UNKNOWN_FIELD = 'unknown field';

/**
 * A member name that, written bare, would vanish from the path or blur into it: empty, white space at an end, a
 * character that does not print (a control or format character, say a zero-width space, or a line or paragraph
 * separator, which breaks the line as a newline does), or the `.`, `[`, `]` or `"` a path is written with.
 */
const UNSEEN_NAME = /^$|^\s|\s$|[\p{C}\p{Zl}\p{Zp}.[\]"]/u;

/**
 * A name in JSON's quotes, with what does not print written as a JSON escape (`"\u200B"`). Its hex digits are
 * upper-case: the `e` that ends a lower-case `\u001e`, with the name's `yJ…` after it, would read as a token's start
 * to what hides secrets in the answer.
 */
const quoted = (name: string): string =>
  `"${name.replace(/["\\]|[\p{C}\p{Zl}\p{Zp}]/gu, (c) =>
    c === '"' || c === '\\'
      ? `\\${c}`
      : [...Array(c.length).keys()]
          .map((i) => `\\u${c.charCodeAt(i).toString(16).toUpperCase().padStart(4, '0')}`)
          .join(''),
  )}"`;

/**
 * `['permissions', 1, 'x']` → `permissions[1].x`. A name that would not show written bare (a stray `&=x` in a form,
 * `{"": 1}`), or would read as a path (`{"claims.repository": …}`), is quoted: `""`, `claims[" "]`,
 * `"claims.repository"`, not `: unknown field` or the path of a field the route has.
 */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    const name = String(part);
    if (typeof part === 'number') out += `[${part}]`;
    else if (UNSEEN_NAME.test(name)) out += out ? `[${quoted(name)}]` : quoted(name);
    else out += out ? `.${name}` : name;
  }
  return out;
}

/** Whether a message is the validator's own (`Too big: expected string to have <=64 characters`), not a schema's. */
const VALIDATOR_MESSAGE = /^(Too big|Too small|Invalid option|Invalid input): /;

/** The values a field takes, as the API's messages list them: the validator's `"a"|"b"` reads as code. */
const listed = (values: readonly unknown[]) => values.map((v) => String(v)).join(', ');

/**
 * An issue's message in the words of the API's own messages: a schema's message as it is; the validator's, which
 * speaks of `<=64 items` and `expected int`, as the limit or the values the field takes.
 */
function inWords(issue: z.core.$ZodIssue): string {
  if (!VALIDATOR_MESSAGE.test(issue.message)) return issue.message;
  switch (issue.code) {
    case 'too_big':
    case 'too_small': {
      const big = issue.code === 'too_big';
      const limit = Number(big ? issue.maximum : issue.minimum);
      const unit = issue.origin === 'array' ? ' entries' : issue.origin === 'string' ? ' characters' : '';
      if (!big && limit === 1 && unit !== '' && !issue.exact) return 'must not be empty';
      const bound = issue.exact
        ? 'exactly'
        : issue.inclusive === false
          ? big
            ? 'fewer than'
            : 'more than'
          : big
            ? 'at most'
            : 'at least';
      return `must ${unit ? 'have' : 'be'} ${bound} ${limit}${unit}`;
    }
    case 'invalid_value':
      return issue.values.length === 1
        ? `must be ${listed(issue.values)}`
        : `must be one of ${listed(issue.values)}`;
    case 'invalid_type':
      if (issue.expected === 'int') return 'must be a whole number';
      // Not told to quote it: quoted, most numbers would be refused all the same (a ref, an issuer, a token). The
      // fields a number may be (text.ts, quotableString) say so themselves.
      if (issue.expected === 'string' && /received number$/.test(issue.message)) return 'must be a string';
      break;
  }
  return issue.message.replace(/^Invalid input: /, '');
}

export function fieldErrors(error: z.ZodError): FieldError[] {
  // A value can break several checks that say the same (a huge number: a safe integer, and the field's maximum).
  const seen = new Set<string>();
  return error.issues.flatMap((issue): FieldError[] => {
    if (issue.code === 'unrecognized_keys') {
      // Zod's own message names the keys, which the field does here; a schema's own says what to do instead.
      const message = issue.message.startsWith('Unrecognized key') ? UNKNOWN_FIELD : issue.message;
      return issue.keys.map((key) => ({ field: fieldPath([...issue.path, key]), message }));
    }
    const field = fieldPath(issue.path) || 'body';
    const missing = issue.code === 'invalid_type' && /received undefined/.test(issue.message);
    const message = missing ? 'required' : inWords(issue);
    const said = JSON.stringify([field, message]);
    if (seen.has(said)) return [];
    seen.add(said);
    return [{ field, message }];
  });
}

/**
 * What a failed validation reports, field by field. A query or form parameter sent more than once (which RFC 6749
 * §3.1 forbids for OAuth's) reaches the schema as a list of its values: it is told that, rather than whatever its
 * type or values break.
 */
export function requestFieldErrors(result: {
  error: z.ZodError;
  target: string;
  data?: unknown;
}): FieldError[] {
  const errors = fieldErrors(result.error);
  const data = result.data;
  if ((result.target !== 'form' && result.target !== 'query') || typeof data !== 'object' || data === null)
    return errors;
  const repeated = new Set(
    Object.keys(data).filter((key) => Array.isArray((data as Record<string, unknown>)[key])),
  );
  if (repeated.size === 0) return errors;
  // One not taken at all is told that, however often it was sent.
  const unknown = new Set(
    result.error.issues.flatMap((issue) => (issue.code === 'unrecognized_keys' ? issue.keys : [])),
  );
  return errors.map((e) =>
    repeated.has(e.field) && !unknown.has(e.field)
      ? { field: e.field, message: 'sent more than once: send each parameter once' }
      : e,
  );
}

// A `%` without two hex digits escapes nothing: a form's parser and Hono's query reader keep it as itself.
const LONE_PERCENT = /%(?![0-9A-Fa-f]{2})/g;

/** A query's name or value decoded; undefined when its escapes are not UTF-8 (a lone surrogate's bytes are not). */
function decoded(text: string): string | undefined {
  try {
    return decodeURIComponent(text.replace(LONE_PERCENT, '%25').replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

/**
 * The query parameters of `url` whose percent escapes are not UTF-8 (a Latin-1 `?name=Stra%DFe`), which Hono's
 * reader keeps as the escapes' own text: a name nobody sent, and one that `?name=Stra%25DFe` names.
 */
function undecodableParameters(url: string): FieldError[] {
  const query = url.split('#', 1)[0]!.split('?').slice(1).join('?');
  const errors: FieldError[] = [];
  for (const pair of query.split('&')) {
    if (!pair.includes('%')) continue;
    const [name = '', ...value] = pair.split('=');
    const field = decoded(name);
    if (field !== undefined && decoded(value.join('=')) !== undefined) continue;
    errors.push({
      field: field ?? name,
      message:
        'is not percent-encoded UTF-8: percent-encode the UTF-8 bytes of each character (ß is %C3%9F, not %DF)',
    });
  }
  return errors;
}

/**
 * Route validation failures become one 400 (or 422 for policies) naming every field. A query parameter whose
 * escapes are not UTF-8 is refused whether or not its schema would take the text Hono made of it.
 */
export function validationHook(
  code: 'invalid_request' | 'invalid_policy' = 'invalid_request',
): Hook<unknown, BrokerEnv, string, undefined> {
  return (result, c) => {
    if (result.target === 'query') {
      const undecodable = undecodableParameters(c.req.url);
      if (undecodable.length > 0) throw BrokerError.fields('invalid_request', undecodable);
    }
    if (result.success) return undefined;
    const isBody = result.target === 'json' || result.target === 'form';
    throw BrokerError.fields(isBody ? code : 'invalid_request', requestFieldErrors(result));
  };
}
