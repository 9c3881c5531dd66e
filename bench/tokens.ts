// Pre-signs GitHub-shaped OIDC tokens with the local issuer, one per exchange, spread over the fleet's repositories.
import { writeFile } from 'node:fs/promises';
import type { LocalIssuer } from '../test/support/local-issuer.js';
import { fleetEntry } from './fleet.js';

export interface SignedBatch {
  file: string;
  count: number;
  seconds: number;
}

/**
 * Signs `count` tokens (each with its own jti, iat = now, exp = iat + 300) for policies `first, first + 1, …`
 * modulo `policies`, and writes them one a line to `file`.
 */
export async function signTokens(
  issuer: LocalIssuer,
  opts: { policies: number; first: number; count: number; file: string },
): Promise<SignedBatch> {
  const started = performance.now();
  const lines: string[] = new Array(opts.count);
  for (let t = 0; t < opts.count; t++) {
    lines[t] = issuer.sign(fleetEntry((opts.first + t) % opts.policies).token);
  }
  await writeFile(opts.file, `${lines.join('\n')}\n`, { mode: 0o600 });
  return { file: opts.file, count: opts.count, seconds: (performance.now() - started) / 1000 };
}
