// action.yml declares exactly what the code reads and writes, with the documented defaults and runtime.
import { HttpResponse } from 'msw';
import { describe, expect, it } from 'vitest';
import { run } from '../../src/run.js';
import { readActionYml } from './support/action-yml.js';
import { API_URL, exchangeAnswers, grantBody, mainHarness, useBroker } from './support/harness.js';

const broker = useBroker();
const metadata = await readActionYml(new URL('../../action.yml', import.meta.url).pathname);

describe('action.yml', () => {
  it('declares every input the action reads and every output it sets, each described', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    await run(h.deps);

    const read = new Set(h.io.calls.filter((c) => c.fn === 'getInput').map((c) => c.args[0]));
    expect(Object.keys(metadata.inputs).sort()).toEqual([...read].sort());
    expect(metadata.outputs.sort()).toEqual(Object.keys(h.io.outputs).sort());
    for (const [name, input] of Object.entries(metadata.inputs)) {
      expect(input.description.length, `description of ${name}`).toBeGreaterThan(40);
    }
  });

  it('requires only the tenant and documents the defaults the code applies', () => {
    expect(
      Object.entries(metadata.inputs)
        .filter(([, i]) => i.required)
        .map(([name]) => name),
    ).toEqual(['tenant']);
    expect(metadata.inputs['api-url']!.default).toBe('https://agent.api.stepsecurity.io/v1');
    expect(metadata.inputs['export-env']!.default).toBe('false');
    expect(metadata.inputs.revoke!.default).toBe('true');
    expect(metadata.inputs.audience!.default).toBe('');
  });

  it('runs the bundles on node24 and revokes in a post step that always runs', () => {
    expect(metadata.runs).toEqual({
      using: 'node24',
      main: 'dist/main/index.js',
      post: 'dist/post/index.js',
      'post-if': 'always()',
    });
  });
});
