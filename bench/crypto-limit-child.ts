// One core's raw limit: RS256 verify of a GitHub-sized token + ES256 sign of an access token, in a tight loop.
import { createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import type { CryptoJob, CryptoLimit } from './crypto-limit.js';

function measure(job: CryptoJob): CryptoLimit {
  const dot = job.oidcToken.lastIndexOf('.');
  const signed = Buffer.from(job.oidcToken.slice(0, dot));
  const signature = Buffer.from(job.oidcToken.slice(dot + 1), 'base64url');
  const publicKey = createPublicKey(job.issuerPublicKeyPem);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const accessToken = Buffer.from(job.accessTokenSigningInput);

  const pair = () => {
    if (!verify('RSA-SHA256', signed, publicKey, signature)) throw new Error('the token does not verify');
    sign('sha256', accessToken, { key: privateKey, dsaEncoding: 'ieee-p1363' });
  };
  const loop = (seconds: number) => {
    const started = performance.now();
    const until = started + seconds * 1000;
    let pairs = 0;
    let now = started;
    while (now < until) {
      for (let i = 0; i < 50; i++) pair();
      pairs += 50;
      now = performance.now();
    }
    return pairs / ((now - started) / 1000);
  };

  loop(Math.min(1, job.seconds / 4));
  return {
    pairsPerSecond: loop(job.seconds),
    seconds: job.seconds,
    oidcTokenBytes: job.oidcToken.length,
    accessTokenSigningInputBytes: accessToken.length,
  };
}

process.once('message', (job: CryptoJob) => {
  let reply: unknown;
  try {
    reply = { ok: true, result: measure(job) };
  } catch (error) {
    reply = { ok: false, error: (error as Error).message };
  }
  process.send?.(reply, () => process.exit(0));
});
