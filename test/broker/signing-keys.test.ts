// The broker's own signing keys over time: a rotation's key is in the JWKS before anything is signed with it.
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../broker/config.js';
import {
  openSigningKeys,
  PUBLISH_AHEAD_MS,
  replaceSigningKeys,
  type SigningKeys,
} from '../../broker/core/signing-keys.js';
import { openStore } from '../../broker/store/open-store.js';
import { StoreUnavailable } from '../../broker/store/sql.js';
import type { Store } from '../../broker/store/store.js';
import { createTestDatabase, requestedEngine, type TestDatabase } from '../support/database.js';
import { deferred } from '../support/deferred.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const kek = randomBytes(32);

let db: TestDatabase;
let store: Store;
const clock = { now: 1_800_000_000_000 };

/** A replica: its own cache of the keys, on the shared database (or a watched view of it) and clock. */
const replica = (on: Store = store) => openSigningKeys({ store: on, kek, now: () => clock.now });
const signer = async (keys: SigningKeys) => (await keys.active()).kid;
const published = async (keys: SigningKeys) => (await keys.jwks()).keys.map((k) => k.kid);

/**
 * The shared database as one replica sees it: its reads of the key list are counted, and the next one can be
 * held once it has read (as a slow database answer is) and made to fail then (as a database that stops answering).
 */
