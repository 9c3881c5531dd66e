// Entry of the main step: wires @actions/core, fetch and the clock into run().
import * as core from '@actions/core';
import { run } from './run.js';

try {
  await run({
    io: {
      getInput: (name) => core.getInput(name),
      setSecret: (value) => core.setSecret(value),
      setOutput: (name, value) => core.setOutput(name, value),
      exportVariable: (name, value) => core.exportVariable(name, value),
      saveState: (name, value) => core.saveState(name, value),
      getState: (name) => core.getState(name),
      info: (message) => core.info(message),
      debug: (message) => core.debug(message),
      warning: (message) => core.warning(message),
      setFailed: (message) => core.setFailed(message),
      appendSummary: async (markdown) => {
        await core.summary.addRaw(markdown).write();
      },
    },
    fetch: globalThis.fetch,
    idTokenAvailable: Boolean(
      process.env.ACTIONS_ID_TOKEN_REQUEST_URL && process.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN,
    ),
    getIdToken: (audience) => core.getIDToken(audience),
    now: () => Date.now(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    random: () => Math.random(),
  });
} catch (error) {
  core.setFailed(`oidc-auth failed unexpectedly: ${error instanceof Error ? error.message : String(error)}`);
}
