// Strict compact-JWS parsing (RFC 7515 §7.1) shared by every JWT the broker reads.
import { isUtf8 } from 'node:buffer';

export interface ParsedJws {
  ok: true;
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  /** ASCII bytes of `header.payload`, the exact input the signature covers. */
  signingInput: Buffer;
  signature: Buffer;
}

export interface JwsParseFailure {
  ok: false;
  /** A short sentence for logs; never contains the token. */
  reason: string;
}

export type ParseResult = ParsedJws | JwsParseFailure;

export interface ParseOptions {
  /** Upper bound on the token length, checked before any decoding. */
  maxBytes: number;
  /** Reject JSON numbers written with a fraction or exponent (JWT times are whole seconds). */
  integerNumbersOnly?: boolean;
  /** Deepest allowed nesting of objects and arrays; the top-level object is depth 1. */
  maxDepth?: number;
}

/** How deep a token's header or claims may nest by default; its top-level object is the first level. */
export const MAX_JSON_DEPTH = 16;

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function fail(reason: string): JwsParseFailure {
  return { ok: false, reason };
}

export function parseCompactJws(token: string, opts: ParseOptions): ParseResult {
  if (typeof token !== 'string') return fail('token is not a string');
  const len = token.length;
  // Only ASCII survives the segment checks, so the string length is the byte length of any token that passes.
  if (len > opts.maxBytes) return fail(`token is longer than ${opts.maxBytes} bytes`);
  if (len === 0) return fail('token is empty');
  if (token.charCodeAt(0) === 0x7b) return fail('token is JSON, not a compact JWS');

  const dot1 = token.indexOf('.');
  const dot2 = dot1 < 0 ? -1 : token.indexOf('.', dot1 + 1);
  if (dot2 < 0 || token.indexOf('.', dot2 + 1) >= 0) {
    let dots = 0;
    for (let i = token.indexOf('.'); i >= 0; i = token.indexOf('.', i + 1)) dots++;
    return fail(`token has ${dots + 1} segments; a compact JWS has exactly 3`);
  }

  const headerBytes = decodeSegment(token.slice(0, dot1), 'header');
  if (typeof headerBytes === 'string') return fail(headerBytes);
  const payloadBytes = decodeSegment(token.slice(dot1 + 1, dot2), 'payload');
  if (typeof payloadBytes === 'string') return fail(payloadBytes);
  const signature = decodeSegment(token.slice(dot2 + 1), 'signature');
  if (typeof signature === 'string') return fail(signature);

  const header = decodeJsonObject(headerBytes, 'header', opts);
  if (typeof header === 'string') return fail(header);
  const payload = decodeJsonObject(payloadBytes, 'payload', opts);
  if (typeof payload === 'string') return fail(payload);

  return { ok: true, header, payload, signingInput: Buffer.from(token.slice(0, dot2), 'latin1'), signature };
}

/**
 * Decodes one segment and insists it is the canonical unpadded base64url of its bytes: the encoder's
 * output has only alphabet characters, no padding and zero unused bits, so the round trip refuses
 * whitespace, '=', '+', '/' and strings that merely decode to the same bytes as another (H3).
 */
function decodeSegment(segment: string, name: string): Buffer | string {
  if (segment.length === 0) return `${name} segment is empty`;
  const bytes = Buffer.from(segment, 'base64url');
  if (bytes.toString('base64url') === segment) return bytes;
  for (let i = 0; i < segment.length; i++) {
    if (ALPHABET.indexOf(segment[i]!) < 0) {
      return `${name} segment has a character outside the base64url alphabet`;
    }
  }
  if ((segment.length & 3) === 1) return `${name} segment has an impossible base64url length`;
  return `${name} segment is not canonical base64url`;
}

function decodeJsonObject(
  bytes: Buffer,
  name: 'header' | 'payload',
  opts: ParseOptions,
): Record<string, unknown> | string {
  // isUtf8 is a fast validity check; a fatal TextDecoder does the same through a much slower path.
  if (!isUtf8(bytes)) return `${name} is not valid UTF-8`;
  const text = bytes.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) return `${name} starts with a byte order mark`;

  const scan = scanJson(text, {
    integersOnly: opts.integerNumbersOnly === true,
    maxDepth: opts.maxDepth ?? MAX_JSON_DEPTH,
    topLevelNames: false,
  });
  if (typeof scan !== 'number') return `${name} ${scan.problem}`;

  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return `${name} is not valid JSON`;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    return `${name} is not a JSON object`;
  // JSON.parse keeps the last of repeated names; fewer own keys than scanned members means a repeat.
  if (Object.keys(value).length !== scan) return `${name} has a duplicate member name`;
  return value as Record<string, unknown>;
}

