// Entry of the post step: wires the runner, HTTP and the clock into runPost(); never fails the job.
import { createRunnerFetch } from './http-fetch.js';
import { runPost } from './post-run.js';
import { processRunnerIO } from './runner.js';

const io = processRunnerIO();

// No top-level await: the bundle is CommonJS, which Node loads faster than an ES module.
runPost({
  io,
  // The revocation goes where the exchange went: through the runner's proxy settings.
  fetch: createRunnerFetch(process.env),
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: () => Math.random(),
}).catch((error: unknown) => {
  io.warning(`Could not revoke the token: ${error instanceof Error ? error.message : String(error)}`);
});
