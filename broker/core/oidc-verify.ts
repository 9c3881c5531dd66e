// Strict verification of a GitHub Actions OIDC token (SECURITY-CASES A–H); yields typed, verified claims.
import { type KeyObject, verify } from 'node:crypto';
import { GITHUB_OWNER } from './github-names.js';
import type { FetchErrorKind, IssuerKeys } from './issuer-keys.js';
import { parseCompactJws } from './jws-compact.js';

/** The one documented clock-skew leeway for exp, nbf and iat (DESIGN §4). */
export const CLOCK_SKEW_SECONDS = 60;

/** Claims of a token whose signature, issuer, times and claim shapes were all checked. */
export interface VerifiedClaims {
  iss: string;
  /** Exactly one audience; the caller maps it to a tenant. */
  aud: string;
  sub: string;
  jti: string;
  repository: string;
  repository_id: string;
  repository_owner: string;
  repository_owner_id: string;
  ref: string;
  job_workflow_ref: string;
  exp: number;
  iat: number;
  nbf: number;
  environment?: string;
  event_name?: string;
  run_id?: string;
  run_number?: string;
  run_attempt?: string;
  actor?: string;
  actor_id?: string;
  workflow?: string;
  workflow_ref?: string;
  workflow_sha?: string;
  job_workflow_sha?: string;
  ref_type?: string;
  ref_protected?: string;
  repository_visibility?: string;
  runner_environment?: string;
  sha?: string;
  head_ref?: string;
  base_ref?: string;
  check_run_id?: string;
  enterprise?: string;
  enterprise_id?: string;
}

export type VerifyErrorCode = 'invalid_token' | 'issuer_unavailable';

export type VerifyResult =
  | { ok: true; claims: VerifiedClaims }
  | { ok: false; code: VerifyErrorCode; reason: string; retryAfterSeconds?: number };

export interface VerifyDeps {
  issuers: Pick<IssuerKeys, 'isTrusted' | 'getKey'>;
  /** Current time in milliseconds. */
  now: () => number;
  /** Clock-skew allowance for exp, nbf and iat; values outside 0–60 are clamped. */
  leewaySeconds: number;
  maxTokenBytes?: number;
}

const DEFAULT_MAX_TOKEN_BYTES = 8192;
const MAX_LEEWAY_SECONDS = 60;
const MAX_LIFETIME_SECONDS = 24 * 60 * 60;

const ALLOWED_HEADER = new Set(['alg', 'kid', 'typ', 'x5t']);
const KID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
const X5T_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
const REPOSITORY_PATTERN = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/;
const ID_PATTERN = /^[0-9]+$/;
const MAX_AUDIENCE_LENGTH = 255;
/**
 * The replay record is keyed by (iss, jti), so the jti must be a key every database can index: PostgreSQL refuses a
 * btree entry over about 2.7 kB. GitHub's are 36-character UUIDs.
 */
const MAX_JTI_LENGTH = 255;
/**
 * GitHub never puts these in a claim: a control character could start a log line or a workflow command where a
 * claim is shown, NUL cannot be stored in PostgreSQL text, and an unpaired surrogate is not text at all.
 */
const UNSAFE_IN_CLAIM = /[\p{Cc}\p{Cs}]/u;

const REQUIRED_STRING_CLAIMS = [
  'jti',
  'sub',
  'repository',
  'repository_id',
  'repository_owner',
  'repository_owner_id',
  'ref',
  'job_workflow_ref',
] as const;

const OPTIONAL_STRING_CLAIMS = [
  'environment',
  'event_name',
  'run_id',
  'run_number',
  'run_attempt',
  'actor',
  'actor_id',
  'workflow',
  'workflow_ref',
  'workflow_sha',
  'job_workflow_sha',
  'ref_type',
  'ref_protected',
  'repository_visibility',
  'runner_environment',
  'sha',
  'head_ref',
  'base_ref',
  'check_run_id',
  'enterprise',
  'enterprise_id',
] as const;

/**
 * Required claims GitHub may send empty: a job with no branch or tag, such as one triggered by a deployment created
 * for a commit sha, carries `ref: ""` (GITHUB_REF is "empty if created with a commit SHA"). A policy that names a
 * ref never matches it; one that does not, matches it as it matches any other ref.
 */
const MAY_BE_EMPTY: ReadonlySet<string> = new Set(['ref']);

const TIME_CLAIMS = ['exp', 'iat', 'nbf'] as const;

/**
 * Why the issuer's keys could not be fetched, for the caller: a discovery document naming another issuer (a
 * mistyped GHES URL) will not mend itself, an outage will. The operator's log has the status or system error.
 */
const FETCH_FAILURES: Record<FetchErrorKind, string> = {
  insecure_url: 'its key URL is not https',
  network: 'the broker could not connect to it',
  redirect: 'it answered with a redirect',
  timeout: 'it did not answer in time',
  http_status: 'it answered with an HTTP error',
  too_large: 'its answer was too large',
  invalid_json: 'its answer was not JSON',
  invalid_jwks: 'its answer is not a key set (no "keys" list)',
  invalid_discovery:
    'its discovery document (/.well-known/openid-configuration) names another issuer or no https jwks_uri; check the issuer URL configured',
};

