#!/bin/sh
# `ferry convert`: IDX files (MNIST's format) to TFRecord shards of tf.train.Example and to image
# folders. Small IDX files written here (plain and gzipped) check the records (count, contiguous
# shards, the Example's JSON, the PNG's pixels when python3 is there), the folder layout and class
# names, each bad input (exit 1, one line naming the file) with no output left behind, the usage
# errors (exit 2) and the help. Then `convert fashion-mnist` on files laid out as the package
# dataset-fashion-mnist lays them out, and on the package itself when it is installed: 60000 and
# 10000 records, and a second run that says "up to date".
# usage: test_convert.sh path/to/ferry
set -eu
ferry=$1
dir=$(mktemp -d /tmp/ferry-convert-test-XXXXXX)
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

# ---- help and usage errors -------------------------------------------------------------------
expect_help() { # args...: exit 0, a usage line on stdout, nothing on stderr
  run "$@"
  if [ $rc -eq 0 ] && head -1 "$dir/out" | grep -q '^usage: ferry convert' && [ ! -s "$dir/err" ]; then ok; else
    bad "ferry $*: exit $rc, stdout '$(head -1 "$dir/out")', stderr '$(cat "$dir/err")' (expected help, exit 0)"; fi
}
for args in "help convert" "convert --help" "convert -h" "convert help" "help convert idx" "convert idx --help" \
            "convert help idx" "convert idx a b --tfrecord p -h" "help convert fashion-mnist" \
            "convert fashion-mnist --help"; do
  # shellcheck disable=SC2086
  expect_help $args
done
run help
if grep -q '^  convert idx|fashion-mnist' "$dir/out"; then ok; else bad "'ferry help' does not list convert"; fi

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
expect_usage "missing the subcommand" convert
expect_usage "unknown subcommand 'png'" convert png
expect_usage "unknown subcommand 'png'" help convert png
expect_usage "missing the IDX files IMAGES and LABELS" convert idx
expect_usage "missing the IDX file of the labels" convert idx a
expect_usage "nothing to write" convert idx a b
expect_usage "unexpected argument 'c'" convert idx a b c --tfrecord p
expect_usage "unknown option '--bogus'" convert idx a b --bogus
expect_usage "option --tfrecord needs a value" convert idx a b --tfrecord
expect_usage "shards needs a whole number from 1 to 99999, got '0'" convert idx a b --tfrecord p --shards 0
expect_usage "shards needs a whole number from 1 to 99999, got 'x'" convert idx a b --tfrecord=p --shards=x
expect_usage "shards splits the --tfrecord output" convert idx a b --folder d --shards 2
expect_usage "class-names names the folders of --folder" convert idx a b --tfrecord p --class-names a,b
expect_usage "the name of label 1 is empty" convert idx a b --folder d --class-names a,,c
expect_usage "'a/b' (label 1) cannot name a folder" convert idx a b --folder d --class-names x,a/b
expect_usage "'a' names both label 0 and label 2" convert idx a b --folder d --class-names a,b,a
expect_usage "missing the output directory" convert fashion-mnist
expect_usage "takes one output directory" convert fashion-mnist a b
expect_usage "unknown option '--folder'" convert fashion-mnist a --folder b
expect_usage "shards needs a whole number" convert fashion-mnist a --shards -1
expect_usage "option --source needs a value" convert fashion-mnist a --source

# ---- small IDX files -------------------------------------------------------------------------
# a: 3 images of 2 rows x 3 columns, labels 1 0 1. b: 5 images of 2 x 2, labels 0 12 3 12 7.
printf '\000\000\010\003\000\000\000\003\000\000\000\002\000\000\000\003' > "$dir/a-images"
printf '\000\001\002\003\004\005\012\013\014\015\016\017\377\376\375\374\373\372' >> "$dir/a-images"
printf '\000\000\010\001\000\000\000\003\001\000\001' > "$dir/a-labels"
printf '\000\000\010\003\000\000\000\005\000\000\000\002\000\000\000\002' > "$dir/b-images"
printf '\001\002\003\004\021\022\023\024\041\042\043\044\061\062\063\064\101\102\103\104' >> "$dir/b-images"
printf '\000\000\010\001\000\000\000\005\000\014\003\014\007' > "$dir/b-labels"
gzip -c "$dir/a-images" > "$dir/a-images.gz"
gzip -c "$dir/a-labels" > "$dir/a-labels.gz"

