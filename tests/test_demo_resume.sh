#!/bin/sh
# The training demo stopped and resumed from its checkpoint (model + ferry iterator state)
# reaches the same weights, bit for bit, as an uninterrupted run: stops mid-epoch, at an epoch
# boundary, twice in a row, and with an error in position (--fail-at) before and after the stop.
# Also: its flags (help, usage errors with exit status 2), and `ferry state show` on its
# checkpoint when the ferry tool is built beside it.
# usage: test_demo_resume.sh path/to/train [path/to/ferry]
set -eu
train=$1
ferry=${2:-$(dirname "$train")/ferry}
dir=$(mktemp -d /tmp/ferry-demo-resume-XXXXXX)
trap 'rm -rf "$dir"' EXIT
args="--quick --epochs 2 --samples 4096"   # 64 steps per epoch
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
checksum() { sed -n 's/^final weights checksum //p'; }

want=$("$train" $args --checkpoint "$dir/full" | checksum)
[ -n "$want" ] || { echo "uninterrupted run printed no checksum"; exit 1; }
for stop in 1 29 64 65 100; do
  rm -f "$dir/ck"
  "$train" $args --checkpoint "$dir/ck" --save-every 7 --stop-after $stop > "$dir/out1"
  grep -q "stopped after $stop steps" "$dir/out1" || { echo "stop at $stop did not stop"; exit 1; }
  got=$("$train" $args --resume "$dir/ck" | checksum)
  if [ "$got" = "$want" ]; then ok; else bad "stop at step $stop: resumed run ends with weights $got, uninterrupted $want"; fi
done
# Stopped twice: resume, stop again, resume.
rm -f "$dir/ck"
"$train" $args --checkpoint "$dir/ck" --stop-after 20 > /dev/null
"$train" $args --resume "$dir/ck" --checkpoint "$dir/ck" --stop-after 90 > /dev/null
got=$("$train" $args --resume "$dir/ck" | checksum)
if [ "$got" = "$want" ]; then ok; else bad "double stop: $got vs $want"; fi

# An error in position: reported, skipped, training goes on, in both epochs; a stop and resume
# on either side of it ends with the weights of the uninterrupted run.
"$train" $args --fail-at 7 --checkpoint "$dir/failfull" > "$dir/fail.out"
want_fail=$(checksum < "$dir/fail.out")
n=$(grep -c "featurize: sample 7 is marked bad (--fail-at); skipped, training goes on" "$dir/fail.out" || true)
if [ "$n" -eq 2 ] && [ -n "$want_fail" ] && [ "$want_fail" != "$want" ]; then ok; else
  bad "--fail-at 7: expected the error once per epoch and a run that goes on; got $n, weights '$want_fail'"; cat "$dir/fail.out"; fi
for stop in 3 70; do
  rm -f "$dir/ck"
  "$train" $args --fail-at 7 --checkpoint "$dir/ck" --stop-after $stop > /dev/null
  got=$("$train" $args --fail-at 7 --resume "$dir/ck" | checksum)
  if [ "$got" = "$want_fail" ]; then ok; else bad "--fail-at 7, stop at $stop: $got vs $want_fail"; fi
done
# --stop-on-error: exit status 1 at the error, with its message.
if "$train" $args --fail-at 7 --stop-on-error > /dev/null 2> "$dir/err"; then bad "--stop-on-error did not stop"; else
  if grep -q "sample 7 is marked bad" "$dir/err"; then ok; else bad "--stop-on-error: $(cat "$dir/err")"; fi; fi

# Flags: help exits 0; meaningless or contradictory flags exit 2 with one line naming them.
if "$train" --help | grep -q -- "--stop-after N"; then ok; else bad "--help does not describe --stop-after"; fi
expect_usage() { # message-fragment args...
  frag=$1
  shift
  set +e
  "$train" "$@" > /dev/null 2> "$dir/err"
  rc=$?
  set -e
  if [ $rc -eq 2 ] && [ "$(wc -l < "$dir/err")" -eq 1 ] && grep -q -- "$frag" "$dir/err"; then ok; else
    bad "train $*: exit $rc, '$(cat "$dir/err")' (expected exit 2 and '$frag')"; fi
}
expect_usage "--stop-after needs --checkpoint" --quick --stop-after 100
expect_usage "--save-every needs --checkpoint" --quick --save-every 10
expect_usage "no training sample has that id" --quick --fail-at 100000
expect_usage "No such file or directory" --quick --resume "$dir/nonexistent"
expect_usage "does not exist" --quick --checkpoint "$dir/no/such/dir/ck"
expect_usage "the run has only 64 steps" --quick --samples 4096 --checkpoint "$dir/ck" --stop-after 65
expect_usage "unknown option" --quick --bogus
# A checkpoint resumed with other flags is refused with the flags it needs.
rm -f "$dir/ck"
"$train" $args --checkpoint "$dir/ck" --stop-after 10 > /dev/null
if "$train" --quick --resume "$dir/ck" > /dev/null 2> "$dir/err"; then bad "resume with other --samples accepted"; else
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