function invalid(reason: string): VerifyResult {
  return { ok: false, code: 'invalid_token', reason };
}

/** Quotes an untrusted value for a log line: bounded, and escaped unless plain printable ASCII. */
function show(value: string, max = 64): string {
  const s = value.length > max ? `${value.slice(0, max)}…` : value;
  return /^[\x20-\x26\x28-\x7e]*$/.test(s) ? `'${s}'` : JSON.stringify(s);
}

/** A time claim for a refusal message; one past the last date a Date can hold is shown as its number. */
function isoTime(seconds: number): string {
  const date = new Date(seconds * 1000);
  return Number.isNaN(date.getTime()) ? `${seconds} s after the epoch` : date.toISOString();
}

/** RSA verification on libuv's thread pool, so the event loop keeps serving other requests meanwhile. */
function verifyOffThread(data: Buffer, key: KeyObject, signature: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      verify('RSA-SHA256', data, key, signature, (error, ok) => resolve(!error && ok));
    } catch {
      resolve(false);
    }
  });
}

export async function verifyOidcToken(token: string, deps: VerifyDeps): Promise<VerifyResult> {
  const parsed = parseCompactJws(token, {
    maxBytes: deps.maxTokenBytes ?? DEFAULT_MAX_TOKEN_BYTES,
    integerNumbersOnly: true,
  });
  if (!parsed.ok) return invalid(parsed.reason);
  const { header, payload } = parsed;

  for (const name of Object.keys(header)) {
    if (!ALLOWED_HEADER.has(name)) return invalid(`unsupported header parameter ${show(name, 32)}`);
  }
  const { alg, kid, typ, x5t } = header;
  if (alg !== 'RS256') {
    return invalid(`unsupported signing algorithm ${typeof alg === 'string' ? show(alg, 16) : 'value'}`);
  }
  if (typ !== 'JWT') return invalid(`header typ must be 'JWT'`);
  if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) return invalid('header kid is missing or malformed');
  if (x5t !== undefined && (typeof x5t !== 'string' || !X5T_PATTERN.test(x5t))) {
    return invalid('header x5t is malformed');
  }

  // The issuer is matched against configuration before any key lookup, so no token steers a fetch.
  const issuerIssue = issuerProblem(payload.iss, deps.issuers);
  if (issuerIssue) return invalid(issuerIssue);
  const iss = payload.iss as string;

  const lookup = await deps.issuers.getKey(iss, kid);
  if (lookup === undefined) return invalid(`unknown signing key '${kid}' for issuer ${iss}`);
  if ('refused' in lookup) {
    return invalid(`signing key '${kid}' of issuer ${iss} is not usable: ${lookup.refused}`);
  }
  if ('unavailable' in lookup) {
    return {
      ok: false,
      code: 'issuer_unavailable',
      reason: `${
        lookup.unavailable === 'none-cached'
          ? `signing keys for issuer ${iss} are unavailable`
          : `signing key '${kid}' is not among the cached keys of issuer ${iss}, which could not be refreshed`
      }${lookup.lastError ? `: ${FETCH_FAILURES[lookup.lastError]}` : ''}`,
      // When the broker will next try the issuer: a retry before then gets this answer again.
      retryAfterSeconds: Math.max(1, Math.ceil(lookup.retryAfterMs / 1000)),
    };
  }
  const signatureOk = await verifyOffThread(parsed.signingInput, lookup.key, parsed.signature);
  if (!signatureOk) return invalid(`signature does not verify with key '${kid}' of issuer ${iss}`);

  // From here on only the payload whose bytes the signature covers feeds any decision.
  return checkClaims(payload, iss, deps);
}

function issuerProblem(iss: unknown, issuers: Pick<IssuerKeys, 'isTrusted'>): string | null {
  if (typeof iss !== 'string') return 'iss claim is missing or not a string';
  return issuers.isTrusted(iss) ? null : `issuer ${show(iss, 100)} is not trusted`;
}

function audienceProblem(aud: unknown): string | null {
  if (aud === undefined) return 'aud claim is missing';
  if (Array.isArray(aud)) return 'aud claim must be a single string, not an array';
  if (typeof aud !== 'string') return 'aud claim must be a string';
  if (aud === '' || aud === '*' || aud.length > MAX_AUDIENCE_LENGTH || /[\s\p{Cc}]/u.test(aud)) {
    return 'aud claim is empty, a wildcard or malformed';
  }
  return null;
}

