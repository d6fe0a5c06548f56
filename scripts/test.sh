#!/usr/bin/env bash
# test.sh - builds ferry and its tests in build/ (configuring it first, as scripts/install.sh
# does, when needed; no packages are installed, no demo is run), showing the build's progress,
# then runs every test:
#   ctest --test-dir build --output-on-failure -jN      (N: the machine's cores)
# The last lines are ctest's summary.
#
# usage: ./scripts/test.sh [--jobs N] [CTEST_ARGS...]
#   --jobs N, -j N   parallel build jobs and tests (default: the machine's cores, nproc)
#   -h, --help       this help
#   CTEST_ARGS       passed to ctest: -R REGEX runs the tests whose name matches (e.g.
#                    -R test_core), -E REGEX leaves them out, --timeout S, -V for all output;
#                    `ctest --help` lists the rest
# Environment: FERRY_BUILD_DIR (default build), FERRY_BUILD_TYPE (default Release; used when
# configuring).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/build_progress.sh
source "$root/scripts/build_progress.sh"

jobs=$(nproc 2>/dev/null || echo 2)
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --jobs|-j) jobs=${2:?$1 needs a number}; shift ;;
    --jobs=*) jobs=${1#--jobs=} ;;
    -j[0-9]*) jobs=${1#-j} ;;
    *) ctest_args+=("$1") ;;
  esac
  shift
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "test.sh: --jobs needs a positive number, got '$jobs'" >&2; exit 2; }
build_dir=${FERRY_BUILD_DIR:-build}

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  echo "==> configure: cmake -S . -B $build_dir -DCMAKE_BUILD_TYPE=${FERRY_BUILD_TYPE:-Release}"
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${FERRY_BUILD_TYPE:-Release}"
fi
echo "==> build: cmake --build $build_dir -j$jobs (the library, the tool, the examples, the tests)"
start=$(date +%s)
ferry_build "$build_dir" -j"$jobs"
echo "    built in $(( $(date +%s) - start )) s"
echo "==> test: ctest --test-dir $build_dir --output-on-failure -j$jobs ${ctest_args[*]:-}"
exec ctest --test-dir "$build_dir" --output-on-failure -j"$jobs" "${ctest_args[@]}"
