// The broker's ES256 token-signing keys: generated on first start, encrypted at rest, rotated, published as a JWKS.
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { StoreUnavailable } from '../store/sql.js';
import { ERASED_PRIVATE_KEY, type SigningKeyRecord, type Store } from '../store/store.js';
import { elapsed } from './elapsed.js';

/** The longest any broker token lives (POST /v1/tokens allows 12 h); retired keys stay published this long. */
export const MAX_TOKEN_LIFETIME_MS = 12 * 3600 * 1000;
/** How often a replica looks for keys another replica or the CLI added. */
const RELOAD_MS = 60_000;
const MISS_RELOAD_COOLDOWN_MS = 5_000;
/** How long a verifier may cache /.well-known/jwks.json (its Cache-Control max-age). */
export const JWKS_MAX_AGE_SECONDS = 300;
/** The clock difference allowed between replicas, and between them and the machine that rotates. */
export const CLOCK_SKEW_MS = 60_000;
/**
 * How long a rotation's new key is published before it signs: every replica serves it in its JWKS within
 * RELOAD_MS, and a verifier that cached the JWKS just before has refetched it within the max-age. So no
 * verifier meets a token whose key it has not been offered, even one that does not refetch on an unknown kid.
 */
export const PUBLISH_AHEAD_MS = RELOAD_MS + JWKS_MAX_AGE_SECONDS * 1000 + CLOCK_SKEW_MS;

export interface ActiveKey {
  kid: string;
  privateKey: KeyObject;
}

export interface SigningKeys {
  /**
   * The key new tokens are signed with now. Its private key is decrypted once: so is a failure to (an
   * UndecryptableSigningKey, thrown again until a reload finds another key signing), so that asking is cheap.
   */
  active(): Promise<ActiveKey>;
  /**
   * The public key for a kid while it is published, and the latest `iat` a token it signed can carry (null while
   * it signs); undefined for a kid not published. An unknown kid reloads from the store at most once per cooldown.
   */
  verificationKey(kid: string): Promise<{ publicKey: KeyObject; signsUntil: number | null } | undefined>;
  /**
   * The published key set: the active key, the next one, and retired ones whose tokens may still be valid. When the
   * database does not answer its reload, the keys as last read (`current: false`), as a verifier keeps them too.
   */
  jwks(): Promise<{ keys: JsonWebKey[]; current: boolean }>;
  /**
   * Adds a new key that signs from `activeFrom`, PUBLISH_AHEAD_MS from now, and retires the others at that
   * moment; returns the new kid, when it starts signing, the kids it retired, and which keys sign until then, in
   * order, each with when it stops: the one signing now, then the next key of an earlier rotation not yet signing.
   */
  rotate(): Promise<{ kid: string; activeFrom: number; retired: string[]; signsUntilThen: KeyTurn[] }>;
}

/** A key's turn at signing: `kid` signs until `until`. */
export interface KeyTurn {
  kid: string;
  until: number;
}

interface Loaded {
  record: SigningKeyRecord;
  publicKey: KeyObject;
  jwk: JsonWebKey;
  privateKey?: KeyObject;
  /** Why the private key cannot be decrypted under this replica's key-encryption key, once tried. */
  undecryptable?: UndecryptableSigningKey;
}

/** RFC 7638 thumbprint of an EC P-256 public key. */
export function thumbprint(jwk: JsonWebKey): string {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

function encrypt(kek: Buffer, kid: string, plaintext: Buffer): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', kek, iv);
  cipher.setAAD(Buffer.from(kid));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return [
    'v1',
    iv.toString('base64url'),
    cipher.getAuthTag().toString('base64url'),
    body.toString('base64url'),
  ].join('.');
}

/** A stored signing key that the key-encryption key given cannot decrypt: it was stored under another. */
export class UndecryptableSigningKey extends Error {
  override name = 'UndecryptableSigningKey';
}

function decrypt(kek: Buffer, kid: string, sealed: string): Buffer {
  if (sealed === ERASED_PRIVATE_KEY) {
    throw new UndecryptableSigningKey(`signing key ${kid} was erased by oidc-broker signing-key replace`);
  }
  const [version, iv, tag, body] = sealed.split('.');
  if (version !== 'v1' || !iv || !tag || !body)
    throw new Error(`signing key ${kid} has an unknown encryption format`);
  const decipher = createDecipheriv('aes-256-gcm', kek, Buffer.from(iv, 'base64url'));
  decipher.setAAD(Buffer.from(kid));
  decipher.setAuthTag(Buffer.from(tag, 'base64url'));
  try {
    return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]);
  } catch {
    throw new UndecryptableSigningKey(
      `cannot decrypt signing key ${kid}: the key-encryption key is not the one it was stored under ` +
        '(BROKER_KEY_ENCRYPTION_KEY when set, otherwise the key-encryption-key file beside the SQLite database; ' +
        'restore the key it was stored under; if it is lost or leaked, run oidc-broker signing-key replace with ' +
        'the new one)',
    );
  }
}

