// Entry of the main step: wires the runner, HTTP and the clock into run().
import { createRunnerFetch } from './http-fetch.js';
import { idTokenAvailable, requestIdToken } from './id-token.js';
import { run } from './run.js';
import { processRunnerIO } from './runner.js';

const io = processRunnerIO();
const now = () => Date.now();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
// GitHub's token service and the broker alike are reached through the runner's proxy settings.
const fetch = createRunnerFetch(process.env);

// No top-level await: the bundle is CommonJS, which Node loads faster than an ES module.
run({
  io,
  fetch,
  idTokenAvailable: idTokenAvailable(process.env),
  getIdToken: (audience, timeoutMs) =>
    requestIdToken(audience, timeoutMs, { env: process.env, fetch, now, sleep, io }),
  now,
  sleep,
  random: () => Math.random(),
}).catch((error: unknown) => {
  io.setFailed(`oidc-auth failed unexpectedly: ${error instanceof Error ? error.message : String(error)}`);
});
