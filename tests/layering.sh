#!/bin/sh
# Checks DESIGN.md's layer rule: an include only ever points down, ops/, io/ (and image/) do not
# include each other, and only platform/ calls the OS. Prints every offence and fails if any.
root=${1:-.}
rank() {
  case "$1" in
    platform) echo 0 ;; base) echo 1 ;; core) echo 2 ;; ops|io|image) echo 3 ;; *) echo 9 ;;
  esac
}
bad=0
for f in "$root"/src/*/*.c "$root"/src/*/*.h; do
  [ -f "$f" ] || continue
  layer=$(basename "$(dirname "$f")")
  mine=$(rank "$layer")
  for inc in $(sed -n 's/^#include "\([a-z_]*\)\/[^"]*".*/\1/p' "$f"); do
    theirs=$(rank "$inc")
    if [ "$inc" != "$layer" ] && [ "$theirs" -ge "$mine" ]; then
      echo "layering: $f includes $inc/ (layer $inc is not below $layer)"
      bad=1
    fi
  done
done
for f in "$root"/tools/*.c "$root"/examples/*.c; do
  [ -f "$f" ] || continue
  if grep -n '^#include "\(platform\|base\|core\|ops\|io\|image\)/' "$f"; then
    echo "layering: $f must use only the public header"
    bad=1
  fi
done
# Only platform/ talks to the OS: no file, thread or process call above it.
for f in "$root"/src/base/*.c "$root"/src/core/*.c "$root"/src/ops/*.c "$root"/src/io/*.c "$root"/src/image/*.c; do
  [ -f "$f" ] || continue
  if grep -nE '(^|[^a-zA-Z0-9_.>])(open|pread|pwrite|read|write|close|fstat|stat|fsync|rename|unlink|glob|mkstemp|getpid|pthread_[a-z_]+)\(' "$f" |
     grep -vE '^[0-9]+:\s*(/?\*|//)'; then
    echo "layering: $f calls the OS directly (use platform/)"
    bad=1
  fi
done
[ $bad -eq 0 ] && echo "1 passed, 0 failed"
exit $bad