function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

interface ScanOptions {
  integersOnly: boolean;
  maxDepth: number;
  /** Also detect repeated names at the top level, rather than leave them to a count against the parsed object. */
  topLevelNames: boolean;
}

/** What a scan found wrong; `member`: the name repeated, when that is what it found. */
type ScanProblem = { problem: string; member?: string };

/**
 * The member name JSON text repeats within one of its objects, if any: JSON.parse keeps the last, other parsers
 * the first, so a reader of the text may see another value than the one that counts. Text that is not a JSON
 * object, or not JSON, has none here: JSON.parse is left to say what is wrong with it.
 */
export function repeatedMemberName(text: string): string | undefined {
  const scan = scanJson(text, {
    integersOnly: false,
    maxDepth: Number.POSITIVE_INFINITY,
    topLevelNames: true,
  });
  return typeof scan === 'number' ? undefined : scan.member;
}

/**
 * One forward pass over JSON text: bounds nesting, refuses non-integer numbers when asked, and detects
 * repeated member names in nested objects (the top level, unless asked, is checked against the parsed object,
 * which resolves escapes the same way JSON.parse does). Returns the top-level member count or a problem.
 * Validity of the JSON itself is left to JSON.parse.
 */
function scanJson(
  text: string,
  { integersOnly, maxDepth, topLevelNames }: ScanOptions,
): number | ScanProblem {
  const len = text.length;
  let i = 0;
  while (i < len && isJsonSpace(text.charCodeAt(i))) i++;
  if (text.charCodeAt(i) !== 0x7b) return { problem: 'is not a JSON object' };

  const isObject: boolean[] = [];
  let nestedKeys: (Set<string> | undefined)[] | undefined;
  let depth = 0;
  let topMembers = 0;
  let expectKey = false;

  while (i < len) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const start = i + 1;
      let end = text.indexOf('"', start);
      for (;;) {
        if (end < 0) return { problem: 'is not valid JSON' };
        let backslashes = 0;
        for (let k = end - 1; k >= start && text.charCodeAt(k) === 0x5c; k--) backslashes++;
        if ((backslashes & 1) === 0) break;
        end = text.indexOf('"', end + 1);
      }
      if (expectKey) {
        expectKey = false;
        if (depth === 1) topMembers++;
        if (depth > 1 || topLevelNames) {
          const key = memberName(text.slice(start, end));
          if (key === undefined) return { problem: 'is not valid JSON' };
          nestedKeys ??= [];
          let seen = nestedKeys[depth];
          if (!seen) {
            seen = new Set();
            nestedKeys[depth] = seen;
          }
          if (seen.has(key)) return { problem: 'has a duplicate member name', member: key };
          seen.add(key);
        }
      }
      i = end + 1;
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return { problem: `nests deeper than ${maxDepth} levels` };
      isObject[depth] = c === 0x7b;
      expectKey = c === 0x7b;
      if (nestedKeys) nestedKeys[depth] = undefined;
    } else if (c === 0x7d || c === 0x5d) {
      expectKey = false;
      if (--depth === 0) break;
      if (depth < 0) return { problem: 'is not valid JSON' };
    } else if (c === 0x2c) {
      expectKey = isObject[depth] === true;
    } else if (integersOnly && (c === 0x2d || (c >= 0x30 && c <= 0x39))) {
      let j = i + 1;
      for (; j < len; j++) {
        const d = text.charCodeAt(j);
        if (d >= 0x30 && d <= 0x39) continue;
        if (d === 0x2e || d === 0x65 || d === 0x45)
          return { problem: 'has a number that is not a plain integer' };
        break;
      }
      i = j;
      continue;
    }
    i++;
  }
  return topMembers;
}

function memberName(raw: string): string | undefined {
  if (raw.indexOf('\\') < 0) return raw;
  try {
    return JSON.parse(`"${raw}"`) as string;
  } catch {
    return undefined;
  }
}
