// Response and shared schemas, written once and referenced by every route's OpenAPI entry.
import { z } from '@hono/zod-openapi';
import { ACCESS_TOKEN_TYPE } from '../core/access-tokens.js';
import { ALL_PERMISSIONS, SHORTCUTS } from '../core/permissions.js';
import { BrokerError } from '../errors.js';

export const Problem = z
  .looseObject({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string().openapi({ example: 'invalid_request' }),
    request_id: z.string(),
    errors: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
    error: z.string().optional().openapi({
      description:
        'On the OAuth endpoints (token, introspection, revocation): the RFC 6749 §5.2 error of a 4xx refusal but 429.',
      example: 'invalid_request',
    }),
    error_description: z
      .string()
      .optional()
      .openapi({ description: 'With `error`: `detail`, in the characters RFC 6749 allows.' }),
  })
  .openapi('Problem', { description: 'RFC 9457 problem details with a stable snake_case code.' });

export const PermissionId = z.enum(ALL_PERMISSIONS as [string, ...string[]]).openapi('PermissionId');

/**
 * A permission id or shortcut, as a request names one. Documented as the closed list it is, but checked by the
 * broker, whose message names the offending entry and, for a category the tenant disabled, says so.
 */
const REQUESTABLE: string[] = [...ALL_PERMISSIONS, ...SHORTCUTS];
export const RequestedPermission = z
  // A number, or any other JSON value, is no permission id: not told to be quoted, as it is in a field of ids.
  .string({
    error: (issue) =>
      issue.input === undefined
        ? undefined
        : 'must be a permission id, a string such as harden-runner:read (GET /v1/permissions lists them)',
  })
  .max(64, 'unknown permission: no id is that long (GET /v1/permissions lists the valid ids)')
  .openapi('RequestedPermission', { enum: REQUESTABLE });

/** The same as an OAuth `scope`: requested permissions separated by spaces (none, when empty). */
export const SCOPE_PATTERN = `^ *(?:(?:${REQUESTABLE.join('|')})(?: +|$))*$`;

/** More entries than a list needs: each id once, or a shortcut, is far fewer. */
const MAX_LISTED_PERMISSIONS = 64;

export const PermissionList = z
  .array(RequestedPermission)
  .max(MAX_LISTED_PERMISSIONS, {
    error: `must have at most ${MAX_LISTED_PERMISSIONS} entries: list each of the ${ALL_PERMISSIONS.length} permission ids once at most, or use read-all or read-write-all`,
  })
  .openapi({
    description: 'Permission ids (`harden-runner:read`, …) or the shortcuts `read-all` / `read-write-all`.',
    example: ['harden-runner:read'],
  });

/**
 * A route's query parameters. One it does not declare is refused by name, listing those it takes: a misspelt filter
 * (`?types=`) would otherwise list everything, as if it had matched.
 */
export function queryParameters<T extends z.ZodRawShape>(shape: T) {
  const names = Object.keys(shape);
  const takes = `unknown query parameter; this operation takes ${names.length > 0 ? names.join(', ') : 'none'}`;
  return z.strictObject(shape, {
    error: (issue) => (issue.code === 'unrecognized_keys' ? takes : undefined),
  });
}

/** A query parameter as a URL template leaves it: an empty one (`?type=&cursor=`) is an absent one. */
export const queryParameter = <T extends z.ZodType>(schema: T) =>
  z.preprocess((value) => (value === '' ? undefined : value), schema);

/** Said of a `?cursor=` that no page of the endpoint returned. */
export const NOT_A_CURSOR =
  'not a cursor this endpoint returned; pass back the next_cursor of the previous page';

/** A `?cursor=` refused, naming the parameter: made up, mangled, or of another tenant. */
export const cursorRefused = (message: string) =>
  BrokerError.fields('invalid_request', [{ field: 'cursor', message }]);

/**
 * `?cursor=`: the `next_cursor` of the previous page, as returned. The places cursors hold are a few hundred
 * characters at most (a policy's name key, 100 characters that case folding may triple): their cursors, far less
 * than this.
 */
export const cursorParameter = (description: string) =>
  queryParameter(z.string().max(2048, { error: NOT_A_CURSOR }).optional().openapi({ description }));

/** Text in a cursor's place: NUL, which PostgreSQL text cannot hold, and a lone surrogate are in no key or id. */
export const placeText = (value: unknown): value is string =>
  typeof value === 'string' && !/[\0\p{Cs}]/u.test(value);

/**
 * The cursors of a listing paged by place: a cursor names the tenant and the sort key of the item the page ended
 * with, and the next page is the items filed after that place, the same whether or not an item still holds it
 * (deleted or renamed meanwhile), so that a page never skips or repeats an item that stays. The tenant is in it so
 * that a cursor of another tenant's `listing` (a script paging with the wrong key) is refused rather than read as a
 * place in this tenant's list, silently leaving out what comes before it. `isPlace` tells a place the listing
 * writes from any other array.
 */
