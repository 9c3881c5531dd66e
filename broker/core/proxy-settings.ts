// Which proxy a request goes through, by the Actions toolkit's rules: *_proxy, no_proxy, never loopback. The
// action reads them for its requests, the broker for its fetches of issuers' keys.
import { BlockList, isIP } from 'node:net';
import { isLoopbackHost } from './loopback.js';

type Env = Record<string, string | undefined>;

const EXAMPLE = 'http://proxy.example.com:3128';

/** A proxy setting that names no usable proxy; the request it would carry is not sent at all. */
export class ProxySettingError extends Error {
  override name = 'ProxySettingError';

  constructor(
    /** The environment variable that holds the setting, e.g. `HTTPS_PROXY`. */
    readonly variable: string,
    /** What is wrong with it, as a sentence that follows the variable's name (`is set, but …`). */
    readonly problem: string,
  ) {
    super(`${variable} ${problem}`);
  }
}

/** The proxy a request goes through, as the environment names it. */
export interface ProxySetting {
  /** The proxy's address, without credentials, so it can be named in messages. */
  url: URL;
  /** The environment variable that names it, e.g. `HTTPS_PROXY`. */
  variable: string;
  /** `user:password` from the setting, percent-decoded, for Proxy-Authorization; absent when it holds none. */
  credentials?: string;
}

/**
 * The proxy for `url` from https_proxy / http_proxy (lower case first), or undefined to connect directly.
 * Throws ProxySettingError when the setting that applies is no http:// or https:// proxy: connecting directly
 * instead would bypass a proxy the network may require, or send the request where it was not meant to.
 */
export function proxyFor(url: URL, env: Env): ProxySetting | undefined {
  if (bypassesProxy(url, env)) return undefined;
  return readProxySetting(env, url.protocol === 'https:' ? 'https_proxy' : 'http_proxy');
}

/** The proxy settings of an environment, read once (the broker's, at start): which proxy each URL goes through. */
export interface ProxyRoutes {
  /** From https_proxy or HTTPS_PROXY, for https:// URLs. */
  https?: ProxySetting;
  /** From http_proxy or HTTP_PROXY, for http:// URLs. */
  http?: ProxySetting;
  /** no_proxy or NO_PROXY, as given. */
  noProxy: string;
}

/** Both settings, each read as proxyFor reads it; throws ProxySettingError for the first that names no usable proxy. */
export function readProxyRoutes(env: Env): ProxyRoutes {
  const https = readProxySetting(env, 'https_proxy');
  const http = readProxySetting(env, 'http_proxy');
  return { ...(https ? { https } : {}), ...(http ? { http } : {}), noProxy: noProxyOf(env) };
}

/** What proxyFor answers for `url`, from settings read beforehand. */
export function routeFor(url: URL, routes: ProxyRoutes): ProxySetting | undefined {
  if (matchesNoProxy(url, routes.noProxy)) return undefined;
  return url.protocol === 'https:' ? routes.https : routes.http;
}

