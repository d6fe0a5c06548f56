#!/bin/sh
# The `ferry` tool speaks one way (tools/cli.h): help on every command and subcommand prints to
# stdout and exits 0; a usage error is one line on stderr and exit status 2; a runtime error is
# one line with one prefix and the operating system's reason, and exit status 1. Also a TFRecord
# round trip (write, count, cat) and, when ../shared/data is there, counts of real TFRecord files.
# usage: test_cli.sh path/to/ferry SOURCE_DIR
set -eu
ferry=$1
src=${2:-.}
dir=$(mktemp -d /tmp/ferry-cli-test-XXXXXX)
trap 'rm -rf "$dir"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }

run() { # runs ferry ARGS; sets rc, and leaves stdout and stderr in $dir/out and $dir/err
  set +e
  "$ferry" "$@" > "$dir/out" 2> "$dir/err" < /dev/null
  rc=$?
  set -e
}

expect_help() { # args...: exit 0, a usage line on stdout, nothing on stderr
  run "$@"
  if [ $rc -eq 0 ] && head -1 "$dir/out" | grep -q '^usage: ferry' && [ ! -s "$dir/err" ]; then ok; else
    bad "ferry $*: exit $rc, stdout '$(head -1 "$dir/out")', stderr '$(cat "$dir/err")' (expected help, exit 0)"; fi
}
for args in "help" "--help" "-h" "help help" "help version" "version --help" "help state" "state --help" \
            "state help" "help state show" "state show --help" "help tfrecord" "tfrecord --help" "tfrecord help" \
            "help tfrecord count" "tfrecord count --help" "tfrecord verify --help" "tfrecord cat -h" \
            "tfrecord write --help" "tfrecord help write"; do
  # shellcheck disable=SC2086
  expect_help $args
done

expect_usage() { # fragment args...: exit 2, one line on stderr naming what was wrong, no stdout
  frag=$1
  shift
  run "$@"
  if [ $rc -eq 2 ] && [ "$(wc -l < "$dir/err")" -eq 1 ] && grep -q -- "$frag" "$dir/err" && [ ! -s "$dir/out" ]; then
    ok
  else
    bad "ferry $*: exit $rc, stderr '$(cat "$dir/err")' (expected exit 2, one line with '$frag')"
  fi
}
expect_usage "missing the command" 
expect_usage "unknown command 'bogus'" bogus
expect_usage "unknown command 'bogus'" help bogus
expect_usage "unexpected argument 'x'" version x
expect_usage "missing the subcommand" state
expect_usage "unknown subcommand 'list'" state list
expect_usage "missing the file" state show
expect_usage "takes one file, got 2" state show a b
expect_usage "missing the subcommand" tfrecord
expect_usage "unknown subcommand 'size'" tfrecord size
expect_usage "unknown subcommand 'size'" help tfrecord size
expect_usage "missing the files to read" tfrecord count
expect_usage "unknown option '--bogus'" tfrecord count --bogus x
expect_usage "unknown option '--raw'" tfrecord verify --raw x
expect_usage "option -c needs a value" tfrecord cat -c
expect_usage "unknown compression 'lz4'" tfrecord count -c lz4 x
expect_usage "missing the output file" tfrecord write
expect_usage "takes one output file, got 2" tfrecord write a b

expect_failure() { # expected-stderr-line args...: exit 1 and exactly that one line on stderr
  want=$1
  shift
  run "$@"
  if [ $rc -eq 1 ] && [ "$(cat "$dir/err")" = "$want" ]; then ok; else
    bad "ferry $*: exit $rc, stderr '$(cat "$dir/err")' (expected exit 1 and '$want')"; fi
}
expect_failure "ferry tfrecord count: $dir/none: No such file or directory" tfrecord count "$dir/none"
expect_failure "ferry tfrecord verify: $dir: Is a directory" tfrecord verify "$dir"
expect_failure "ferry state show: $dir: Is a directory" state show "$dir"
expect_failure "ferry tfrecord write: cannot create '$dir/no/x.tfrecord': No such file or directory" tfrecord write "$dir/no/x.tfrecord"

# A round trip: JSON lines -> records -> JSON lines.
printf '%s\n' '{"features": {"label": {"int64": [3]}, "name": {"bytes": ["ferry"]}}}' \
  '{"features": {"label": {"int64": [4]}}}' > "$dir/in.json"
set +e
"$ferry" tfrecord write "$dir/x.tfrecord" < "$dir/in.json" > "$dir/out" 2> "$dir/err"
rc=$?
set -e
if [ $rc -eq 0 ] && [ "$(cat "$dir/err")" = "ferry tfrecord write: 2 records written to $dir/x.tfrecord" ]; then ok; else
  bad "tfrecord write: exit $rc, '$(cat "$dir/err")'"; fi
head -1 "$dir/in.json" | "$ferry" tfrecord write "$dir/one.tfrecord" 2> "$dir/err"
if [ "$(cat "$dir/err")" = "ferry tfrecord write: 1 record written to $dir/one.tfrecord" ]; then ok; else
  bad "tfrecord write of one record: '$(cat "$dir/err")'"; fi
run tfrecord count "$dir/x.tfrecord"
if [ $rc -eq 0 ] && [ "$(cat "$dir/out")" = "$(printf '%s\t2' "$dir/x.tfrecord")" ]; then ok; else
  bad "tfrecord count: exit $rc, '$(cat "$dir/out")'"; fi
run tfrecord cat "$dir/x.tfrecord"
if [ $rc -eq 0 ] && grep -q '"label": {"int64": \[4\]}' "$dir/out"; then ok; else bad "tfrecord cat: $(cat "$dir/out")"; fi
# A text file given as a TFRecord file: one message, one prefix, and the file's line says so.
run tfrecord count "$src/README.md"
if [ $rc -eq 1 ] && grep -q "^ferry tfrecord count: '.*README.md' is not a TFRecord file" "$dir/err" &&
   ! grep -q "tfrecord: '" "$dir/err"; then ok; else bad "tfrecord count README.md: exit $rc, '$(cat "$dir/err")'"; fi

# Real TFRecord files written by TensorFlow, when they are there.
data="$src/../shared/data/tfrecord"
if [ -d "$data" ]; then
  run tfrecord count "$data/cifar_test_tiny.tfrecord" "$data/squad_v_small.tfrecord" "$data/penguin_eval.tfrecord.gz"
  if [ $rc -eq 0 ] && grep -q "^total	250$" "$dir/out"; then ok; else bad "count of the shared data: $(cat "$dir/out" "$dir/err")"; fi
  run tfrecord verify "$data"/csv_example_gen/*.gz
  if [ $rc -eq 0 ] && [ "$(grep -c '	OK	' "$dir/out")" -eq 12 ]; then ok; else bad "verify csv_example_gen: $(cat "$dir/out" "$dir/err")"; fi
  run state show "$data/penguin_eval.tfrecord.gz"
  if [ $rc -eq 1 ] && grep -q "a GZIP-compressed TFRecord file" "$dir/err"; then ok; else bad "state show on a TFRecord file: $(cat "$dir/err")"; fi
else
  echo "  ($data is absent: the real TFRecord files are not checked)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