/** A required claim must be a non-empty string (`ref` may be empty); an optional one, when present, a string. */
function stringClaimProblem(name: string, value: unknown, required: boolean): string | null {
  if (required && MAY_BE_EMPTY.has(name) && typeof value !== 'string')
    return `${name} claim is missing or not a string`;
  if (required && (typeof value !== 'string' || (value === '' && !MAY_BE_EMPTY.has(name))))
    return `${name} claim is missing or not a non-empty string`;
  if (typeof value !== 'string') return `${name} claim must be a string`;
  if (UNSAFE_IN_CLAIM.test(value)) return `${name} claim holds a control or unpaired surrogate character`;
  if (name === 'jti' && value.length > MAX_JTI_LENGTH)
    return `jti claim is longer than ${MAX_JTI_LENGTH} characters`;
  return null;
}

type ShapedClaims = Partial<
  Record<'repository' | 'repository_owner' | 'repository_id' | 'repository_owner_id', string>
>;

/** The GitHub shapes of the repository, the owner and their ids, and that the repository is the owner's. */
function shapeProblem(claims: ShapedClaims): string | null {
  const { repository, repository_owner: owner, repository_id, repository_owner_id } = claims;
  if (repository !== undefined && !REPOSITORY_PATTERN.test(repository))
    return 'repository claim is not a GitHub owner/name';
  if (owner !== undefined && !GITHUB_OWNER.test(owner)) return 'repository_owner claim is not a GitHub owner';
  if (repository_id !== undefined && !ID_PATTERN.test(repository_id))
    return 'repository_id claim is not a numeric string';
  if (repository_owner_id !== undefined && !ID_PATTERN.test(repository_owner_id)) {
    return 'repository_owner_id claim is not a numeric string';
  }
  if (repository === undefined || owner === undefined) return null;
  // Both sides are ASCII after the pattern checks, so lower-casing is a plain case fold.
  if (repository.slice(0, repository.indexOf('/')).toLowerCase() !== owner.toLowerCase()) {
    return `repository ${show(repository)} does not belong to repository_owner ${show(owner)}`;
  }
  return null;
}

/**
 * Why the exchange refuses a token carrying these claims (401 invalid_token, in its words), judging only the
 * claims given — typed-in claims may leave any out, and have no signature or times to check; null when none
 * of them would be refused.
 */
export function givenClaimsProblem(
  claims: Record<string, unknown>,
  issuers: Pick<IssuerKeys, 'isTrusted'>,
): string | null {
  const given = (name: string) => claims[name] !== undefined;
  const problems = [
    given('iss') ? issuerProblem(claims.iss, issuers) : null,
    given('aud') ? audienceProblem(claims.aud) : null,
    ...REQUIRED_STRING_CLAIMS.filter(given).map((name) => stringClaimProblem(name, claims[name], true)),
    ...OPTIONAL_STRING_CLAIMS.filter(given).map((name) => stringClaimProblem(name, claims[name], false)),
  ];
  return problems.find((p) => p !== null) ?? shapeProblem(claims as ShapedClaims);
}

function checkClaims(payload: Record<string, unknown>, iss: string, deps: VerifyDeps): VerifyResult {
  const aud = payload.aud;
  const audienceIssue = audienceProblem(aud);
  if (audienceIssue) return invalid(audienceIssue);

  for (const name of TIME_CLAIMS) {
    const v = payload[name];
    if (v === undefined) return invalid(`${name} claim is missing`);
    if (!Number.isSafeInteger(v) || (v as number) <= 0) {
      return invalid(`${name} claim must be a positive integer number of seconds`);
    }
  }
  const exp = payload.exp as number;
  const iat = payload.iat as number;
  const nbf = payload.nbf as number;
  const leeway = Math.min(MAX_LEEWAY_SECONDS, Math.max(0, deps.leewaySeconds || 0));
  const now = deps.now() / 1000;
  if (!(exp > now - leeway)) return invalid(`token expired at ${isoTime(exp)}`);
  if (!(nbf <= now + leeway)) return invalid(`token is not valid before ${isoTime(nbf)}`);
  if (!(iat <= now + leeway)) return invalid(`token is issued in the future (iat ${isoTime(iat)})`);
  if (iat > exp) return invalid('token expires before it was issued');
  if (nbf > exp) return invalid('token expires before it is valid (nbf after exp)');
  if (exp - iat > MAX_LIFETIME_SECONDS) return invalid('token lifetime exceeds 24 hours');

  for (const name of REQUIRED_STRING_CLAIMS) {
    const issue = stringClaimProblem(name, payload[name], true);
    if (issue) return invalid(issue);
  }
  const claims = {
    iss,
    aud,
    sub: payload.sub,
    jti: payload.jti,
    repository: payload.repository,
    repository_id: payload.repository_id,
    repository_owner: payload.repository_owner,
    repository_owner_id: payload.repository_owner_id,
    ref: payload.ref,
    job_workflow_ref: payload.job_workflow_ref,
    exp,
    iat,
    nbf,
  } as VerifiedClaims;
  for (const name of OPTIONAL_STRING_CLAIMS) {
    const v = payload[name];
    if (v === undefined) continue;
    const issue = stringClaimProblem(name, v, false);
    if (issue) return invalid(issue);
    claims[name] = v as string;
  }

  const shapeIssue = shapeProblem(claims);
  if (shapeIssue) return invalid(shapeIssue);
  return { ok: true, claims };
}
