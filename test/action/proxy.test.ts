// Which proxy the OIDC token request takes, by the Actions toolkit's rules.
import { describe, expect, it } from 'vitest';
import { bypassesProxy, proxyFor } from '../../src/proxy.js';

const GITHUB = new URL('https://pipelines.actions.example/_apis/token?api-version=2.0');
const href = (url: URL | undefined) => url?.href;

describe('proxyFor', () => {
  it('uses https_proxy for https URLs and http_proxy for http ones, lower case first', () => {
    const env = {
      https_proxy: 'http://lower:3128',
      HTTPS_PROXY: 'http://upper:3128',
      HTTP_PROXY: 'http://plain:8080',
    };

    expect(href(proxyFor(GITHUB, env))).toBe('http://lower:3128/');
    expect(href(proxyFor(GITHUB, { HTTPS_PROXY: 'http://upper:3128' }))).toBe('http://upper:3128/');
    expect(href(proxyFor(new URL('http://intranet.example/'), env))).toBe('http://plain:8080/');
    expect(proxyFor(GITHUB, { HTTP_PROXY: 'http://plain:8080' })).toBeUndefined();
  });

  it('takes an address:port that is no URL as an HTTP proxy, and keeps credentials', () => {
    expect(href(proxyFor(GITHUB, { https_proxy: '10.0.0.1:3128' }))).toBe('http://10.0.0.1:3128/');
    expect(proxyFor(GITHUB, { https_proxy: 'http://us%40r:p%3A@proxy.corp:3128' })).toMatchObject({
      username: 'us%40r',
      password: 'p%3A',
      host: 'proxy.corp:3128',
    });
  });

  it('connects directly without a proxy setting, or when the setting names no host', () => {
    expect(proxyFor(GITHUB, {})).toBeUndefined();
    expect(proxyFor(GITHUB, { https_proxy: '' })).toBeUndefined();
    // As in the toolkit, `name:port` parses as a URL with the scheme `name:` and no host.
    expect(proxyFor(GITHUB, { https_proxy: 'proxy.corp:3128' })).toBeUndefined();
  });

  it('never proxies loopback addresses', () => {
    const env = { https_proxy: 'http://proxy:3128', http_proxy: 'http://proxy:3128' };
    for (const url of [
      'http://localhost:8080/',
      'http://127.0.0.1:8080/',
      'https://127.1.2.3/',
      'http://[::1]:80/',
    ]) {
      expect(proxyFor(new URL(url), env), url).toBeUndefined();
    }
  });
});

describe('bypassesProxy', () => {
  it.each([
    ['*', true],
    ['pipelines.actions.example', true],
    ['PIPELINES.ACTIONS.EXAMPLE', true],
    ['actions.example', true],
    ['.actions.example', true],
    ['pipelines.actions.example:443', true],
    ['pipelines.actions.example:8443', false],
    ['other.example, actions.example', true],
    ['ns.actions.example', false],
    ['example.org', false],
    ['', false],
  ])('no_proxy=%j → %s', (noProxy, bypass) => {
    expect(bypassesProxy(GITHUB, { no_proxy: noProxy })).toBe(bypass);
  });

  it('reads NO_PROXY when no_proxy is unset', () => {
    expect(bypassesProxy(GITHUB, { NO_PROXY: 'actions.example' })).toBe(true);
  });
});
