// Broker configuration: parsed once from the environment at start; every error names its variable.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parse as parseConnectionString } from 'pg-connection-string';
import { editDistance } from './core/edit-distance.js';
import { isLoopbackHost } from './core/loopback.js';
import { type ProxyRoutes, ProxySettingError, readProxyRoutes } from './core/proxy-settings.js';
import type { LogLevel } from './logger.js';
import { WRITERS_CONNECTED } from './store/postgres.js';

export const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';
/** A tenant's default audience is `<name>.<suffix>`: a 63-character name, a dot and this leave 255. */
const MAX_AUDIENCE_SUFFIX = 191;

export interface TrustedIssuerConfig {
  issuer: string;
  jwksUri?: string;
}

export type DatabaseConfig =
  | { engine: 'sqlite'; path: string }
  /** `poolSize`: the most connections this process opens to PostgreSQL at once. */
  | { engine: 'postgres'; url: string; poolSize: number };

const POOL_SIZE = 'DATABASE_POOL_SIZE';
/**
 * At least one connection more than the write transactions that may hold one at once, so that reads (and
 * /readyz) always have one; at most 100, PostgreSQL's default max_connections, which no one replica needs.
 */
const MIN_POOL_SIZE = WRITERS_CONNECTED + 1;
const MAX_POOL_SIZE = 100;

/**
 * Five minutes: a load balancer takes seconds to stop sending a replica requests, and a larger number is more likely
 * meant as milliseconds.
 */
const MAX_SHUTDOWN_DELAY_SECONDS = 300;

export interface RateLimitConfig {
  /** Sustained exchanges per minute for one repository of one issuer at one tenant. */
  perMinute: number;
  burst: number;
}

export interface BrokerConfig {
  port: number;
  host: string;
  database: DatabaseConfig;
  /**
   * Whether `serve` gives an empty database the `demo` tenant and prints its key: only with DATABASE_URL unset,
   * the embedded default a first `npm start` runs on. A database someone configured gets its tenants from the
   * CLI, and no key is printed where a container's output would carry it into a log stream.
   */
  demoTenant: boolean;
  publicUrl: string;
  audienceSuffix: string;
  trustedIssuers: TrustedIssuerConfig[];
  defaultSessionSeconds: number;
  /** 32 bytes; when absent the dev default file beside the SQLite database is used (see signing keys). */
  keyEncryptionKey?: Buffer;
  keyPepper?: string;
  logLevel: LogLevel;
  rateLimit: RateLimitConfig;
  /**
   * Seconds a SIGTERM leaves the broker serving, not ready and closing each connection after its answer, before it
   * stops taking connections: for load balancers to stop sending it requests first. 0 stops taking them at once.
   */
  shutdownDelaySeconds: number;
  /** Days the audit log keeps an event, after which the upkeep deletes it; undefined keeps every event. */
  auditRetentionDays?: number;
  /** The egress proxy the issuers' keys are fetched through, from https_proxy, http_proxy and no_proxy. */
  egressProxy: ProxyRoutes;
  /** Variables that look like settings but are none (a typo): each is ignored, and said so at start. */
  unknownSettings: UnknownSetting[];
}

export interface UnknownSetting {
  variable: string;
  /** A query parameter of `variable` (DATABASE_URL) that PostgreSQL's client does not read. */
  parameter?: string;
  /** The setting (or parameter) it most likely means, when one is close. */
  didYouMean?: string;
}

/** The query parameters of a postgres:// URL that pg reads; it ignores any other without a word. */
const POSTGRES_PARAMETERS = [
  'host',
  'port',
  'user',
  'password',
  'ssl',
  'sslmode',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'uselibpqcompat',
  'sslnegotiation',
  'application_name',
  'fallback_application_name',
  'options',
  'client_encoding',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'query_timeout',
  'binary',
  'replication',
];

