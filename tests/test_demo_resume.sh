#!/bin/sh
# The training demo stopped and resumed from its checkpoint (model + ferry iterator state)
# reaches the same weights, bit for bit, as an uninterrupted run: stops mid-epoch, at an epoch
# boundary, twice in a row, and with an error in position (--fail-at) before and after the stop.
# Also: its flags (help, usage errors with exit status 2), the message naming the command that
# makes missing data, and `ferry state show` on its checkpoint when the ferry tool is built
# beside it.
# The demo trains on Fashion-MNIST shards: those in $FERRY_DEMO_DATA when set, else in
# data/fashion-mnist beside the demo (where scripts/install.sh converts them), else this test
# makes them in a temporary directory with `ferry convert fashion-mnist` when Debian's
# dataset-fashion-mnist is installed; without any of them it skips (SKIP:, exit status 77).
# usage: test_demo_resume.sh path/to/train [path/to/ferry]
set -eu
train=$1
ferry=${2:-$(dirname "$train")/ferry}
dir=$(mktemp -d /tmp/ferry-demo-resume-XXXXXX)
trap 'rm -rf "$dir"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
checksum() { sed -n 's/^final weights checksum //p'; }

# Without data the demo names the command that makes it (exit status 1); --help needs no data.
mkdir "$dir/empty"
if "$train" --quick --data "$dir/empty" > /dev/null 2> "$dir/err"; then bad "a run without data succeeded"; else
  if grep -q "ferry convert fashion-mnist $dir/empty" "$dir/err"; then ok; else bad "no data: $(cat "$dir/err")"; fi; fi
if "$train" --help | grep -q -- "--stop-after N"; then ok; else bad "--help does not describe --stop-after"; fi

. "$(dirname "$0")/demo_data.sh"
rc=0
demo_data "$train" "$ferry" "$dir" || rc=$?
if [ $rc -eq 1 ]; then exit 1; fi
if [ $rc -eq 77 ]; then
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ] || exit 1
  exit 77 # ctest's SKIP_RETURN_CODE: skipped, not passed
fi
# Each run below: 2 epochs of the first 4096 training images (64 steps each), 2048 test images.
run() { "$train" --data "$data" "$@"; }
args="--quick --epochs 2 --samples 4096"

want=$(run $args --checkpoint "$dir/full" | checksum)
[ -n "$want" ] || { echo "uninterrupted run printed no checksum"; exit 1; }
for stop in 1 29 64 65 100; do
  rm -f "$dir/ck"
  run $args --checkpoint "$dir/ck" --save-every 7 --stop-after $stop > "$dir/out1"
  grep -q "stopped after $stop steps" "$dir/out1" || { echo "stop at $stop did not stop"; exit 1; }
  got=$(run $args --resume "$dir/ck" | checksum)
  if [ "$got" = "$want" ]; then ok; else bad "stop at step $stop: resumed run ends with weights $got, uninterrupted $want"; fi
done
# Stopped twice: resume, stop again, resume.
rm -f "$dir/ck"
run $args --checkpoint "$dir/ck" --stop-after 20 > /dev/null
run $args --resume "$dir/ck" --checkpoint "$dir/ck" --stop-after 90 > /dev/null
got=$(run $args --resume "$dir/ck" | checksum)
if [ "$got" = "$want" ]; then ok; else bad "double stop: $got vs $want"; fi

# An error in position: record 2500 fails in both epochs (mid-epoch: the shuffle puts it there);
# it is reported and skipped and training goes on; a stop and resume before, between and after
# the two errors ends with the weights of the uninterrupted run.
run $args --fail-at 2500 --checkpoint "$dir/failfull" > "$dir/fail.out"
want_fail=$(checksum < "$dir/fail.out")
n=$(grep -c "record 2500 of the training shards is marked bad (--fail-at); skipped, training goes on" "$dir/fail.out" || true)
if [ "$n" -eq 2 ] && [ -n "$want_fail" ] && [ "$want_fail" != "$want" ]; then ok; else
  bad "--fail-at 2500: expected the error once per epoch and a run that goes on; got $n, weights '$want_fail'"; cat "$dir/fail.out"; fi
