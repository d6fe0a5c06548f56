#!/bin/sh
# The report page in a real browser: the training demo writes one (--report-page), `ferry report
# page` writes one from a report and a trace file, and headless chromium loads each (no network:
# the page is self-contained) and renders the stage names, the verdict, the numbers and the
# timeline, checked in the DOM after its script ran; a screenshot of the demo's page is kept as
# test output (report-page.png in OUTDIR). Exit status 77 (skipped) without chromium, and
# without the demo's Fashion-MNIST shards: those in $FERRY_DEMO_DATA when set, else in
# data/fashion-mnist beside the demo, else made here with `ferry convert fashion-mnist` when
# Debian's dataset-fashion-mnist is installed.
# usage: test_page.sh path/to/train path/to/ferry OUTDIR
set -eu
train=$1
ferry=$2
out=$3
browser=""
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" > /dev/null 2>&1; then browser=$b; break; fi
done
if [ -z "$browser" ]; then
  echo "SKIP: no chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)"
  exit 77
fi
dir=$(mktemp -d /tmp/ferry-page-XXXXXX)
trap 'rm -rf "$dir"' EXIT
. "$(dirname "$0")/demo_data.sh"
rc=0
demo_data "$train" "$ferry" "$dir" || rc=$?
[ $rc -eq 0 ] || exit $rc
mkdir -p "$out"
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
# Chromium as root needs --no-sandbox; its profile goes to the temporary directory.
render() { # page.html -> DOM after the page's script ran, on stdout
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$dir/profile" \
    --virtual-time-budget=5000 --dump-dom "file://$1" 2> "$dir/browser.err"
}
count() { grep -o "$1" "$2" | wc -l | tr -d ' '; }

# 1. The demo's page: the parallel run's stages and verdict, both runs' timeline (two epochs: a
# report of each, the last one's on the page).
"$train" --data "$data" --quick --epochs 2 --report-page "$dir/demo.html" > "$dir/demo.out"
grep -q "report page: $dir/demo.html" "$dir/demo.out" && ok || bad "the demo did not say it wrote the page"
# nothing fetched: no external script, style, image or request (the SVG namespace is a name)
grep -Eq '<script src=|<link |src="http|href="http|url\(|fetch\(|XMLHttpRequest|import\(' "$dir/demo.html" &&
  bad "the page refers to something outside it" || ok
render "$dir/demo.html" > "$dir/demo.dom" || { cat "$dir/browser.err"; bad "chromium failed on the demo's page"; }
for s in image_augment+batch parse_example shuffle tfrecord prefetch consumer; do
  grep -q "<b>$s</b>" "$dir/demo.dom" && ok || bad "stage '$s' not rendered"
done
grep -q 'class="stage limit"' "$dir/demo.dom" && ok || bad "no stage marked as the limit"
grep -q 'id="verdict" class="[a-z_]*">Verdict ([a-z_]*): ' "$dir/demo.dom" && ok || bad "the verdict was not rendered"
grep -q 'elements/s</td><td class="value">[0-9]' "$dir/demo.dom" && ok || bad "the rate was not rendered"
n=$(count 'class="span"' "$dir/demo.dom")
[ "$n" -gt 1000 ] && ok || bad "the timeline has $n spans, want > 1000"
grep -q '>train step: ' "$dir/demo.dom" && ok || bad "no training step in the timeline"
grep -q 'class="thread">ferry worker ' "$dir/demo.dom" && ok || bad "no ferry worker row in the timeline"
grep -q 'class="thread">consumer ' "$dir/demo.dom" && ok || bad "no consumer row in the timeline"
grep -q 'spans on [0-9]* threads over' "$dir/demo.dom" && ok || bad "no timeline summary"
grep -q '<ol id="tuning"><li' "$dir/demo.dom" && ok || bad "no AUTOTUNE decisions listed"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$dir/profile" \
  --virtual-time-budget=5000 --window-size=1300,1100 --screenshot="$out/report-page.png" "file://$dir/demo.html" \
  2> "$dir/browser.err" || true
