// The OpenAPI checker the conformance suite relies on: no value passes a schema it cannot read, wherever it stands.
import { describe, expect, it } from 'vitest';
import { answerDisagreements, type OpenApiDocument, schemaErrors } from './openapi-check.js';

const document: OpenApiDocument = { paths: {}, components: { schemas: {} } };

/** Whether the checker lets the value through: a complaint, or a refusal to read the schema, is a no. */
function passes(schema: unknown, value: unknown): boolean {
  try {
    return schemaErrors(document, schema, value).length === 0;
  } catch {
    return false;
  }
}

describe('a schema the checker cannot read lets no value through', () => {
  it('at the top', () => {
    expect(passes({ anyOf: [{ type: 'string' }] }, 'x')).toBe(false);
  });

  it('inside a oneOf, though another alternative takes the value', () => {
    // "x" matches both alternatives, so the oneOf refuses it; read without `not`, it seems to match only one.
    expect(passes({ oneOf: [{ type: 'string' }, { type: 'string', not: { const: 'y' } }] }, 'x')).toBe(false);
    expect(
      passes({ oneOf: [{ type: 'string' }, { type: 'string', format: 'uri' }] }, 'https://x.example'),
    ).toBe(false);
    expect(passes({ oneOf: [{ type: 'string' }, { $ref: '#/components/schemas/Missing' }] }, 'x')).toBe(
      false,
    );
  });
});

describe('a oneOf it reads', () => {
  it('takes a value exactly one alternative takes, and refuses one that two take or none', () => {
    const schema = { oneOf: [{ required: ['a'] }, { required: ['b'] }] };
    expect(passes(schema, { a: 1 })).toBe(true);
    expect(schemaErrors(document, schema, { a: 1, b: 2 })).toEqual([
      '$: matches 2 of the oneOf alternatives, not exactly one',
    ]);
    expect(passes(schema, {})).toBe(false);
  });
});

describe('a declared response header', () => {
  const withRetryAfter: OpenApiDocument = {
    paths: {
      '/x': {
        post: {
          responses: {
            '429': {
              headers: { 'Retry-After': { required: true, schema: { type: 'integer', minimum: 0 } } },
            },
          },
        },
      },
    },
    components: { schemas: {} },
  };
  const answer = (retryAfter: string) => ({
    status: 429,
    headers: new Headers({ 'Retry-After': retryAfter }),
    text: '',
  });

  it('is held to its schema, the text of a number read as the number', () => {
    expect(answerDisagreements(withRetryAfter, 'POST', '/x', answer('30'))).toEqual([]);
    expect(answerDisagreements(withRetryAfter, 'POST', '/x', answer('soon'))).toEqual([
      'POST /x → 429: Retry-After: $: is string, expected integer',
    ]);
    expect(answerDisagreements(withRetryAfter, 'POST', '/x', answer('1.5'))).toEqual([
      'POST /x → 429: Retry-After: $: is string, expected integer',
    ]);
    // The text of a whole number has no decimal point: 1.0 is not the delta-seconds Retry-After carries.
    expect(answerDisagreements(withRetryAfter, 'POST', '/x', answer('1.0'))).toEqual([
      'POST /x → 429: Retry-After: $: is string, expected integer',
    ]);
  });
});
