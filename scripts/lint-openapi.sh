#!/usr/bin/env bash
# Lints the API description (gateway/openapi.json) with @redocly/cli, pinned by
# scripts/openapi/package-lock.json (installed there with `npm ci` on first use). Needs Node.js
# >= 20.19. Run by ctest (lint/openapi); exits non-zero on any error.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here/scripts/openapi"
if ! command -v node >/dev/null 2>&1; then
  echo "lint-openapi: node not found; install Node.js >= 20.19 (and npm)" >&2
  exit 1
fi
if [ ! -x node_modules/.bin/redocly ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec node_modules/.bin/redocly lint --config redocly.yaml "$here/gateway/openapi.json"
