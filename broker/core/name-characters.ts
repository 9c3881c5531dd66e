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
