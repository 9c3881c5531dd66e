// Request bodies taken strictly: JSON is UTF-8 (RFC 8259), and bytes that are not UTF-8 are refused rather than
// turned into U+FFFD and stored as a name the client never sent; a multipart body, which no route takes, is 415.
import { isUtf8 } from 'node:buffer';
import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { HTTPException } from 'hono/http-exception';
import { BrokerError } from '../errors.js';
import type { BrokerEnv } from './context.js';

// The media types Hono's JSON validator parses (application/json, application/…+json), parameters aside.
const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;
// Not fatal: the bytes are checked first. It drops a leading byte-order mark, as the body reader does.
const decoder = new TextDecoder();
/** The refusal of a request's body, kept for the error handler: the JSON validator reports any failure as "malformed". */
const refused = new WeakMap<object, BrokerError>();

/**
 * Makes the text the JSON validators parse (HonoRequest's json() reads `bodyCache.text`) a strict decoding of
 * the body, and the form data the form validators read a 415 for a multipart body. Only a route that validates
 * its body reads either, after routing and authentication: a request that would be a 404, 405 or 401 stays
 * one, whatever its body.
 */
export const strictRequestBody = createMiddleware<BrokerEnv>(async (c, next) => {
  const type = c.req.header('Content-Type');
  const mediaType = type?.split(';')[0]?.trim().toLowerCase();
  if (mediaType === 'multipart/form-data') {
    // No route takes multipart, but Hono's form validator parses it like a form: where a route reads its form,
    // it is refused as the media type it is (the error handler names the types the route takes).
    let refusal: Promise<never> | undefined;
    Object.defineProperty(c.req.bodyCache, 'formData', {
      configurable: true,
      enumerable: false,
      // One promise, however often it is read (the validator tests it, then awaits it), and never "unhandled".
      get: () => {
        if (!refusal) {
          refusal = Promise.reject(new HTTPException(415));
          refusal.catch(() => {});
        }
        return refusal;
      },
    });
    return next();
  }
  if (!mediaType || !JSON_MEDIA_TYPE.test(mediaType)) return next();
  let text: Promise<string> | undefined;
  // Not enumerable: HonoRequest derives other body forms from any enumerable cache entry, and reads of the
  // raw body (form data, array buffers) must not come through here.
  Object.defineProperty(c.req.bodyCache, 'text', {
    configurable: true,
    enumerable: false,
    get: () =>
      (text ??= c.req.raw.arrayBuffer().then((buffer) => {
        const bytes = new Uint8Array(buffer);
        if (isUtf8(bytes)) return decoder.decode(bytes);
        const error = new BrokerError(
          'invalid_request',
          'the request body is not valid UTF-8, which JSON must be',
        );
        refused.set(c.req, error);
        throw error;
      })),
  });
  await next();
});

/** Why the request's JSON body was refused, if it was: the validator's own error says only "malformed". */
export function bodyRefusal(c: Context<BrokerEnv>): BrokerError | undefined {
  return refused.get(c.req);
}
