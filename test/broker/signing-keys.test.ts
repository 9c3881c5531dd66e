// The broker's own signing keys over time: a rotation's key is in the JWKS before anything is signed with it.
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../broker/config.js';
import { openSigningKeys, PUBLISH_AHEAD_MS, type SigningKeys } from '../../broker/core/signing-keys.js';
import { openStore } from '../../broker/store/open-store.js';
import type { Store } from '../../broker/store/store.js';
import { createTestDatabase, requestedEngine, type TestDatabase } from '../support/database.js';
import { deferred } from '../support/deferred.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const kek = randomBytes(32);

let db: TestDatabase;
let store: Store;
const clock = { now: 1_800_000_000_000 };

/** A replica: its own cache of the keys, on the shared database and clock. */
const replica = () => openSigningKeys({ store, kek, now: () => clock.now });
const signer = async (keys: SigningKeys) => (await keys.active()).kid;
const published = async (keys: SigningKeys) => (await keys.jwks()).keys.map((k) => k.kid);

beforeEach(async () => {
  db = await createTestDatabase();
  store = await openStore(
    loadConfig({ DATABASE_URL: db.url, BROKER_KEY_ENCRYPTION_KEY: '33'.repeat(32) }).database,
  );
});
afterEach(async () => {
  await store.close();
  await db.drop();
});

describe(`signing keys (${requestedEngine()})`, () => {
  it('the first key signs at once and is the only one published', async () => {
    const keys = await replica();
    const kid = await signer(keys);
    expect(await published(keys)).toEqual([kid]);
  });

  it('from the moment any replica signs with a key, every replica has published it for a JWKS cache time', async () => {
    const a = await replica();
    const b = await replica();
    const first = await signer(a);
    const rotatedAt = clock.now;
    const { kid: next, activeFrom, retired } = await a.rotate();
    expect(retired).toEqual([first]);
    expect(activeFrom).toBe(rotatedAt + PUBLISH_AHEAD_MS);

    // B has not reloaded yet: it neither publishes nor uses the new key.
    expect(await published(b)).toEqual([first]);
    // Within a minute every replica publishes it; a verifier caching for 300 s has it 300 s later.
    clock.now += MINUTE;
    expect(await published(b)).toEqual([first, next]);
    expect(rotatedAt + MINUTE + 300_000).toBeLessThan(activeFrom);
    expect(await signer(b)).toBe(first);
    clock.now = activeFrom - 1;
    expect(await signer(a)).toBe(first);
    expect(await signer(b)).toBe(first);
    clock.now = activeFrom;
    expect(await signer(a)).toBe(next);
    expect(await signer(b)).toBe(next);
  });

  it('a replica publishes a new key within a minute even when its reloads overlap and finish out of order', async () => {
    const a = await replica();
    // Replica b's reads of the key list can be held after they have read, as a slow database answer is.
    let held: { read: ReturnType<typeof deferred>; release: ReturnType<typeof deferred> } | undefined;
    const slow: Store = {
      ...store,
      signingKeys: {
        ...store.signingKeys,
        async list() {
          const hold = held;
          held = undefined;
          const rows = await store.signingKeys.list();
          if (hold) {
            hold.read.resolve();
            await hold.release.promise;
          }
          return rows;
        },
      },
    };
    const b = await openSigningKeys({ store: slow, kek, now: () => clock.now });
    const first = await signer(b);
    clock.now += MINUTE;
    // A request starts b's reload, which reads the keys before the rotation and answers late.
    const hold = { read: deferred(), release: deferred() };
    held = hold;
    const slowRequest = published(b);
    await hold.read.promise;
    const { kid: next } = await a.rotate();
    // The next request reloads meanwhile and finds the new key; then the slow reload answers.
    expect(await published(b)).toEqual([first, next]);
    hold.release.resolve();
    await slowRequest;
    expect(await published(b)).toEqual([first, next]);
  });

  it('two rotations in a row hand over in order, each key published before it signs', async () => {
    const keys = await replica();
    const k0 = await signer(keys);
    const k1 = await keys.rotate();
    clock.now += 2 * MINUTE;
    const k2 = await keys.rotate();
    expect(k2.retired).toEqual([k1.kid]);
    expect(await published(keys)).toEqual([k0, k1.kid, k2.kid]);

    clock.now = k1.activeFrom - 1;
    expect(await signer(keys)).toBe(k0);
    clock.now = k1.activeFrom;
    expect(await signer(keys)).toBe(k1.kid);
    clock.now = k2.activeFrom;
    expect(await signer(keys)).toBe(k2.kid);

    // Each stays published until 12 h after it stopped signing, and a little more (a replica that has not
    // reloaded may sign with it for up to a minute longer).
    clock.now = k1.activeFrom + 12 * HOUR + MINUTE;
    expect(await published(keys)).toEqual([k0, k1.kid, k2.kid]);
    clock.now = k1.activeFrom + 12 * HOUR + 2 * MINUTE + 1;
    expect(await published(keys)).toEqual([k1.kid, k2.kid]);
    clock.now = k2.activeFrom + 12 * HOUR + 2 * MINUTE + 1;
    expect(await published(keys)).toEqual([k2.kid]);
  });
});
