# shellcheck shell=bash
# Sourced by scripts/run.sh and scripts/run-cluster.sh: start_private_postgres DIR PORT creates
# (once) and starts a PostgreSQL server whose files live in DIR, listening on 127.0.0.1:PORT, with
# a database "doppel" for the user "doppel". It sets `store` to its URI and `pg_stop` to the
# command that stops it. PostgreSQL refuses to run as root: as root, the files belong to the
# postgres user.
start_private_postgres() {
  local pg_dir="$1" pg_port="$2"
  local pg_bin
  pg_bin="$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)"
  mkdir -p "$pg_dir"
  pg_dir="$(cd "$pg_dir" && pwd)"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    as=(runuser -u postgres --)
    chown postgres:postgres "$pg_dir"
  fi
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    echo "==> creating a PostgreSQL cluster in $pg_dir"
    "${as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U doppel -E UTF8 \
      --auth-local=trust --auth-host=trust >"$pg_dir/initdb.log" 2>&1 ||
      { echo "initdb failed (see $pg_dir/initdb.log; the postgres user needs access to $pg_dir)"; exit 1; }
  fi
  echo "==> starting PostgreSQL on 127.0.0.1:$pg_port"
  "${as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null ||
    { echo "PostgreSQL did not start (see $pg_dir/server.log)"; exit 1; }
  # shellcheck disable=SC2034  # both are the caller's
  pg_stop=("${as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop)
  "$pg_bin/createdb" -h "$pg_dir" -p "$pg_port" -U doppel doppel 2>/dev/null || true
  # shellcheck disable=SC2034
  store="postgresql://doppel@127.0.0.1:$pg_port/doppel"
}