/** What other clients' URLs name a schema with (JDBC, Prisma, libpq's setting): pg reads none of them. */
const SCHEMA_PARAMETER = /^(current_?schema|schema|search_?path)$/i;

/**
 * DATABASE_URL's query parameters that pg ignores, named (a name that is no identifier is not repeated) with what
 * was most likely meant: a schema chosen as another client chooses it would leave the broker's tables in public.
 */
function unreadParameters(url: string): UnknownSetting[] {
  const names = [...new URLSearchParams(url.split('?')[1]?.split('#')[0] ?? '').keys()];
  return [...new Set(names)]
    .filter((name) => !POSTGRES_PARAMETERS.includes(name))
    .map((name) => {
      const parameter = /^[A-Za-z_][\w.-]{0,62}$/.test(name) ? name : '(a parameter that is no name)';
      const nearest = POSTGRES_PARAMETERS.map((known) => ({
        known,
        distance: editDistance(name.toLowerCase(), known),
      })).sort((a, b) => a.distance - b.distance)[0]!;
      const didYouMean = SCHEMA_PARAMETER.test(name)
        ? 'options=-c search_path=…'
        : nearest.known.length >= 5 && nearest.distance <= 2
          ? nearest.known
          : undefined;
      return { variable: 'DATABASE_URL', parameter, ...(didYouMean ? { didYouMean } : {}) };
    });
}

/** Every variable the broker reads (README, Configuration). */
const SETTINGS = [
  'PORT',
  'HOST',
  'DATABASE_URL',
  POOL_SIZE,
  'BROKER_PUBLIC_URL',
  'BROKER_AUDIENCE_SUFFIX',
  'BROKER_TRUSTED_ISSUERS',
  'BROKER_DEFAULT_SESSION_SECONDS',
  'BROKER_KEY_ENCRYPTION_KEY',
  'BROKER_KEY_PEPPER',
  'LOG_LEVEL',
  'BROKER_RATE_LIMIT_PER_MINUTE',
  'BROKER_RATE_LIMIT_BURST',
  'BROKER_AUDIT_RETENTION_DAYS',
  'BROKER_SHUTDOWN_DELAY_SECONDS',
] as const;

/**
 * The egress proxy's settings, in either case (lower case wins). Read by many tools, so no near miss of them is
 * taken for a typo: ftp_proxy is curl's and wget's, not a misspelt http_proxy.
 */
const PROXY_SETTINGS = ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'NO_PROXY', 'no_proxy'];

/** What Kubernetes sets for a Service (named broker, say): BROKER_SERVICE_HOST, BROKER_PORT_8080_TCP_ADDR, … */
const SERVICE_LINK = /_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$/;

/**
 * Variables set that look like settings and are none: any BROKER_* but the broker's own (and those Kubernetes sets
 * for a Service of that name), and a near miss of another setting's name (DATABSE_URL, log_level). A misspelt
 * setting is otherwise ignored without a word: BROKER_PUBLIC_ULR leaves tokens with the default issuer, and
 * BROKER_KEY_PEPER stores every key made meanwhile under a digest the real pepper no longer matches.
 */
function unknownSettings(env: Env): UnknownSetting[] {
  const known = new Set<string>([...SETTINGS, ...PROXY_SETTINGS]);
  const found: UnknownSetting[] = [];
  for (const variable of Object.keys(env).sort()) {
    if (known.has(variable) || env[variable] === undefined) continue;
    const upper = variable.toUpperCase();
    const nearest = SETTINGS.map((name) => ({ name, distance: editDistance(upper, name) })).sort(
      (a, b) => a.distance - b.distance,
    )[0]!;
    // Names as short as PORT and HOST are a letter or two from many others (HOME).
    const close = nearest.name.length >= 8 && nearest.distance <= 2;
    const ours = upper.startsWith('BROKER_') && !SERVICE_LINK.test(upper);
    if (close || ours) found.push({ variable, ...(close ? { didYouMean: nearest.name } : {}) });
  }
  return found;
}

