#!/bin/sh
# format_check.sh SRC - every C file of the tree is laid out as .clang-format says.
#
# Needs clang-format 14 (other versions lay some constructs out differently); without it the
# check is skipped (exit 77) with a message. Fix a failure with: clang-format-14 -i FILE.
set -u
src=$1
cf=
for c in clang-format-14 clang-format; do
    if command -v "$c" >/dev/null 2>&1 && "$c" --version | grep -q 'version 14\.'; then cf=$c; break; fi
done
if [ -z "$cf" ]; then
    echo "format_check: skipped: clang-format 14 is not installed (Debian: apt-get install clang-format-14)"
    exit 77
fi
cd "$src" || exit 1
bad=0
n=0
for d in src include tests bench tools fuzz examples python; do
    [ -d "$d" ] || continue
    for f in $(find "$d" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) | sort); do
        n=$((n + 1))
        if ! "$cf" --style=file "$f" | cmp -s "$f" -; then
            echo "format_check: $f is not laid out as .clang-format says; the difference:"
            "$cf" --style=file "$f" | diff -u "$f" - | head -20
            bad=$((bad + 1))
        fi
    done
done
[ "$bad" -eq 0 ] || { echo "format_check: $bad of $n files differ (clang-format-14 -i FILE fixes them)"; exit 1; }
echo "format_check: $n files follow .clang-format"