function watchedStore() {
  let held: { read: ReturnType<typeof deferred>; release: ReturnType<typeof deferred> } | undefined;
  let failure: Error | undefined;
  const watched = {
    reads: 0,
    /** Holds the next read after it has read: `read` resolves then, and the read answers on `release`. */
    holdNext() {
      held = { read: deferred(), release: deferred() };
      return held;
    },
    failNext(error: Error) {
      failure = error;
    },
    store: {
      ...store,
      signingKeys: {
        ...store.signingKeys,
        async list() {
          watched.reads++;
          const [hold, fail] = [held, failure];
          [held, failure] = [undefined, undefined];
          const rows = await store.signingKeys.list();
          if (hold) {
            hold.read.resolve();
            await hold.release.promise;
          }
          if (fail) throw fail;
          return rows;
        },
      },
    } satisfies Store,
  };
  return watched;
}

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
    const watched = watchedStore();
    const b = await replica(watched.store);
    const first = await signer(b);
    clock.now += MINUTE;
    // A request starts b's reload, which reads the keys before the rotation and has not answered a minute later.
    const hold = watched.holdNext();
    const slowRequest = published(b);
    await hold.read.promise;
    const { kid: next } = await a.rotate();
    clock.now += MINUTE;
    // A request then does not wait for it: it reloads and finds the new key; then the slow reload answers.
    expect(await published(b)).toEqual([first, next]);
    hold.release.resolve();
    await slowRequest;
    expect(await published(b)).toEqual([first, next]);
    expect(watched.reads).toBe(3);
  });

  it('the requests that arrive while a due reload is being read share that one read', async () => {
    const watched = watchedStore();
    const keys = await replica(watched.store);
    const kid = await signer(keys);
    const readsAtStart = watched.reads;
    clock.now += MINUTE;
    const hold = watched.holdNext();
    const firstRequest = published(keys);
    await hold.read.promise;
    const more = Array.from({ length: 9 }, (_, i) =>
      i % 3 === 0 ? published(keys) : i % 3 === 1 ? signer(keys) : keys.verificationKey(kid),
    );
    hold.release.resolve();
    await Promise.all([firstRequest, ...more]);
    expect(watched.reads - readsAtStart).toBe(1);
    // Fresh now: requests within the next minute read nothing.
    clock.now += MINUTE - 1;
    await Promise.all([published(keys), signer(keys)]);
    expect(watched.reads - readsAtStart).toBe(1);
  });

  it('a shared reload that fails fails each request that waited for it, and the next request reads again', async () => {
    const watched = watchedStore();
    const keys = await replica(watched.store);
    const kid = await signer(keys);
    const readsAtStart = watched.reads;
    clock.now += MINUTE;
    const hold = watched.holdNext();
    watched.failNext(new StoreUnavailable(new Error('Query read timeout')));
    const waiting = [signer(keys), keys.verificationKey(kid)];
    await hold.read.promise;
    waiting.push(signer(keys));
    hold.release.resolve();
    const outcomes = await Promise.allSettled(waiting);
    expect(outcomes.map((o) => o.status === 'rejected' && o.reason)).toEqual(
      waiting.map(() => expect.any(StoreUnavailable)),
    );
    expect(watched.reads - readsAtStart).toBe(1);

    expect(await published(keys)).toEqual([kid]);
    expect(watched.reads - readsAtStart).toBe(2);
    await Promise.all([published(keys), signer(keys)]);
    expect(watched.reads - readsAtStart).toBe(2);
  });

  it('while the database does not answer, the JWKS serves the keys as last read, marked as not current', async () => {
    const watched = watchedStore();
    const keys = await replica(watched.store);
    const kid = await signer(keys);
    expect(await keys.jwks()).toEqual({ keys: [expect.objectContaining({ kid })], current: true });
    clock.now += MINUTE;
    watched.failNext(new StoreUnavailable(new Error('Connection terminated')));
    expect(await keys.jwks()).toEqual({ keys: [expect.objectContaining({ kid })], current: false });
    // Signing still needs the keys as they are now: it fails until the database answers.
    watched.failNext(new StoreUnavailable(new Error('Connection terminated')));
    await expect(signer(keys)).rejects.toBeInstanceOf(StoreUnavailable);
    // Once it answers again, the JWKS is current, and a key rotated meanwhile (by another replica) is in it.
    const other = await replica();
    const { kid: next } = await other.rotate();
    expect((await keys.jwks()).current).toBe(true);
    expect(await published(keys)).toEqual(expect.arrayContaining([kid, next]));
  });

  it('a JWKS served from the keys as last read still drops a retired key once its tokens have all expired', async () => {
    const watched = watchedStore();
    const keys = await replica(watched.store);
    const first = await signer(keys);
    const { kid: next } = await keys.rotate();
    clock.now += 14 * HOUR;
    watched.failNext(new StoreUnavailable(new Error('Connection terminated')));
    expect(await keys.jwks()).toEqual({ keys: [expect.objectContaining({ kid: next })], current: false });
    expect(await published(await replica())).not.toContain(first);
  });

  it('an error other than an unavailable database is not hidden by the JWKS', async () => {
    const watched = watchedStore();
    const keys = await replica(watched.store);
    clock.now += MINUTE;
    watched.failNext(new TypeError('a defect'));
    await expect(keys.jwks()).rejects.toBeInstanceOf(TypeError);
  });

  it("a replica whose clock is set back (NTP, a restored VM) still takes up a rotation's key on time", async () => {
    // B's clock ran an hour ahead when it loaded the keys, and looked for an unknown kid; then NTP set it right.
    const b = await replica();
    const first = await signer(b);
    expect(await b.verificationKey('no-such-kid')).toBeUndefined();
    clock.now -= HOUR;
    const a = await replica();
    const { kid: next, activeFrom } = await a.rotate();
    // Within a minute B publishes the new key, and it signs with it from the moment every other replica does.
    clock.now += MINUTE;
    expect((await published(b)).sort()).toEqual([first, next].sort());
    clock.now = activeFrom;
    expect(await signer(b)).toBe(next);
    // A key that signs at once (oidc-broker signing-key replace) is looked up at once, not an hour later.
    const replaced = await replaceSigningKeys({ store, kek: randomBytes(32), now: () => clock.now });
    expect(await b.verificationKey(replaced.kid)).toBeDefined();
  });

  it('two rotations in a row hand over in order, each key published before it signs', async () => {
    const keys = await replica();
    const k0 = await signer(keys);
    const k1 = await keys.rotate();
    clock.now += 2 * MINUTE;
    const k2 = await keys.rotate();
    expect(k2.retired).toEqual([k1.kid]);
    expect(k2.signsUntilThen).toEqual([
      { kid: k0, until: k1.activeFrom },
      { kid: k1.kid, until: k2.activeFrom },
    ]);
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
