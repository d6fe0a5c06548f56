#!/bin/sh
# test_py_examples.sh PYTHON BUILD_PYTHONPATH TRAIN FERRY SRC - the Python examples run:
# examples/python/readme_example.py prints its batches and a verdict; train_fashion_mnist.py --quick
# trains (accuracy above chance by far), and a run stopped at a checkpoint and resumed ends with the
# same weights as the run that was not stopped. Exit 77 (skipped) without torch or without the
# Fashion-MNIST shards (tests/demo_data.sh finds or makes them).
py=$1
export PYTHONPATH=$2
train=$3
ferry=$4
src=$5
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

out=$("$py" "$src/examples/python/readme_example.py") || fail "readme_example.py: $out"
[ "$(echo "$out" | grep -c '^100 values, first')" -eq 10 ] || fail "readme_example.py printed: $out"
last=$(echo "$out" | tail -n 1)
case "$last" in *"values, first"*|"") fail "readme_example.py printed no verdict: $out" ;; esac
echo "ok: readme_example.py"

"$py" -c "import torch" 2>/dev/null || { echo "SKIP: python3-torch is not installed (train_fashion_mnist.py needs it)"; exit 77; }
. "$(dirname "$0")/demo_data.sh"
rc=0
demo_data "$train" "$ferry" "$dir" || rc=$?
[ $rc -eq 0 ] || exit $rc
ex="$src/examples/python/train_fashion_mnist.py"
full=$("$py" "$ex" --data "$data" --quick) || fail "train --quick: $full"
acc=$(echo "$full" | sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p')
[ -n "$acc" ] && [ "${acc%.*}" -ge 60 ] || fail "train --quick accuracy '$acc': $full"
sum=$(echo "$full" | sed -n 's/^weights checksum //p')
stop=$("$py" "$ex" --data "$data" --quick --checkpoint "$dir/ck.pt" --stop-after 57) || fail "stop: $stop"
[ -f "$dir/ck.pt" ] || fail "no checkpoint after --stop-after: $stop"
resumed=$("$py" "$ex" --data "$data" --quick --resume "$dir/ck.pt") || fail "resume: $resumed"
sum2=$(echo "$resumed" | sed -n 's/^weights checksum //p')
[ -n "$sum" ] && [ "$sum" = "$sum2" ] || fail "resumed weights $sum2 differ from the uninterrupted run's $sum"
echo "ok: train_fashion_mnist.py --quick ($acc %), stopped at step 57 and resumed: same weights ($sum)"
