// Request bodies taken strictly: JSON is UTF-8 (RFC 8259), and bytes that are not UTF-8 are refused rather than
// turned into U+FFFD and stored as a name the client never sent, an empty one as such, and one that names a member
// twice in an object as such (JSON.parse keeps the last, a reviewer may read the first); a multipart body, which no
// route takes, is 415; a body cut off by its client, however it was sent, is a 400 like any other refused body.
import { isUtf8 } from 'node:buffer';
import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { HTTPException } from 'hono/http-exception';
import { repeatedMemberName } from '../core/jws-compact.js';
import { withoutSecrets } from '../core/keys.js';
import { BrokerError } from '../errors.js';
import type { BrokerEnv } from './context.js';

// The media types Hono's JSON validator parses (application/json, application/…+json), parameters aside.
const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;
// Not fatal: the bytes are checked first. It drops a leading byte-order mark, as the body reader does.
const decoder = new TextDecoder();
/** The refusal of a request's body, kept for the error handler: the JSON validator reports any failure as "malformed". */
const refused = new WeakMap<object, BrokerError>();

type Request = Context<BrokerEnv>['req'];

// HonoRequest keeps promises in its body cache (its type says values). The caches below are classes, with their
// accessors on the prototype: defining one on each request's own cache gave every request a hidden class of its
// own, and twice the garbage collector's time per exchange. None has an enumerable entry, so HonoRequest
// derives no other body form (form data, array buffers) from them: such reads go to the raw body.

/**
 * The body's bytes. A read fails when the connection closes before the body's end (a client that gave up, or
 * Node's request deadline): that is the client's doing, refused as its body, not a failure of the broker.
 */
function readBody(req: Request): Promise<ArrayBuffer> {
  const coding = req.header('Content-Encoding')?.trim().toLowerCase();
  if (coding && coding !== 'identity') return Promise.reject(contentCoded(req));
  return req.raw.arrayBuffer().catch((error: unknown) => {
    throw asCutOff(req, error);
  });
}

/**
 * A failed read as the client's doing: the connection closed early. A TypeError (a body read twice, a stream
 * locked elsewhere) is the broker's own mistake, and stays the error it is.
 */
function asCutOff(req: Request, error: unknown): unknown {
  return error instanceof TypeError ? error : cutOff(req);
}

function refuse(req: Request, detail: string): BrokerError {
  const error = new BrokerError('invalid_request', detail);
  refused.set(req, error);
  return error;
}

/**
 * A body sent compressed (`Content-Encoding: gzip`): the broker decodes no content coding, and would otherwise read the
 * compressed bytes as the body (RFC 9110 §15.5.16: 415, with the codings it takes in Accept-Encoding).
 */
function contentCoded(req: Request): BrokerError {
  const error = new BrokerError(
    'unsupported_media_type',
    'the request body is compressed (Content-Encoding), which the broker does not decode: send it uncompressed, without that header',
    { headers: { 'Accept-Encoding': 'identity' } },
  );
  refused.set(req, error);
  return error;
}

const cutOff = (req: Request) =>
  refuse(req, 'the request body was cut off: the connection closed before all of it arrived');

/** A JSON body's cache: `text`, which HonoRequest's json() parses, is the body strictly decoded, read when asked. */
class JsonBodyCache {
  readonly #req: Request;
  #text: Promise<string> | undefined;

  constructor(req: Request) {
    this.#req = req;
  }

  get text(): Promise<string> {
    this.#text ??= readBody(this.#req).then((buffer) => {
      const bytes = new Uint8Array(buffer);
      if (bytes.length > 0 && isUtf8(bytes)) {
        const text = decoder.decode(bytes);
        const repeated = repeatedMemberName(text);
        if (repeated === undefined || !isJson(text)) return text;
        throw refuse(
          this.#req,
          `the request body names the member "${shortened(repeated)}" twice in one object: send each member once`,
        );
      }
      // An empty body is the usual slip of a client that always sends Content-Type: application/json.
      throw refuse(
        this.#req,
        bytes.length === 0
          ? 'the request body is empty: send a JSON object, or, where the body may be left out, leave out the Content-Type header too'
          : 'the request body is not valid UTF-8, which JSON must be',
      );
    });
    return this.#text;
  }
}

/**
 * A form's cache: `arrayBuffer`, which Hono's form validator parses, is the body read as any other. A body that is a
 * JSON object is refused as the media type it is: sent as a form (what `curl -d` declares unless told otherwise),
 * it would be read as one parameter named after the whole object, and answered as if its fields were missing. A
 * form whose names and values, percent escapes decoded, are not UTF-8 is refused too: the parser would read each
 * such byte as U+FFFD (a Latin-1 `Stra%DFe` as "Stra\uFFFDe"), a name or value the client never sent.
 */
class FormBodyCache {
  readonly #req: Request;
  #bytes: Promise<ArrayBuffer> | undefined;

  constructor(req: Request) {
    this.#req = req;
  }