/** Whether `kek` opens the private key of `record`: the key-encryption key it is stored under. */
function opens(kek: Buffer, record: SigningKeyRecord): boolean {
  try {
    decrypt(kek, record.kid, record.privateKey);
    return true;
  } catch {
    return false;
  }
}

/** The configured key-encryption key opens a stored signing key: nothing is lost, and replacing would erase it. */
export class KeyEncryptionKeyNotLost extends Error {
  override name = 'KeyEncryptionKeyNotLost';
}

function newRecord(kek: Buffer, now: number, activeFrom: number): SigningKeyRecord {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const kid = thumbprint(jwk);
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const publicJwk = JSON.stringify({
    kty: jwk.kty,
    crv: jwk.crv,
    x: jwk.x,
    y: jwk.y,
    kid,
    use: 'sig',
    alg: 'ES256',
  });
  return { kid, publicJwk, privateKey: encrypt(kek, kid, der), createdAt: now, activeFrom, retiredAt: null };
}

/**
 * The latest moment a replica may still sign with a retired key: until it reloads (RELOAD_MS), by a clock that
 * may run a little ahead. Null while the key is not retired.
 */
function lastSigning(record: SigningKeyRecord): number | null {
  return record.retiredAt === null ? null : record.retiredAt + RELOAD_MS + CLOCK_SKEW_MS;
}

/** Published, and trusted, from the rotation that adds it until every token it signed has expired. */
function isPublished(key: Loaded, at: number): boolean {
  const last = lastSigning(key.record);
  return last === null || last + MAX_TOKEN_LIFETIME_MS > at;
}

