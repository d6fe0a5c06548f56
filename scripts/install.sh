#!/usr/bin/env bash
# install.sh - from a fresh Debian/Ubuntu machine to a running ferry:
#   1. installs the system packages ferry needs, only those that are missing (apt-get);
#   2. configures (Release, first time only) and builds the library, the tool and the examples in
#      build/ (scripts/test.sh builds the tests);
#   3. runs the main job: the training demo build/train (examples/train.c).
# It is idempotent: a second run installs nothing, rebuilds only what changed and runs the demo.
#
# usage: ./scripts/install.sh [--no-run] [--jobs N] [-- TRAIN_ARGS...]
#   --no-run   stop after the build        --jobs N   parallel build jobs (default: nproc)
#   TRAIN_ARGS are passed to build/train (e.g. -- --quick, -- --epochs 3).
# Environment: FERRY_BUILD_DIR (default build), FERRY_BUILD_TYPE (default Release).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

run_demo=1
jobs=$(nproc 2>/dev/null || echo 2)
train_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-run) run_demo=0 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift ;;
    --jobs=*) jobs=${1#--jobs=} ;;
    --) shift; train_args=("$@"); break ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

build_dir=${FERRY_BUILD_DIR:-build}
build_type=${FERRY_BUILD_TYPE:-Release}

say() { printf '\n==> %s\n' "$*"; }

# ---- 1. system packages --------------------------------------------------------------------
# Needed: a C compiler and make (build-essential), cmake, pkg-config, zlib (GZIP/ZLIB TFRecords),
# libjpeg/libpng (image decoding), clang and its runtime libraries (TSan and libFuzzer builds, the
# clang -Werror check in CI).
required=(build-essential cmake pkg-config zlib1g-dev libpng-dev clang)
# Installed when the distribution has them; an alternative is tried when it does not.
optional=(libclang-rt-dev)
jpeg_pkgs=(libjpeg62-turbo-dev libjpeg-turbo8-dev libjpeg-dev)

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
has_candidate() {
  local c
  c=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
  [ -n "$c" ] && [ "$c" != "(none)" ]
}

say "checking system packages"
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "    not a Debian/Ubuntu system: install a C11 compiler, cmake >= 3.20, pkg-config, zlib,"
  echo "    libjpeg and libpng yourself; continuing with the build"
else
  missing=()
  for p in "${required[@]}"; do is_installed "$p" || missing+=("$p"); done
  jpeg_ok=0
  for p in "${jpeg_pkgs[@]}"; do is_installed "$p" && jpeg_ok=1; done
  missing_optional=()
  for p in "${optional[@]}"; do is_installed "$p" || missing_optional+=("$p"); done
  if [ $jpeg_ok -eq 0 ]; then missing_optional+=(libjpeg); fi

  if [ ${#missing[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
    echo "    all present: ${required[*]} ${optional[*]} libjpeg"
  else
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
      else
        echo "install.sh: missing packages (${missing[*]} ${missing_optional[*]}) and not root, no sudo" >&2
        exit 1
      fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    say "apt-get update (missing: ${missing[*]} ${missing_optional[*]})"
    "${sudo[@]}" apt-get update -q
    # Resolve the optional ones against the fresh package lists.
    for p in "${missing_optional[@]}"; do
      if [ "$p" = libjpeg ]; then
        for j in "${jpeg_pkgs[@]}"; do
          if has_candidate "$j"; then missing+=("$j"); break; fi
        done
      elif has_candidate "$p"; then
        missing+=("$p")
      else
        echo "    $p is not available here; skipping it"
      fi
    done
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
cmake --build "$build_dir" -j"$jobs" --target "${targets[@]}" |
  { grep -v -E '^\[ *[0-9]+%\] (Built target|Building|Linking)' || true; }
echo "    built in $(( $(date +%s) - start )) s: $build_dir/libferry.a, $build_dir/libferry.so, the tool" \
  "$build_dir/ferry, the demo $build_dir/train"

# ---- 3. the main job -----------------------------------------------------------------------
if [ $run_demo -eq 1 ]; then
  if [ ! -x "$build_dir/train" ]; then
    echo "install.sh: $build_dir/train was not built" >&2
    exit 1
  fi
  say "main job: $build_dir/train ${train_args[*]:-}"
  "$build_dir/train" "${train_args[@]}"
fi

say "done. Run the tests with ./scripts/test.sh"
