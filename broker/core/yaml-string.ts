// A YAML scalar for a workflow file that GitHub reads back as exactly the value given; for snippets to paste.

// A plain YAML scalar that no YAML 1.1 or 1.2 reader takes for a number, boolean, null, comment or mapping.
const PLAIN = /^[A-Za-z][\w./@:,+-]*( [\w./@:,+-]+)*$/;
const RESERVED = /^(y|n|yes|no|true|false|on|off|null)$/i;
// What JSON leaves as it is but a YAML reader refuses (characters outside YAML's printable set: DEL, C1 controls but
// NEL, U+FFFE, U+FFFF), and U+2028/U+2029, which YAML 1.1 readers take for line breaks: escaped in the quotes.
const NOT_AS_IS = /[\u007f-\u0084\u0086-\u009f\u2028\u2029\ufffe\uffff]/g;

/** A YAML scalar that GitHub reads back as exactly `value`, expressions included. */
export function yamlString(value: string): string {
  // GitHub evaluates `${{ … }}` anywhere in a value, quoted or not; this expression yields the literal text.
  // biome-ignore lint/suspicious/noTemplateCurlyInString: GitHub expression syntax, not a template literal
  const literal = value.replaceAll('${{', "${{ '${{' }}");
  // A colon that ends the value or is followed by a space would start a mapping.
  if (literal === value && PLAIN.test(value) && !RESERVED.test(value) && !/:( |$)/.test(value)) return value;
  // A JSON string is a YAML double-quoted scalar, with its escapes.
  return JSON.stringify(literal).replace(
    NOT_AS_IS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
