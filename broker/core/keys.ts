// API key format (DESIGN §3): prefix + 32 base62 random chars + 6 base62 chars of CRC32, stored only as a digest.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const RANDOM_LENGTH = 32;
const CHECKSUM_LENGTH = 6;

export const KEY_PREFIXES = {
  tenant: 'ssa_',
  'tenant-read-only': 'ssr_',
  'secure-registry': 'ssg_',
  'fine-grained': 'ssf_',
} as const;

export type KeyKind = keyof typeof KEY_PREFIXES;
const KIND_BY_PREFIX = new Map<string, KeyKind>(
  Object.entries(KEY_PREFIXES).map(([kind, prefix]) => [prefix, kind as KeyKind]),
);
const KEY_LENGTH = 4 + RANDOM_LENGTH + CHECKSUM_LENGTH;
const BASE62_CHAR = /^[0-9A-Za-z]+$/;

function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      // 248 = 4 × 62: rejecting bytes above it keeps every character equally likely.
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

function checksum(random: string): string {
  let n = crc32(random);
  let out = '';
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

export function generateKey(kind: KeyKind): string {
  const random = randomBase62(RANDOM_LENGTH);
  return `${KEY_PREFIXES[kind]}${random}${checksum(random)}`;
}

export type KeyCheck = { ok: true; kind: KeyKind } | { ok: false; reason: string };

/** Format and checksum, checked without touching storage so typos and garbage never cost a lookup. */
export function checkKeyFormat(key: string): KeyCheck {
  const kind = KIND_BY_PREFIX.get(key.slice(0, 4));
  if (!kind) return { ok: false, reason: 'unknown key prefix (expected ssa_, ssr_, ssg_ or ssf_)' };
  if (key.length !== KEY_LENGTH || !BASE62_CHAR.test(key.slice(4))) {
    return {
      ok: false,
      reason: `malformed API key: expected ${KEY_LENGTH} characters of the form prefix + base62`,
    };
  }
  const random = key.slice(4, 4 + RANDOM_LENGTH);
  if (checksum(random) !== key.slice(4 + RANDOM_LENGTH)) {
    return { ok: false, reason: 'API key checksum does not match: the key was mistyped or truncated' };
  }
  return { ok: true, kind };
}

/** The kind of key a credential's prefix names, whether or not the rest of it is well-formed. */
export function keyKindOf(credential: string): KeyKind | undefined {
  return KIND_BY_PREFIX.get(credential.slice(0, 4));
}

export type KeyDigester = (key: string) => string;

/** SHA-256 of the key, or HMAC-SHA-256 under the operator's pepper, as lower-case hex. */
export function keyDigester(pepper?: string): KeyDigester {
  if (pepper) return (key) => createHmac('sha256', pepper).update(key).digest('hex');
  return (key) => createHash('sha256').update(key).digest('hex');
}

/** What listings show instead of a key: its prefix and last four characters. */
export function keyHint(key: string): string {
  return `${key.slice(0, 4)}…${key.slice(-4)}`;
}

// A key's prefix and at least its whole random part, from which the checksum, and so the key, follows: a key
// pasted whole, with its checksum cut short or run into other text. A shorter run after a prefix is no usable key,
// and a name such as ssf_DeployBot2026 stays a name: stored as given, and shown as given in errors and the audit log.
// The run ends where another key starts (a key pasted twice): taken into the first, the letters of the second's
// prefix would leave the rest of it, its whole secret part, in plain sight. (Each step looks ahead a fixed length,
// so the run is still read once.)
const PREFIX_LETTERS = Object.values(KEY_PREFIXES)
  .map((prefix) => prefix.slice(0, -1))
  .join('|');
const KEY_SHAPED = new RegExp(
  `(?:${Object.values(KEY_PREFIXES).join('|')})[0-9A-Za-z]{${RANDOM_LENGTH},}?(?=(?:${PREFIX_LETTERS})_|(?![0-9A-Za-z]))`,
  'g',
);
/**
 * Three base64url segments, the first two JSON objects (`eyJ` is `{"`): a JWS such as an access or OIDC token. A
 * token pasted twice in a row runs its signature into the next one's header; the segments that follow, the next
 * payload and signature, are taken with it. Read in one pass: a token starts only at the first `eyJ` of its
 * segment (a later one there could only fail the same way), so a long run of `eyJ`s is not scanned to its end from
 * each of them, which made a 64 KiB request cost seconds of CPU. That holds only where nothing else was taken from
 * the segment first: so keys are hidden in a pass before tokens, and the `eyJ` that ends a JSON escape (`\u001e`
 * and `yJ`), which no token starts at, is not counted as the segment's first.
 */
const B64URL = '[0-9A-Za-z_-]';
const TOKEN_SHAPED = new RegExp(
  `eyJ(?<!(?<!\\\\u[0-9A-Fa-f]{3})eyJ${B64URL}*?eyJ)${B64URL}*\\.eyJ${B64URL}*\\.${B64URL}+(?:\\.eyJ${B64URL}*\\.${B64URL}+)*`,
  'g',
);

// Invisible characters (Unicode's format characters: U+200B, a soft hyphen, …) are left out before looking: a
// secret split by them is shown whole by every listing, and chat tools put them into long words to wrap them.
const INVISIBLE = /\p{Cf}/gu;
const HAS_INVISIBLE = /\p{Cf}/u;

/**
 * `text` with each run of the global `pattern` replaced, looking as if its invisible characters were not there: a
 * secret split by them is found and replaced whole, the invisible characters inside it with it.
 */
function replaceSeeingThrough(text: string, pattern: RegExp, replace: (run: string) => string): string {
  if (!HAS_INVISIBLE.test(text)) return text.replace(pattern, replace);
  // The text without its invisible characters, and where each of its code units stands in `text`.
  let visible = '';
  const origin: number[] = [];
  for (let i = 0; i < text.length; ) {
    const char = String.fromCodePoint(text.codePointAt(i)!);
    if (!HAS_INVISIBLE.test(char)) {
      visible += char;
      for (let unit = 0; unit < char.length; unit++) origin.push(i + unit);
    }
    i += char.length;
  }
  let out = '';
  let copied = 0;
  for (const match of visible.matchAll(pattern)) {
    const run = match[0];
    if (run.length === 0) continue;
    const start = origin[match.index]!;
    const end = origin[match.index + run.length - 1]! + 1;
    const replaced = replace(run);
    out += text.slice(copied, start) + (replaced === run ? text.slice(start, end) : replaced);
    copied = end;
  }
  return out + text.slice(copied);
}

/**
 * Text that may echo what a caller sent, with every API key in it shown as its hint and every token left out:
 * a key pasted into the wrong field must not come back in an error body that proxies and clients log.
 */
export function withoutSecrets(text: string): string {
  const keysHidden = replaceSeeingThrough(text, KEY_SHAPED, keyHint);
  return replaceSeeingThrough(keysHidden, TOKEN_SHAPED, () => '[a token]');
}

// Where a value is to be stored, a key is what is hidden where text is echoed: what is stored is shown as given.
const STORED_KEY = new RegExp(KEY_SHAPED.source);
const STORED_TOKEN = new RegExp(TOKEN_SHAPED.source);
const NEVER_STORED = 'a secret is never stored where every listing would show it';

/**
 * Why a value the broker would store and show back (a name, a description, a claim value, an audience) is refused:
 * it holds an API key or a token (DESIGN §3). `field` names the value as errors do; the key shows as its hint.
 */
export function storedSecretProblem(field: string, value: string): string | null {
  const shown = value.replace(INVISIBLE, '');
  const key = STORED_KEY.exec(shown)?.[0];
  if (key) {
    const hint = keyHint(key.slice(0, KEY_LENGTH));
    const undo =
      KIND_BY_PREFIX.get(key.slice(0, 4)) === 'fine-grained'
        ? 'revoke it (DELETE /v1/fine-grained-keys/{id})'
        : 'rotate its slot (POST /v1/api-keys/{kind}/{slot}/rotate)';
    return `${field} holds what looks like an API key (${hint}), and ${NEVER_STORED}: remove the key from ${field}; if it is a real one, treat it as exposed and ${undo}`;
  }
  if (STORED_TOKEN.test(shown)) {
    return `${field} holds what looks like a token (a JWT: dot-separated parts starting eyJ), and ${NEVER_STORED}: remove the token from ${field}; if it is a real access token, treat it as exposed and revoke it (POST /v1/tokens/revoke)`;
  }
  return null;
}

// A JSON escape is matched whole so that a secret never starts inside one: JSON writes U+001E as \u001e, and the
// "e" of that escape with a following "yJ…" is no token, and taking it would leave "\u001" and break the text.
const JSON_ESCAPE = '\\\\(?:u[0-9A-Fa-f]{4}|.)';
const KEY_OR_ESCAPE = new RegExp(`${JSON_ESCAPE}|${KEY_SHAPED.source}`, 'g');
const TOKEN_OR_ESCAPE = new RegExp(`${JSON_ESCAPE}|${TOKEN_SHAPED.source}`, 'g');

/**
 * withoutSecrets for JSON text (as JSON.stringify writes it): the result is still JSON, each string redacted as
 * withoutSecrets redacts it, keys first and then tokens.
 */
export function withoutSecretsInJson(json: string): string {
  const keysHidden = replaceSeeingThrough(json, KEY_OR_ESCAPE, (run) =>
    run.startsWith('\\') ? run : keyHint(run),
  );
  return replaceSeeingThrough(keysHidden, TOKEN_OR_ESCAPE, (run) =>
    run.startsWith('\\') ? run : '[a token]',
  );
}
