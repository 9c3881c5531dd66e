// Entry of the post step: wires @actions/core, fetch and the clock into runPost(); never fails the job.
import * as core from '@actions/core';
import { runPost } from './post-run.js';

try {
  await runPost({
    io: {
      getState: (name) => core.getState(name),
      setSecret: (value) => core.setSecret(value),
      info: (message) => core.info(message),
      debug: (message) => core.debug(message),
      warning: (message) => core.warning(message),
    },
    fetch: globalThis.fetch,
    now: () => Date.now(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    random: () => Math.random(),
  });
} catch (error) {
  core.warning(`Could not revoke the token: ${error instanceof Error ? error.message : String(error)}`);
}
