// The ids a proxy in front of the broker gave a request (X-Request-Id, W3C traceparent), checked before they are logged.
import { withoutSecrets } from '../core/keys.js';

/**
 * What a load balancer or proxy puts in `X-Request-Id` (nginx's `$request_id`, an AWS `Root=1-…` trace id, a
 * UUID): visible ASCII with no quote, backslash or space, at most 128 characters. Anything else a client may have
 * sent is left out of the log rather than written there, and so is an API key or a token pasted into the header:
 * its characters are all allowed.
 */
const UPSTREAM_REQUEST_ID = /^[A-Za-z0-9._:;=+/@-]{1,128}$/;

/**
 * W3C Trace Context §3.2: version, trace id, parent id, flags, in lower-case hex; a later version (not `ff`) may
 * append fields. An all-zero trace or parent id is invalid.
 */
const TRACEPARENT =
  /^(?:00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}|(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}(?:-[\x21-\x7e]{0,200})?)$/;
const ZEROS = /^0+$/;

/** The log fields naming a request as the proxies in front of the broker know it: none that is malformed. */
export function upstreamIds(header: (name: string) => string | undefined): Record<string, string> {
  const fields: Record<string, string> = {};
  const requestId = header('X-Request-Id');
  if (
    requestId !== undefined &&
    UPSTREAM_REQUEST_ID.test(requestId) &&
    withoutSecrets(requestId) === requestId
  )
    fields.upstream_request_id = requestId;
  const match = TRACEPARENT.exec(header('traceparent') ?? '');
  const traceId = match?.[1] ?? match?.[2];
  const parentId = match?.[0].split('-')[2];
  if (traceId !== undefined && !ZEROS.test(traceId) && !ZEROS.test(parentId ?? '')) fields.trace_id = traceId;
  return fields;
}
