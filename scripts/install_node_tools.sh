#!/usr/bin/env bash
# The Node MCP clients the test suite drives (tests/mcp_node): the official conformance suite,
# the TypeScript SDK and ajv, and the Node 22 the conformance suite needs (from npm, so the
# system's Node only has to run npm). Exactly the versions in package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/../tests/mcp_node"
if ! command -v npm >/dev/null; then
  echo "install_node_tools: npm not found; the real_clients Node tests will be skipped" >&2
  exit 0
fi
npm ci --no-audit --no-fund
node_modules/.bin/node --version

# axe-core, injected into the staff app's pages by the browser tests (tests/browser).
cd ../browser
npm ci --no-audit --no-fund