/** An unknown setting as a sentence, for standard error. */
export function describeUnknownSetting({ variable, parameter, didYouMean }: UnknownSetting): string {
  const what =
    parameter === undefined
      ? `${variable} is not a setting of the broker`
      : `${variable} parameter "${parameter}" is not read by PostgreSQL's client`;
  return `${what} and is ignored${didYouMean ? `; did you mean ${didYouMean}?` : ''}`;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

/** Settings whose reading settles the white space around them: JSON, a key (trimmed), the pepper (used as given). */
const AROUND_IS_THEIRS = new Set([
  'BROKER_TRUSTED_ISSUERS',
  'BROKER_KEY_ENCRYPTION_KEY',
  'BROKER_KEY_PEPPER',
]);

/**
 * The variable's value, undefined when it is unset. Set but empty (a compose file's `${VAR}` with VAR missing
 * on the host, a secret that was not injected) is refused, never read as unset: an empty key-encryption key
 * must not quietly become a generated key file, nor an empty public URL `http://localhost:8080`.
 */
function setting(env: Env, name: string, defaultText: string): string | undefined {
  const raw = env[name];
  if (raw === undefined) return undefined;
  if (raw.trim() === '') {
    throw new ConfigError(
      name,
      `is set but empty; unset it for the default (${defaultText}), or give a value`,
    );
  }
  if (AROUND_IS_THEIRS.has(name)) return raw;
  // A secret file's final line break is no part of the value, as a shell's $(cat file) drops it too (and pg's URL
  // parser did for DATABASE_URL). Other white space is said as such: it would otherwise make sqlite:/data/broker.db
  // another, empty, file, and make other values fail with a message quoting it without saying it is there.
  const value = raw.replace(/\r?\n$/, '');
  if (value.trim() !== value) {
    throw new ConfigError(
      name,
      'has white space around it (spaces, tabs, or line breaks other than one at the end); remove it',
    );
  }
  return value;
}

/** The variable's value, or `fallback` when it is unset (set but empty is refused, as above). */
function settingOr(env: Env, name: string, fallback: string): string {
  return setting(env, name, fallback) ?? fallback;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  return optionalInteger(env, name, String(fallback), min, max) ?? fallback;
}

/** A whole number from `min` to `max`, or undefined when the variable is unset (what `defaultText` says that means). */
function optionalInteger(
  env: Env,
  name: string,
  defaultText: string,
  min: number,
  max: number,
): number | undefined {
  const raw = setting(env, name, defaultText);
  if (raw === undefined) return undefined;
  if (!/^[0-9]+$/.test(raw))
    throw new ConfigError(name, `expected a whole number from ${min} to ${max}, got "${raw}"`);
  const value = Number(raw);
  // The text as given: a number past 2^53 would read back as another one.
  if (value < min || value > max) throw new ConfigError(name, `must be from ${min} to ${max}, got "${raw}"`);
  return value;
}

function url(name: string, raw: string, { allowLoopbackHttp }: { allowLoopbackHttp: boolean }): URL {
  // `localhost:8080` parses as the scheme `localhost:`, and `broker.example.com` not at all: either would be told
  // something other than the scheme it lacks. The value is not repeated: it may hold a password.
  if (!raw.includes('://') && !/^https?:/i.test(raw)) {
    throw new ConfigError(
      name,
      `has no scheme: write the whole URL, beginning https://${allowLoopbackHttp ? ' (or http:// for a loopback host such as localhost)' : ''}`,
    );
  }
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    // The value is not repeated: it may hold a password.
    throw new ConfigError(name, 'is not a URL');
  }
  // Checked first, and the value is not repeated: it would put the password in the message.
  if (parsed.username || parsed.password)
    throw new ConfigError(name, 'must not carry credentials (user:password@)');
  const loopbackHttp = allowLoopbackHttp && parsed.protocol === 'http:' && isLoopbackHost(parsed.hostname);
  if (parsed.protocol !== 'https:' && !loopbackHttp) {
    // Scheme and host only: a path or query string may carry a token (a signed JWKS link).
    const more = parsed.pathname !== '/' || parsed.search || parsed.hash ? '…' : '';
    throw new ConfigError(
      name,
      `"${parsed.protocol}//${parsed.host}${more}" must use https${allowLoopbackHttp ? ' (http is allowed only for loopback hosts)' : ''}`,
    );
  }
  return parsed;
}

