// Which proxy a request goes through, by the Actions toolkit's rules: *_proxy, no_proxy, never loopback.

type Env = Record<string, string | undefined>;

const EXAMPLE = 'http://proxy.example.com:3128';

/** A proxy setting that names no usable proxy; the request it would carry is not sent at all. */
export class ProxySettingError extends Error {
  override name = 'ProxySettingError';

  constructor(
    /** The environment variable that holds the setting, e.g. `HTTPS_PROXY`. */
    readonly variable: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The proxy for `url` from https_proxy / http_proxy (lower case first), or undefined to connect directly.
 * Throws ProxySettingError when the setting that applies is no http:// or https:// proxy: connecting directly
 * instead would bypass a proxy the runner's network may require, or send the request where it was not meant to.
 */
export function proxyFor(url: URL, env: Env): URL | undefined {
  if (bypassesProxy(url, env)) return undefined;
  const name = url.protocol === 'https:' ? 'https_proxy' : 'http_proxy';
  const variable = env[name] ? name : name.toUpperCase();
  const value = env[variable];
  if (!value) return undefined;
  // A value without a scheme (`proxy.corp:3128`, `10.0.0.1:3128`) means an HTTP proxy; URL alone would read
  // `proxy.corp:` as a scheme and find no host.
  const withScheme = /^[a-z][a-z\d+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let proxy: URL;
  try {
    proxy = new URL(withScheme);
  } catch {
    // The value is not repeated: it can hold the proxy's password.
    throw new ProxySettingError(
      variable,
      `${variable} is set, but its value is not a URL; use e.g. ${EXAMPLE}.`,
    );
  }
  if (proxy.protocol !== 'http:' && proxy.protocol !== 'https:') {
    throw new ProxySettingError(
      variable,
      `${variable} names a ${proxy.protocol} proxy, but only http:// and https:// proxies are supported; ` +
        `use e.g. ${EXAMPLE}.`,
    );
  }
  return proxy;
}

/** Loopback hosts, and hosts matched by no_proxy (`*`, a host, `host:port`, or a domain and its subdomains). */
export function bypassesProxy(url: URL, env: Env): boolean {
  if (!url.hostname) return false;
  if (isLoopback(url.hostname)) return true;
  const noProxy = env.no_proxy || env.NO_PROXY || '';
  if (!noProxy) return false;
  const port = portOf(url);
  const host = url.hostname.toUpperCase();
  const candidates = [host, `${host}:${port}`];
  return noProxy
    .split(',')
    .map((item) => item.trim().toUpperCase())
    .filter((item) => item !== '')
    .some(
      (item) =>
        item === '*' ||
        candidates.some(
          (candidate) =>
            candidate === item ||
            candidate.endsWith(`.${item}`) ||
            (item.startsWith('.') && candidate.endsWith(item)),
        ),
    );
}

/** A URL's port, or the scheme's default: 443 for https, 80 otherwise. */
export function portOf(url: URL): number {
  if (url.port) return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}

function isLoopback(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return (
    host === 'localhost' ||
    host.startsWith('127.') ||
    host.startsWith('[::1]') ||
    host.startsWith('[0:0:0:0:0:0:0:1]')
  );
}
