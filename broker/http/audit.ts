// GET /v1/audit-events: the tenant's audit log, newest first by time, cursor-paginated, filterable by type, outcome, time.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AuthenticateDeps } from '../core/authenticate.js';
import { BrokerError } from '../errors.js';
import { AUDIT_EVENT_TYPES, AUDIT_OUTCOMES, type AuditEvent } from '../store/store.js';
import { secured } from './auth.js';
import type { BrokerEnv } from './context.js';
import {
  authErrors,
  badRequest,
  cursorRefused,
  iso,
  NOT_A_CURSOR,
  pageLimit,
  queryParameter,
  queryParameters,
  Timestamp,
} from './schemas.js';

const EXAMPLES = 'such as 2026-11-27T02:14:00+01:00 or 2026-11-27T01:14:00Z';
const NO_OFFSET = `must be an RFC 3339 date and time with its offset from UTC, ${EXAMPLES}: without one it would be a different moment in every time zone`;
const NOT_A_MOMENT = `must be a date and time that exists, in RFC 3339 with seconds and an offset from UTC written as Z or ±hh:mm, ${EXAMPLES}`;
/** A date and time as RFC 3339 writes one, but for its offset. */
const WITHOUT_OFFSET = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?$/;

/**
 * A moment, `since` or `until`: RFC 3339 with its offset (Z or ±hh:mm), read as ms since the epoch; its `T` and `Z`
 * may be lower case, and the `T` a space (`date --rfc-3339=seconds`), as RFC 3339 allows. A `+` of the offset sent unencoded in the URL reaches the broker as a
 * space, as query strings decode it: taken as the `+` it was, since nothing else puts a space before the offset.
 * Refused saying what is wrong: the offset missing, or no such date and time.
 */
const moment = (description: string) =>
  queryParameter(
    z
      .preprocess(
        (value) =>
          typeof value === 'string'
            ? value
                .replace(/^([0-9]{4}-[0-9]{2}-[0-9]{2}) (?=[0-9]{2}:)/, '$1T')
                .replace(/ ([0-9]{2}:[0-9]{2})$/, '+$1')
                .toUpperCase()
            : value,
        z.iso
          .datetime({
            offset: true,
            error: (issue) =>
              typeof issue.input === 'string' && WITHOUT_OFFSET.test(issue.input) ? NO_OFFSET : NOT_A_MOMENT,
          })
          .optional(),
      )
      .transform((value) => (value === undefined ? undefined : Date.parse(value)))
      .openapi({ type: 'string', format: 'date-time', description }),
  );

const Query = queryParameters({
  type: queryParameter(
    z
      .enum(AUDIT_EVENT_TYPES, { error: `must be one of ${AUDIT_EVENT_TYPES.join(', ')}` })
      .optional()
      .openapi({ description: 'Only events of this type.' }),
  ),
  outcome: queryParameter(
    z
      .enum(AUDIT_OUTCOMES, { error: `must be one of ${AUDIT_OUTCOMES.join(', ')}` })
      .optional()
      .openapi({ description: 'Only events of this outcome: `denied` for the refusals.' }),
  ),
  since: moment(
    'Only events recorded at or after this time: RFC 3339 with an offset (`2026-11-27T02:10:00+01:00`, ' +
      '`2026-11-27T01:10:00Z`).',
  ),
  until: moment('Only events recorded at or before this time, written as `since` is.'),
  limit: pageLimit(200, 50, 'Events per page, 1–200; 50 when left out.'),
  cursor: queryParameter(
    z
      .string()
      .max(32, { error: NOT_A_CURSOR })
      .optional()
      .openapi({
        description:
          "The `next_cursor` of the previous page, as returned; one of another tenant's log is a `400`. One " +
          'whose event retention has deleted since (`BROKER_AUDIT_RETENTION_DAYS`) answers an empty last page.',
      }),
  ),
});

const Event = z
  .object({
    id: z.string().openapi({
      description:
        'Opaque; an event committed later has a greater id. Times need not follow: an event written by a replica ' +
        'whose clock runs behind, or one slow to commit, has an earlier time than events with smaller ids.',
    }),
    time: Timestamp,
    type: z.string().openapi({
      description:
        'What happened: one of the values the `type` parameter takes (the README says what each records). A ' +
        'string, not a closed list, so that a client keeps working when a later version records a new type.',
    }),
    outcome: z.enum(AUDIT_OUTCOMES).openapi({ description: '`denied` for a refusal, `success` otherwise.' }),
    actor: z
      .object({
        kind: z.string().openapi({
          description:
            'A credential kind (`tenant`, `tenant-read-only`, `secure-registry`, `fine-grained`, `access-token`), ' +
            '`workflow` for an exchange, or `operator` for the operator CLI.',
        }),
        id: z.string().openapi({
          description:
            "A built-in slot such as `tenant/primary`, a fine-grained key's id, an access token's `jti`, a " +
            "workflow's `sub`, or `cli` for the operator CLI; never a secret.",
        }),
        name: z.string().optional().openapi({
          description:
            "The credential's name (`Tenant API key`, a fine-grained key's), or the workflow's `job_workflow_ref`.",
        }),
      })
      .openapi({ description: 'Who did it.' }),
    target: z
      .object({
        type: z.string().openapi({
          description: '`tenant`, `api_key`, `fine_grained_key`, `trust_policy` or `access_token`.',
        }),
        id: z.string().openapi({
          description:
            "Its id: a tenant's or a key's, a slot such as `tenant/secondary`, a policy's, a token's `jti`.",
        }),
        name: z.string().optional().openapi({ description: 'Its name when it has one, as it was then.' }),
      })
      .nullable()
      .openapi({ description: 'What it was done to; null when nothing in particular.' }),
    details: z.record(z.string(), z.unknown()).openapi({
      description: "The type's own fields, such as an exchange's repository or a denial's reason.",
    }),
  })
  .openapi('AuditEvent');

