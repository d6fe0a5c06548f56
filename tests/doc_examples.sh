#!/bin/sh
# doc_examples.sh SRC CC - the C in README.md and docs/*.md against include/ferry.h.
#
# Every ```c block that has a main() is compiled with -Wall -Werror (a call that does not match a
# declaration, or of a function the header lacks, is an error);
# every other block (a fragment) must name only ferry_* / FERRY_* identifiers that the header
# declares. docs/api.md is the header itself and is left out.
set -eu
src=$1
cc=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat "$src/include/ferry.h" > "$tmp/header"
n=0
fail=0
for md in "$src/README.md" "$src"/docs/*.md; do
    case $md in */docs/api.md) continue ;; esac
    awk -v dir="$tmp" -v base="$(basename "$md" .md)" '
        /^```c[ \t]*$/ { k++; f = sprintf("%s/%s.%d.c", dir, base, k); inb = 1; next }
        /^```/ && inb { inb = 0; close(f); next }
        inb { print > f }' "$md"
done
for f in "$tmp"/*.c; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    name=$(basename "$f")
    if grep -q 'int main' "$f"; then
        if ! "$cc" -std=c11 -Wall -Wextra -Werror -Werror=implicit-function-declaration -I"$src/include" -c "$f" -o "$tmp/a.o" \
            > "$tmp/log" 2>&1; then
            echo "doc_examples: $name does not compile against include/ferry.h:"
            cat "$tmp/log"
            fail=1
        fi
    else
        for id in $(grep -o '\b\(ferry\|FERRY\)_[A-Za-z0-9_]*' "$f" | sort -u); do
            if ! grep -q "\\b$id\\b" "$tmp/header"; then
                echo "doc_examples: $name names $id, which include/ferry.h does not declare"
                fail=1
            fi
        done
    fi
done
[ "$n" -gt 0 ] || { echo "doc_examples: no C blocks found"; exit 1; }
[ "$fail" -eq 0 ] || exit 1
echo "doc_examples: $n blocks checked"
