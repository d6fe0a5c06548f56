#!/usr/bin/env bash
# test_install.sh - checks that an installed ferry is usable the way README.md says: configures a
# fresh build of the library in a temporary directory, installs it with `cmake --install` into a
# prefix other than the configured one (ferry.pc and the CMake package must be relocatable), then
# builds a small program against it both ways a user would:
#   - pkg-config: against the shared library (with -Wl,-rpath, as README says for a prefix the
#     loader does not search) and the static one;
#   - CMake: find_package(ferry) with ferry::ferry and ferry::ferry_static, also after the
#     installed tree has been moved;
# and runs every program without LD_LIBRARY_PATH, checking what it prints. Also compiles and runs
# the usage example of README.md, runs the installed `ferry` tool, and checks that the install
# step said how programs find libferry.so in this prefix. (A system prefix such as /usr/local
# is served by the ldconfig the install step runs there: see cmake/ferry_ldconfig.cmake.)
#
# usage: test_install.sh SOURCE_DIR [C_COMPILER]
# Prints "1 passed, 0 failed" on success; exits 77 (skipped) when pkg-config is not installed.
set -euo pipefail

src=${1:?usage: test_install.sh SOURCE_DIR [C_COMPILER]}
cc=${2:-${CC:-cc}}
jobs=${FERRY_TEST_JOBS:-2}

if ! command -v pkg-config >/dev/null 2>&1; then
  echo "  skipped: pkg-config is not installed"
  exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "FAIL install: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

step() { echo "-- $*"; }

step "configure (library only) in $tmp/build"
# Configure for one prefix and install into another: the installed ferry.pc must not depend on
# the configure-time prefix. Debug (-O0) because only the packaging is under test here.
env -u CFLAGS -u LDFLAGS cmake -S "$src" -B "$tmp/build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_INSTALL_PREFIX="$tmp/configured-prefix" -DFERRY_BUILD_TESTS=OFF -DFERRY_BUILD_BENCH=OFF \
  -DFERRY_FUZZ=OFF -DFERRY_SANITIZE= >"$tmp/configure.log" 2>&1 ||
  { cat "$tmp/configure.log" >&2; fail "cmake configure failed"; }

step "build ferry_static ferry_shared ferry_cli"
cmake --build "$tmp/build" -j"$jobs" --target ferry_static ferry_shared ferry_cli >"$tmp/build.log" 2>&1 ||
  { tail -50 "$tmp/build.log" >&2; fail "build failed"; }

prefix="$tmp/prefix"
step "cmake --install --prefix $prefix"
cmake --install "$tmp/build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }
grep -q -- "-Wl,-rpath,$prefix/lib" "$tmp/install.log" ||
  fail "the install step did not say how programs find libferry.so in $prefix: $(cat "$tmp/install.log")"
# Every run below is without LD_LIBRARY_PATH: programs find libferry.so as a user's would.
unset LD_LIBRARY_PATH

[ -f "$prefix/include/ferry.h" ] || fail "ferry.h is not installed in $prefix/include"
pc=$(find "$prefix" -name ferry.pc -path '*/pkgconfig/*' | head -1)
[ -n "$pc" ] || fail "ferry.pc is not installed under $prefix"
libdir=$(dirname "$(dirname "$pc")")
[ -f "$libdir/libferry.a" ] || fail "libferry.a is not installed in $libdir"
ls "$libdir"/libferry.so* >/dev/null 2>&1 || fail "libferry.so is not installed in $libdir"
[ -x "$prefix/bin/ferry" ] || fail "the ferry tool is not installed in $prefix/bin"
! grep -q "configured-prefix" "$pc" || fail "ferry.pc names the configure-time prefix: $(cat "$pc")"
cmake_dir="$libdir/cmake/ferry"
for f in ferryConfig.cmake ferryConfigVersion.cmake ferryTargets.cmake; do
  [ -f "$cmake_dir/$f" ] || fail "$f is not installed in $cmake_dir"
done
! grep -rq "configured-prefix" "$cmake_dir" || fail "the CMake package names the configure-time prefix"

export PKG_CONFIG_PATH="$(dirname "$pc")"
cflags=$(pkg-config --cflags ferry) || fail "pkg-config --cflags ferry failed"
libs=$(pkg-config --libs ferry) || fail "pkg-config --libs ferry failed"
static_libs=$(pkg-config --static --libs ferry) || fail "pkg-config --static --libs ferry failed"
version=$(pkg-config --modversion ferry)
echo "   pkg-config: version $version, cflags '$cflags', libs '$libs'"

cat >"$tmp/hello.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <ferry.h>

int main(void) {
    if (strcmp(ferry_version(), FERRY_VERSION_STRING) != 0 || ferry_version_number() != FERRY_VERSION_NUMBER) {
        printf("header %s and library %s differ\n", FERRY_VERSION_STRING, ferry_version());
        return 1;
    }
    ferry_runtime *rt = NULL;
    ferry_dataset *ds = NULL;
    ferry_iterator *it = NULL;
    ferry_element *e = NULL;
    int64_t sum = 0;
    if (ferry_runtime_create(NULL, &rt) || ferry_dataset_range(rt, 0, 10, 1, NULL, &ds) ||
        ferry_iterator_create(ds, NULL, &it)) {
        printf("error: %s\n", ferry_last_error());
        return 1;
    }
    while (ferry_iterator_next(it, &e) == FERRY_OK) {
        sum += *(const int64_t *)ferry_tensor_data(ferry_element_get(e, 0));
        ferry_element_free(e);
    }
    ferry_iterator_free(it);
    ferry_dataset_unref(ds);
    if (ferry_runtime_free(rt) != FERRY_OK) return 1;
    printf("ferry %s sum %lld\n", ferry_version(), (long long)sum);
    return 0;
}
EOF

