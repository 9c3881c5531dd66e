// Command-line flags of `npm run bench`, parsed once into a typed value.
import { parseArgs } from 'node:util';
import type { LoadGenerator } from './load.js';

export interface BenchOptions {
  db: 'sqlite' | 'postgres';
  /** The load generator: wrk (default) or autocannon. */
  load: LoadGenerator;
  /** Seconds of measured load per round. */
  durationSeconds: number;
  /** Measured rounds per phase (odd), alternating between the phases; the median round is reported. */
  rounds: number;
  connections: number;
  quick: boolean;
  skip100k: boolean;
  skipAction: boolean;
  /** Skips the straightforward jose + SQLite handler that the broker is compared with. */
  skipReference: boolean;
  /** Runs the 1,000-policy broker under `node --cpu-prof` and summarises where it spent its time. */
  profile: boolean;
  /** Timed runs of the bundled action and of bare `node -e ''`. */
  actionRuns: number;
  /** Policies of the large phase (100,000; fewer in a smoke run). */
  largePolicies: number;
  help: boolean;
}

export const USAGE = `usage: npm run bench -- [options]

  --db sqlite|postgres   database of the broker (postgres: a throwaway server from .ci/postgres.sh)
  --duration N           seconds of measured load per round (default 10; 3 with --quick)
  --rounds N             measured rounds per phase (an odd number), alternating between the phases; the
                         median counts (default 3; 1 with --quick)
  --load wrk|autocannon  load generator (default wrk, installed from Debian packages when missing; autocannon
                         costs about twice the CPU per request, taken from the broker on a two-core machine)
  --connections N        concurrent connections of the load generator (default 64)
  --quick                a short smoke run (3 s phases, 10,000 policies instead of 100,000, 5 action runs);
                         its results go to bench/.tmp/results, not bench/results
  --skip-100k            skip the large-tenant phase
  --skip-action          skip timing the bundled action
  --skip-reference       skip the straightforward jose + SQLite handler (bench/reference-broker.ts) measured
                         in the same rounds for comparison (it runs with --db sqlite only)
  --profile              run the first phase's broker under node --cpu-prof (bench/.tmp/profiles)
`;

export class OptionsError extends Error {}

function positiveInteger(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  if (!/^[0-9]+$/.test(raw) || Number(raw) < 1) {
    throw new OptionsError(`--${name} takes a whole number ≥ 1, got "${raw}"`);
  }
  return Number(raw);
}

/** The median round is reported, and only an odd count has one middle round. */
function oddRounds(rounds: number): number {
  if (rounds % 2 === 0) throw new OptionsError(`--rounds takes an odd number (1, 3, 5, …), got ${rounds}`);
  return rounds;
}

export function parseOptions(argv: string[]): BenchOptions {
  let values: ReturnType<typeof parse>['values'];
  try {
    values = parse(argv).values;
  } catch (error) {
    throw new OptionsError((error as Error).message);
  }
  const db = values.db ?? 'sqlite';
  if (db !== 'sqlite' && db !== 'postgres') throw new OptionsError(`--db is sqlite or postgres, got "${db}"`);
  const load = values.load ?? 'wrk';
  if (load !== 'wrk' && load !== 'autocannon') {
    throw new OptionsError(`--load is wrk or autocannon, got "${load}"`);
  }
  const quick = values.quick ?? false;
  return {
    db,
    load,
    durationSeconds: positiveInteger('duration', values.duration, quick ? 3 : 10),
    rounds: oddRounds(positiveInteger('rounds', values.rounds, quick ? 1 : 3)),
    connections: positiveInteger('connections', values.connections, 64),
    quick,
    skip100k: values['skip-100k'] ?? false,
    skipAction: values['skip-action'] ?? false,
    skipReference: values['skip-reference'] ?? false,
    profile: values.profile ?? false,
    actionRuns: quick ? 5 : 20,
    largePolicies: quick ? 10_000 : 100_000,
    help: values.help ?? false,
  };
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      db: { type: 'string' },
      load: { type: 'string' },
      duration: { type: 'string' },
      rounds: { type: 'string' },
      connections: { type: 'string' },
      quick: { type: 'boolean' },
      'skip-100k': { type: 'boolean' },
      'skip-action': { type: 'boolean' },
      'skip-reference': { type: 'boolean' },
      profile: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}
