#!/bin/sh
# Writes the API reference (Markdown) from include/ferry.h to stdout: every public function's
# declaration and its doc block, under the header's section banners, in the header's order.
# ferry.h is the authority; docs/api.md is this script's output (the api_doc test checks that it
# is current: regenerate with `sh scripts/api_doc.sh > docs/api.md`).
root=${1:-.}
header="$root/include/ferry.h"
if [ ! -f "$header" ]; then
  echo "api_doc: $header not found" >&2
  exit 1
fi
awk '
{ line[NR] = $0 }
END {
  print "# ferry API reference"
  print ""
  print "Generated from include/ferry.h by scripts/api_doc.sh; the header is the authority. The"
  print "conventions (status codes, ownership words, options structs, threads) are in the header'"'"'s"
  print "opening comment. Each entry: the declaration, what it does, `Returns:` (each error code and"
  print "when), `Ownership:` and `Threads:`."
  for (i = 1; i <= NR; i++) {
    if (line[i] ~ /^\/\* ==== section: .* ==== \*\/$/) {
      s = line[i]
      sub(/^\/\* ==== section: /, "", s)
      sub(/ ==== \*\/$/, "", s)
      print ""
      print "## " s
      continue
    }
    if (line[i] !~ /^[ \t]*FERRY_API[ \t]/) continue
    # the declaration, to its semicolon
    decl = line[i]
    j = i
    while (index(line[j], ";") == 0 && j < NR) { j++; decl = decl "\n" line[j] }
    paren = index(line[i], "(")
    head = substr(line[i], 1, paren - 1)
    match(head, /[A-Za-z_][A-Za-z0-9_]*[ \t]*$/)
    name = substr(head, RSTART, RLENGTH)
    sub(/[ \t]+$/, "", name)
    # its block: the comment ending right above
    end = i - 1
    start = end
    while (start >= 1 && index(line[start], "/*") == 0) start--
    print ""
    print "### " name
    print ""
    print "```c"
    sub(/^[ \t]*FERRY_API[ \t]+/, "", decl)
    print decl
    print "```"
    print ""
    for (k = start; k <= end; k++) {
      t = line[k]
      if (k == start) sub(/^[ \t]*\/\*[ \t]?/, "", t)
      else sub(/^[ \t]*\*[ \t]?/, "", t)
      if (k == end) sub(/[ \t]*\*\/[ \t]*$/, "", t)
      # the name and its colon open the block: shown as the heading already
      if (k == start) { sub("^" name ":[ \t]*", "", t) }
      if (t ~ /^(Returns|Ownership|Threads):/) { split(t, kv, ":"); rest = substr(t, length(kv[1]) + 2); t = "- **" kv[1] ":**" rest }
      else if (t ~ /^  [^ ]/ && prev_tag) { sub(/^  /, "  ", t) }
      prev_tag = (t ~ /^- \*\*/) || (prev_tag && t ~ /^  /)
      if (t != "" || k != end) print t
    }
    i = j
  }
}' "$header"
