#!/usr/bin/env bash
# Sets up (Debian packages, idempotent), builds, and runs the whole system: doppeld with its
# embedded Mosquitto and web console, plus a simulated fleet of 100 devices; prints the
# console's address first. Ctrl-C stops everything.
#   DOPPEL_DEVICES=100 DOPPEL_HTTP=127.0.0.1:8080 DOPPEL_BROKER_PORT=1883 scripts/run.sh
# With --postgres, the twins go to a private PostgreSQL server instead of SQLite: a cluster in
# DOPPEL_PG_DIR (default ./doppel-postgres, kept between runs) on 127.0.0.1:DOPPEL_PG_PORT
# (default 55432), started and stopped with the demo.
set -euo pipefail
postgres=0
for arg in "$@"; do
  case "$arg" in
    --postgres) postgres=1 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DOPPEL_BUILD_DIR:-$here/build}"
devices="${DOPPEL_DEVICES:-100}"
http="${DOPPEL_HTTP:-127.0.0.1:8080}"
broker_port="${DOPPEL_BROKER_PORT:-1883}"
data="${DOPPEL_DATA:-$here/doppel-data}"

"$here/scripts/setup.sh" --build-dir "$build_dir"

doppeld_pid=""
sim_pid=""
pg_stop=()
cleanup() {
  [ -n "$sim_pid" ] && kill -INT "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
  [ -n "$doppeld_pid" ] && kill -TERM "$doppeld_pid" 2>/dev/null && wait "$doppeld_pid" 2>/dev/null || true
  if [ "${#pg_stop[@]}" -gt 0 ]; then "${pg_stop[@]}" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM

store_args=()
if [ "$postgres" = 1 ]; then
  # shellcheck source=scripts/private-postgres.sh
  . "$here/scripts/private-postgres.sh"
  start_private_postgres "${DOPPEL_PG_DIR:-$here/doppel-postgres}" "${DOPPEL_PG_PORT:-55432}"
  store_args=(--store "$store")
fi

echo "==> starting doppeld (HTTP $http, embedded broker on 127.0.0.1:$broker_port, data $data${store_args[1]:+, store ${store_args[1]}})"
# Own sessions (setsid): Ctrl-C reaches only this script, which stops the fleet first, then the
# gateway, so the devices can say goodbye while the gateway still listens.
setsid "$build_dir/gateway/doppeld" --http "$http" --broker-port "$broker_port" --data "$data" \
  "${store_args[@]}" &
doppeld_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://$http/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$doppeld_pid" 2>/dev/null; then echo "doppeld failed to start (see above)"; exit 1; fi
  sleep 0.1
done

echo "==> starting doppel-sim with $devices devices"
setsid "$build_dir/simulator/doppel-sim" --devices "$devices" --broker "tcp://127.0.0.1:$broker_port" \
  --interval-s 5 --progress-s 10 &
sim_pid=$!

cat <<INFO

Doppel is running.
  console:  http://$http/   (open it in a browser: the fleet, a twin, jobs, events, system)
Where else to look:
  twins:    curl -s http://$http/v1/twins?limit=5
  one twin: curl -s http://$http/v1/twins/sim-000000
  desired:  curl -s -X PATCH -H 'Content-Type: application/merge-patch+json' \\
              -d '{"mode":"eco"}' http://$http/v1/twins/sim-000000/desired
  command:  curl -s -X POST -H 'Content-Type: application/json' \\
              -d '{"name":"reboot"}' http://$http/v1/twins/sim-000000/commands
  metrics:  curl -s http://$http/metrics
  devices:  mosquitto_sub -p $broker_port -t 'twins/#' -v
Ctrl-C stops the fleet and the gateway.

INFO
wait "$sim_pid"