export function tenantCursors<P extends unknown[]>(
  listing: string,
  isPlace: (place: unknown[]) => place is P,
) {
  const encode = (tenantId: string, place: P): string =>
    Buffer.from(JSON.stringify([tenantId, ...place])).toString('base64url');
  return {
    encode,
    /** The place a cursor continues after: only of a cursor written exactly as `encode` writes them, of this tenant. */
    decode(cursor: string, tenantId: string): P {
      let decoded: unknown;
      try {
        decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString());
      } catch {
        throw cursorRefused(NOT_A_CURSOR);
      }
      const [tenant, ...place] = Array.isArray(decoded) ? decoded : [];
      // Decoding skips characters outside base64url: only a cursor that encodes back to itself is one.
      if (typeof tenant !== 'string' || !isPlace(place) || encode(tenant, place) !== cursor) {
        throw cursorRefused(NOT_A_CURSOR);
      }
      if (tenant !== tenantId) {
        throw cursorRefused(
          `not a cursor of this tenant's ${listing}; pass back the next_cursor of a page listed with a credential of this tenant`,
        );
      }
      return place;
    },
  };
}

/** How many items a page holds, `?limit=`: 1 to `max`, `fallback` when left out. */
export function pageLimit(max: number, fallback: number, description: string) {
  const message = `must be a whole number from 1 to ${max}`;
  return queryParameter(
    // Digits only: a number literal (0x10, 1e2, +5) or white space is not read as the number it would coerce to.
    z
      .preprocess(
        (value) => (typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : value),
        z
          .number({ error: message })
          .int({ error: message })
          .min(1, { error: message })
          .max(max, { error: message })
          .default(fallback),
      )
      .openapi({ description }),
  );
}

/**
 * The query of a route that takes none, so that a parameter sent to it is refused by name: a filter it does not have
 * (`?name=`) would list every key or policy as if they had matched, and a flag (`?dry_run=true`) would change what
 * it was meant to leave as it is.
 */
export const NoQuery = queryParameters({});

export const Timestamp = z.string().openapi({ format: 'date-time', example: '2026-11-26T12:00:00.000Z' });

/** An access token as both the exchange and POST /v1/tokens hand it out. */
export const IssuedToken = z
  .object({
    access_token: z.string(),
    token_type: z.literal('Bearer'),
    issued_token_type: z.literal(ACCESS_TOKEN_TYPE),
    expires_in: z.number().int(),
    expires_at: Timestamp,
    scope: z.string().openapi({ description: 'The permissions, space-separated (OAuth scope).' }),
    permissions: z.array(PermissionId),
    tenant: z.string(),
  })
  .openapi('MintedToken');

export const iso = (ms: number): string => new Date(ms).toISOString();

/** The body of an IssuedToken. */
export function issuedToken(token: {
  accessToken: string;
  expiresIn: number;
  expiresAt: number;
  permissions: z.infer<typeof PermissionId>[];
  tenant: string;
}): z.infer<typeof IssuedToken> {
  return {
    access_token: token.accessToken,
    token_type: 'Bearer',
    issued_token_type: ACCESS_TOKEN_TYPE,
    expires_in: token.expiresIn,
    expires_at: iso(token.expiresAt),
    scope: token.permissions.join(' '),
    permissions: token.permissions,
    tenant: token.tenant,
  };
}
export const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));

const problem = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: Problem } },
});

/**
 * The Location of a resource the broker created at `path` (`/v1/…`): under the path of BROKER_PUBLIC_URL, where a
 * proxy that strips a prefix (`https://host/broker`) serves the broker, so that a client resolving it finds it.
 */
export function locationOf(publicUrl: string, path: string): string {
  return `${publicPath(publicUrl)}${path}`;
}

/** The path of BROKER_PUBLIC_URL without a trailing slash: `''` at the root, `/broker` under that prefix. */
export function publicPath(publicUrl: string): string {
  return new URL(publicUrl).pathname.replace(/\/$/, '');
}

/** Response headers a client acts on, declared on the answers that carry them. */
export const headers = {
  noStore: {
    'Cache-Control': z
      .string()
      .openapi({ description: 'A token, key or claims no cache may keep: `no-store`.', example: 'no-store' }),
  },
  location: (example: string) => ({
    Location: z.string().openapi({ description: 'Where the new resource is read.', example }),
  }),
  retryAfter: {
    'Retry-After': z.number().int().openapi({ description: 'Seconds to wait before retrying.', example: 30 }),
  },
  challenge: {
    'WWW-Authenticate': z.string().openapi({
      description: 'The Bearer challenge; `error="invalid_token"` when a credential was sent but refused.',
      example: 'Bearer realm="oidc-auth", error="invalid_token"',
    }),
  },
} as const;

/** A 503 that can be `not_ready`, which says when to retry. */
export const notReady = (description: string) => ({
  ...problem(description),
  headers: z.object(headers.retryAfter),
});

/** The error responses every authenticated route can give. */
export const authErrors = {
  401: {
    ...problem('Missing, malformed, unknown, expired or revoked credential (`unauthenticated`).'),
    headers: z.object(headers.challenge),
  },
  403: problem(
    'The credential lacks the permission (`forbidden`), or asks for more than it holds (`permission_escalation`).',
  ),
  // Every authenticated request reads the database for its credential.
  503: notReady('The database does not answer right now (`not_ready`); retry after `Retry-After` seconds.'),
} as const;

export const badRequest = {
  400: problem('The body or query is invalid; `errors` names each field (`invalid_request`).'),
};
export const notFound = { 404: problem('No such resource in this tenant (`not_found`).') };
export { problem };
