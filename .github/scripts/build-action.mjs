// Bundles the action's main and post entries into dist/ with ncc; the output is committed and drift-checked.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const ncc = createRequire(import.meta.url)('@vercel/ncc');

for (const entry of ['main', 'post']) {
  const out = `dist/${entry}`;
  // Start from an empty folder so a file the bundle no longer emits cannot linger and pass the drift check.
  rmSync(out, { recursive: true, force: true });
  // CommonJS rather than the ES module ncc would infer from package.json: Node starts a CommonJS entry several
  // milliseconds sooner, and the bundle imports nothing ESM-only. Type checking is its own CI step (tsc);
  // no cache keeps the output independent of a local build cache.
  const { code, assets } = await ncc(join(process.cwd(), `src/${entry}.ts`), {
    esm: false,
    minify: true,
    transpileOnly: true,
    cache: false,
    quiet: true,
    target: 'es2022',
    license: 'licenses.txt',
  });
  mkdirSync(out, { recursive: true });
  writeFileSync(`${out}/index.js`, code);
  for (const [name, asset] of Object.entries(assets)) {
    mkdirSync(dirname(join(out, name)), { recursive: true });
    writeFileSync(join(out, name), asset.source);
  }
  // The repository's package.json says "module"; this one makes Node load the bundle as CommonJS.
  writeFileSync(`${out}/package.json`, '{"type":"commonjs"}\n');
}
