// The rule for a tenant's audience, shared by the broker, which stores it, and the action, which asks GitHub for it.

// Anything GitHub can place in `aud`: a host name, an https URL or a plain word — printable, no whitespace.
const AUDIENCE = /^[\x21-\x7e]{1,255}$/;

/** Whether `value` can be a tenant's audience: 1–255 printable ASCII characters, no white space. */
export function isAudience(value: string): boolean {
  return AUDIENCE.test(value);
}
