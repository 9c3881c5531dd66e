import { describe, expect, it } from 'vitest';
import { createLogger } from '../../broker/logger.js';

const collect = () => {
  const lines: string[] = [];
  return { lines, logger: createLogger({ write: (line) => lines.push(line) }, 'debug', {}, () => 0) };
};

describe('log lines', () => {
  it('write what would break or disguise a line where logs are read as JSON escapes, keeping the value', () => {
    // Text a client or an issuer's document sends: a next-line control (a line break for some log readers), the
    // line and paragraph separators, and a right-to-left override (a terminal shows what follows reversed).
    const sent = 'a\u0085b\u2028c\u2029d\u202Eexe.txt\u2066e\u200Ff\u061Cg';
    const { lines, logger } = collect();
    logger.warn('refused', { detail: sent });
    const [line] = lines;
    expect(line).toBe(
      '{"time":"1970-01-01T00:00:00.000Z","level":"warn","msg":"refused","detail":' +
        '"a\\u0085b\\u2028c\\u2029d\\u202Eexe.txt\\u2066e\\u200Ff\\u061Cg"}\n',
    );
    expect(JSON.parse(line!).detail).toBe(sent);
  });

  it('leave other text as it is, accents and emoji included', () => {
    const { lines, logger } = collect();
    logger.info('ok', { name: 'Straße 😀 — naïve' });
    expect(lines[0]).toContain('"name":"Straße 😀 — naïve"');
  });
});
