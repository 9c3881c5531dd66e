// Entity tags of trust policies and the conditions requests put on them (RFC 9110 §8.8.3, §13.1.1, §13.1.2).
import { createHash } from 'node:crypto';
import { z } from '@hono/zod-openapi';
import { BrokerError } from '../errors.js';
import type { Precondition } from '../store/store.js';

interface EntityTag {
  weak: boolean;
  opaque: string;
}

/** `*`, or the entity tags listed; what `If-Match` and `If-None-Match` hold. */
type Condition = '*' | EntityTag[];

/**
 * The strong tag of a policy as stored: its id and the time of its last change, which every change moves forward
 * (and a replace that changes nothing leaves), hashed so that no client reads a meaning into it.
 */
export function policyEtag(policy: { id: string; updatedAt: number }): string {
  const digest = createHash('sha256').update(`${policy.id}\n${policy.updatedAt}`).digest('base64url');
  return `"${digest.slice(0, 27)}"`;
}

// One element of a list of entity tags (`W/"…"` or `"…"`); an opaque tag may hold a comma, but no quote.
const ELEMENT = /[ \t]*(?:(W\/)?"([\x21\x23-\x7E\x80-\xFF]*)")?[ \t]*(,|$)/y;

/** The tags a condition lists; undefined when it is no list of entity tags, or lists none. */
function parseCondition(value: string): Condition | undefined {
  if (value.trim() === '*') return '*';
  const tags: EntityTag[] = [];
  let at = 0;
  while (at < value.length) {
    ELEMENT.lastIndex = at;
    const element = ELEMENT.exec(value);
    if (!element || ELEMENT.lastIndex === at) return undefined;
    if (element[2] !== undefined) tags.push({ weak: element[1] !== undefined, opaque: element[2] });
    at = ELEMENT.lastIndex;
  }
  return tags.length > 0 ? tags : undefined;
}

function conditionOf(header: 'If-Match' | 'If-None-Match', value: string | undefined): Condition | undefined {
  if (value === undefined) return undefined;
  const condition = parseCondition(value);
  if (condition) return condition;
  throw BrokerError.fields('invalid_request', [
    {
      field: header,
      message:
        'must be * or entity tags as the ETag header gives them, quotes included ("…"), separated by commas',
    },
  ]);
}

/**
 * The precondition of an `If-Match` header, none without one. Its tags are compared strongly: a weak tag
 * (`W/"…"`) matches nothing; `*` matches the policy as long as it exists.
 */
export function ifMatch(
  value: string | undefined,
): Precondition<{ id: string; updatedAt: number }> | undefined {
  const condition = conditionOf('If-Match', value);
  if (condition === undefined) return undefined;
  if (condition === '*') return () => true;
  return (current) => {
    const etag = policyEtag(current).slice(1, -1);
    return condition.some((tag) => !tag.weak && tag.opaque === etag);
  };
}

/**
 * Whether an `If-Match` header lists weak tags only, which strong comparison matches with no state at all: what a
 * proxy that compresses answers on the way (nginx's gzip, Cloudflare) makes of the broker's strong ETags.
 */
export function onlyWeakTags(value: string | undefined): boolean {
  const condition = value === undefined ? undefined : parseCondition(value);
  return Array.isArray(condition) && condition.every((tag) => tag.weak);
}

/** Whether an `If-None-Match` header names the policy as it is (weak comparison: `W/"…"` counts), so a 304. */
export function notModified(value: string | undefined, current: { id: string; updatedAt: number }): boolean {
  const condition = conditionOf('If-None-Match', value);
  if (condition === undefined) return false;
  if (condition === '*') return true;
  const etag = policyEtag(current).slice(1, -1);
  return condition.some((tag) => tag.opaque === etag);
}

/** The request headers of a conditional write, and the ETag of the answers that name a policy's state. */
export const conditional = {
  ifMatch: z.object({
    'if-match': z
      .string()
      .optional()
      .openapi({
        description:
          'Change the policy only if it is still in the state this entity tag (the `ETag` of a read, create or ' +
          'replace) names, or any state for `*`: otherwise `412 precondition_failed` and nothing is written. Tags ' +
          'are compared strongly: a weak tag (`W/"…"`) matches nothing. Without it, the request is unconditional.',
        example: '"Xq3v2l6kZ0mB3aT9c8dE1fG7hJ5"',
      }),
  }),
  ifNoneMatch: z.object({
    'if-none-match': z.string().optional().openapi({
      description: 'The `ETag` of a copy the client holds: while the policy is still in that state, `304`.',
      example: '"Xq3v2l6kZ0mB3aT9c8dE1fG7hJ5"',
    }),
  }),
  etag: {
    ETag: z.string().openapi({
      description:
        "A strong entity tag of the policy's state, which every change of it replaces: send it back as " +
        '`If-Match` to change the policy only if nobody else did since.',
      example: '"Xq3v2l6kZ0mB3aT9c8dE1fG7hJ5"',
    }),
  },
};
