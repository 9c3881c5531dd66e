// Entry of the main step: wires the runner, HTTP and the clock into run().
import { createHttpFetch } from './http-fetch.js';
import { idTokenAvailable, requestIdToken } from './id-token.js';
import { proxyFor } from './proxy.js';
import { run } from './run.js';
import { processRunnerIO } from './runner.js';

const io = processRunnerIO();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
// The token service is reached as the Actions toolkit reaches it: through the runner's proxy settings.
const githubFetch = createHttpFetch({ proxyFor: (url) => proxyFor(url, process.env) });

// No top-level await: the bundle is CommonJS, which Node loads faster than an ES module.
run({
  io,
  fetch: createHttpFetch(),
  idTokenAvailable: idTokenAvailable(process.env),
  getIdToken: (audience) => requestIdToken(audience, { env: process.env, fetch: githubFetch, sleep, io }),
  now: () => Date.now(),
  sleep,
  random: () => Math.random(),
}).catch((error: unknown) => {
  io.setFailed(`oidc-auth failed unexpectedly: ${error instanceof Error ? error.message : String(error)}`);
});
