// Client text as route schemas: stored text, names, selectors and `{id}` path ids, checked before storage.
import { type Hook, z } from '@hono/zod-openapi';
import { storedSecretProblem } from '../core/keys.js';
import { hasUnsafeNameCharacter, UNSAFE_NAME_CHARACTERS } from '../core/name-characters.js';
import { nameProblem } from '../core/policy-rules.js';
import type { BrokerError } from '../errors.js';
import { type BrokerEnv, validationHook } from './context.js';

/** What a stored text field's OpenAPI entry says. */
interface TextDoc {
  description?: string;
  example?: string;
  default?: string;
  minLength?: number;
  maxLength?: number;
}

const NO_SECRETS = 'A value holding an API key or a token is refused: secrets are never stored.';

/**
 * A string field a number may well be (an id, a name): a JSON number there, as GitHub's REST API gives a
 * repository_id, is told to be quoted. Other string fields tell a number only that it must be a string.
 */
export function quotableString() {
  return z.string({
    error: (issue) =>
      issue.code === 'invalid_type' && typeof issue.input === 'number'
        ? 'must be a string: write the number in quotes'
        : undefined,
  });
}

/**
 * Text the broker stores and shows back (a name, a description, a claim value): a value holding an API key or a
 * token is refused naming `field`, as any other broken rule of the body is; then `rule`, the field's own, if any.
 * A route's validation hook makes the refusal its usual 400 or 422, and its OpenAPI entry says so. With
 * `quotable`, a number is a value the field may hold (quotableString).
 */
export function storedText(
  field: string,
  { quotable, ...doc }: TextDoc & { quotable?: boolean } = {},
  rule?: (value: string) => string | null,
) {
  return (quotable ? quotableString() : z.string())
    .superRefine((value, ctx) => {
      const problem = storedSecretProblem(field, value) ?? rule?.(value);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .openapi({ ...doc, description: doc.description ? `${doc.description} ${NO_SECRETS}` : NO_SECRETS });
}

/** A name the client gives a resource: the rule trust-policy names follow too, so a 400 naming the field. */
export const Name = storedText(
  'name',
  {
    quotable: true,
    minLength: 1,
    maxLength: 100,
    description:
      '1–100 characters, no leading or trailing white space, no control, line-separator, bidirectional-override ' +
      'or unpaired-surrogate characters.',
  },
  nameProblem,
);

/** For a string that selects a tenant or policy by name: one holding a character no name may hold names nothing. */
export const nameCharacters = z.refine<string>(
  (value: string) => !hasUnsafeNameCharacter(value),
  `must not contain ${UNSAFE_NAME_CHARACTERS}`,
);

// The lifetime and the policy an exchange asks for, and its dry run too: the same mistake is told the same way on
// both. Each says what it takes, as the admin API's fields do, rather than zod's "Too big: expected number to be <=3600".
export const Duration = z
  .number({ error: 'must be a whole number of seconds from 1 to 3600' })
  .int()
  .min(1)
  .max(3600);
export const PolicyName = quotableString()
  .min(1, { error: 'empty: name a trust policy, or leave policy out' })
  .max(100, { error: 'a trust policy name is at most 100 characters' })
  .check(nameCharacters);

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
