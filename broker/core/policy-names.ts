// The one comparison of trust policy names: unique in a tenant, and looked up, case-insensitively (DESIGN §4).
import { withoutInvisibleCharacters } from './name-characters.js';

/** Anything but printable ASCII, whose case folding is plain lower-casing. */
const NOT_PRINTABLE_ASCII = /[^ -~]/;
const DOTLESS_I = '\u0131';
/**
 * Lower, upper, then lower again: what Unicode's full case folding gives for every code point (ß and ẞ become ss,
 * ς σ, ſ s, ﬁ fi; checked against Python's str.casefold() for all of them), with one exception, the dotless ı,
 * which upper-cases to I and is kept out of it.
 */
const fullFold = (text: string): string => text.toLowerCase().toUpperCase().toLowerCase();

/**
 * The key a policy name is unique and looked up under: Unicode's canonical caseless matching, invisible characters
 * left out. Names that differ only in case (ΟΔΟΣ and οδοσ, Straße and STRASSE), in how an accent is encoded (é as
 * one code point, or as e and a combining accent, as some keyboards and file names give it) or in characters that
 * show as nothing (`deploy` and `deploy` with a zero-width space pasted after it) are one name. It is computed here and stored,
 * never left to the database, so SQLite and PostgreSQL agree whatever their collation. Not Turkish-specific: I
 * folds to i, and the dotless ı stays a letter of its own, as in Unicode's default folding.
 */
export function policyNameKey(name: string): string {
  if (!NOT_PRINTABLE_ASCII.test(name)) return name.toLowerCase();
  const visible = withoutInvisibleCharacters(name);
  return visible.normalize('NFC').split(DOTLESS_I).map(fullFold).join(DOTLESS_I).normalize('NFC');
}

/**
 * The policies a requested name names: those whose names are one with it. Of namesakes an upgrade kept (saved
 * when names were compared by lower-casing, as `Straße` and `STRASSE` were two names), the one written exactly as
 * asked, so that a job naming either goes on getting the policy it got before the upgrade.
 */
export function policiesNamed<T extends { name: string }>(policies: readonly T[], name: string): T[] {
  const key = policyNameKey(name);
  const named = policies.filter((p) => policyNameKey(p.name) === key);
  if (named.length < 2) return named;
  const exact = named.filter((p) => p.name === name);
  return exact.length === 1 ? exact : named;
}

/** Why a name that names several policies (namesakes an upgrade kept, none written as asked) selects none of them. */
export function namesakesDetail(name: string, policies: readonly string[]): string {
  return `trust policies ${policies.join(', ')} all have the name "${name}", as names are compared ignoring case, accent encoding and invisible characters; name one exactly as it is written`;
}