run convert idx "$dir/a-images" "$dir/a-labels" --tfrecord "$dir/t/a"
size=$(wc -c < "$dir/t/a-00000-of-00001" 2>/dev/null || echo none)
if [ $rc -eq 0 ] && [ "$(cat "$dir/out")" = "wrote 3 records in 1 shard: $dir/t/a-00000-of-00001 ($size bytes)" ] &&
   [ ! -s "$dir/err" ]; then ok; else bad "convert idx a: exit $rc, '$(cat "$dir/out" "$dir/err")'"; fi
run tfrecord count "$dir/t/a-00000-of-00001"
if [ $rc -eq 0 ] && [ "$(cut -f2 "$dir/out")" = 3 ]; then ok; else bad "count of a: '$(cat "$dir/out" "$dir/err")'"; fi
# The first record, decoded by the library: the label, and an image that is a PNG (base64 of
# the PNG signature 89 50 4e 47 0d 0a 1a 0a begins "iVBORw0KGgo").
run tfrecord cat "$dir/t/a-00000-of-00001"
head -1 "$dir/out" > "$dir/first.json"
if [ $rc -eq 0 ] && grep -q '^{"features": {"image": {"bytes": \[{"base64": "iVBORw0KGgo[^"]*"}\]}, "label": {"int64": \[1\]}}}$' \
   "$dir/first.json" && sed -n 2p "$dir/out" | grep -q '"label": {"int64": \[0\]}'; then ok; else
  bad "cat of a: '$(cat "$dir/out" "$dir/err")'"; fi
# The library's own serializer writes the same bytes from that JSON.
"$ferry" tfrecord write "$dir/rt.tfrecord" < "$dir/first.json" 2> /dev/null
n=$(wc -c < "$dir/rt.tfrecord")
if head -c "$n" "$dir/t/a-00000-of-00001" | cmp -s - "$dir/rt.tfrecord"; then ok; else
  bad "the first record differs from ferry_example_from_json's bytes of its JSON"; fi
# Gzipped inputs give the same records.
run convert idx "$dir/a-images.gz" "$dir/a-labels.gz" --tfrecord "$dir/t/agz"
if [ $rc -eq 0 ] && cmp -s "$dir/t/a-00000-of-00001" "$dir/t/agz-00000-of-00001"; then ok; else
  bad "convert of the gzipped a: exit $rc, '$(cat "$dir/err")', or other records than the plain files"; fi
if [ -z "$(find "$dir/t" -name '*.tmp')" ]; then ok; else bad ".tmp files left: $(find "$dir/t" -name '*.tmp')"; fi

# The PNG's pixels are the image's, when python3 can decode it (zlib and PNG's five filters).
if command -v python3 > /dev/null 2>&1; then
  cat > "$dir/png.py" << 'EOF'
import base64, json, struct, sys, zlib
png = base64.b64decode(json.loads(open(sys.argv[1]).read())["features"]["image"]["bytes"][0]["base64"])
assert png[:8] == b"\x89PNG\r\n\x1a\n"
pos, idat = 8, b""
while pos < len(png):
    n, kind = struct.unpack(">I", png[pos:pos + 4])[0], png[pos + 4:pos + 8]
    body = png[pos + 8:pos + 8 + n]
    assert zlib.crc32(kind + body) == struct.unpack(">I", png[pos + 8 + n:pos + 12 + n])[0]
    if kind == b"IHDR":
        w, h, depth, color = struct.unpack(">IIBB", body[:10])
    if kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, prev, pixels = zlib.decompress(idat), bytes(w), b""
