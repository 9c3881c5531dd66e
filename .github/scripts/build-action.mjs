// Bundles the action's main and post entries into dist/ with ncc; the output is committed and drift-checked.
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const ncc = createRequire(import.meta.url).resolve('@vercel/ncc/dist/ncc/cli.js');

for (const entry of ['main', 'post']) {
  const out = `dist/${entry}`;
  // Start from an empty folder so a file the bundle no longer emits cannot linger and pass the drift check.
  rmSync(out, { recursive: true, force: true });
  // Type checking is its own CI step (tsc); -C keeps the output independent of a local build cache.
  const args = [
    'build',
    `src/${entry}.ts`,
    '-o',
    out,
    '--minify',
    '--transpile-only',
    '--no-cache',
    '--quiet',
  ];
  args.push('--target', 'es2022', '--license', 'licenses.txt');
  const result = spawnSync(process.execPath, [ncc, ...args], { stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
  // ncc emits ESM (the @actions/* packages are ESM-only), so Node must load the bundle as a module.
  writeFileSync(`${out}/package.json`, '{"type":"module"}\n');
}
