#!/usr/bin/env bash
# Sets up (Debian packages, idempotent), builds, and runs a cluster of three doppelds on this
# machine (docs/scale-out.md): a private PostgreSQL server they share, one Mosquitto broker they
# share, three nodes (--cluster) on consecutive HTTP ports, and a simulated fleet; then says where
# to look. Ctrl-C stops everything (the nodes leave the cluster one by one).
#   DOPPEL_DEVICES=300 DOPPEL_HTTP_PORT=8081 DOPPEL_BROKER_PORT=1884 DOPPEL_PG_PORT=55433 \
#   DOPPEL_CLUSTER_DIR=./doppel-cluster scripts/run-cluster.sh
# Everything the run keeps (database, broker, node data, logs) is in DOPPEL_CLUSTER_DIR.
set -euo pipefail
for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DOPPEL_BUILD_DIR:-$here/build}"
devices="${DOPPEL_DEVICES:-300}"
http_port="${DOPPEL_HTTP_PORT:-8081}"
broker_port="${DOPPEL_BROKER_PORT:-1884}"
pg_port="${DOPPEL_PG_PORT:-55433}"
dir="$(mkdir -p "${DOPPEL_CLUSTER_DIR:-$here/doppel-cluster}" && cd "${DOPPEL_CLUSTER_DIR:-$here/doppel-cluster}" && pwd)"

"$here/scripts/setup.sh" --build-dir "$build_dir"

pids=()
sim_pid=""
broker_pid=""
pg_stop=()
cleanup() {
  [ -n "$sim_pid" ] && kill -INT "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  [ -n "$broker_pid" ] && kill -TERM "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null || true
  if [ "${#pg_stop[@]}" -gt 0 ]; then "${pg_stop[@]}" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# shellcheck source=scripts/private-postgres.sh
. "$here/scripts/private-postgres.sh"
start_private_postgres "$dir/postgres" "$pg_port"

# One broker for all nodes (the embedded broker lives and dies with its doppeld).
echo "==> starting Mosquitto on 127.0.0.1:$broker_port"
cat >"$dir/mosquitto.conf" <<CONF
listener $broker_port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
user root
CONF
setsid mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
broker_pid=$!

# The secret every node signs its forwarded requests with.
[ -s "$dir/cluster.secret" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$dir/cluster.secret")

for n in 1 2 3; do
  port=$((http_port + n - 1))
  echo "==> starting node n$n (HTTP 127.0.0.1:$port, log $dir/n$n.log)"
  setsid "$build_dir/gateway/doppeld" --cluster --node-id "n$n" \
    --advertise "http://127.0.0.1:$port" --cluster-secret-file "$dir/cluster.secret" \
    --store "$store" --broker "tcp://127.0.0.1:$broker_port" --http "127.0.0.1:$port" \
    --data "$dir/n$n" >"$dir/n$n.log" 2>&1 &
  pids+=($!)
done
for n in 1 2 3; do
  port=$((http_port + n - 1))
  for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "${pids[$((n - 1))]}" 2>/dev/null; then echo "node n$n failed to start (see $dir/n$n.log)"; exit 1; fi
    sleep 0.1
  done
done

echo "==> starting doppel-sim with $devices devices"
setsid "$build_dir/simulator/doppel-sim" --devices "$devices" --broker "tcp://127.0.0.1:$broker_port" \
  --interval-s 5 --progress-s 10 &
sim_pid=$!

cat <<INFO

A cluster of three doppelds is running (docs/scale-out.md).
  consoles: http://127.0.0.1:$http_port/  http://127.0.0.1:$((http_port + 1))/  http://127.0.0.1:$((http_port + 2))/
Where else to look:
  members and partitions: curl -s http://127.0.0.1:$http_port/v1/cluster
  what one node serves:   curl -s http://127.0.0.1:$((http_port + 1))/readyz
  any twin, via any node: curl -s http://127.0.0.1:$((http_port + 2))/v1/twins/sim-000000
  lease metrics:          curl -s http://127.0.0.1:$http_port/metrics | grep doppel_cluster
  a failover:             kill -9 ${pids[1]}   (node n2; the others take its partitions within a lease)
  logs:                   $dir/n1.log n2.log n3.log
Ctrl-C stops the fleet, the nodes, the broker and PostgreSQL.

INFO
wait "$sim_pid"
