// Broker access tokens (RFC 9068, ES256): minting, and verifying them as credentials on every request.
import { randomUUID, sign, verify } from 'node:crypto';
import type { Store, Tenant } from '../store/store.js';
import { unauthenticated } from './authenticate.js';
import { parseCompactJws } from './jws-compact.js';
import { isPermission, type Permission, withImplied } from './permissions.js';
import { effectivePermissions, type Principal } from './principal.js';
import { type ActiveKey, CLOCK_SKEW_MS, MAX_TOKEN_LIFETIME_MS, type SigningKeys } from './signing-keys.js';
import type { TenantDirectory } from './tenant-directory.js';

export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export interface MintInput {
  tenant: Tenant;
  /** Its `permissions` and `scope`, as granted: each `:write` with the `:read` it implies (withImplied). */
  permissions: Permission[];
  lifetimeSeconds: number;
  /** `sub`: the workflow's subject for exchanged tokens, the minting credential otherwise. */
  subject: string;
  /** `client_id`: the trust policy's id, or the minting credential's id. */
  clientId: string;
  /** The claims exchanged tokens also carry. */
  extra?: Pick<AccessTokenClaims, 'policy' | 'repository' | 'repository_owner' | 'ref' | 'run_id'>;
  /** Chosen by the caller when the id must be recorded before the token exists. */
  jti?: string;
  /**
   * A key from signingKey(), read by a caller that records the token before signing it, so that a key the database
   * cannot give fails the request before anything is recorded of a token never issued. The token is signed with
   * the key that signs now (a rotation may have retired this one meanwhile), or with this one if that cannot be read.
   */
  signingKey?: ActiveKey;
  /** When the minting credential expires (ms), if it does: the token's `exp` is no later, read when it is signed. */
  notAfter?: number;
}

export interface MintedToken {
  token: string;
  jti: string;
  expiresAt: number;
  /** Seconds from `iat` to `exp`: the lifetime asked for, or less where `notAfter` came first. */
  expiresIn: number;
}

export interface AccessTokenClaims {
  iss: string;
  sub: string;
  aud: string;
  client_id: string;
  tenant: string;
  scope: string;
  permissions: Permission[];
  jti: string;
  iat: number;
  exp: number;
  policy?: string;
  repository?: string;
  repository_owner?: string;
  ref?: string;
  run_id?: string;
}

export interface AccessTokens {
  /** The key mint() signs with now. */
  signingKey(): Promise<ActiveKey>;
  mint(input: MintInput): Promise<MintedToken>;
  /**
   * Verifies signature, issuer, expiry, tenant and the revocation list; the claims, or why not. `expiredWithinMs`:
   * a token that expired no longer ago than this still passes (revoking it, for replicas whose clocks run behind).
   * `anyIssuer`: a token this broker's keys signed passes whatever its `iss` (revoking it, for a replica whose
   * BROKER_PUBLIC_URL is another, which would otherwise go on taking it).
   */
  verify(
    token: string,
    options?: { expiredWithinMs?: number; anyIssuer?: boolean },
  ): Promise<{ ok: true; claims: AccessTokenClaims; tenant: Tenant } | { ok: false; reason: string }>;
  /** As a request credential: a Principal, or 401. */
  authenticate(token: string): Promise<Principal>;
}

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
const HEADER_NAMES = new Set(['alg', 'typ', 'kid']);

