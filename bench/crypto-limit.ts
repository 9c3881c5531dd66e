// The ceiling an exchange is compared with: RS256-verify + ES256-sign pairs per second on one core (child process).
import { fork } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { LocalIssuer } from '../test/support/local-issuer.js';
import { fleetEntry } from './fleet.js';
import { AUDIENCE, TENANT } from './setup.js';

export interface CryptoJob {
  oidcToken: string;
  issuerPublicKeyPem: string;
  /** `header.payload` of an access token as the broker mints one for an exchange. */
  accessTokenSigningInput: string;
  seconds: number;
}

export interface CryptoLimit {
  pairsPerSecond: number;
  /** Each measurement's pairs/s when pairsPerSecond is their mean. */
  measurements?: number[];
  seconds: number;
  oidcTokenBytes: number;
  accessTokenSigningInputBytes: number;
}

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** The claims `accessTokens.mint` writes for an exchange by fleet policy 0, with same-length values. */
function accessTokenSigningInput(): string {
  const entry = fleetEntry(0);
  const token = entry.token as Record<string, string>;
  const iat = Math.floor(Date.now() / 1000);
  const permissions = entry.policy.permissions;
  const kid = createHash('sha256').update(randomUUID()).digest('base64url');
  const claims = {
    iss: 'http://127.0.0.1',
    sub: token.sub,
    aud: AUDIENCE,
    client_id: randomUUID(),
    tenant: TENANT,
    scope: permissions.join(' '),
    permissions,
    jti: randomUUID(),
    iat,
    exp: iat + 900,
    policy: entry.policy.name,
    repository: token.repository,
    repository_owner: token.repository_owner,
    ref: token.ref,
    run_id: '27476101517',
  };
  return `${b64({ alg: 'ES256', typ: 'at+jwt', kid })}.${b64(claims)}`;
}

export function measureCryptoLimit(root: string, issuer: LocalIssuer, seconds: number): Promise<CryptoLimit> {
  const job: CryptoJob = {
    oidcToken: issuer.sign(fleetEntry(0).token),
    issuerPublicKeyPem: issuer.publicKeyPem,
    accessTokenSigningInput: accessTokenSigningInput(),
    seconds,
  };
  const child = fork(join(root, 'build/bench/crypto-limit-child.js'), [], {
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    child.once('message', (reply: { ok: true; result: CryptoLimit } | { ok: false; error: string }) => {
      settled = true;
      if (reply.ok) resolve(reply.result);
      else reject(new Error(`crypto limit failed: ${reply.error}`));
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (!settled) reject(new Error(`crypto limit process exited with ${code} before reporting`));
    });
    child.send(job);
  });
}
