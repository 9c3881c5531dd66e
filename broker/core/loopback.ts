// Which hosts count as loopback, for the one exception to "https only": services on this machine.
import { isIP } from 'node:net';

/** `localhost`, `::1` (with or without brackets) or an address in 127.0.0.0/8. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}
