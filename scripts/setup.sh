#!/usr/bin/env bash
# Installs the Debian packages Doppel needs (skipping those already present) and builds it.
# Idempotent: a second run installs nothing and rebuilds only what changed.
#   scripts/setup.sh [--no-build] [--build-dir DIR] [--build-type Release|Debug|...]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# ccache: paths relative to the checkout and no working directory in the hash, so a clone in
# another folder (CI) reuses what an earlier build on this machine compiled.
export CCACHE_BASEDIR="$here" CCACHE_NOHASHDIR=1
build_dir="${DOPPEL_BUILD_DIR:-$here/build}"
build_type="${DOPPEL_BUILD_TYPE:-RelWithDebInfo}"
do_build=1
extra_cmake=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --build-dir) build_dir="$2"; shift ;;
    --build-type) build_type="$2"; shift ;;
    -D*) extra_cmake+=("$1") ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

packages=(
  build-essential cmake pkg-config git
  libpaho-mqttpp-dev libpaho-mqtt-dev libssl-dev
  mosquitto mosquitto-clients
  mosquitto-dev libmosquitto-dev  # the broker plugin's headers (gateway/broker_plugin: presence, kicks)
  libsqlite3-dev zlib1g-dev
  libpq-dev postgresql-15  # the PostgreSQL backend (libpq) and the private servers its tests start
  libprotobuf-dev protobuf-compiler
  doctest-dev nlohmann-json3-dev libcpp-httplib-dev libspdlog-dev libcli11-dev libboost1.81-dev
  libbenchmark-dev clang clang-format clang-tidy libclang-rt-14-dev lld openssl ccache
  curl procps
  prometheus  # promtool, which checks the /metrics exposition in the test suite
  wrk         # the HTTP load generator of doppel-bench's api scenario
  chromium    # the browser the console's tests drive (tests/console)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js (>= 20.19) and npm run the OpenAPI linter; Debian's nodejs is older, so use it only
# where there is no node at all (scripts/lint-openapi.sh then says what is needed).
if ! command -v node >/dev/null 2>&1; then
  for p in nodejs npm; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "==> all packages present"
fi

# The Debian mosquitto package starts a system broker on 1883; Doppel runs its own child broker,
# so a system one would collide with the default port. We never stop a broker we did not start,
# but we do keep the package's service from being enabled on a fresh install.
if [ ${#missing[@]} -gt 0 ] && printf '%s\n' "${missing[@]}" | grep -qx mosquitto; then
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    echo "==> note: the system mosquitto service is running on 1883; doppeld's embedded broker needs another port (--broker-port) or that service stopped"
  fi
fi

# The console's libraries (embedded into doppeld at build time) and its browser tests' drivers,
# each pinned by its package-lock.json; installed again only when the lockfile changed.
for dir in gateway/console tests/console tests/aws; do
  if [ ! -f "$here/$dir/node_modules/.package-lock.json" ] ||
     [ "$here/$dir/package-lock.json" -nt "$here/$dir/node_modules/.package-lock.json" ]; then
    echo "==> npm ci in $dir"
    (cd "$here/$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

if [ "$do_build" -eq 1 ]; then
  echo "==> configuring $build_dir ($build_type)"
  # ccache: the test script builds the suite four times (plain, ASan, TSan, fuzz).
  cmake -S "$here" -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache "${extra_cmake[@]}" >/dev/null
  echo "==> building (-j2)"
  cmake --build "$build_dir" -j2
fi
