#!/usr/bin/env bash
# test.sh - builds ferry in build/ if needed (as scripts/install.sh does, without installing
# packages or running the demo) and runs every test:
#   ctest --test-dir build --output-on-failure -j2
# Extra arguments go to ctest (e.g. ./scripts/test.sh -R test_core). The last lines are ctest's
# summary. Environment: FERRY_BUILD_DIR (default build), FERRY_BUILD_TYPE (default Release).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build_dir=${FERRY_BUILD_DIR:-build}

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  echo "==> configure: cmake -S . -B $build_dir -DCMAKE_BUILD_TYPE=${FERRY_BUILD_TYPE:-Release}"
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${FERRY_BUILD_TYPE:-Release}"
fi
echo "==> build: cmake --build $build_dir -j2"
cmake --build "$build_dir" -j2 | { grep -v -E '^\[ *[0-9]+%\] (Built target|Building|Linking)' || true; }
echo "==> test: ctest --test-dir $build_dir --output-on-failure -j2 $*"
exec ctest --test-dir "$build_dir" --output-on-failure -j2 "$@"
