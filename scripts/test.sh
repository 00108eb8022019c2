#!/usr/bin/env bash
# Sets up (Debian packages, idempotent), builds with warnings as errors, and runs the whole test
# suite: unit, storage and integration tests (real Mosquitto on random loopback ports, the real
# doppeld, real SQLite files) — then the same suite again under AddressSanitizer+UBSan and under
# ThreadSanitizer, and a short run of every libFuzzer target.
#
#   scripts/test.sh                       everything (what CI runs)
#   scripts/test.sh -L integration        extra arguments go to ctest (every pass)
#   DOPPEL_SANITIZERS=0 scripts/test.sh   skip the sanitizer and fuzz passes (quick local loop)
#   DOPPEL_TEST_JOBS=1 scripts/test.sh    run the tests one at a time (default: one per core;
#                                         every test uses its own ports, directories and servers)
#
# Every step's line says how long the run has taken so far ("[+123 s]"), so a slow CI run shows
# where its time went.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# ccache: paths relative to the checkout and no working directory in the hash, so a clone in
# another folder (CI) reuses what an earlier build on this machine compiled.
export CCACHE_BASEDIR="$here" CCACHE_NOHASHDIR=1
build_dir="${DOPPEL_BUILD_DIR:-$here/build}"
sanitizers="${DOPPEL_SANITIZERS:-1}"
jobs="${DOPPEL_TEST_JOBS:-$(nproc)}"
t0=$(date +%s)
step() { echo "==> [+$(( $(date +%s) - t0 )) s] $*"; }

"$here/scripts/setup.sh" --build-dir "$build_dir" -DDOPPEL_WERROR=ON -DDOPPEL_TESTS=ON

"$here/scripts/check-layering.sh"

for tool in clang-format clang-tidy; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "!! $tool not found: the style checks cannot run (apt-get install $tool)" >&2
    exit 1
  fi
done
step "clang-format --dry-run --Werror on every source file"
(cd "$here" && git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror)

run_suite() {  # run_suite <build dir> <label> [ctest args...]
  local dir="$1" label="$2"
  shift 2
  step "test suite: $label"
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j "$jobs" "$@")
}

step "clang-tidy (naming and a few bug-prone patterns, .clang-tidy) on the sources"
(cd "$here" && git ls-files 'twins/*.cc' 'storage/*.cc' 'mqtt/*.cc' 'gateway/*.cc' \
   'simulator/*.cc' | xargs -P "$jobs" -n 4 clang-tidy -p "$build_dir" --quiet --warnings-as-errors='*' \
   2>/dev/null)

start=$(date +%s)
run_suite "$build_dir" "regular build" "$@"

if [ "$sanitizers" = "1" ]; then
  supp="$here/tests/sanitizers"
  # Sanitizer builds: the tests, the daemon and the simulator they start are all instrumented.
  # The benchmark harness test is left out: it measures nothing under a sanitizer; so are the
  # tests on a private PostgreSQL server and the browser tests (plain pass only; the sanitizer
  # builds do not even build them, tests/CMakeLists.txt). They build at -O1 -g1, as the
  # sanitizers' own documentation advises: half the compile time of -O2 -g under ASan+UBSan, and
  # stack traces still name every function and line.
  # They link with lld (several times faster than ld.bfd on these executables).
  lean_flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
              -DDOPPEL_LLD=ON)
  for kind in address thread; do
    dir="$here/build-$kind"
    step "building with DOPPEL_SANITIZE=$kind"
    cmake -S "$here" -B "$dir" "${lean_flags[@]}" -DDOPPEL_WERROR=ON \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DDOPPEL_SANITIZE="$kind" >/dev/null
    cmake --build "$dir" -j2
    if [ "$kind" = address ]; then
      ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
      LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0" \
      UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        run_suite "$dir" "AddressSanitizer + UndefinedBehaviorSanitizer" -LE "bench|load|lint|postgres|browser|aws" "$@"
    else
      TSAN_OPTIONS="suppressions=$supp/tsan.supp:halt_on_error=1:second_deadlock_stack=1" \
        run_suite "$dir" "ThreadSanitizer" -LE "bench|load|lint|postgres|browser|aws" "$@"
    fi
  done

  if command -v clang++ >/dev/null 2>&1; then
    dir="$here/build-fuzz"
    step "building the libFuzzer targets (clang, ASan+UBSan)"
    CC=clang CXX=clang++ cmake -S "$here" -B "$dir" "${lean_flags[@]}" \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DDOPPEL_WERROR=ON -DDOPPEL_FUZZ=ON -DDOPPEL_SANITIZE=address -DDOPPEL_TESTS=OFF >/dev/null
    cmake --build "$dir" -j2 --target fuzzers
    run_suite "$dir" "fuzzing (short runs over the checked-in corpus)" -L fuzz
  else
    echo "!! clang++ not found: fuzz targets not run (apt-get install clang)"
    exit 1
  fi
fi
step "all test passes green in $(( $(date +%s) - start )) s"
