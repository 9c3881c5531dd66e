// Entity tags of trust policies and the conditions requests put on them (RFC 9110 §8.8.3, §13.1.1, §13.1.2).
import { createHash } from 'node:crypto';
import { z } from '@hono/zod-openapi';
import { BrokerError } from '../errors.js';

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
 * Whether an `If-None-Match` header names this strong `etag` (weak comparison: `W/"…"` counts), or is `*`; a header
 * that is no list of entity tags names nothing, so the answer is sent whole.
 */
export function noneMatchNames(value: string | undefined, etag: string): boolean {
  const condition = value === undefined ? undefined : parseCondition(value);
  return condition === '*' || (condition?.some((tag) => `"${tag.opaque}"` === etag) ?? false);
}

/** The header whose condition a policy's state fails. */
export type FailedCondition = 'If-Match' | 'If-None-Match';

/**
 * The conditions a request puts on a policy, parsed now (a header that is no list of entity tags is 400 naming it)
 * and judged later on the policy as it is; undefined without either header. The judgement names the first condition
 * that fails, in RFC 9110 §13.2.2's order: `If-Match` (strong comparison: a weak tag matches nothing; `*`, any
 * state), then `If-None-Match` (weak comparison: `W/"…"` counts; `*`, any state at all).
 */
export function conditionsOf(headers: {
  ifMatch: string | undefined;
  ifNoneMatch: string | undefined;
}): ((current: { id: string; updatedAt: number }) => FailedCondition | undefined) | undefined {
  const match = conditionOf('If-Match', headers.ifMatch);
  const noneMatch = conditionOf('If-None-Match', headers.ifNoneMatch);
  if (match === undefined && noneMatch === undefined) return undefined;
  return (current) => {
    const etag = policyEtag(current).slice(1, -1);
    if (match !== undefined && match !== '*' && !match.some((tag) => !tag.weak && tag.opaque === etag))
      return 'If-Match';
    if (noneMatch === '*' || noneMatch?.some((tag) => tag.opaque === etag)) return 'If-None-Match';
    return undefined;
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

const TAG_EXAMPLE = '"Xq3v2l6kZ0mB3aT9c8dE1fG7hJ5"';
const header = (description: string) => z.string().optional().openapi({ description, example: TAG_EXAMPLE });

/** The request headers of a conditional read or write, and the ETag of the answers that name a policy's state. */
export const conditional = {
  read: z.object({
    'if-match': header(
      'Answer only if the policy is still in the state this entity tag (the `ETag` of a read, create or replace) ' +
        'names, or any state for `*`: otherwise `412 precondition_failed`, a cheap check that a copy is current. ' +
        'Tags are compared strongly: a weak tag (`W/"…"`) matches nothing. Judged before `If-None-Match`.',
    ),
    'if-none-match': header(
      'The `ETag` of a copy the client holds (weak comparison: `W/"…"` counts), or `*`: while the policy is in a ' +
        'state it names, `304`.',
    ),
  }),
  write: z.object({
    'if-match': header(
      'Change the policy only if it is still in the state this entity tag (the `ETag` of a read, create or ' +
        'replace) names, or any state for `*`: otherwise `412 precondition_failed` and nothing is written. Tags ' +
        'are compared strongly: a weak tag (`W/"…"`) matches nothing. Without it, the request is unconditional.',
    ),
    'if-none-match': header(
      'Change the policy only if it is in none of the states these entity tags name (weak comparison: `W/"…"` ' +
        'counts), or, for `*`, only if it does not exist: otherwise `412 precondition_failed` and nothing is ' +
        'written. Judged after `If-Match`, in the same transaction as the change.',
    ),
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
