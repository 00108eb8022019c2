#!/usr/bin/env bash
# Sets up (Debian packages, idempotent), builds, and runs the whole system: doppeld with its
# embedded Mosquitto, plus a simulated fleet of 100 devices. Ctrl-C stops everything.
#   DOPPEL_DEVICES=100 DOPPEL_HTTP=127.0.0.1:8080 DOPPEL_BROKER_PORT=1883 scripts/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DOPPEL_BUILD_DIR:-$here/build}"
devices="${DOPPEL_DEVICES:-100}"
http="${DOPPEL_HTTP:-127.0.0.1:8080}"
broker_port="${DOPPEL_BROKER_PORT:-1883}"
data="${DOPPEL_DATA:-$here/doppel-data}"

"$here/scripts/setup.sh" --build-dir "$build_dir"

doppeld_pid=""
sim_pid=""
cleanup() {
  [ -n "$sim_pid" ] && kill -INT "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
  [ -n "$doppeld_pid" ] && kill -TERM "$doppeld_pid" 2>/dev/null && wait "$doppeld_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "==> starting doppeld (HTTP $http, embedded broker on 127.0.0.1:$broker_port, data $data)"
# Own sessions (setsid): Ctrl-C reaches only this script, which stops the fleet first, then the
# gateway, so the devices can say goodbye while the gateway still listens.
setsid "$build_dir/gateway/doppeld" --http "$http" --broker-port "$broker_port" --data "$data" &
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

Doppel is running. Where to look:
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
