# demo_data.sh - sourced by the tests that run the training demo (test_demo_resume.sh,
# test_page.sh): finds its Fashion-MNIST shards, or makes them.
#
# demo_data TRAIN FERRY TMPDIR sets $data to the shards' directory: $FERRY_DEMO_DATA when set,
# else data/fashion-mnist beside TRAIN (where scripts/install.sh converts them), else TMPDIR/
# fashion-mnist made with `FERRY convert fashion-mnist` when Debian's dataset-fashion-mnist is
# installed. Returns 0; 77 when there is no data and no way to make it (the SKIP message printed);
# 1 when the conversion failed (its output printed).
has_shards() { ls "$1"/train.tfrecord-* > /dev/null 2>&1 && ls "$1"/test.tfrecord-* > /dev/null 2>&1; }

demo_data() {
  data=${FERRY_DEMO_DATA:-$(dirname "$1")/data/fashion-mnist}
  if has_shards "$data"; then return 0; fi
  demo_src=/usr/share/datasets/fashion-mnist
  if [ -d "$demo_src" ] && [ -x "$2" ] && "$2" help convert > /dev/null 2>&1; then
    data=$3/fashion-mnist
    if ! "$2" convert fashion-mnist "$data" > "$3/convert.out" 2>&1 || ! has_shards "$data"; then
      echo "FAIL: ferry convert fashion-mnist $data:"; cat "$3/convert.out"; return 1
    fi
    return 0
  fi
  echo "SKIP: no Fashion-MNIST shards in $data, and no way to make them here (needs $demo_src, from"
  echo "  Debian's dataset-fashion-mnist, and a ferry tool with 'convert' at $2): ferry convert fashion-mnist $data"
  return 77
}
