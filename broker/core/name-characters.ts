// The characters no name a client gives may hold: one rule for the broker's schemas and the action's inputs.

// Control characters, line separators and bidi overrides make a name display as something else; NUL cannot be
// stored in PostgreSQL text, and a lone surrogate would be saved as U+FFFD, silently another name.
const UNSAFE_IN_NAME = /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}\u202A-\u202E\u2066-\u2069]/u;

export const UNSAFE_NAME_CHARACTERS =
  'control, line-separator, bidirectional-override or unpaired-surrogate characters';

/** Whether text holds a character no name may hold: a selector with one can name nothing. */
export function hasUnsafeNameCharacter(value: string): boolean {
  return UNSAFE_IN_NAME.test(value);
}

/**
 * Characters that show as nothing (Unicode's default-ignorable code points: U+200B and the other zero-width
 * characters, a soft hyphen, a word joiner, an emoji's variation selector). Unicode's identifier matching
 * (NFKC_Casefold) leaves them out, and so does a policy name's key: a name pasted with one is the name it shows.
 */
const INVISIBLE = /\p{Default_Ignorable_Code_Point}/gu;

/** `text` as it shows: without its invisible characters. */
export function withoutInvisibleCharacters(text: string): string {
  return text.replace(INVISIBLE, '');
}

/** Whether a name would show as nothing at all: it holds only invisible characters. */
export function isInvisibleName(name: string): boolean {
  return name !== '' && withoutInvisibleCharacters(name) === '';
}
