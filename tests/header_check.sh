#!/bin/sh
# Checks that every public function of include/ferry.h has its doc block: the comment that ends on
# the line right above the declaration's first line begins with "<function name>:" and holds the
# tagged lines "Returns:", "Ownership:" and "Threads:". Prints every offence and fails if any.
root=${1:-.}
header="$root/include/ferry.h"
if [ ! -f "$header" ]; then
  echo "header_check: $header not found"
  exit 1
fi
awk -v file="include/ferry.h" '
{ line[NR] = $0 }
END {
  n = 0; bad = 0
  for (i = 1; i <= NR; i++) {
    # Declarations start with FERRY_API; the #define lines of FERRY_API itself start with #.
    if (line[i] !~ /^[ \t]*FERRY_API[ \t]/) continue
    n++
    paren = index(line[i], "(")
    name = ""
    if (paren > 0) {
      head = substr(line[i], 1, paren - 1)
      if (match(head, /[A-Za-z_][A-Za-z0-9_]*[ \t]*$/)) {
        name = substr(head, RSTART, RLENGTH)
        sub(/[ \t]+$/, "", name)
      }
    }
    if (name == "") {
      printf "header_check: %s:%d: cannot find the function name in: %s\n", file, i, line[i]
      bad++
      continue
    }
    # The doc block must end on the line immediately above the declaration.
    end = i - 1
    if (end < 1 || line[end] !~ /\*\/[ \t]*$/) {
      printf "header_check: %s:%d: %s: no comment block ends on the line above the declaration\n", file, i, name
      bad++
      continue
    }
    start = end
    while (start >= 1 && index(line[start], "/*") == 0) start--
    if (start < 1) {
      printf "header_check: %s:%d: %s: the comment block above has no start\n", file, i, name
      bad++
      continue
    }
    # Its first words: the text after "/*", or the first line below a bare "/*".
    first = substr(line[start], index(line[start], "/*") + 2)
    sub(/^[ \t]+/, "", first)
    if (first == "" && start < end) {
      first = line[start + 1]
      sub(/^[ \t]*\*?[ \t]*/, "", first)
    }
    block = ""
    for (k = start; k <= end; k++) block = block "\n" line[k]
    why = ""
    if (index(first, name ":") != 1) why = why ", does not begin with \"" name ":\""
    if (index(block, "Returns:") == 0) why = why ", no \"Returns:\""
    if (index(block, "Ownership:") == 0) why = why ", no \"Ownership:\""
    if (index(block, "Threads:") == 0) why = why ", no \"Threads:\""
    if (why != "") {
      printf "header_check: %s:%d: %s: doc block (lines %d-%d)%s\n", file, i, name, start, end, substr(why, 2)
      bad++
    }
  }
  if (n == 0) {
    printf "header_check: %s: no FERRY_API declarations found\n", file
    exit 1
  }
  if (bad > 0) {
    printf "header_check: %d of %d functions without a complete doc block\n", bad, n
    exit 1
  }
  printf "header_check: %d functions, all documented\n", n
}' "$header"