export function createAccessTokens(deps: {
  store: Store;
  tenants: TenantDirectory;
  signingKeys: SigningKeys;
  issuer: string;
  now: () => number;
}): AccessTokens {
  const { store, tenants, signingKeys, issuer, now } = deps;

  async function verifyToken(
    token: string,
    { expiredWithinMs = 0, anyIssuer = false }: { expiredWithinMs?: number; anyIssuer?: boolean } = {},
  ) {
    const parsed = parseCompactJws(token, { maxBytes: 8192, integerNumbersOnly: true });
    if (!parsed.ok) return { ok: false as const, reason: parsed.reason };
    const { header, payload: p } = parsed;
    if (
      Object.keys(header).some((k) => !HEADER_NAMES.has(k)) ||
      header.alg !== 'ES256' ||
      header.typ !== 'at+jwt'
    ) {
      return { ok: false as const, reason: 'not an access token of this broker' };
    }
    const key = typeof header.kid === 'string' ? await signingKeys.verificationKey(header.kid) : undefined;
    if (!key) return { ok: false as const, reason: 'unknown signing key' };
    const { publicKey, signsUntil } = key;
    const valid = verify(
      'sha256',
      parsed.signingInput,
      { key: publicKey, dsaEncoding: 'ieee-p1363' },
      parsed.signature,
    );
    if (!valid) return { ok: false as const, reason: 'signature does not verify' };
    // Only this broker's keys verify, so a token of another `iss` was signed by a replica on this database configured
    // with another BROKER_PUBLIC_URL: said so, as the fleet is split until the replicas agree.
    if (p.iss !== issuer && !anyIssuer) {
      return {
        ok: false as const,
        reason:
          `issued as ${JSON.stringify(String(p.iss))}, not as this broker's ${JSON.stringify(issuer)}: ` +
          'BROKER_PUBLIC_URL differs between the replicas on this database, or changed since the token was issued',
      };
    }
    if (typeof p.exp !== 'number' || p.exp * 1000 <= now() - expiredWithinMs) {
      return { ok: false as const, reason: 'expired' };
    }
    // Whoever holds a retired or leaked key can sign anything: its tokens are believed only where a genuine one
    // could be, issued no later than a replica signed with the key, no further ahead than clocks differ, and
    // living no longer than the broker ever issues.
    if (typeof p.iat !== 'number' || p.iat * 1000 > now() + CLOCK_SKEW_MS) {
      return { ok: false as const, reason: 'issued in the future' };
    }
    if ((p.exp - p.iat) * 1000 > MAX_TOKEN_LIFETIME_MS) {
      return { ok: false as const, reason: 'lives longer than any token this broker issues' };
    }
    if (signsUntil !== null && p.iat * 1000 > signsUntil) {
      return { ok: false as const, reason: 'issued after its signing key was retired' };
    }
    if (typeof p.jti !== 'string' || typeof p.tenant !== 'string' || !Array.isArray(p.permissions)) {
      return { ok: false as const, reason: 'malformed claims' };
    }
    const tenant = await tenants.byName(p.tenant);
    if (!tenant || p.aud !== tenant.audience) return { ok: false as const, reason: 'unknown tenant' };
    if (await store.tokens.isRevoked(p.jti)) return { ok: false as const, reason: 'revoked' };
    const claims = p as unknown as AccessTokenClaims;
    const granted = claims.permissions.filter(isPermission);
    // What the token may do: each `:write` with the `:read` it implies, which tokens minted before scope carried
    // it hold without saying (`harden-runner:write` alone).
    let permissions = withImplied(granted);
    // An exchanged token lives only as long as the trust policy that granted it (its client_id): deleting the
    // policy ends what it granted, with nothing written per exchange to find those tokens by. Replacing it keeps
    // the token, with no more than the policy allows now: what was taken away ends at once, as a role's
    // permissions do for its sessions, and what was added is not granted.
    if (typeof p.policy === 'string') {
      const policy = await store.policies.get(tenant.id, String(p.client_id));
      if (!policy) return { ok: false as const, reason: 'the trust policy that granted it was deleted' };
      const allowed = new Set(withImplied(policy.permissions));
      permissions = permissions.filter((permission) => allowed.has(permission));
    }
    const asGranted =
      permissions.length === granted.length &&
      permissions.every((permission, i) => permission === granted[i]);
    const scope = asGranted ? claims.scope : permissions.join(' ');
    return { ok: true as const, claims: { ...claims, scope, permissions }, tenant };
  }

  return {
    signingKey: () => signingKeys.active(),
    async mint(input) {
      const { kid, privateKey } = await signingKeys.active().catch((error: unknown) => {
        if (input.signingKey) return input.signingKey;
        throw error;
      });
      const iat = Math.floor(now() / 1000);
      const latest =
        input.notAfter === undefined ? Number.POSITIVE_INFINITY : Math.floor(input.notAfter / 1000);
      const exp = Math.min(iat + input.lifetimeSeconds, latest);
      const jti = input.jti ?? randomUUID();
      const claims: AccessTokenClaims = {
        iss: issuer,
        sub: input.subject,
        aud: input.tenant.audience,
        client_id: input.clientId,
        tenant: input.tenant.name,
        scope: input.permissions.join(' '),
        permissions: input.permissions,
        jti,
        iat,
        exp,
        ...input.extra,
      };
      const signingInput = `${b64({ alg: 'ES256', typ: 'at+jwt', kid })}.${b64(claims)}`;
      // Signed on libuv's thread pool, so the event loop keeps serving other requests meanwhile.
      const signature = await new Promise<Buffer>((resolve, reject) =>
        sign(
          'sha256',
          Buffer.from(signingInput),
          { key: privateKey, dsaEncoding: 'ieee-p1363' },
          (error, sig) => (error ? reject(error) : resolve(sig)),
        ),
      );
      return {
        token: `${signingInput}.${signature.toString('base64url')}`,
        jti,
        expiresAt: exp * 1000,
        expiresIn: exp - iat,
      };
    },
    verify: verifyToken,
    async authenticate(token) {
      const result = await verifyToken(token);
      if (!result.ok) throw unauthenticated(`access token rejected: ${result.reason}`, 'invalid_token');
      const { claims, tenant } = result;
      const policy = typeof claims.policy === 'string' ? claims.policy : undefined;
      return {
        tenant,
        credential: {
          kind: 'access-token',
          id: claims.jti,
          name: policy ? `trust policy ${policy}` : `token from ${claims.client_id}`,
        },
        permissions: effectivePermissions(tenant, 'access-token', claims.permissions),
        expiresAt: claims.exp * 1000,
        ...(policy === undefined ? {} : { grantedBy: claims.client_id }),
      };
    },
  };
}
