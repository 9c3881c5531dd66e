// The collaborators the action's flows take: runner IO, HTTP, the OIDC source, time.

/** What the action asks of the runner, so tests can substitute an in-memory runner. */
export interface ActionIO {
  getInput(name: string): string;
  setSecret(value: string): void;
  setOutput(name: string, value: string): void;
  exportVariable(name: string, value: string): void;
  saveState(name: string, value: string): void;
  getState(name: string): string;
  info(message: string): void;
  debug(message: string): void;
  warning(message: string): void;
  setFailed(message: string): void;
  /** Appends Markdown to the job summary. */
  appendSummary(markdown: string): Promise<void>;
}

/** The part of a fetch request the action makes; the global `fetch` accepts it. */
export interface FetchInit {
  method: string;
  headers: Record<string, string>;
  body?: string;
  /** Redirects are never followed: every request the action makes carries a credential. */
  redirect: 'manual';
  signal?: AbortSignal;
}

/** The part of a fetch response the action reads; the global `Response` has it. */
export interface FetchResponse {
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}

/** Fetch-shaped HTTP: the global `fetch` in tests, createHttpFetch (http-fetch.ts) in the bundle. */
export type Fetch = (url: string, init: FetchInit) => Promise<FetchResponse>;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  sleep(ms: number): Promise<void>;
  /** A number in [0, 1), for backoff jitter. */
  random(): number;
}

export interface RunDeps extends Clock {
  io: ActionIO;
  fetch: Fetch;
  /** Whether the runner offers an OIDC token to this job (ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN are set). */
  idTokenAvailable: boolean;
  /**
   * Asks GitHub for a new OIDC token for this job with the given audience, within `timeoutMs`; past it, rejects
   * with an error named `TimeoutError`.
   */
  getIdToken(audience: string, timeoutMs: number): Promise<string>;
}

export type PostIO = Pick<
  ActionIO,
  'getState' | 'setSecret' | 'info' | 'debug' | 'warning' | 'appendSummary'
>;

export interface PostDeps extends Clock {
  io: PostIO;
  fetch: Fetch;
}

/** What the main step saves for the post step, which revokes the token. */
export const STATE_KEYS = {
  token: 'token',
  /** The broker's expiry time, as the `expires-at` output gives it. */
  expiresAt: 'expires-at',
  /** The same moment by the runner's clock: the answer's arrival plus the token's lifetime (`expires_in`). */
  expiresAtRunnerClock: 'expires-at-runner-clock',
  apiUrl: 'api-url',
} as const;