export async function openSigningKeys(deps: {
  store: Store;
  kek: Buffer;
  now: () => number;
}): Promise<SigningKeys> {
  const { store, kek, now } = deps;
  let keys = new Map<string, Loaded>();
  let loadedAt = 0;
  let lastMissReload = 0;
  let loadsStarted = 0;
  let newestApplied = 0;
  // The latest reload not yet answered, and when it began.
  let reloading: { started: number; done: Promise<void> } | undefined;

  const load = async (started: number) => {
    const order = ++loadsStarted;
    const records = await store.signingKeys.list();
    // Reloads can still overlap (a rotation's, an unknown kid's, a due one beside one that began too long ago)
    // and answer out of order: one that a later reload has overtaken would put back the keys as they were before.
    if (order < newestApplied) return;
    const next = new Map<string, Loaded>();
    for (const record of records) {
      const known = keys.get(record.kid);
      const jwk = JSON.parse(record.publicJwk) as JsonWebKey;
      next.set(record.kid, {
        record,
        jwk,
        publicKey: known?.publicKey ?? createPublicKey({ key: jwk, format: 'jwk' }),
        privateKey: known?.privateKey,
        // The same sealed key under the same key-encryption key fails the same way.
        undecryptable: known?.record.privateKey === record.privateKey ? known.undecryptable : undefined,
      });
    }
    keys = next;
    newestApplied = order;
    // When the read began, so that what a replica serves is never older than RELOAD_MS, however slow the read.
    loadedAt = started;
  };
  const reload = async () => {
    const started = now();
    const flight = { started, done: load(started) };
    reloading = flight;
    try {
      await flight.done;
    } finally {
      if (reloading === flight) reloading = undefined;
    }
  };
  // Every request that finds the keys due waits for a reload; those arriving while one is read share it rather
  // than each reading the store. Only one that began under RELOAD_MS ago is shared, so that what a request is
  // answered with is still never older than RELOAD_MS; if it fails, each request sharing it fails (503) and the
  // next one due reads again. A clock set back since counts as long ago (see elapsed), so a replica whose clock is
  // set right does not go on with the keys as they were for as long as the clock went back.
  const fresh = async () => {
    if (elapsed(now(), loadedAt) < RELOAD_MS) return;
    if (reloading && elapsed(now(), reloading.started) < RELOAD_MS) await reloading.done;
    else await reload();
  };
  // Of the keys not retired at `at`, the one activated last signs; replicas that raced to create the first key
  // all agree on it. Should none be active yet, the one that will be soonest signs rather than none.
  const signingAt = (at: number): Loaded | undefined => {
    const live = [...keys.values()].filter((k) => k.record.retiredAt === null || k.record.retiredAt > at);
    const latestFirst = (a: Loaded, b: Loaded) =>
      b.record.activeFrom - a.record.activeFrom || (a.record.kid < b.record.kid ? 1 : -1);
    return (
      live.filter((k) => k.record.activeFrom <= at).sort(latestFirst)[0] ??
      live.sort((a, b) => -latestFirst(a, b))[0]
    );
  };

  // Which keys sign from `from` to `to`, in turn: the signer changes only where a key starts or stops signing.
  const turns = (from: number, to: number): KeyTurn[] => {
    const changes = [...keys.values()]
      .flatMap((k) => [k.record.activeFrom, k.record.retiredAt ?? to])
      .filter((t) => t > from && t < to);
    const result: KeyTurn[] = [];
    for (const start of [from, ...new Set(changes)].sort((a, b) => a - b)) {
      const kid = signingAt(start)?.record.kid;
      if (kid === undefined) continue;
      const last = result.at(-1);
      if (last?.kid === kid) continue;
      if (last) last.until = start;
      result.push({ kid, until: to });
    }
    return result;
  };

  // The private key of the key signing now, decrypted once; an UndecryptableSigningKey is kept and thrown again.
  const privateKeyOf = (key: Loaded): KeyObject => {
    if (key.undecryptable) throw key.undecryptable;
    try {
      key.privateKey ??= createPrivateKey({
        key: decrypt(kek, key.record.kid, key.record.privateKey),
        format: 'der',
        type: 'pkcs8',
      });
    } catch (error) {
      if (error instanceof UndecryptableSigningKey) key.undecryptable = error;
      throw error;
    }
    return key.privateKey;
  };

  await reload();
  if (!signingAt(now())) {
    await store.signingKeys.insertFirst(newRecord(kek, now(), now()));
    await reload();
  }
  // Decrypting now surfaces a wrong key-encryption key at start rather than on the first exchange.
  privateKeyOf(signingAt(now())!);

  return {
    async active() {
      await fresh();
      const key = signingAt(now())!;
      return { kid: key.record.kid, privateKey: privateKeyOf(key) };
    },
    async verificationKey(kid) {
      await fresh();
      if (!keys.has(kid) && elapsed(now(), lastMissReload) >= MISS_RELOAD_COOLDOWN_MS) {
        lastMissReload = now();
        await reload();
      }
      const key = keys.get(kid);
      if (!key || !isPublished(key, now())) return undefined;
      return { publicKey: key.publicKey, signsUntil: lastSigning(key.record) };
    },
    async jwks() {
      let current = true;
      try {
        await fresh();
      } catch (error) {
        // Offline verifiers fetch the JWKS while the database may be down; what was read last is still the best
        // answer (a retired key still drops out on time), and what rotated meanwhile no replica can tell either.
        if (!(error instanceof StoreUnavailable)) throw error;
        current = false;
      }
      const at = now();
      return { keys: [...keys.values()].filter((k) => isPublished(k, at)).map((k) => k.jwk), current };
    },
    async rotate() {
      await reload();
      const at = now();
      const activeFrom = at + PUBLISH_AHEAD_MS;
      // Every key not yet retired, including the next key of a rotation a few minutes earlier, signs until then.
      const record = newRecord(kek, at, activeFrom);
      const retired = await store.signingKeys.rotateTo(record);
      await reload();
      return { kid: record.kid, activeFrom, retired, signsUntilThen: turns(at, activeFrom) };
    },
  };
}

/**
 * For a key-encryption key that is lost, or leaked: a new signing key under `kek` that signs at once (from a
 * clock skew ago, so that a replica whose clock runs behind signs with it too), every other key retired now and
 * its private key erased. The retired keys stay published until the tokens they signed have expired; a replica
 * still running with the old key-encryption key cannot sign with the new key, and must be restarted with `kek`.
 */
export async function replaceSigningKeys(deps: {
  store: Store;
  kek: Buffer;
  now: () => number;
  /** Deletes the other keys, public keys too: what they signed stops verifying, at every replica's next reload. */
  withdraw?: boolean;
}): Promise<{ kid: string; retired: string[] }> {
  // Run by mistake against a healthy broker, it would erase the private keys every replica signs with.
  const opened = (await deps.store.signingKeys.list()).find((record) => opens(deps.kek, record));
  if (opened) {
    throw new KeyEncryptionKeyNotLost(
      `the configured key-encryption key still opens the stored signing keys (${opened.kid}): nothing is lost, ` +
        'and nothing was changed. To change the signing key, run oidc-broker signing-key rotate; to move to a new ' +
        'key-encryption key (the old one leaked), configure the new one and run this again',
    );
  }
  const at = deps.now();
  const record = newRecord(deps.kek, at, at - CLOCK_SKEW_MS);
  const retired = await deps.store.signingKeys.replaceAll(record, at, { withdraw: deps.withdraw });
  return { kid: record.kid, retired };
}