for y in range(h):
    f, line = raw[y * (w + 1)], bytearray(raw[y * (w + 1) + 1:(y + 1) * (w + 1)])
    for x in range(w):
        a, b, c = line[x - 1] if x else 0, prev[x], prev[x - 1] if x else 0
        p = a + b - c
        pred = [0, a, b, (a + b) // 2, a if abs(p - a) <= min(abs(p - b), abs(p - c)) else b if abs(p - b) <= abs(p - c) else c][f]
        line[x] = (line[x] + pred) & 255
    prev = bytes(line)
    pixels += prev
idx = open(sys.argv[2], "rb").read()
print(w, h, depth, color, pixels == idx[16:16 + w * h])
EOF
  if [ "$(python3 "$dir/png.py" "$dir/first.json" "$dir/a-images")" = "3 2 8 0 True" ]; then ok; else
    bad "the first PNG: $(python3 "$dir/png.py" "$dir/first.json" "$dir/a-images" 2>&1) (expected 3 x 2, 8-bit gray, the same pixels)"; fi
else
  echo "  (no python3: the PNG's pixels are not checked)"
fi

# Contiguous shards: 5 records in 2 shards are records 0-1 and 2-4; the second begins with label 3.
run convert idx "$dir/b-images" "$dir/b-labels" --tfrecord "$dir/t/b" --shards 2
if [ $rc -eq 0 ] && grep -q "^wrote 5 records in 2 shards: $dir/t/b-00000-of-00002 $dir/t/b-00001-of-00002 (" "$dir/out"
then ok; else bad "convert idx b --shards 2: exit $rc, '$(cat "$dir/out" "$dir/err")'"; fi
run tfrecord count "$dir/t/b-00000-of-00002" "$dir/t/b-00001-of-00002"
if [ "$(cut -f2 "$dir/out" | tr '\n' ' ')" = "2 3 5 " ]; then ok; else bad "count of b's shards: '$(cat "$dir/out")'"; fi
run tfrecord cat "$dir/t/b-00001-of-00002"
if head -1 "$dir/out" | grep -q '"label": {"int64": \[3\]}'; then ok; else bad "b's second shard: $(head -1 "$dir/out")"; fi

# Folders: labels zero-padded to the width of the largest (12), files named by record index.
run convert idx "$dir/b-images" "$dir/b-labels" --folder "$dir/f/b"
list=$(cd "$dir/f/b" && find . -type f | sort | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$list" = "./00/00000.png ./03/00002.png ./07/00004.png ./12/00001.png ./12/00003.png " ] &&
   grep -q "^wrote 5 images in 4 class folders: $dir/f/b/00 ... $dir/f/b/12 (" "$dir/out"; then ok; else
  bad "folder of b: exit $rc, files '$list', '$(cat "$dir/out" "$dir/err")'"; fi
if [ "$(head -c 8 "$dir/f/b/12/00003.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then ok; else
  bad "$dir/f/b/12/00003.png is not a PNG"; fi
# Class names, and both outputs at once.
run convert idx "$dir/a-images.gz" "$dir/a-labels" --folder "$dir/f/a" --class-names shirt,boot --tfrecord "$dir/t/ab"
list=$(cd "$dir/f/a" && find . -type f | sort | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$list" = "./boot/00000.png ./boot/00002.png ./shirt/00001.png " ] &&
   [ "$(wc -l < "$dir/out")" -eq 2 ] && cmp -s "$dir/t/a-00000-of-00001" "$dir/t/ab-00000-of-00001"; then ok; else
  bad "folder of a with class names: exit $rc, files '$list', '$(cat "$dir/out" "$dir/err")'"; fi

# ---- bad input: exit 1, one line naming the file, and no output ------------------------------
expect_failure() { # fragment args...: exit 1, one line on stderr with the fragment, nothing written
  frag=$1
  shift
  rm -rf "$dir/x"
  run "$@"
  if [ $rc -eq 1 ] && [ "$(wc -l < "$dir/err")" -eq 1 ] && grep -q -- "$frag" "$dir/err" && [ ! -e "$dir/x" ]; then
    ok
  else
    bad "ferry $*: exit $rc, stderr '$(cat "$dir/err")', output $(ls "$dir/x" 2>&1) (expected exit 1, one line with '$frag')"
  fi
}
expect_failure "$dir/a-labels: byte 0: magic 0x00000801 is an IDX file of labels, expected images (magic 0x00000803)" \
  convert idx "$dir/a-labels" "$dir/a-images" --tfrecord "$dir/x/p"
expect_failure "$dir/first.json: byte 0: bad magic 0x7b226665: not an IDX file of images" \
  convert idx "$dir/first.json" "$dir/a-labels" --folder "$dir/x"
expect_failure "count mismatch: $dir/a-images: byte 4: 3 images, but $dir/b-labels: byte 4: 5 labels" \
  convert idx "$dir/a-images" "$dir/b-labels" --tfrecord "$dir/x/p"
head -c 33 "$dir/a-images" > "$dir/cut-images"
expect_failure "$dir/cut-images: truncated at byte 33: the header declares 3 images, which end at byte 34 (image 2 is incomplete)" \
  convert idx "$dir/cut-images" "$dir/a-labels" --tfrecord "$dir/x/p" --folder "$dir/x/f"
head -c 10 "$dir/a-labels" > "$dir/cut-labels"
expect_failure "$dir/cut-labels: truncated at byte 10: the header declares 3 labels, which end at byte 11 (label 2 is missing)" \
  convert idx "$dir/a-images" "$dir/cut-labels" --tfrecord "$dir/x/p"
head -c 12 "$dir/a-images" > "$dir/head-images"
expect_failure "$dir/head-images: truncated at byte 12: the IDX header of images is 16 bytes" \
  convert idx "$dir/head-images" "$dir/a-labels" --tfrecord "$dir/x/p"
head -c 30 "$dir/a-images.gz" > "$dir/cut-images.gz"
expect_failure "$dir/cut-images.gz: truncated at byte [0-9]* (uncompressed; the gzip stream ends early)" convert idx "$dir/cut-images.gz" "$dir/a-labels" --tfrecord "$dir/x/p"
cat "$dir/a-labels" "$dir/a-labels" > "$dir/long-labels"
expect_failure "$dir/long-labels: byte 11: data after the 3 labels that the header declares" \
  convert idx "$dir/a-images" "$dir/long-labels" --tfrecord "$dir/x/p"
printf '\000\000\010\003\000\000\000\001\000\000\000\000\000\000\000\003' > "$dir/flat-images"
expect_failure "$dir/flat-images: byte 8: images of 0 x 3 pixels" convert idx "$dir/flat-images" "$dir/a-labels" --folder "$dir/x"
expect_failure "$dir/none: No such file or directory" convert idx "$dir/none" "$dir/a-labels" --folder "$dir/x"
expect_failure "$dir/b-labels: byte 9: label 12 (record 1) has no class name: --class-names names labels 0 to 2" \
  convert idx "$dir/b-images" "$dir/b-labels" --folder "$dir/x" --class-names a,b,c
if [ -z "$(find "$dir" -name '*.tmp')" ]; then ok; else bad ".tmp files left: $(find "$dir" -name '*.tmp')"; fi

# ---- fashion-mnist ---------------------------------------------------------------------------
expect_failure "$dir/x/train-images-idx3-ubyte.gz: No such file or directory; the Fashion-MNIST files come with Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)" \
  convert fashion-mnist "$dir/y" --source "$dir/x"
if [ ! -e "$dir/y" ]; then ok; else bad "convert fashion-mnist made $dir/y without its sources"; fi
# The package's layout with the small files (gzipped and not): the MANIFEST, a second run that
# writes nothing, a missing shard that is written again, another --shards that removes the old ones.
mkdir "$dir/src"
cp "$dir/a-images.gz" "$dir/src/train-images-idx3-ubyte.gz"
cp "$dir/a-labels.gz" "$dir/src/train-labels-idx1-ubyte.gz"
cp "$dir/b-images" "$dir/src/t10k-images-idx3-ubyte"
cp "$dir/b-labels" "$dir/src/t10k-labels-idx1-ubyte"
run convert fashion-mnist "$dir/fm" --source "$dir/src" --shards 2
if [ $rc -eq 0 ] && [ "$(wc -l < "$dir/out")" -eq 3 ] && [ "$(tail -1 "$dir/out")" = "wrote $dir/fm/MANIFEST" ] &&
   grep -q "^file	train.tfrecord-00001-of-00002	2	" "$dir/fm/MANIFEST" &&
   grep -q "^file	test.tfrecord-00000-of-00001	5	" "$dir/fm/MANIFEST"; then ok; else
  bad "convert fashion-mnist of the small files: exit $rc, '$(cat "$dir/out" "$dir/err")'"; fi
run convert fashion-mnist "$dir/fm" --source "$dir/src" --shards 2
if [ $rc -eq 0 ] && grep -q "up to date" "$dir/out"; then ok; else bad "second run: exit $rc, '$(cat "$dir/out" "$dir/err")'"; fi
rm "$dir/fm/train.tfrecord-00000-of-00002"
run convert fashion-mnist "$dir/fm" --source "$dir/src" --shards 2
if [ $rc -eq 0 ] && grep -q "^wrote 3 records in 2 shards" "$dir/out" && [ -s "$dir/fm/train.tfrecord-00000-of-00002" ]
then ok; else bad "run after a shard was removed: exit $rc, '$(cat "$dir/out" "$dir/err")'"; fi
run convert fashion-mnist "$dir/fm" --source "$dir/src"
list=$(cd "$dir/fm" && find . -type f | sort | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$list" = "./MANIFEST ./test.tfrecord-00000-of-00001 ./train.tfrecord-00000-of-00004 ./train.tfrecord-00001-of-00004 ./train.tfrecord-00002-of-00004 ./train.tfrecord-00003-of-00004 " ]
then ok; else bad "run with 4 shards after 2: exit $rc, files '$list', '$(cat "$dir/err")'"; fi
# A run cut short before its MANIFEST (here: the MANIFEST removed), then one with another
# --shards: the shards of the earlier run go too, so that a glob finds this run's alone.
rm "$dir/fm/MANIFEST"
: > "$dir/fm/train.tfrecord-00000-of-00002.tmp"
run convert fashion-mnist "$dir/fm" --source "$dir/src" --shards 2
list=$(cd "$dir/fm" && find . -type f | sort | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$list" = "./MANIFEST ./test.tfrecord-00000-of-00001 ./train.tfrecord-00000-of-00002 ./train.tfrecord-00001-of-00002 " ]
then ok; else bad "run with 2 shards after 4 without a MANIFEST: exit $rc, files '$list', '$(cat "$dir/err")'"; fi

# The package itself, when it is installed.
fmnist=/usr/share/datasets/fashion-mnist
if [ -d "$fmnist" ]; then
  start=$(date +%s)
  run convert fashion-mnist "$dir/real"
  took=$(($(date +%s) - start))
  if [ $rc -eq 0 ]; then ok; else bad "convert fashion-mnist: exit $rc, '$(cat "$dir/err")'"; fi
  run tfrecord count "$dir/real"/train.tfrecord-0000?-of-00004
  if [ $rc -eq 0 ] && grep -q "^total	60000$" "$dir/out" && [ "$(grep -c '	15000$' "$dir/out")" -eq 4 ]; then ok; else
    bad "the training shards: $(cat "$dir/out" "$dir/err")"; fi
  run tfrecord count "$dir/real/test.tfrecord-00000-of-00001"
  if [ $rc -eq 0 ] && [ "$(cut -f2 "$dir/out")" = 10000 ]; then ok; else bad "the test shard: $(cat "$dir/out" "$dir/err")"; fi
  run convert fashion-mnist "$dir/real"
  if [ $rc -eq 0 ] && grep -q "up to date" "$dir/out"; then ok; else
    bad "second convert fashion-mnist: exit $rc, '$(cat "$dir/out" "$dir/err")'"; fi
  echo "  (fashion-mnist converted in $took s)"
else
  echo "  ($fmnist is absent (apt-get install dataset-fashion-mnist): the real data is not converted)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
