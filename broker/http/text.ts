// Client text as route schemas: names, name selectors and `{id}` path ids, checked before any store sees them.
import { type Hook, z } from '@hono/zod-openapi';
import { hasUnsafeNameCharacter, nameProblem, UNSAFE_NAME_CHARACTERS } from '../core/policy-rules.js';
import type { BrokerError } from '../errors.js';
import { type BrokerEnv, validationHook } from './context.js';

/** A name the client gives a resource: the rule trust-policy names follow too, so a 400 naming the field. */
export const Name = z
  .string()
  .superRefine((value, ctx) => {
    const problem = nameProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .openapi({
    minLength: 1,
    maxLength: 100,
    description:
      '1–100 characters, no leading or trailing white space, no control, line-separator, bidirectional-override ' +
      'or unpaired-surrogate characters.',
  });

/** For a string that selects a tenant or policy by name: one holding a character no name may hold names nothing. */
export const nameCharacters = z.refine<string>(
  (value: string) => !hasUnsafeNameCharacter(value),
  `must not contain ${UNSAFE_NAME_CHARACTERS}`,
);

/** Resource ids are UUIDs (randomUUID), stored in lower case; upper-case hex names the same id (RFC 9562). */
export const IdParam = z.object({ id: z.uuid().toLowerCase() });

/**
 * The hook of an `{id}` route: an id that is not a UUID names no resource, so it is answered with the route's own
 * 404, like an unknown id, and never reaches the store; other validation failures go to `otherwise`.
 */
export function unknownIdIsNotFound(
  notFound: (id: string) => BrokerError,
  otherwise: Hook<unknown, BrokerEnv, string, undefined> = validationHook(),
) {
  return <I, P extends string>(...[result, c]: Parameters<Hook<I, BrokerEnv, P, undefined>>): undefined => {
    if (!result.success && result.target === 'param') throw notFound(c.req.param('id') ?? '');
    return otherwise(result, c as Parameters<typeof otherwise>[1]);
  };
}
