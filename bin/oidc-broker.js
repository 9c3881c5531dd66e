#!/usr/bin/env node
// The `oidc-broker` command: runs the compiled broker (built by `npm ci`/`npm run build:broker`).
import { existsSync } from 'node:fs';

const entry = new URL('../build/broker/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('oidc-broker is not built yet: run `npm run build:broker` (npm ci does it for you)\n');
  process.exit(1);
}
await import(entry.href);
