#!/bin/sh
# The training demo stopped and resumed from its checkpoint (model + ferry iterator state)
# reaches the same weights, bit for bit, as an uninterrupted run: stops mid-epoch, at an epoch
# boundary, and twice in a row.  usage: test_demo_resume.sh path/to/train
set -eu
train=$1
dir=$(mktemp -d /tmp/ferry-demo-resume-XXXXXX)
trap 'rm -rf "$dir"' EXIT
args="--quick --epochs 2 --samples 4096"   # 64 steps per epoch
want=$("$train" $args --checkpoint "$dir/full" | sed -n 's/^final weights checksum //p')
[ -n "$want" ] || { echo "uninterrupted run printed no checksum"; exit 1; }
passed=0
failed=0
for stop in 1 29 64 65 100; do
  rm -f "$dir/ck"
  "$train" $args --checkpoint "$dir/ck" --save-every 7 --stop-after $stop > "$dir/out1"
  grep -q "stopped after $stop steps" "$dir/out1" || { echo "stop at $stop did not stop"; exit 1; }
  got=$("$train" $args --resume "$dir/ck" | sed -n 's/^final weights checksum //p')
  if [ "$got" = "$want" ]; then
    passed=$((passed + 1))
  else
    echo "stop at step $stop: resumed run ends with weights $got, uninterrupted $want"
    failed=$((failed + 1))
  fi
done
# Stopped twice: resume, stop again, resume.
rm -f "$dir/ck"
"$train" $args --checkpoint "$dir/ck" --stop-after 20 > /dev/null
"$train" $args --resume "$dir/ck" --checkpoint "$dir/ck" --stop-after 90 > /dev/null
got=$("$train" $args --resume "$dir/ck" | sed -n 's/^final weights checksum //p')
if [ "$got" = "$want" ]; then passed=$((passed + 1)); else echo "double stop: $got vs $want"; failed=$((failed + 1)); fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
