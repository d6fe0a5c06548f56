#!/usr/bin/env bash
# install.sh - from a fresh Debian/Ubuntu machine to a running ferry:
#   1. installs the system packages ferry needs, only those that are missing (apt-get, sudo when
#      not root): a C compiler and make (build-essential), cmake, pkg-config, zlib (GZIP/ZLIB
#      TFRecord files), libjpeg-turbo and libspng (JPEG and PNG decoding), the Fashion-MNIST
#      data (dataset-fashion-mnist, in /usr/share/datasets/fashion-mnist: `ferry convert`), and
#      for the Python package (python/, built into build/python) python3-dev, python3-numpy and
#      python3-pytest (scripts/test.sh runs its tests);
#   2. configures (Release, the first time) and builds the library, the ferry tool and the
#      training demo in build/, showing its progress (scripts/test.sh builds the tests);
#   3. runs the main job: converts Fashion-MNIST to TFRecord shards in build/data/fashion-mnist
#      (`ferry convert fashion-mnist`, once) and trains on them: build/train (examples/train.c).
# It is idempotent: a second run installs nothing, rebuilds only what changed and runs the demo.
# It does not install ferry system-wide: `cmake --install build` does (README.md, Installing).
# CI's extra tools (clang, its sanitizer and fuzzer runtimes) are installed by .ci/run itself.
#
# usage: ./scripts/install.sh [--no-run] [--jobs N] [-- TRAIN_ARGS...]
#   --no-run   stop after the build
#   --jobs N   parallel build jobs (default: the machine's cores, nproc)
#   TRAIN_ARGS are passed to build/train (e.g. -- --quick; -- --help lists them).
# Environment: FERRY_BUILD_DIR (default build), FERRY_BUILD_TYPE (default Release).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/build_progress.sh
source "$root/scripts/build_progress.sh"

run_demo=1
jobs=$(nproc 2>/dev/null || echo 2)
train_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-run) run_demo=0 ;;
    --jobs|-j) jobs=${2:?$1 needs a number}; shift ;;
    --jobs=*) jobs=${1#--jobs=} ;;
    --) shift; train_args=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (see ./scripts/install.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "install.sh: --jobs needs a positive number, got '$jobs'" >&2; exit 2; }

build_dir=${FERRY_BUILD_DIR:-build}
build_type=${FERRY_BUILD_TYPE:-Release}

say() { printf '\n==> %s\n' "$*"; }

# ---- 1. system packages --------------------------------------------------------------------
required=(build-essential cmake pkg-config zlib1g-dev libjpeg62-turbo-dev libspng-dev dataset-fashion-mnist
          python3-dev python3-numpy python3-pytest)

is_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == *"ok installed"* ]]; }

say "checking system packages: ${required[*]}"
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "    not a Debian/Ubuntu system: install a C11 compiler, make, cmake >= 3.20, pkg-config and"
  echo "    zlib (optional: GZIP/ZLIB files), libjpeg-turbo and libspng (optional: JPEG and PNG) and the"
  echo "    Fashion-MNIST IDX files (ferry convert fashion-mnist --source DIR) yourself;"
  echo "    continuing with the build"
else
  missing=()
  for p in "${required[@]}"; do is_installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "    all present"
  else
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
      else
        echo "install.sh: missing packages (${missing[*]}), and not root and no sudo to install them:" >&2
        echo "    as root: apt-get install ${missing[*]}" >&2
        exit 1
      fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    say "apt-get update (missing: ${missing[*]})"
    "${sudo[@]}" apt-get update -q
    say "apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
  fi
fi

# ---- 2. configure and build ----------------------------------------------------------------
cached_type=""
if [ -f "$build_dir/CMakeCache.txt" ]; then
  cached_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
fi
if [ "$cached_type" = "$build_type" ]; then
  say "configure: $build_dir/ is already configured ($build_type); cmake re-runs itself if needed"
else
  say "configure: cmake -S . -B $build_dir -DCMAKE_BUILD_TYPE=$build_type"
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type"
fi

# The library, the tool and the examples; the tests are built by scripts/test.sh.
targets=(ferry_static ferry_shared ferry_cli)
for f in examples/*.c; do [ -f "$f" ] && targets+=("$(basename "$f" .c)"); done
say "build: cmake --build $build_dir -j$jobs --target ${targets[*]}"
[ -n "$cached_type" ] || echo "    (a first build takes a minute or two; warnings and errors are shown)"
start=$(date +%s)
ferry_build "$build_dir" -j"$jobs" --target "${targets[@]}"
echo "    built in $(( $(date +%s) - start )) s: $build_dir/libferry.a, $build_dir/libferry.so, the tool" \
  "$build_dir/ferry, the demo $build_dir/train"

# ---- 3. the main job -----------------------------------------------------------------------
if [ $run_demo -eq 1 ]; then
  if [ ! -x "$build_dir/train" ]; then
    echo "install.sh: $build_dir/train was not built" >&2
    exit 1
  fi
  # The main job's data: Debian's Fashion-MNIST IDX files as TFRecord shards of tf.train.Example
  # (`ferry convert` is idempotent: a second run finds them up to date).
  data_dir="$build_dir/data/fashion-mnist"
  if [ -d /usr/share/datasets/fashion-mnist ] || [ ! -e "$data_dir/MANIFEST" ]; then
    say "data: $build_dir/ferry convert fashion-mnist $data_dir"
    "$build_dir/ferry" convert fashion-mnist "$data_dir"
  fi
  say "main job: $build_dir/train ${train_args[*]:-}"
  "$build_dir/train" "${train_args[@]}"
  if [ ${#train_args[@]} -eq 0 ]; then
    # Recording the trace costs the run about a tenth of its speed: the report page and the
    # trace come from a short run of their own (one epoch of 8192 images).
    say "the report page and the trace of a short run: FERRY_TRACE=$build_dir/trace.json $build_dir/train --quick --report-page $build_dir/report.html"
    FERRY_TRACE="$build_dir/trace.json" "$build_dir/train" --quick --report-page "$build_dir/report.html" > "$build_dir/report.log"
    echo "    report page: $build_dir/report.html (open it in a browser); trace: $build_dir/trace.json (ui.perfetto.dev);"
    echo "    the short run's output: $build_dir/report.log"
  fi
fi

say "done. Next: ./scripts/test.sh runs the tests; $build_dir/train --help and $build_dir/ferry help" \
  "list what the demo and the tool do; README.md says how to install the library"
