#!/bin/sh
# test_py_asan.sh PYTHON SRC CC - the Python tests (tests/python) against an ASan+UBSan build of the
# extension and libferry: the module is compiled with -fsanitize=address,undefined and the
# sanitizer runtimes are preloaded into the (uninstrumented) interpreter. Leak detection is off:
# the interpreter keeps memory to its exit. The sanitizer builds of ctest (FERRY_SANITIZE) cover
# libferry's own tests; this covers the extension and libferry as Python drives them.
# Exit 77 (skipped) without a gcc that has the ASan and UBSan runtimes, or without numpy's headers.
py=$1
src=$2
cc=$3
case "$("$cc" --version 2>/dev/null | head -1)" in
  *gcc*|*GCC*) ;;
  *) cc=gcc ;;
esac
asan=$("$cc" -print-file-name=libasan.so 2>/dev/null)
ubsan=$("$cc" -print-file-name=libubsan.so 2>/dev/null)
[ -f "$asan" ] && [ -f "$ubsan" ] || { echo "SKIP: no gcc ASan/UBSan runtime (libasan.so, libubsan.so)"; exit 77; }
inc=$("$py" -c "import sysconfig, numpy; print(sysconfig.get_paths()['include'], numpy.get_include())") ||
  { echo "SKIP: $py has no numpy"; exit 77; }
suffix=$("$py" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/ferry"
cp "$src"/python/ferry/*.py "$dir/ferry/"
defs="-DFERRY_STATIC -D_POSIX_C_SOURCE=200809L"
libs="-lm -pthread"
for h in zlib.h:z jpeglib.h:jpeg spng.h:spng; do
  [ -f "/usr/include/${h%%:*}" ] || continue
  libs="$libs -l${h#*:}"
  case $h in jpeglib.h:*) defs="$defs -DFERRY_HAVE_JPEG" ;; spng.h:*) defs="$defs -DFERRY_HAVE_SPNG" ;; esac
done
arch=
case "$(uname -m)" in x86_64) arch=-msse4.2 ;; esac
incs=
for i in $inc; do incs="$incs -I$i"; done
# shellcheck disable=SC2086
"$cc" -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -shared -fPIC $arch -fvisibility=hidden $defs -I"$src/include" -I"$src/src" $incs \
  -o "$dir/ferry/_ferry$suffix" "$src/python/src/pyferry.c" "$src"/src/*/*.c $libs > "$dir/cc.log" 2>&1 ||
  { echo "FAIL: compiling the sanitized module:"; tail -30 "$dir/cc.log"; exit 1; }
cd "$src/tests/python" || exit 1
LD_PRELOAD="$asan:$ubsan" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH="$dir" \
  "$py" -m pytest -q -p no:cacheprovider .