# The steps trained before each error, and in each epoch (the positions depend on the seeds).
after() { sed -n "s/^  epoch $1, position [0-9]* (after \([0-9]*\) steps): error.*/\1/p" "$dir/fail.out"; }
steps() { sed -n "s/^  epoch $1: *[0-9.]* s *\([0-9]*\) steps.*/\1/p" "$dir/fail.out"; }
first=$(after 1) second=$(after 2) steps1=$(steps 1) steps2=$(steps 2)
if [ -n "$first" ] && [ -n "$second" ] && [ -n "$steps1" ] && [ -n "$steps2" ]; then
  last=$((steps1 + second + 1))
  [ $last -le $((steps1 + steps2)) ] || last=$((steps1 + steps2))
  for stop in $((first > 1 ? first - 1 : 1)) $((first + 1)) $last; do
    rm -f "$dir/ck"
    run $args --fail-at 2500 --checkpoint "$dir/ck" --stop-after $stop > /dev/null
    got=$(run $args --fail-at 2500 --resume "$dir/ck" | checksum)
    if [ "$got" = "$want_fail" ]; then ok; else bad "--fail-at 2500, stop at $stop: $got vs $want_fail"; fi
  done
  # the failing record is part of the stream the checkpoint continues: a resume must name it too
  if run $args --resume "$dir/ck" > /dev/null 2> "$dir/err"; then bad "a resume without the checkpoint's --fail-at went on"
  elif grep -q "was made with --fail-at 2500, this run has no --fail-at" "$dir/err"; then ok
  else bad "resume without --fail-at: $(cat "$dir/err")"; fi
else
  bad "--fail-at 2500: cannot find the errors' positions in the output"; cat "$dir/fail.out"
fi
# --stop-on-error: exit status 1 at the error, with its message.
if run $args --fail-at 2500 --stop-on-error > /dev/null 2> "$dir/err"; then bad "--stop-on-error did not stop"; else
  if grep -q "record 2500 of the training shards is marked bad" "$dir/err"; then ok; else bad "--stop-on-error: $(cat "$dir/err")"; fi; fi

# Flags: meaningless or contradictory flags exit 2 with one line naming them.
expect_usage() { # message-fragment args...
  frag=$1
  shift
  set +e
  run "$@" > /dev/null 2> "$dir/err"
  rc=$?
  set -e
  if [ $rc -eq 2 ] && [ "$(wc -l < "$dir/err")" -eq 1 ] && grep -q -- "$frag" "$dir/err"; then ok; else
    bad "train $*: exit $rc, '$(cat "$dir/err")' (expected exit 2 and '$frag')"; fi
}
expect_usage "--stop-after needs --checkpoint" --quick --stop-after 100
expect_usage "--save-every needs --checkpoint" --quick --save-every 10
expect_usage "no training record has that position" --quick --fail-at 100000
expect_usage "No such file or directory" --quick --resume "$dir/nonexistent"
expect_usage "does not exist" --quick --checkpoint "$dir/no/such/dir/ck"
expect_usage "the run has only 64 steps" --quick --samples 4096 --checkpoint "$dir/ck" --stop-after 65
expect_usage "unknown option" --quick --bogus
# A checkpoint resumed with other flags is refused with the flags it needs.
rm -f "$dir/ck"
run $args --checkpoint "$dir/ck" --stop-after 10 > /dev/null
if run --quick --resume "$dir/ck" > /dev/null 2> "$dir/err"; then bad "resume with other --samples accepted"; else
  if grep -q "was made with --samples 4096" "$dir/err"; then ok; else bad "resume with other flags: $(cat "$dir/err")"; fi; fi

# `ferry state show` describes the iterator state inside the checkpoint.
if [ -x "$ferry" ]; then
  if "$ferry" state show "$dir/ck" > "$dir/show" 2>&1 && grep -q "position:     10 elements" "$dir/show" &&
     grep -q "seed:         42000, the seed the iterator was made with" "$dir/show"; then ok; else
    bad "ferry state show on the checkpoint: $(cat "$dir/show")"; fi
else
  echo "  (no ferry tool at $ferry: state show not checked)"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