want_version=$(sed -n 's/^#define FERRY_VERSION_STRING "\(.*\)"$/\1/p' "$prefix/include/ferry.h")
[ "$version" = "$want_version" ] || fail "pkg-config says version $version, ferry.h says $want_version"
want="ferry $want_version sum 45"

step "pkg-config: compile against the shared library (-Wl,-rpath,$libdir)"
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -Werror $cflags "$tmp/hello.c" -o "$tmp/hello_shared" $libs -Wl,-rpath,"$libdir" ||
  fail "compiling against the installed shared library failed"
got=$("$tmp/hello_shared") || fail "hello_shared failed: $got"
[ "$got" = "$want" ] || fail "hello_shared printed '$got', expected '$want'"
if command -v ldd >/dev/null 2>&1; then
  grep -q "libferry.so.0 => $libdir/libferry.so.0" <<<"$(ldd "$tmp/hello_shared")" ||
    fail "hello_shared does not load $libdir/libferry.so.0: $(ldd "$tmp/hello_shared")"
fi
echo "   $got"

step "pkg-config: compile against the static library"
# `pkg-config --static` adds Libs.private; the archive itself is named so that the linker cannot
# pick the shared library instead.
static_libs=${static_libs//-lferry/$libdir/libferry.a}
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -Werror $cflags "$tmp/hello.c" -o "$tmp/hello_static" $static_libs ||
  fail "compiling against the installed static library failed"
if command -v ldd >/dev/null 2>&1 && grep -q libferry <<<"$(ldd "$tmp/hello_static" 2>&1)"; then
  fail "hello_static links libferry dynamically"
fi
got=$("$tmp/hello_static") || fail "hello_static failed: $got"
[ "$got" = "$want" ] || fail "hello_static printed '$got', expected '$want'"
echo "   $got"

step "compile and run the usage example of README.md"
readme="$src/README.md"
if [ -f "$readme" ]; then
  # The first ```c block of README.md, compiled as a user would, against the installed library.
  awk '/^```c$/ { f = 1; next } /^```$/ { if (f) exit } f' "$readme" >"$tmp/readme.c"
  [ -s "$tmp/readme.c" ] || fail "README.md has no \`\`\`c block"
  # shellcheck disable=SC2086
  "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror $cflags "$tmp/readme.c" -o "$tmp/readme" $libs \
    -Wl,-rpath,"$libdir" || fail "the README.md example does not compile"
  got=$("$tmp/readme" 2>&1) || fail "the README.md example failed: $got"
  lines=$(printf '%s\n' "$got" | wc -l)
  first=$(printf '%s\n' "$got" | head -1)
  last=$(printf '%s\n' "$got" | tail -1)
  [ "$lines" -eq 10 ] && [ "$first" = "100 values, first 0" ] && [ "$last" = "100 values, first 810000" ] ||
    fail "the README.md example printed: $got"
  echo "   $lines batches, '$first' ... '$last'"
fi

step "run the installed ferry tool"
got=$("$prefix/bin/ferry" version) || fail "ferry version failed"
[ "$got" = "ferry $want_version" ] || fail "ferry version printed '$got', expected 'ferry $want_version'"
echo "   $got"

# CMake: find_package(ferry), both targets; then the same after moving the installed tree.
mkdir -p "$tmp/app"
cp "$tmp/hello.c" "$tmp/app/hello.c"
cat >"$tmp/app/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(app C)
find_package(ferry $want_version REQUIRED)
add_executable(hello_shared hello.c)
target_link_libraries(hello_shared PRIVATE ferry::ferry)
add_executable(hello_static hello.c)
target_link_libraries(hello_static PRIVATE ferry::ferry_static)
EOF
cmake_app() { # prefix build-dir
  env -u CFLAGS -u LDFLAGS cmake -S "$tmp/app" -B "$2" -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$1" \
    >"$2.log" 2>&1 || { cat "$2.log" >&2; fail "find_package(ferry) with CMAKE_PREFIX_PATH=$1 failed"; }
  cmake --build "$2" >>"$2.log" 2>&1 || { cat "$2.log" >&2; fail "building against ferry::ferry failed"; }
  for exe in hello_shared hello_static; do
    got=$("$2/$exe") || fail "$exe (CMake) failed: $got"
    [ "$got" = "$want" ] || fail "$exe (CMake) printed '$got', expected '$want'"
  done
  if command -v ldd >/dev/null 2>&1; then
    grep -q "libferry.so.0 => $1/" <<<"$(ldd "$2/hello_shared")" || fail "hello_shared (CMake) does not load $1's libferry"
    ! grep -q libferry <<<"$(ldd "$2/hello_static" 2>&1)" || fail "hello_static (CMake) links libferry dynamically"
  fi
}
step "CMake: find_package(ferry), ferry::ferry and ferry::ferry_static"
cmake_app "$prefix" "$tmp/app-build"
echo "   $got"
step "CMake: the same after moving the installed tree"
mv "$prefix" "$tmp/moved"
cmake_app "$tmp/moved" "$tmp/app-build-moved"
echo "   $got"

echo "1 passed, 0 failed"