function database(env: Env): DatabaseConfig {
  const raw = settingOr(env, 'DATABASE_URL', 'sqlite:./data/broker.db');
  if (raw.startsWith('sqlite:')) {
    const path = raw.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (!path)
      throw new ConfigError('DATABASE_URL', 'sqlite: needs a file path, e.g. sqlite:./data/broker.db');
    // Read as a path, sqlite://data/broker.db would be //data/broker.db, which is /data/broker.db.
    if (path.startsWith('//')) {
      throw new ConfigError(
        'DATABASE_URL',
        'sqlite:// names a host, and a SQLite file has none: write sqlite:./data/broker.db for a path relative ' +
          'to the working directory, or sqlite:///var/lib/broker/broker.db for an absolute one',
      );
    }
    // SQLite's URI parameters (?mode=ro, ?cache=shared) are not read: as part of the path they would name another file.
    // Not repeated: a parameter may hold a secret (a SQLCipher key).
    const extra = /[?#]/.exec(path)?.[0];
    if (extra !== undefined) {
      throw new ConfigError(
        'DATABASE_URL',
        `a sqlite: URL names only its file: remove everything from "${extra}" on (the broker opens the file itself, read-write)`,
      );
    }
    // Refused rather than ignored: set with SQLite, it most likely means DATABASE_URL is missing, and the embedded
    // file (with its demo tenant) would be used instead of the PostgreSQL the pool was sized for.
    if (env[POOL_SIZE] !== undefined) {
      throw new ConfigError(
        POOL_SIZE,
        `applies only to PostgreSQL, but DATABASE_URL is ${env.DATABASE_URL === undefined ? 'unset (SQLite at ./data/broker.db)' : 'a sqlite: URL'}; set DATABASE_URL=postgres://…, or unset ${POOL_SIZE}`,
      );
    }
    return { engine: 'sqlite', path };
  }
  if (/^postgres(ql)?:\/\//.test(raw)) {
    try {
      // pg's own parser: what it accepts (an empty host for the local socket, a % in a password) is accepted.
      parseConnectionString(raw);
    } catch {
      // The parser also reads the TLS files the URL names: one it cannot read is no malformed URL.
      const unreadable = unreadableTlsFile(raw);
      if (unreadable) throw new ConfigError('DATABASE_URL', unreadable);
      // The value is not repeated: it holds the password.
      throw new ConfigError(
        'DATABASE_URL',
        'is not a valid postgres:// URL: check the port, and percent-encode special characters in the user name and password',
      );
    }
    // The value is not repeated: it holds the password, or, read as the URL's path, the rest of it.
    if (hostEndsEarly(raw)) {
      throw new ConfigError(
        'DATABASE_URL',
        'has an "@" after its host: percent-encode special characters in the user name and password (a "/", "?" or "#" there ends the host); a database whose name has an "@" is named by PGDATABASE, with no database in the URL (postgres://USER:PASS@HOST:PORT)',
      );
    }
    return {
      engine: 'postgres',
      url: raw,
      poolSize: integer(env, POOL_SIZE, 10, MIN_POOL_SIZE, MAX_POOL_SIZE),
    };
  }
  throw new ConfigError('DATABASE_URL', 'expected sqlite:PATH or postgres://USER:PASS@HOST:PORT/DB');
}

/**
 * Whether a `/`, `?` or `#` left unencoded in the password ended the host early: the URL then still parses, with
 * the user name as its host, the password's first characters as its port, and the rest of the password, the real
 * host with it, as the database, a query parameter's name or the fragment, where an error at start would show it.
 * Its trace is an `@` in one of those, where none belongs. Read from the text: the URL may have no host (a socket).
 */
function hostEndsEarly(raw: string): boolean {
  const rest = raw.replace(/^postgres(ql)?:\/\//, '');
  const [beforeFragment = '', ...fragment] = rest.split('#');
  if (fragment.join('#').includes('@')) return true;
  const [authorityAndPath = '', query = ''] = beforeFragment.split(/\?(.*)/s);
  const path = authorityAndPath.slice(authorityAndPath.search(/\/|$/));
  return path.includes('@') || query.split('&').some((pair) => pair.split('=')[0]!.includes('@'));
}

/**
 * What to fix when a TLS file a postgres:// URL names (sslrootcert, sslcert, sslkey), which pg's parser reads, cannot
 * be read. Read again here, from the query string alone: the URL may have no host (a socket), which URL refuses.
 */
function unreadableTlsFile(raw: string): string | undefined {
  const query = new URLSearchParams(raw.split('?')[1]?.split('#')[0] ?? '');
  for (const parameter of ['sslrootcert', 'sslcert', 'sslkey']) {
    const path = query.get(parameter);
    if (path === null) continue;
    try {
      readFileSync(path);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      return `its ${parameter} file "${path}" cannot be read (${typeof code === 'string' ? code : 'unreadable'}): check the path, and that the broker's user may read the file`;
    }
  }
  return undefined;
}

/** A URL as a parser writes it, without the slash of an empty path: the form an `iss` is compared in. */
function asWritten(url: URL): string {
  return url.pathname === '/' ? url.origin : url.href;
}

function trustedIssuers(env: Env): TrustedIssuerConfig[] {
  const name = 'BROKER_TRUSTED_ISSUERS';
  const raw = setting(env, name, `[{"issuer":"${GITHUB_ISSUER}"}]`);
  if (raw === undefined) return [{ issuer: GITHUB_ISSUER }];
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError(
      name,
      'expected a JSON list like [{"issuer":"https://token.actions.githubusercontent.com"}]',
    );
  }
  if (!Array.isArray(parsed) || parsed.length === 0)
    throw new ConfigError(name, 'expected a non-empty JSON list');
  const seen = new Set<string>();
  return parsed.map((entry, i) => {
    const at = `${name}[${i}]`;
    if (typeof entry !== 'object' || entry === null)
      throw new ConfigError(at, 'expected an object {issuer, jwks_uri?}');
    const { issuer, jwks_uri: jwksUri, ...rest } = entry as Record<string, unknown>;
    const unknown = Object.keys(rest);
    if (unknown.length)
      throw new ConfigError(at, `unknown field "${unknown[0]}" (allowed: issuer, jwks_uri)`);
    if (typeof issuer !== 'string') throw new ConfigError(`${at}.issuer`, 'required string');
    const issuerUrl = url(`${at}.issuer`, issuer, { allowLoopbackHttp: false });
    if (issuer.endsWith('/') || /[?#]/.test(issuer)) {
      throw new ConfigError(
        `${at}.issuer`,
        `"${/[?#]/.test(issuer) ? `${issuerUrl.origin}${issuerUrl.pathname}…` : issuer}" must be the exact iss value: no trailing slash, query or fragment`,
      );
    }
    // The token's iss is compared as a string: a host in capitals or a default port (:443) never equals it.
    const canonical = asWritten(issuerUrl);
    if (canonical !== issuer) {
      throw new ConfigError(`${at}.issuer`, `"${issuer}" must be written as tokens carry it: "${canonical}"`);
    }
    // An issuer's metadata and keys live under <issuer>/.well-known/ (its discovery document, GitHub's JWKS): a URL
    // there, pasted from GitHub's documentation or a browser, is never a token's iss. The iss named is on the same
    // origin: a path resolved against it, were it to start with //, would name another host.
    const wellKnown = issuerUrl.pathname.indexOf('/.well-known/');
    if (wellKnown >= 0) {
      const iss = asWritten(new URL(`${issuerUrl.origin}${issuerUrl.pathname.slice(0, wellKnown)}`));
      throw new ConfigError(
        `${at}.issuer`,
        `"${issuer}" is a URL under the issuer, not the iss tokens carry: write "${iss}"`,
      );
    }
    if (seen.has(issuer)) throw new ConfigError(`${at}.issuer`, `"${issuer}" is listed twice`);
    seen.add(issuer);
    if (jwksUri === undefined) return { issuer };
    if (typeof jwksUri !== 'string') throw new ConfigError(`${at}.jwks_uri`, 'must be a string');
    url(`${at}.jwks_uri`, jwksUri, { allowLoopbackHttp: true });
    return { issuer, jwksUri };
  });
}

function keyEncryptionKey(env: Env): Buffer | undefined {
  const name = 'BROKER_KEY_ENCRYPTION_KEY';
  // Surrounding white space is dropped: a secret mounted from a file often ends in a newline.
  const raw = setting(env, name, 'a key file beside the SQLite database')?.trim();
  if (raw === undefined) return undefined;
  if (/^[0-9a-fA-F]{64}$/.test(raw)) return Buffer.from(raw, 'hex');
  // Checked whole: Node's base64 decoder skips characters it does not know, so "!!!!AAAA…" would decode.
  if (/^[A-Za-z0-9+/]{43}=?$|^[A-Za-z0-9_-]{43}=?$/.test(raw)) return Buffer.from(raw, 'base64');
  throw new ConfigError(name, 'expected 32 bytes as 64 hex characters or base64 (e.g. openssl rand -hex 32)');
}

/**
 * The proxy settings, read by the action's rules (README, Behind a proxy): unlike the broker's own settings, empty
 * is unset and white space around a value is dropped, as every other tool that reads them does. One that names no
 * usable proxy stops the start, rather than fetching around a proxy the network may require; the message does not
 * repeat the value, which may hold the proxy's password.
 */
function egressProxy(env: Env): ProxyRoutes {
  // Only https:// URLs can go through a proxy (an issuer's http:// URL is allowed only on a loopback host, which no
  // proxy serves), so HTTP_PROXY is not read, and a value there that the broker would never use does not stop it.
  const { https_proxy, HTTPS_PROXY, no_proxy, NO_PROXY } = env;
  try {
    return readProxyRoutes({ https_proxy, HTTPS_PROXY, no_proxy, NO_PROXY });
  } catch (error) {
    if (error instanceof ProxySettingError) throw new ConfigError(error.variable, error.problem);
    throw error;
  }
}

export function loadConfig(env: Env): BrokerConfig {
  const port = integer(env, 'PORT', 8080, 0, 65535);
  const host = settingOr(env, 'HOST', '127.0.0.1');
  // An IPv4 or IPv6 address, or a host name; whether it resolves is for listen() to find out.
  if (isIP(host) === 0 && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(host)) {
    throw new ConfigError(
      'HOST',
      `"${host}" is not an IP address or host name (e.g. 0.0.0.0, ::, 127.0.0.1)`,
    );
  }
  const db = database(env);
  // Written as a URL parser writes it: port 80 is left out.
  const defaultPublicUrl = new URL(`http://localhost:${port}`).origin;
  const givenPublicUrl = setting(env, 'BROKER_PUBLIC_URL', defaultPublicUrl);
  if (givenPublicUrl === undefined && port === 0) {
    throw new ConfigError(
      'BROKER_PUBLIC_URL',
      'is required with PORT=0: the port is chosen at start, and the issuer URL tokens carry must name the real one',
    );
  }
  const publicUrl = (givenPublicUrl ?? defaultPublicUrl).replace(/\/+$/, '');
  const parsedPublicUrl = url('BROKER_PUBLIC_URL', publicUrl, { allowLoopbackHttp: true });
  // On the raw text: a bare "?" or "#" leaves URL's search and hash empty.
  if (/[?#]/.test(publicUrl)) {
    throw new ConfigError('BROKER_PUBLIC_URL', 'must be a base URL, without query string or fragment');
  }
  // It is the iss of every token, which verifiers compare as a string, and the base of the metadata URL they
  // derive (RFC 8414): only the form a URL parser writes. The path is not repeated: it may hold a secret.
  if (asWritten(parsedPublicUrl) !== publicUrl) {
    throw new ConfigError(
      'BROKER_PUBLIC_URL',
      `must be written as a URL parser writes it (host in lower case, no default port, the path percent-encoded), e.g. ${parsedPublicUrl.origin}${parsedPublicUrl.pathname === '/' ? '' : '/…'}`,
    );
  }
  const audienceSuffix = settingOr(env, 'BROKER_AUDIENCE_SUFFIX', 'api.stepsecurity.io');
  // Labels of at most 63 characters, one or more (`internal` too: `<tenant>.internal` is an audience like any
  // other), and short enough that `<tenant name>.<suffix>` fits an audience (255).
  if (
    !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(audienceSuffix) ||
    audienceSuffix.length > MAX_AUDIENCE_SUFFIX
  ) {
    throw new ConfigError(
      'BROKER_AUDIENCE_SUFFIX',
      `"${audienceSuffix}" is not a lower-case DNS name of labels up to 63 characters and at most ${MAX_AUDIENCE_SUFFIX} in all`,
    );
  }
  // Quoted as read (its case kept, a final line break dropped), not as the environment holds it.
  const givenLevel = settingOr(env, 'LOG_LEVEL', 'info');
  const level = givenLevel.toLowerCase();
  if (!['debug', 'info', 'warn', 'error'].includes(level)) {
    throw new ConfigError('LOG_LEVEL', `expected debug, info, warn or error, got "${givenLevel}"`);
  }
  const kek = keyEncryptionKey(env);
  if (db.engine === 'postgres' && !kek) {
    throw new ConfigError(
      'BROKER_KEY_ENCRYPTION_KEY',
      'required with PostgreSQL so every replica can decrypt the signing keys (generate one: openssl rand -hex 32)',
    );
  }
  return {
    port,
    host,
    database: db,
    demoTenant: env.DATABASE_URL === undefined,
    publicUrl,
    audienceSuffix,
    trustedIssuers: trustedIssuers(env),
    defaultSessionSeconds: integer(env, 'BROKER_DEFAULT_SESSION_SECONDS', 900, 1, 3600),
    keyEncryptionKey: kek,
    keyPepper: setting(env, 'BROKER_KEY_PEPPER', 'no pepper: plain SHA-256 digests'),
    logLevel: level as LogLevel,
    rateLimit: {
      perMinute: integer(env, 'BROKER_RATE_LIMIT_PER_MINUTE', 600, 1, 10_000_000),
      burst: integer(env, 'BROKER_RATE_LIMIT_BURST', 60, 1, 10_000_000),
    },
    // Ten years at most: longer is kept by leaving it unset, and a larger number is more likely seconds than days.
    auditRetentionDays: optionalInteger(env, 'BROKER_AUDIT_RETENTION_DAYS', 'keep every event', 1, 3650),
    shutdownDelaySeconds: integer(env, 'BROKER_SHUTDOWN_DELAY_SECONDS', 0, 0, MAX_SHUTDOWN_DELAY_SECONDS),
    egressProxy: egressProxy(env),
    unknownSettings: [...unknownSettings(env), ...(db.engine === 'postgres' ? unreadParameters(db.url) : [])],
  };
}
