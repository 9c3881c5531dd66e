// Which proxy each request of the action takes (the OIDC token, the exchange, the revocation), by the toolkit's rules.
import { describe, expect, it } from 'vitest';
import {
  bypassesProxy,
  type ProxySetting,
  ProxySettingError,
  proxyFor,
} from '../../broker/core/proxy-settings.js';

const GITHUB = new URL('https://pipelines.actions.example/_apis/token?api-version=2.0');
const href = (setting: ProxySetting | undefined) => setting?.url.href;

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
    expect(proxyFor(GITHUB, env)?.variable).toBe('https_proxy');
    expect(proxyFor(GITHUB, { HTTPS_PROXY: 'http://upper:3128' })?.variable).toBe('HTTPS_PROXY');
  });

  it('takes a setting without a scheme as an HTTP proxy', () => {
    expect(href(proxyFor(GITHUB, { https_proxy: '10.0.0.1:3128' }))).toBe('http://10.0.0.1:3128/');
    // `name:port` would parse as a URL with the scheme `name:` and no host; it means http://name:port.
    expect(href(proxyFor(GITHUB, { https_proxy: 'proxy.corp:3128' }))).toBe('http://proxy.corp:3128/');
    expect(href(proxyFor(GITHUB, { HTTPS_PROXY: 'proxy.corp' }))).toBe('http://proxy.corp/');
    expect(href(proxyFor(GITHUB, { https_proxy: '[fd00::1]:3128' }))).toBe('http://[fd00::1]:3128/');
    expect(href(proxyFor(GITHUB, { https_proxy: 'HTTPS://proxy.corp:3129' }))).toBe(
      'https://proxy.corp:3129/',
    );
  });

  it('reads the setting without the white space around it', () => {
    for (const value of [
      ' http://proxy.corp:3128',
      'http://proxy.corp:3128 ',
      '\thttp://proxy.corp:3128\n',
    ]) {
      expect(href(proxyFor(GITHUB, { HTTPS_PROXY: value })), JSON.stringify(value)).toBe(
        'http://proxy.corp:3128/',
      );
    }
    expect(href(proxyFor(GITHUB, { https_proxy: ' proxy.corp:3128 ' }))).toBe('http://proxy.corp:3128/');
    expect(href(proxyFor(GITHUB, { https_proxy: '  HTTPS://proxy.corp:3129' }))).toBe(
      'https://proxy.corp:3129/',
    );
  });

  it('decodes the credentials, and leaves them out of the URL that messages name', () => {
    const setting = proxyFor(GITHUB, { https_proxy: 'us%40r:p%3A@proxy.corp:3128' });
    expect(setting).toMatchObject({ variable: 'https_proxy', credentials: 'us@r:p:' });
    expect(href(setting)).toBe('http://proxy.corp:3128/');
    expect(proxyFor(GITHUB, { https_proxy: 'http://user@proxy.corp:3128' })?.credentials).toBe('user:');
    expect(proxyFor(GITHUB, { https_proxy: 'http://proxy.corp:3128' })?.credentials).toBeUndefined();
  });

  it('connects directly without a proxy setting', () => {
    expect(proxyFor(GITHUB, {})).toBeUndefined();
    expect(proxyFor(GITHUB, { https_proxy: '' })).toBeUndefined();
  });

  it.each([
    ['socks5://user:s3cret@proxy.corp:1080', 'socks5:'],
    ['http://', 'not a URL'],
    ['proxy corp:3128', 'not a URL'],
    ['http://proxy.corp:99999', 'not a URL'],
    ['  ', 'not a URL'],
  ])('refuses the setting %j, naming the variable but not repeating the value', (value, reason) => {
    let error: unknown;
    try {
      proxyFor(GITHUB, { HTTPS_PROXY: value });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ProxySettingError);
    const { message } = error as Error;
    expect(message).toContain('HTTPS_PROXY');
    expect(message).toContain(reason);
    expect(message).toContain('http://proxy.example.com:3128');
    expect(message).not.toContain('s3cret');
    expect(message).not.toContain('proxy.corp');
  });

  it('refuses a user name or password that is not valid percent-encoding, without repeating it', () => {
    for (const value of ['http://user:s3cret%@proxy.corp:3128', 'http://s3cret%zz:pw@proxy.corp:3128']) {
      let error: unknown;
      try {
        proxyFor(GITHUB, { HTTPS_PROXY: value });
      } catch (caught) {
        error = caught;
      }
      expect(error, value).toBeInstanceOf(ProxySettingError);
      const { message } = error as Error;
      expect(message).toContain('HTTPS_PROXY');
      expect(message).toContain('not valid percent-encoding');
      expect(message).toContain('%25');
      expect(message).not.toContain('s3cret');
      expect(message).not.toContain('proxy.corp');
    }
  });

  it('refuses a broken setting only for the requests that would use it', () => {
    const env = {
      https_proxy: 'http://proxy.corp:3128',
      http_proxy: 'socks://proxy.corp',
      no_proxy: 'intra',
    };
    expect(href(proxyFor(GITHUB, env))).toBe('http://proxy.corp:3128/');
    expect(proxyFor(new URL('http://intra/'), env)).toBeUndefined();
    expect(() => proxyFor(new URL('http://extra.example/'), env)).toThrow(/http_proxy/);
  });

  it('never proxies loopback addresses', () => {
    const env = { https_proxy: 'http://proxy:3128', http_proxy: 'http://proxy:3128' };
    for (const url of [
      'http://localhost:8080/',
      'http://127.0.0.1:8080/',
      'https://127.1.2.3/',
      'http://[::1]:80/',
      'http://[0:0:0:0:0:0:0:1]:80/',
    ]) {
      expect(proxyFor(new URL(url), env), url).toBeUndefined();
    }
  });

  it('proxies a host whose name only starts like a loopback address', () => {
    const env = { https_proxy: 'http://proxy:3128', http_proxy: 'http://proxy:3128' };
    for (const url of [
      'https://127.example.com/v1',
      'https://127.0.0.1.nip.io/v1',
      'http://localhost.example.com/',
      'http://127.0.0.1.example:8080/',
    ]) {
      expect(href(proxyFor(new URL(url), env)), url).toBe('http://proxy:3128/');
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
    ['*.actions.example', true],
    ['*.actions.example:443', true],
    ['*.pipelines.actions.example', false],
    ['pipelines.actions.example:443', true],
    ['pipelines.actions.example:8443', false],
    ['other.example, actions.example', true],
    ['ns.actions.example', false],
    ['example.org', false],
    ['', false],
  ])('no_proxy=%j → %s', (noProxy, bypass) => {
    expect(bypassesProxy(GITHUB, { no_proxy: noProxy })).toBe(bypass);
  });

  it('ignores a trailing dot on either side, as curl and Go do: ghes.corp. is ghes.corp', () => {
    for (const [url, noProxy] of [
      ['https://ghes.corp./api', 'ghes.corp'],
      ['https://ghes.corp/api', 'ghes.corp.'],
      ['https://api.ghes.corp./v1', '.ghes.corp'],
      ['https://api.ghes.corp./v1', 'ghes.corp.:443'],
    ] as const) {
      expect(bypassesProxy(new URL(url), { no_proxy: noProxy }), `${url} ${noProxy}`).toBe(true);
    }
    expect(bypassesProxy(new URL('https://ghes.corp./api'), { no_proxy: 'other.corp' })).toBe(false);
  });

  it('matches an IPv6 address listed with or without brackets, however it is spelled', () => {
    const broker = new URL('https://[fd00::5]/v1');
    for (const noProxy of [
      'fd00::5',
      '[fd00::5]',
      '[FD00::5]:443',
      'fd00:0:0:0:0:0:0:5',
      'other.example, fd00::5',
    ]) {
      expect(bypassesProxy(broker, { no_proxy: noProxy }), noProxy).toBe(true);
    }
    for (const noProxy of ['fd00::6', '[fd00::5]:8443', '::5', '5', 'fe80::5%eth0']) {
      expect(bypassesProxy(broker, { no_proxy: noProxy }), noProxy).toBe(false);
    }
  });

  it('matches an IP address inside a CIDR range it lists, as curl and Go do', () => {
    const v4 = new URL('https://10.20.30.40/v1');
    const v6 = new URL('https://[fd12:3456::5]:8443/v1');
    for (const noProxy of [
      '10.0.0.0/8',
      '10.20.0.0/16',
      '10.20.30.40/32',
      'other.example, 10.0.0.0/8',
      '0.0.0.0/0',
    ]) {
      expect(bypassesProxy(v4, { no_proxy: noProxy }), noProxy).toBe(true);
    }
    for (const noProxy of ['fd00::/8', 'FD12:3456::/32', '[fd00::]/8', '::/0']) {
      expect(bypassesProxy(v6, { NO_PROXY: noProxy }), noProxy).toBe(true);
    }
    for (const noProxy of [
      '11.0.0.0/8',
      '10.20.30.41/32',
      '10.0.0.0/33',
      '10.0.0.0/',
      'fd00::/8',
      '10.0.0.0/x',
    ]) {
      expect(bypassesProxy(v4, { no_proxy: noProxy }), noProxy).toBe(false);
    }
    for (const noProxy of ['fe80::/10', '10.0.0.0/8', 'fd00::/129']) {
      expect(bypassesProxy(v6, { no_proxy: noProxy }), noProxy).toBe(false);
    }
    // A range is of addresses: a host name is not looked up to match one.
    expect(bypassesProxy(new URL('https://broker.internal/v1'), { no_proxy: '10.0.0.0/8' })).toBe(false);
    expect(proxyFor(v4, { https_proxy: 'http://proxy:3128', no_proxy: '10.0.0.0/8' })).toBeUndefined();
  });

  it('matches an IP address by the whole address, not by a domain-like suffix of it', () => {
    const v4 = new URL('https://10.20.30.40/v1');
    for (const noProxy of ['30.40', '.30.40', '*.30.40', '0.40']) {
      expect(bypassesProxy(v4, { no_proxy: noProxy }), noProxy).toBe(false);
    }
    expect(bypassesProxy(v4, { no_proxy: '10.20.30.40:443' })).toBe(true);
  });

  it('reads NO_PROXY when no_proxy is unset', () => {
    expect(bypassesProxy(GITHUB, { NO_PROXY: 'actions.example' })).toBe(true);
  });
});
