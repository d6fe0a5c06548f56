#!/bin/sh
# docs/api.md must be what scripts/api_doc.sh makes from include/ferry.h (regenerate it with
# `sh scripts/api_doc.sh > docs/api.md` after changing the header).
root=${1:-.}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sh "$root/scripts/api_doc.sh" "$root" > "$tmp" || exit 1
if ! cmp -s "$tmp" "$root/docs/api.md"; then
  echo "api_doc_check: docs/api.md is not current; run: sh scripts/api_doc.sh > docs/api.md"
  diff "$root/docs/api.md" "$tmp" | head -20
  exit 1
fi
echo "api_doc_check: docs/api.md is current"