  get arrayBuffer(): Promise<ArrayBuffer> {
    this.#bytes ??= readBody(this.#req).then((buffer) => {
      if (isJsonObject(buffer)) {
        const error = new BrokerError(
          'unsupported_media_type',
          'the request body is JSON, but its Content-Type says a form (application/x-www-form-urlencoded, which curl -d sends unless told otherwise): send it with Content-Type: application/json, or send a form',
        );
        refused.set(this.#req, error);
        throw error;
      }
      if (isUtf8(unescaped(new Uint8Array(buffer)))) return buffer;
      throw refuse(
        this.#req,
        'the request body is not UTF-8, which a form must be: percent-encode the UTF-8 bytes of each character (ß is %C3%9F)',
      );
    });
    return this.#bytes;
  }
}

const PERCENT = 0x25;
const HEX = /^[0-9A-Fa-f]{2}$/;

/** A form's bytes with each `%XX` decoded, as the form parser decodes them; a `%` that escapes nothing stays. */
function unescaped(bytes: Uint8Array): Uint8Array {
  if (!bytes.includes(PERCENT)) return bytes;
  const out = new Uint8Array(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    const hex = bytes[i] === PERCENT ? String.fromCharCode(bytes[i + 1] ?? 0, bytes[i + 2] ?? 0) : '';
    if (HEX.test(hex)) {
      out[n++] = Number.parseInt(hex, 16);
      i += 2;
    } else out[n++] = bytes[i]!;
  }
  return out.subarray(0, n);
}

/** Whether a body is a JSON object, as a form's never is: it starts with `{`, white space aside, and parses. */
function isJsonObject(buffer: ArrayBuffer): boolean {
  const bytes = new Uint8Array(buffer);
  if (!isUtf8(bytes)) return false;
  const text = decoder.decode(bytes);
  if (!text.trimStart().startsWith('{')) return false;
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}

/** Whether JSON.parse takes `text`: a repeated name is told only of a body that is JSON otherwise. */
function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** A member name as an error may show it: any key in it as its hint first, then cut to 100 characters. */
const shortened = (name: string) => {
  const shown = withoutSecrets(name);
  return shown.length > 100 ? `${shown.slice(0, 100)}…` : shown;
};

/**
 * A multipart body's cache. No route takes multipart, but Hono's form validator parses it like a form: where a
 * route reads its form, it is refused as the media type it is (the error handler names the types the route takes).
 */
class MultipartBodyCache {
  #refusal: Promise<never> | undefined;

  /** One promise, however often it is read (the validator tests it, then awaits it), and never "unhandled". */
  get formData(): Promise<never> {
    if (!this.#refusal) {
      this.#refusal = Promise.reject(new HTTPException(415));
      this.#refusal.catch(() => {});
    }
    return this.#refusal;
  }
}

/**
 * Makes the text the JSON validators parse a strict decoding of the body, the bytes the form validators parse the
 * body read as any other, and the form data they read a 415 for a multipart body. Only a route that validates its
 * body reads any of them, after routing and authentication: a request that would be a 404, 405 or 401 stays one,
 * whatever its body.
 */
export const strictRequestBody = createMiddleware<BrokerEnv>(async (c, next) => {
  let type = c.req.header('Content-Type');
  // RFC 9110 allows spaces around ';' and a parameter list left empty; the validators match the type by a pattern
  // that does not, and would answer 415 asking for the very type sent. They see it as usually written.
  if (type?.includes(';')) {
    const written = type
      .split(';')
      .map((part) => part.trim())
      .filter(Boolean)
      .join('; ');
    if (written !== type) {
      c.req.raw.headers.set('Content-Type', written);
      type = written;
    }
  }
  const mediaType = type?.split(';')[0]?.trim().toLowerCase();
  const cache =
    mediaType === 'multipart/form-data'
      ? new MultipartBodyCache()
      : mediaType === 'application/x-www-form-urlencoded'
        ? new FormBodyCache(c.req)
        : mediaType && JSON_MEDIA_TYPE.test(mediaType)
          ? new JsonBodyCache(c.req)
          : undefined;
  if (cache) c.req.bodyCache = cache as unknown as Request['bodyCache'];
  await next();
});

/** Why the request's JSON body was refused, if it was: the validator's own error says only "malformed". */
export function bodyRefusal(c: Context<BrokerEnv>): BrokerError | undefined {
  return refused.get(c.req);
}

/**
 * Reads a body of undeclared length (chunked, or a Request handed to app.request()) before routing, so that one
 * over `maxBytes` is refused on any route: false if it is; else the request goes on with the bytes read. A read that
 * fails is refused as the routes' own reads of a body refuse it.
 */
export async function bufferBody(req: Request, maxBytes: number): Promise<boolean> {
  if (!req.raw.body) return true;
  const reader = req.raw.body.getReader();
  let buffer = new Uint8Array(0);
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read().catch((error: unknown) => {
      throw asCutOff(req, error);
    });
    if (done) break;
    const offset = size;
    size += value.length;
    if (size > maxBytes) return false;
    if (size > buffer.length) {
      const grown = new Uint8Array(Math.min(maxBytes, Math.max(size, buffer.length * 2)));
      grown.set(buffer.subarray(0, offset));
      buffer = grown;
    }
    buffer.set(value, offset);
  }
  req.raw = new Request(req.raw, { body: buffer.subarray(0, size) });
  return true;
}
