// The pages of GET /v1/oidc/policies: its query parameters and the cursor that continues after a page's last name.
import { z } from '@hono/zod-openapi';
import { cursorRefused, NOT_A_CURSOR, pageLimit, queryParameter, queryParameters } from './schemas.js';
import { nameCharacters } from './text.js';

export const ListPoliciesQuery = queryParameters({
  name: z
    .string()
    .min(1, { error: 'empty: name a trust policy, or leave the parameter out to list them all' })
    .max(100)
    .check(nameCharacters)
    .optional()
    .openapi({
      description:
        'Only the policy with this name, compared as names are (case, accent encoding and invisible characters aside): one page, ' +
        '`next_cursor` null, empty when there is none.',
    }),
  limit: pageLimit(500, 100, 'Policies per page, 1–500; 100 when left out.'),
  cursor: queryParameter(
    z
      .string()
      // A name key is at most 300 characters (100 that case folding may triple): its cursor, far less than this.
      .max(2048, { error: NOT_A_CURSOR })
      .optional()
      .openapi({
        description:
          "The `next_cursor` of the previous page, as returned; one of another tenant's policies is a `400`. The " +
          'next page starts after the name the previous one ended with, even if that policy was deleted since.',
      }),
  ),
});

/**
 * A cursor names the tenant and the name key the page ended with: the next page is the policies filed after that
 * key, the same whether or not a policy still has it (deleted or renamed meanwhile), and never skips or repeats a
 * policy that stays. The tenant is in it so that a cursor of another tenant's policies (a script paging with the
 * wrong key) is refused rather than read as a place in this tenant's list, silently leaving out the names before it.
 */
export const encodeCursor = (tenantId: string, nameKey: string): string =>
  Buffer.from(JSON.stringify([tenantId, nameKey])).toString('base64url');

/** The name key a cursor continues after: only of a cursor written exactly as encodeCursor writes them, of this tenant. */
export function cursorKey(cursor: string, tenantId: string): string {
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString());
  } catch {
    throw cursorRefused(NOT_A_CURSOR);
  }
  const [tenant, key] = Array.isArray(decoded) && decoded.length === 2 ? decoded : [];
  // Decoding skips characters outside base64url: only a cursor that encodes back to itself is one. NUL, which
  // PostgreSQL text cannot hold, and a lone surrogate are in no key.
  if (
    typeof tenant !== 'string' ||
    typeof key !== 'string' ||
    encodeCursor(tenant, key) !== cursor ||
    /[\0\p{Cs}]/u.test(key)
  ) {
    throw cursorRefused(NOT_A_CURSOR);
  }
  if (tenant !== tenantId) {
    throw cursorRefused(
      "not a cursor of this tenant's trust policies; pass back the next_cursor of a page listed with a credential of this tenant",
    );
  }
  return key;
}
