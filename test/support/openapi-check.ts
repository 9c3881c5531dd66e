// Checks values and answers against the broker's OpenAPI 3.1 document: the JSON Schema keywords it uses (and an
// exception for any other, so that a schema it cannot read never passes unread), statuses, media types, headers.

type Schema = Record<string, unknown>;

export interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, unknown> };
  [member: string]: unknown;
}

export interface Operation {
  security?: Record<string, string[]>[];
  requestBody?: { required?: boolean; content: Record<string, { schema: unknown }> };
  responses: Record<string, DeclaredResponse>;
}

interface DeclaredResponse {
  content?: Record<string, { schema: unknown }>;
  headers?: Record<string, { required?: boolean; schema?: unknown }>;
}

/** Response headers a client acts on: each one the broker sends must be declared on that response. */
export const CLIENT_HEADERS = [
  'Allow',
  'Cache-Control',
  'ETag',
  'Location',
  'Retry-After',
  'WWW-Authenticate',
];

/** Keywords that say nothing about which values are valid. */
const ANNOTATIONS = new Set(['description', 'example', 'examples', 'default', 'title', 'deprecated']);

// RFC 3339 date-time, as JSON Schema's `date-time` format means it.
const DATE_TIME =
  /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const FORMATS: Record<string, (value: string) => boolean> = {
  'date-time': (v) => DATE_TIME.test(v) && !Number.isNaN(Date.parse(v)),
  uuid: (v) => UUID.test(v),
};

const typeOf = (value: unknown): string => {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
};

/**
 * Thrown, not listed, for a schema the checker cannot read: a listed complaint inside a `oneOf` alternative would
 * only count that alternative out, and a value another alternative takes would then pass.
 */
class UnreadableSchema extends Error {}

/** Code points, as JSON Schema counts a string's length. */
const lengthOf = (value: string): number => [...value].length;

export function schemaErrors(document: OpenApiDocument, schema: unknown, value: unknown, at = '$'): string[] {
  if (schema === true || (typeof schema === 'object' && schema !== null && Object.keys(schema).length === 0))
    return [];
  if (schema === false) return [`${at}: no value is allowed here`];
  const s = schema as Schema;
  const errors: string[] = [];
  const add = (message: string) => errors.push(`${at}: ${message}`);
  for (const [keyword, arg] of Object.entries(s)) {
    switch (keyword) {
      case '$ref': {
        const name = /^#\/components\/schemas\/(.+)$/.exec(arg as string)?.[1];
        const target = name && document.components.schemas[name];
        if (!target) throw new UnreadableSchema(`${at}: unresolved $ref ${String(arg)}`);
        errors.push(...schemaErrors(document, target, value, at));
        break;
      }
      case 'allOf':
        for (const part of arg as unknown[]) errors.push(...schemaErrors(document, part, value, at));
        break;
      case 'oneOf': {
        const passing = (arg as unknown[]).filter(
          (part) => schemaErrors(document, part, value, at).length === 0,
        );
        if (passing.length !== 1) add(`matches ${passing.length} of the oneOf alternatives, not exactly one`);
        break;
      }
      case 'type': {
        const types = Array.isArray(arg) ? (arg as string[]) : [arg as string];
        const actual = typeOf(value);
        if (!types.includes(actual) && !(actual === 'integer' && types.includes('number')))
          add(`is ${actual}, expected ${types.join(' or ')}`);
        break;
      }
      case 'enum':
        if (!(arg as unknown[]).some((v) => v === value))
          add(`${JSON.stringify(value)} is not one of the enum`);
        break;
      case 'const':
        if (arg !== value) add(`${JSON.stringify(value)} is not ${JSON.stringify(arg)}`);
        break;
      case 'format': {
        const check = FORMATS[arg as string];
        if (!check) throw new UnreadableSchema(`${at}: unknown format ${String(arg)}`);
        if (typeof value === 'string' && !check(value))
          add(`${JSON.stringify(value)} is not a ${String(arg)}`);
        break;
      }
      case 'pattern':
        if (typeof value === 'string' && !new RegExp(arg as string, 'u').test(value))
          add(`${JSON.stringify(value)} does not match ${String(arg)}`);
        break;
      case 'minLength':
        if (typeof value === 'string' && lengthOf(value) < (arg as number)) add(`shorter than ${arg}`);
        break;
      case 'maxLength':
        if (typeof value === 'string' && lengthOf(value) > (arg as number)) add(`longer than ${arg}`);
        break;
      case 'minimum':
        if (typeof value === 'number' && value < (arg as number)) add(`${value} is below ${arg}`);
        break;
      case 'maximum':
        if (typeof value === 'number' && value > (arg as number)) add(`${value} is above ${arg}`);
        break;
      case 'minItems':
        if (Array.isArray(value) && value.length < (arg as number)) add(`fewer than ${arg} items`);
        break;
      case 'maxItems':
        if (Array.isArray(value) && value.length > (arg as number)) add(`more than ${arg} items`);
        break;
      case 'items':
        if (Array.isArray(value)) {
          for (const [i, item] of value.entries())
            errors.push(...schemaErrors(document, arg, item, `${at}[${i}]`));
        }
        break;
      case 'required':
        if (typeOf(value) === 'object') {
          for (const name of arg as string[]) if (!Object.hasOwn(value as object, name)) add(`lacks ${name}`);
        }
        break;
      case 'properties':
        if (typeOf(value) === 'object') {
          for (const [name, sub] of Object.entries(arg as Record<string, unknown>)) {
            const member = (value as Record<string, unknown>)[name];
            if (Object.hasOwn(value as object, name))
              errors.push(...schemaErrors(document, sub, member, `${at}.${name}`));
          }
        }
        break;
      case 'patternProperties':
        if (typeOf(value) === 'object') {
          for (const [pattern, sub] of Object.entries(arg as Record<string, unknown>)) {
            for (const [name, member] of Object.entries(value as object)) {
              if (new RegExp(pattern, 'u').test(name))
                errors.push(...schemaErrors(document, sub, member, `${at}.${name}`));
            }
          }
        }
        break;
      case 'additionalProperties':
        if (typeOf(value) === 'object') {
          // As JSON Schema has it: a member neither declared nor matching a pattern is an additional one.
          const declared = Object.keys((s.properties as object | undefined) ?? {});
          const patterns = Object.keys((s.patternProperties as object | undefined) ?? {}).map(
            (pattern) => new RegExp(pattern, 'u'),
          );
          for (const [name, member] of Object.entries(value as object)) {
            if (!declared.includes(name) && !patterns.some((pattern) => pattern.test(name)))
              errors.push(...schemaErrors(document, arg, member, `${at}.${name}`));
          }
        }
        break;
      default:
        if (!ANNOTATIONS.has(keyword)) throw new UnreadableSchema(`${at}: unsupported keyword ${keyword}`);
    }
  }
  return errors;
}

