// JSON request bodies decoded strictly: JSON is UTF-8 (RFC 8259), and bytes that are not UTF-8 are refused
// rather than turned into U+FFFD and stored as a name the client never sent.
import { isUtf8 } from 'node:buffer';
import { createMiddleware } from 'hono/factory';
import { BrokerError } from '../errors.js';
import type { BrokerEnv } from './context.js';

// The media types Hono's JSON validator parses (application/json, application/…+json), parameters aside.
const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;
// Not fatal: the bytes are checked first. It drops a leading byte-order mark, as the body reader does.
const decoder = new TextDecoder();

/**
 * Reads a JSON body once, checks that it is UTF-8 and hands the text to the validators (which parse it from
 * `bodyCache.text`, the cache HonoRequest's json() reads). Other bodies pass untouched.
 */
export const strictJsonBody = createMiddleware<BrokerEnv>(async (c, next) => {
  const type = c.req.header('Content-Type');
  if (!type || !JSON_MEDIA_TYPE.test(type.split(';')[0]!.trim())) return next();
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (!isUtf8(bytes)) {
    throw new BrokerError('invalid_request', 'the request body is not valid UTF-8, which JSON must be');
  }
  // HonoRequest keeps promises in its body cache (its type says values): json() awaits the cached text.
  (c.req.bodyCache as { text?: Promise<string> }).text = Promise.resolve(decoder.decode(bytes));
  await next();
});
