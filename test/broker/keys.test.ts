// API key format: prefix, base62 body, CRC32 checksum — checked before any storage access.
import { describe, expect, it } from 'vitest';
import { authenticate } from '../../broker/core/authenticate.js';
import {
  checkKeyFormat,
  generateKey,
  keyDigester,
  keyHint,
  withoutSecrets,
  withoutSecretsInJson,
} from '../../broker/core/keys.js';
import type { Store } from '../../broker/store/store.js';

const untouchable = new Proxy({} as Store, {
  get() {
    throw new Error('the store was consulted');
  },
});

describe('API key format', () => {
  it.each(['tenant', 'tenant-read-only', 'secure-registry', 'fine-grained'] as const)(
    '%s keys round-trip',
    (kind) => {
      const key = generateKey(kind);
      expect(key).toMatch(/^ss[argf]_[0-9A-Za-z]{38}$/);
      expect(checkKeyFormat(key)).toEqual({ ok: true, kind });
    },
  );

  it('keys are random', () => {
    const keys = new Set(Array.from({ length: 1000 }, () => generateKey('fine-grained')));
    expect(keys.size).toBe(1000);
  });

  it('any single-character change in the random part breaks the checksum', () => {
    const key = generateKey('fine-grained');
    for (let i = 4; i < 36; i++) {
      const swapped = key[i] === 'A' ? 'B' : 'A';
      const typo = `${key.slice(0, i)}${swapped}${key.slice(i + 1)}`;
      expect(checkKeyFormat(typo)).toMatchObject({ ok: false, reason: expect.stringContaining('checksum') });
    }
  });

  it.each([
    ['wrong prefix', 'ssx_0123456789012345678901234567890123456789'],
    ['too short', 'ssf_abc'],
    ['non-base62', `ssf_${'-'.repeat(38)}`],
    ['truncated', generateKey('tenant').slice(0, -1)],
  ])('rejects %s', (_label, key) => {
    expect(checkKeyFormat(key).ok).toBe(false);
  });

  it('a malformed or mis-checksummed key is refused without touching the store', async () => {
    const deps = { store: untouchable, digest: keyDigester(), now: Date.now };
    const good = generateKey('tenant');
    const bad = `${good.slice(0, -1)}${good.at(-1) === '0' ? '1' : '0'}`;
    await expect(authenticate(bad, deps)).rejects.toMatchObject({ code: 'unauthenticated' });
    await expect(authenticate('ssa_short', deps)).rejects.toMatchObject({ code: 'unauthenticated' });
    await expect(authenticate(good, deps)).rejects.toThrow('the store was consulted');
  });

  it('digests are SHA-256, or HMAC under a pepper; hints show prefix and last four', () => {
    const key = 'ssf_0123456789ABCDEFGHIJabcdefghij012345';
    expect(keyDigester()(key)).toMatch(/^[0-9a-f]{64}$/);
    expect(keyDigester('pepper')(key)).not.toBe(keyDigester()(key));
    expect(keyDigester('pepper')(key)).toBe(keyDigester('pepper')(key));
    expect(keyHint(key)).toBe('ssf_…2345');
  });
});

describe('hiding secrets in text a caller sent', () => {
  // Every error body that echoes a caller's text goes through this, unauthenticated requests' included. Scanning a
  // run of "eyJ" (each could start a token) to its end from each of them took ~10 s of CPU for one 64 KiB request;
  // this is four times that text, which such a scan would take minutes over, and one pass a few milliseconds.
  const runs = [
    'eyJ'.repeat(87_000),
    `${'a'.repeat(130_000)}${'eyJ'.repeat(43_000)}`,
    'eyJa.'.repeat(52_000),
  ];
  it.each(runs.map((text) => [text.slice(0, 12), text]))(
    'reads text shaped to be rescanned (%s…) in one pass',
    (_, text) => {
      expect(withoutSecrets(text).length).toBeLessThanOrEqual(text.length);
      expect(withoutSecretsInJson(JSON.stringify(text)).length).toBeLessThanOrEqual(text.length + 2);
    },
    5_000,
  );
});
