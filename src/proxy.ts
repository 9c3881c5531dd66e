// Which proxy a request to GitHub goes through, by the Actions toolkit's rules: *_proxy, no_proxy, never loopback.

type Env = Record<string, string | undefined>;

/** The proxy for `url` from https_proxy / http_proxy (lower case first), or undefined to connect directly. */
export function proxyFor(url: URL, env: Env): URL | undefined {
  if (bypassesProxy(url, env)) return undefined;
  const value =
    url.protocol === 'https:' ? env.https_proxy || env.HTTPS_PROXY : env.http_proxy || env.HTTP_PROXY;
  if (!value) return undefined;
  let proxy: URL;
  try {
    proxy = new URL(value);
  } catch (error) {
    // An address without a scheme that URL cannot parse (e.g. `10.0.0.1:3128`) means an HTTP proxy.
    if (value.startsWith('http://') || value.startsWith('https://')) throw error;
    proxy = new URL(`http://${value}`);
  }
  return proxy.hostname ? proxy : undefined;
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