/** The proxy `name` (https_proxy or http_proxy) or its upper-case twin names; lower case wins, empty is unset. */
function readProxySetting(env: Env, name: 'https_proxy' | 'http_proxy'): ProxySetting | undefined {
  const variable = env[name] ? name : name.toUpperCase();
  const given = env[variable];
  if (!given) return undefined;
  // White space around the value (from a quoted .env line, say) is no part of the URL, nor of its scheme.
  const value = given.trim();
  // A value without a scheme (`proxy.corp:3128`, `10.0.0.1:3128`) means an HTTP proxy; URL alone would read
  // `proxy.corp:` as a scheme and find no host.
  const withScheme = /^[a-z][a-z\d+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let proxy: URL;
  try {
    proxy = new URL(withScheme);
  } catch {
    // The value is not repeated: it can hold the proxy's password.
    throw new ProxySettingError(variable, `is set, but its value is not a URL; use e.g. ${EXAMPLE}.`);
  }
  if (proxy.protocol !== 'http:' && proxy.protocol !== 'https:') {
    throw new ProxySettingError(
      variable,
      `names a ${proxy.protocol} proxy, but only http:// and https:// proxies are supported; ` +
        `use e.g. ${EXAMPLE}.`,
    );
  }
  const credentials = proxy.username || proxy.password ? decodeCredentials(proxy, variable) : undefined;
  proxy.username = '';
  proxy.password = '';
  return { url: proxy, variable, ...(credentials !== undefined ? { credentials } : {}) };
}

/** `user:password` as the proxy expects them; URL keeps them percent-encoded, as they were written. */
function decodeCredentials(proxy: URL, variable: string): string {
  try {
    return `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  } catch {
    throw new ProxySettingError(
      variable,
      `holds a user name or password that is not valid percent-encoding. In the URL, write a % ` +
        'in them as %25, and @ as %40, : as %3A and / as %2F, e.g. http://user:p%25ss@proxy.example.com:3128.',
    );
  }
}

/**
 * Loopback hosts, and hosts matched by no_proxy (`*`, a host, `host:port`, a domain and its subdomains, or only
 * its subdomains as `.example.com` or `*.example.com`, the form Node's own proxy support and Go read too). An IP
 * address matches as a whole, or by a CIDR range that holds it (`10.0.0.0/8`, `fd00::/8`), as curl and Go read it.
 */
export function bypassesProxy(url: URL, env: Env): boolean {
  return matchesNoProxy(url, noProxyOf(env));
}

function noProxyOf(env: Env): string {
  return env.no_proxy || env.NO_PROXY || '';
}

function matchesNoProxy(url: URL, noProxy: string): boolean {
  if (!url.hostname) return false;
  // Loopback as `api-url` reads it: an address, not a name that starts like one (127.example.com is elsewhere).
  if (isLoopbackHost(url.hostname)) return true;
  if (!noProxy) return false;
  const port = portOf(url);
  // A URL writes an IPv6 address in brackets, in its shortest form: ipv6Item reads an item the same way.
  // A fully qualified name (`ghes.corp.`) is the same host as without its dot, on either side, as curl and Go take it.
  const host = url.hostname.toUpperCase().replace(/\.$/, '');
  const address = isIP(unbracketed(host)) ? unbracketed(host) : undefined;
  const candidates = [host, `${host}:${port}`];
  return noProxy
    .split(',')
    .map((item) =>
      ipv6Item(item.trim())
        .toUpperCase()
        .replace(/^\*\./, '.')
        .replace(/\.(?=:\d+$|$)/, ''),
    )
    .filter((item) => item !== '')
    .some(
      (item) =>
        item === '*' ||
        (address !== undefined && inRange(address, item)) ||
        candidates.some(
          (candidate) =>
            candidate === item ||
            // A domain's subdomains: an address has none (`30.40` is no domain of 10.20.30.40).
            (address === undefined &&
              (candidate.endsWith(`.${item}`) || (item.startsWith('.') && candidate.endsWith(item)))),
        ),
    );
}

/** Whether a no_proxy item is a CIDR range (`10.0.0.0/8`, `fd00::/8`, `[fd00::]/8`) that holds the address. */
function inRange(address: string, item: string): boolean {
  const [, base = '', bits = ''] = /^\[?([^\]/]+)\]?\/(\d{1,3})$/.exec(item) ?? [];
  const family = isIP(base);
  if (family === 0 || family !== isIP(address) || Number(bits) > (family === 4 ? 32 : 128)) return false;
  const range = new BlockList();
  const type = family === 4 ? 'ipv4' : 'ipv6';
  range.addSubnet(base, Number(bits), type);
  return range.check(address, type);
}

function unbracketed(host: string): string {
  return host.startsWith('[') ? host.slice(1, -1) : host;
}

/**
 * A no_proxy item that is an IPv6 address, with or without brackets (`fd00::5`, `[fd00:0::5]:443`), as a URL
 * writes it (`[fd00::5]`, `[fd00::5]:443`); any other item, or an address a URL cannot hold (a zone), as it is.
 */
function ipv6Item(item: string): string {
  const [, address = item, port = ''] = /^\[([^\]]*)\](:\d+)?$/.exec(item) ?? [];
  if (isIP(address) !== 6) return item;
  try {
    return `${new URL(`http://[${address}]`).hostname}${port}`;
  } catch {
    return item;
  }
}

/** A URL's port, or the scheme's default: 443 for https, 80 otherwise. */
export function portOf(url: URL): number {
  if (url.port) return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}
