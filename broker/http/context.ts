// What every route handler shares: the Hono environment, the validation hook and the JSON error path.
import type { Hook } from '@hono/zod-openapi';
import type { z } from 'zod';
import type { Principal } from '../core/principal.js';
import { BrokerError, type FieldError } from '../errors.js';
import type { Logger } from '../logger.js';

export interface BrokerEnv {
  Variables: {
    requestId: string;
    log: Logger;
    principal: Principal;
  };
}

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
      return issue.keys.map((key) => ({ field: fieldPath([...issue.path, key]), message: 'unknown field' }));
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

/** Route validation failures become one 400 (or 422 for policies) naming every field. */
export function validationHook(
  code: 'invalid_request' | 'invalid_policy' = 'invalid_request',
): Hook<unknown, BrokerEnv, string, undefined> {
  return (result) => {
    if (result.success) return undefined;
    const isBody = result.target === 'json' || result.target === 'form';
    throw BrokerError.fields(isBody ? code : 'invalid_request', fieldErrors(result.error));
  };
}