if [ -s "$out/report-page.png" ] && [ "$(head -c 8 "$out/report-page.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; then
  ok; echo "screenshot: $out/report-page.png ($(wc -c < "$out/report-page.png") bytes)"
else
  bad "no PNG screenshot"; cat "$dir/browser.err"
fi

# 2. `ferry report page` from files; "</script>" inside a name stays data.
cat > "$dir/report.json" <<'JSON'
{"limit":"stage_wait","stage":1,"busiest_inline":-1,"stage_name":"interleave","verdict":"stage 1 'interleave' limits throughput: it waits </script><b>x</b> <!--<script>","elements":1000,"seconds":2.5,"elements_per_s":400,"headspace_per_s":420,"bound_per_s":1600,"threads_suggested":8,"cpu_budget":2,"consumer":{"wait_share":0.75,"wait_p50_ns":2000000,"wait_p99_ns":9000000},"stages":[{"node":0,"input":1,"parent":-1,"name":"prefetch","elements_out":1000,"bytes_out":8000,"errors_out":0,"errors_dropped":0,"work_ns":0,"assemble_ns":0,"lock_wait_ns":0,"wait_input_ns":0,"wait_consumer_ns":0,"thread_ns":0,"cpu_ns":0,"cpu_wait_ns":0,"buffered_elements":0,"buffered_bytes":0,"buffer_capacity":0,"parallelism":0},{"node":1,"input":2,"parent":0,"name":"interleave","elements_out":1000,"bytes_out":8000,"errors_out":0,"errors_dropped":0,"work_ns":2400000000,"assemble_ns":0,"lock_wait_ns":0,"wait_input_ns":1800000000,"wait_consumer_ns":0,"thread_ns":4800000000,"cpu_ns":96000000,"cpu_wait_ns":0,"buffered_elements":3,"buffered_bytes":24,"buffer_capacity":16,"parallelism":2},{"node":2,"input":-1,"parent":1,"name":"list_files","elements_out":4,"bytes_out":64,"errors_out":0,"errors_dropped":0,"work_ns":100000,"assemble_ns":0,"lock_wait_ns":0,"wait_input_ns":0,"wait_consumer_ns":0,"thread_ns":0,"cpu_ns":0,"cpu_wait_ns":0,"buffered_elements":0,"buffered_bytes":0,"buffer_capacity":0,"parallelism":0}]}
JSON
cat > "$dir/trace.json" <<'JSON'
{"displayTimeUnit":"ms","otherData":{"producer":"ferry","dropped":0},"traceEvents":[
{"name":"interleave run","cat":"run","ph":"X","ts":0,"dur":2000,"pid":1,"tid":2},
{"name":"interleave work","cat":"work","ph":"X","ts":10,"dur":900,"pid":1,"tid":2},
{"name":"next","cat":"next","ph":"X","ts":0,"dur":950,"pid":1,"tid":1},
{"name":"train step","cat":"step","ph":"X","ts":960,"dur":500,"pid":1,"tid":1},
{"name":"thread_name","ph":"M","pid":1,"tid":1,"args":{"name":"consumer 1"}},
{"name":"thread_name","ph":"M","pid":1,"tid":2,"args":{"name":"ferry worker 2"}}]}
JSON
"$ferry" report page "$dir/report.json" "$dir/trace.json" -o "$dir/cli.html" > "$dir/cli.out" && ok || bad "ferry report page failed"
grep -q "wrote $dir/cli.html" "$dir/cli.out" && ok || bad "ferry report page did not say what it wrote"
render "$dir/cli.html" > "$dir/cli.dom" || bad "chromium failed on the CLI's page"
grep -q '<b>interleave</b>' "$dir/cli.dom" && ok || bad "CLI page: stage not rendered"
grep -q 'data-node="1"' "$dir/cli.dom" && grep -q 'class="stage limit" data-node="1"' "$dir/cli.dom" && ok || bad "CLI page: the limit is not stage 1"
grep -q 'threads ran 4,800.0 ms\|threads ran 4800.0 ms' "$dir/cli.dom" && ok || bad "CLI page: thread time not rendered"
grep -q 'CPU 2 %' "$dir/cli.dom" && ok || bad "CLI page: CPU share not rendered"
grep -q 'waits &lt;/script&gt;&lt;b&gt;x&lt;/b&gt;' "$dir/cli.dom" && ok || bad "CLI page: markup in the verdict was not kept as text"
[ "$(count 'class="span"' "$dir/cli.dom")" = 4 ] && ok || bad "CLI page: want 4 spans"
grep -q '4 spans on 2 threads over 2.0 ms' "$dir/cli.dom" && ok || bad "CLI page: timeline summary"
grep -q 'no stage was given FERRY_AUTOTUNE' "$dir/cli.dom" && ok || bad "CLI page: a report without decisions"
# a report that is JSON but not a report (the files swapped): the page says so
"$ferry" report page "$dir/trace.json" "$dir/report.json" -o "$dir/swap.html" > /dev/null && ok || bad "swapped files failed the command"
render "$dir/swap.html" > "$dir/swap.dom" || bad "chromium failed on the swapped page"
grep -q 'The report could not be read' "$dir/swap.dom" && ok || bad "swapped files: not said"
# a trace that is not JSON: the page says so, the rest renders
printf 'not json' > "$dir/bad.json"
"$ferry" report page "$dir/report.json" "$dir/bad.json" -o "$dir/bad.html" > /dev/null && ok || bad "a bad trace file failed the command"
render "$dir/bad.html" > "$dir/bad.dom" || bad "chromium failed on the page with a bad trace"
grep -q 'The trace could not be read' "$dir/bad.dom" && grep -q '<b>interleave</b>' "$dir/bad.dom" && ok || bad "bad trace: not said, or the graph is gone"
# usage errors
set +e
"$ferry" report page "$dir/report.json" > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "missing -o: want exit 2"
"$ferry" report > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "missing subcommand: want exit 2"
"$ferry" report page "$dir/missing.json" -o "$dir/x.html" 2> "$dir/err"; [ $? -eq 1 ] && grep -q "missing.json" "$dir/err" && ok || bad "missing file: want exit 1 naming it"
set -e

echo "test_page: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
