// The pages of GET /v1/oidc/policies: its query parameters and the cursor that continues after a page's last name.
import { z } from '@hono/zod-openapi';
import { cursorParameter, pageLimit, placeText, queryParameters, tenantCursors } from './schemas.js';
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
  cursor: cursorParameter(
    "The `next_cursor` of the previous page, as returned; one of another tenant's policies is a `400`. The next " +
      'page starts after the name the previous one ended with, even if that policy was deleted since.',
  ),
});

/**
 * A page's place is the name key it ended with: the next page is the policies filed after that key, whether or not
 * a policy still has it (deleted or renamed meanwhile).
 */
export const policyCursors = tenantCursors(
  'trust policies',
  (place): place is [nameKey: string] => place.length === 1 && placeText(place[0]),
);
