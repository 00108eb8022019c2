#!/usr/bin/env bash
# Sets up (Debian packages, idempotent), builds with warnings as errors, and runs the whole test
# suite: unit, storage and integration tests (real Mosquitto on random loopback ports, the real
# doppeld, real SQLite files). Extra arguments go to ctest, e.g. scripts/test.sh -L integration
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DOPPEL_BUILD_DIR:-$here/build}"

"$here/scripts/setup.sh" --build-dir "$build_dir" -DDOPPEL_WERROR=ON -DDOPPEL_TESTS=ON

echo "==> running the test suite"
cd "$build_dir"
ctest --output-on-failure --timeout 600 "$@"