const encodeCursor = (id: number) => Buffer.from(`e${id}`).toString('base64url');
/**
 * The event a cursor stands after, its id and time: only a cursor written exactly as this endpoint writes them,
 * naming an event of the caller's own tenant. A cursor of another tenant's log (a script paging with the wrong
 * key), or one made up, would otherwise page on from some point in this tenant's log, silently leaving out the
 * events above it.
 *
 * Or `'trimmed'`: it names an event older, by id, than every event kept, which retention deleted while an export
 * paged through the log. The log is trimmed from its old end only, so what is left of it below that event are at
 * most events past their retention too (recorded before it by a replica whose clock ran behind, and kept until the
 * newer ones written before them go): the page after it is the end of the log, as the export would have found it
 * had it run a little later. Whose event it was cannot be told any more; a cursor of another tenant's log trimmed
 * so meanwhile reaches that same empty end, which shows nothing of that log, and one whose event is still kept is
 * refused as ever.
 */
async function cursorEvent(
  cursor: string,
  tenantId: string,
  store: AuthenticateDeps['store'],
): Promise<{ at: number; id: number } | 'trimmed'> {
  const match = /^e([1-9][0-9]{0,14})$/.exec(Buffer.from(cursor, 'base64url').toString());
  // Decoding skips characters outside base64url: only a cursor that encodes back to itself is one.
  if (!match || encodeCursor(Number(match[1])) !== cursor) {
    throw cursorRefused(NOT_A_CURSOR);
  }
  const id = Number(match[1]);
  const at = await store.audit.recordedAt(tenantId, id);
  if (at !== undefined) return { at, id };
  if (await trimmed(id, store)) return 'trimmed';
  throw cursorRefused(
    "not a cursor of this tenant's audit log; pass back the next_cursor of a page listed with a credential of this tenant",
  );
}

/** Whether an event with this id, of whichever tenant, is older by id than every event kept (all newer than it). */
async function trimmed(id: number, store: AuthenticateDeps['store']): Promise<boolean> {
  const oldest = await store.audit.oldestKept();
  return oldest === undefined || id < oldest;
}

const view = (e: AuditEvent) => ({
  id: String(e.id),
  time: iso(e.at),
  type: e.type,
  outcome: e.outcome,
  actor: e.actor,
  target: e.target ?? null,
  details: e.details,
});

export function registerAuditRoutes(app: OpenAPIHono<BrokerEnv>, auth: AuthenticateDeps): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/audit-events',
      operationId: 'listAuditEvents',
      tags: ['Audit'],
      summary: 'List audit events',
      description:
        'Newest first by the time recorded, the events of one millisecond by id: an event recorded by a replica ' +
        'whose clock runs behind is listed where that clock put it. Pass `next_cursor` back as `cursor` for the ' +
        'next page, with the same filters; it is null on the last page.',
      ...secured(auth, 'audit-log:read'),
      request: { query: Query },
      responses: {
        200: {
          description: 'A page of events.',
          content: {
            'application/json': {
              schema: z.object({ events: z.array(Event), next_cursor: z.string().nullable() }),
            },
          },
        },
        ...badRequest,
        ...authErrors,
      },
    }),
    async (c) => {
      const { type, outcome, since, until, limit, cursor } = c.req.valid('query');
      if (since !== undefined && until !== undefined && since > until) {
        throw BrokerError.fields('invalid_request', [
          { field: 'since', message: 'is after until: no event can be recorded between them' },
        ]);
      }
      const tenantId = c.get('principal').tenant.id;
      const before = cursor === undefined ? undefined : await cursorEvent(cursor, tenantId, auth.store);
      if (before === 'trimmed') return c.json({ events: [], next_cursor: null }, 200);
      const events = await auth.store.audit.list(tenantId, {
        type,
        outcome,
        since,
        until,
        before,
        limit: limit + 1,
      });
      const page = events.slice(0, limit);
      const next = events.length > limit ? encodeCursor(page[page.length - 1]!.id) : null;
      return c.json({ events: page.map(view), next_cursor: next }, 200);
    },
  );
}
