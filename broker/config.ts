// Broker configuration: parsed once from the environment at start; every error names its variable.
import { isIP } from 'node:net';
import { isLoopbackHost } from './core/loopback.js';
import type { LogLevel } from './logger.js';

export const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';

export interface TrustedIssuerConfig {
  issuer: string;
  jwksUri?: string;
}

export type DatabaseConfig = { engine: 'sqlite'; path: string } | { engine: 'postgres'; url: string };

export interface RateLimitConfig {
  /** Sustained exchanges per minute for one key (client address before verification, repository after). */
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

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^[0-9]+$/.test(raw))
    throw new ConfigError(name, `expected a whole number from ${min} to ${max}, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be from ${min} to ${max}, got ${value}`);
  return value;
}

function url(name: string, raw: string, { allowLoopbackHttp }: { allowLoopbackHttp: boolean }): URL {
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
  if (env.DATABASE_URL === '') {
    throw new ConfigError(
      'DATABASE_URL',
      'is set but empty; unset it for the embedded default (sqlite:./data/broker.db), or give sqlite:PATH or postgres://…',
    );
  }
  const raw = env.DATABASE_URL ?? 'sqlite:./data/broker.db';
  if (raw.startsWith('sqlite:')) {
    const path = raw.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (!path)
      throw new ConfigError('DATABASE_URL', 'sqlite: needs a file path, e.g. sqlite:./data/broker.db');
    return { engine: 'sqlite', path };
  }
  if (/^postgres(ql)?:\/\//.test(raw)) return { engine: 'postgres', url: raw };
  throw new ConfigError('DATABASE_URL', 'expected sqlite:PATH or postgres://USER@HOST:PORT/DB');
}

function trustedIssuers(env: Env): TrustedIssuerConfig[] {
  const name = 'BROKER_TRUSTED_ISSUERS';
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return [{ issuer: GITHUB_ISSUER }];
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
    if (issuer.endsWith('/') || issuerUrl.search || issuerUrl.hash) {
      throw new ConfigError(
        `${at}.issuer`,
        `"${issuerUrl.search || issuerUrl.hash ? `${issuerUrl.origin}${issuerUrl.pathname}…` : issuer}" must be the exact iss value: no trailing slash, query or fragment`,
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
  const raw = env[name];
  if (!raw) return undefined;
  const key = /^[0-9a-fA-F]{64}$/.test(raw) ? Buffer.from(raw, 'hex') : Buffer.from(raw, 'base64');
  if (key.length !== 32) throw new ConfigError(name, 'expected 32 bytes as 64 hex characters or base64');
  return key;
}

export function loadConfig(env: Env): BrokerConfig {
  const port = integer(env, 'PORT', 8080, 0, 65535);
  const host = env.HOST || '127.0.0.1';
  // An IPv4 or IPv6 address, or a host name; whether it resolves is for listen() to find out.
  if (isIP(host) === 0 && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(host)) {
    throw new ConfigError(
      'HOST',
      `"${host}" is not an IP address or host name (e.g. 0.0.0.0, ::, 127.0.0.1)`,
    );
  }
  const db = database(env);
  const publicUrl = (env.BROKER_PUBLIC_URL || `http://localhost:${port}`).replace(/\/+$/, '');
  const parsedPublicUrl = url('BROKER_PUBLIC_URL', publicUrl, { allowLoopbackHttp: true });
  if (parsedPublicUrl.search || parsedPublicUrl.hash) {
    throw new ConfigError('BROKER_PUBLIC_URL', 'must be a base URL, without query string or fragment');
  }
  const audienceSuffix = env.BROKER_AUDIENCE_SUFFIX || 'api.stepsecurity.io';
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/.test(audienceSuffix)) {
    throw new ConfigError('BROKER_AUDIENCE_SUFFIX', `"${audienceSuffix}" is not a lower-case DNS name`);
  }
  const level = (env.LOG_LEVEL || 'info').toLowerCase();
  if (!['debug', 'info', 'warn', 'error'].includes(level)) {
    throw new ConfigError('LOG_LEVEL', `expected debug, info, warn or error, got "${env.LOG_LEVEL}"`);
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
    keyPepper: env.BROKER_KEY_PEPPER || undefined,
    logLevel: level as LogLevel,
    rateLimit: {
      perMinute: integer(env, 'BROKER_RATE_LIMIT_PER_MINUTE', 600, 1, 10_000_000),
      burst: integer(env, 'BROKER_RATE_LIMIT_BURST', 60, 1, 10_000_000),
    },
  };
}
