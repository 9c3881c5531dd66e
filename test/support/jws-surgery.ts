// Token surgery for the attack tests: a compact JWS's segments, a payload changed under the same signature, and
// the same bytes spelled differently.
import { b64url } from './local-issuer.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The three segments of a compact JWS (empty where missing). */
export function segments(token: string): [string, string, string] {
  const [h = '', p = '', s = ''] = token.split('.');
  return [h, p, s];
}

/** The JSON value a base64url segment holds. */
export function decodeSegment(segment: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
}

/** Changes claims of a signed token, keeping its header and signature. */
export function tamperPayload(token: string, change: Record<string, unknown>): string {
  const [h, p, s] = segments(token);
  return `${h}.${b64url(JSON.stringify({ ...decodeSegment(p), ...change }))}.${s}`;
}

/** The same bytes as another string: the unused low bits of the last base64url digit set. */
export function nonCanonical(segment: string): string {
  const altered = segment.slice(0, -1) + ALPHABET[ALPHABET.indexOf(segment.at(-1) ?? '') | 1];
  if (altered === segment || !Buffer.from(altered, 'base64url').equals(Buffer.from(segment, 'base64url'))) {
    throw new Error(`the last digit of this ${segment.length}-character segment has no unused bit to set`);
  }
  return altered;
}
