#!/bin/sh
# test_pip_install.sh PYTHON SRC - `pip install .` works as README says: into a fresh virtual
# environment that sees the system's numpy, without build isolation (no network), the installed
# package imports and runs a pipeline with a C map, a Python map and a zero-copy batch. The
# source tree is copied first, so that pip's build directory (build/pip) stays out of SRC.
# Exit 77 (skipped) without the venv module or pip.
py=$1
src=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" -c "import venv, ensurepip" 2>/dev/null || "$py" -m pip --version >/dev/null 2>&1 ||
  { echo "SKIP: $py has no venv or pip (apt-get install python3-venv python3-pip)"; exit 77; }
"$py" -m venv --system-site-packages --without-pip "$dir/venv" || { echo "SKIP: cannot make a venv"; exit 77; }
mkdir "$dir/src"
(cd "$src" && tar cf - --exclude='./build*' --exclude='./.git' .) | (cd "$dir/src" && tar xf -) || exit 1
# the venv has no pip of its own (--without-pip: no network for ensurepip's wheel); the system's
# pip installs into it through its interpreter's sys.prefix
if ! "$dir/venv/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "SKIP: pip is not reachable from the venv (apt-get install python3-pip)"; exit 77
fi
(cd "$dir/src" && "$dir/venv/bin/python" -m pip install -q --no-build-isolation --no-deps .) > "$dir/pip.log" 2>&1 ||
  { echo "FAIL: pip install --no-build-isolation . :"; tail -30 "$dir/pip.log"; exit 1; }
cd "$dir" && "$dir/venv/bin/python" - <<'PY' || exit 1
import numpy as np
import ferry
assert ferry.__file__.startswith(__import__("sys").prefix), ferry.__file__
ds = ferry.Dataset.range(10).map(ferry.identity, num_parallel_calls=2).map(lambda x: x * 2).batch(4)
got = [b.tolist() for b in ds]
assert got == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]], got
t = next(ferry.Dataset.range(4).batch(4).iterator(output="tensor"))
assert np.asarray(t).ctypes.data == t.data_ptr
print("ok: pip install . ->", ferry.__file__, "version", ferry.version())
PY