/**
 * How an answer of `method template` (`/v1/oidc/policies/{id}`) differs from what the document declares: a status
 * it does not list, a media type or body its schema does not allow, a body where none is declared, a client
 * header it does not declare, a required header missing. Empty when they agree.
 */
export function answerDisagreements(
  document: OpenApiDocument,
  method: string,
  template: string,
  answer: { status: number; headers: Headers; text: string },
): string[] {
  const where = `${method} ${template} → ${answer.status}`;
  const operation = document.paths[template]?.[method.toLowerCase()];
  if (!operation) return [`${where}: the document has no such operation`];
  const declared = operation.responses[String(answer.status)];
  if (!declared) return [`${where}: status not declared (${answer.text.slice(0, 160)})`];
  const out: string[] = [];
  const declaredHeaders = Object.entries(declared.headers ?? {});
  const isDeclared = (name: string) => declaredHeaders.some(([h]) => h.toLowerCase() === name.toLowerCase());
  for (const name of CLIENT_HEADERS) {
    const value = answer.headers.get(name);
    if (value !== null && !isDeclared(name)) out.push(`${where}: sends ${name}: ${value}, not declared`);
  }
  for (const [name, header] of declaredHeaders) {
    const value = answer.headers.get(name);
    if (value === null) {
      if (header.required) out.push(`${where}: lacks required ${name}`);
      continue;
    }
    // A header is text: one whose schema is a number carries the number's text, which is read as the number; an
    // integer's text has no decimal point, or 1.0 would read as the whole number 1.
    const type = (header.schema as { type?: unknown } | undefined)?.type;
    const numeric =
      (type === 'integer' && /^-?\d+$/.test(value)) || (type === 'number' && /^-?\d+(\.\d+)?$/.test(value));
    const read = numeric ? Number(value) : value;
    out.push(...schemaErrors(document, header.schema ?? {}, read).map((e) => `${where}: ${name}: ${e}`));
  }
  if (!declared.content) {
    if (answer.text !== '') out.push(`${where}: a body where none is declared`);
    return out;
  }
  const mediaType = answer.headers.get('Content-Type')?.split(';')[0]?.trim().toLowerCase() ?? '';
  const media = declared.content[mediaType];
  if (!media) return [...out, `${where}: Content-Type ${mediaType || '(none)'} not declared`];
  const body = /json$/.test(mediaType) ? JSON.parse(answer.text) : answer.text;
  return [...out, ...schemaErrors(document, media.schema, body).map((e) => `${where}: ${e}`)];
}
