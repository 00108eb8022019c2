#!/usr/bin/env bash
# Fails when the code breaks the module layering of DESIGN §1 (the idea of Chromium's checkdeps):
#   - twins/ includes nothing from storage/, mqtt/, gateway/ or simulator/;
#   - storage/ and mqtt/ do not include each other, nor gateway/;
#   - storage/'s backend-neutral files include no backend, and the backends (storage/sqlite/,
#     storage/postgres/) not each other;
#   - SQLite's header appears only in storage/sqlite/, libpq's only in storage/postgres/, Paho's
#     only in mqtt/, Beast's and Asio's only in the HTTP server's implementation
#     (gateway/http_server.cc, http_request.cc, detail/http_*).
# Tests may include anything (DESIGN §1). The read-merge-write baseline in doppel-bench is by
# definition a plain SQLite program, so it is the one named exception for sqlite3.h.
#   scripts/check-layering.sh        prints each violation as file:line: rule, exits 1 if any
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

status=0
violation() {  # violation <grep -n output line> <rule>
  echo "layering: $1: $2" >&2
  status=1
}
scan() {  # scan <pathspec> <include regex> <rule> [excluded file...]
  local spec="$1" pattern="$2" rule="$3"
  shift 3
  local files
  files=$(git ls-files -- "$spec" | grep -E '\.(cc|h)$' || true)
  for excluded in "$@"; do files=$(grep -vxF "$excluded" <<<"$files" || true); done
  [ -z "$files" ] && return 0
  while IFS= read -r hit; do
    [ -n "$hit" ] && violation "$hit" "$rule"
  done < <(xargs grep -nE "^\s*#\s*include\s*[<\"]($pattern)" <<<"$files" || true)
}

scan 'twins/*' '(storage|mqtt|gateway|simulator)/' "twins/ may include only twins/ and the standard library"
scan 'storage/*' '(mqtt|gateway|simulator)/' "storage/ may include only twins/ and storage/"
scan 'mqtt/*' '(storage/|gateway/|simulator/)' "mqtt/ may include only twins/ and mqtt/"
# storage/*.{h,cc} (not in a backend's folder) are backend-neutral.
neutral=$(git ls-files -- 'storage/*' | grep -E '^storage/[^/]+\.(cc|h)$' || true)
if [ -n "$neutral" ]; then
  while IFS= read -r hit; do
    [ -n "$hit" ] && violation "$hit" "storage/'s neutral part includes no backend"
  done < <(xargs grep -nE '^\s*#\s*include\s*[<"](storage/(sqlite|postgres)/|sqlite3\.h|libpq-fe\.h|pqxx/)' <<<"$neutral" || true)
fi
scan 'storage/sqlite/*' 'storage/postgres/' "the SQLite and PostgreSQL backends do not include each other"
scan 'storage/postgres/*' 'storage/sqlite/' "the SQLite and PostgreSQL backends do not include each other"
for dir in twins mqtt gateway simulator storage/postgres; do
  scan "$dir/*" 'sqlite3\.h' "SQLite's header belongs in storage/sqlite/ only" \
    simulator/bench/baseline.cc
done
for dir in twins mqtt gateway simulator storage/sqlite; do
  scan "$dir/*" 'libpq-fe\.h|pqxx/' "libpq's headers belong in storage/postgres/ only"
done
for dir in twins storage gateway simulator; do
  scan "$dir/*" 'mqtt/(async_client|client|message|properties|connect_options|create_options|ssl_options|types|token)\.h>|MQTTAsync\.h|MQTTClient\.h' \
    "Paho's headers belong in mqtt/ only"
done

# Beast and Asio are slow to compile and large: only the HTTP server's implementation sees them
# (http_server.cc, http_request.cc and gateway/detail/http_*) and the cluster's forwarding client
# (cluster.cc), and no header outside detail/.
http_impl='^gateway/(http_server\.cc|http_request\.cc|cluster\.cc|detail/http_[a-z_]+\.(cc|h))$'
for dir in twins storage mqtt simulator; do
  scan "$dir/*" 'boost/(beast|asio)' "Beast and Asio belong in the HTTP server's implementation only"
done
files=$(git ls-files -- 'gateway/*' | grep -E '\.(cc|h)$' | grep -vE "$http_impl" || true)
if [ -n "$files" ]; then
  while IFS= read -r hit; do
    [ -n "$hit" ] && violation "$hit" "Beast and Asio belong in the HTTP server's implementation only"
  done < <(xargs grep -nE '^\s*#\s*include\s*[<"]boost/(beast|asio)' <<<"$files" || true)
fi

if [ "$status" -eq 0 ]; then echo "==> layering: every include points inwards"; fi
exit "$status"
