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

/** `['permissions', 1, 'x']` → `permissions[1].x`. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
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
    const message = missing ? 'required' : issue.message.replace(/^Invalid input: /, '');
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

/** Route validation failures become one 400 (or 422 for policies) naming every field. */
export function validationHook(
  code: 'invalid_request' | 'invalid_policy' = 'invalid_request',
): Hook<unknown, BrokerEnv, string, undefined> {
  return (result) => {
    if (result.success) return undefined;
    const isBody = result.target === 'json' || result.target === 'form';
    throw BrokerError.fields(isBody ? code : 'invalid_request', requestFieldErrors(result));
  };
}
