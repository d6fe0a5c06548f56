#!/usr/bin/python3
"""py_bench.py - ferry from Python against PyTorch's DataLoader, side by side in one process run.

Every part runs its variants --reps times, round-robin (repetition r starts at the r-th variant,
so drift of the machine hits every variant alike), and reports per variant the median, min and
max over the repetitions, the process's CPU seconds (user + system of the process and of its
reaped children: the DataLoader's worker processes are joined at the end of every epoch, since
persistent_workers is off), and the ratios its goals name. Threads: torch.set_num_threads(1) in
every process and every DataLoader worker; ferry's runtime has its defaults (every core).

Two processes. A DataLoader with workers forks its process at every epoch, and after a fork every
page the parent writes again takes a copy-on-write fault: an epoch of ferry's P6 pipeline right
after a fork of its process ran at about a third of its rate (first batch ~180 ms instead of
~25 ms), so the two must not share a process. The DataLoader variants run in a helper process
(this file with --torch-server, started once); the measuring process, which runs ferry and the
hand-written loops and never forks, asks the helper for one epoch at a time, in the round-robin,
and waits for its reply. The helper measures its own epochs (wall, first batch, CPU of itself
and its reaped workers): the request's round trip is not counted, and the helper is idle while
ferry runs.

(a) trivial pipeline, elements per second over a whole epoch and the time to the first batch
    (from making the iterator to the first batch in hand):
      ferry          Dataset.range(N).map(ferry.identity).batch(256), numpy batches
      ferry-prefetch the same .prefetch(ferry.AUTOTUNE)
      ferry-par      map(ferry.identity, num_parallel_calls=ferry.AUTOTUNE).batch(256)
      hand-written   a Python generator yielding np.arange(i, min(i + 256, N)) (the best a user
                     can write by hand)
      dataloader-wW  a map-style torch Dataset whose __getitem__(i) returns i, DataLoader(
                     batch_size=256, num_workers=W) for W = 0, 1, 2; worker start is counted.
    The DataLoader runs a smaller N (--n-torch; its worker processes move every batch through
    shared memory and take tens of seconds for ferry's N): the rates are comparable, the epoch
    times are not. The first batch is also measured on its own after the round-robin: 20
    iterators of each ferry pipeline in a row, each made, its first batch taken, closed. Goals:
    ferry / the DataLoader's best W >= 20 in elements/s; ferry's first batch <= 1 ms. For reference (--c-ref): build-rel/bench/bench_core --only P3, the same pipeline in C.
(b) P6 from Python: Dataset.image_folder(root).image_augment(size=224, crop="random_resized",
    flip=0.5, dtype="float32", chw=True, mean, std = ImageNet's, num_parallel_calls=AUTOTUNE)
    .batch(32).prefetch(AUTOTUNE), iterated from Python, images/s per epoch and the steady rate
    as bench/p6_torch.py defines it (the images after the first quarter of the epoch's batches
    over the time from that batch to the last; nan under 8 batches), against p6_torch.py's
    DataLoader + torchvision pipeline (its code, imported by the helper process) with W = 0, 1, 2
    workers, in the same round-robin. ferry runs one untimed epoch first (what AUTOTUNE learns is
    kept for the dataset's next iterator, as in a training loop); every file is read once before
    timing, and two batches go through a W = 0 loader (p6_torch.py's warm-up).
    Goal: ferry / the DataLoader's best >= 2.5. For reference (--c-ref): bench_images' ferry-crop
    row (the same pipeline in C), run after the Python variants.
(c) a Python function in map: range(N) -> map(fn) -> batch(256), with fn one of
      light       x * 2 + 1
      numpy_work  ~7 us of numpy work on a 256-element float64 array made from x
    (ferry passes x as a 0-d int64 numpy array, the DataLoader's __getitem__ gets a Python int),
    ferry with num_parallel_calls 0 (inline), 1, 2 and AUTOTUNE, inline followed by
    prefetch(AUTOTUNE), and 2 and AUTOTUNE with releases_gil=True, against DataLoader W = 0, 1, 2
    with the same fn in __getitem__. ferry's Python callables take the GIL for every call, so a
    Python map runs on one thread at most (2 and AUTOTUNE run as 1) unless the user says the
    function releases the GIL (releases_gil=True); the releases_gil variants measure several
    threads on these functions, which hold the GIL throughout. DataLoader workers are processes,
    each with its own interpreter. No goal: the ratios are printed for the record.
(d) conversion cost, microseconds per conversion, median of several timeit runs (3 per
    repetition): ferry.Tensor objects of 8 B, 1 MiB and 64 MiB (uint8), fresh and writable,
    taken from ds.batch(1).iterator(output="tensor") (shape [1, size]) with
    ds = Dataset.from_tensors(np.zeros(size)).map(ferry.identity), turned into numpy
    (Tensor.numpy(), np.asarray(t): the buffer protocol) and into torch (torch.from_dlpack(t);
    DLPack refuses ds's own, read-only tensors with BufferError, checked). Goal: <= 2 us per
    tensor whatever its size. Also next() on the
    repeated dataset with output "tensor", "numpy" and "torch" (the iterator's own conversion:
    the difference to "tensor"; these bytes are shared with the source array, hence read-only,
    so output="torch" copies them), and per batch of the pipeline of (a) with each output
    (fresh, writable batches: no copy).

Checks: every epoch must give every element (images: float32 [b, 3, 224, 224], labels in
range), the values of (a) and (c) are checked at the ends of the epoch; any failure: exit 1.

Output: one key=value line per measurement (part=X variant=... rep=R ...), a "summary" line per
variant (median, min, max), a table per part, and "goal" lines (goal, measured ratio, met or not).

usage: PYTHONPATH=build-rel/python /usr/bin/python3 bench/py_bench.py [--part a,b,c,d] [--reps N]
           [--dir ROOT] [--quick] [--n-ferry N] [--n-torch N] [--n-map N] [--limit N] [--no-c-ref]
    --part     the parts to run (default a,b,c,d)
    --reps     repetitions of every variant (default 5)
    --dir      the photo set of (b) (default build-rel/photos; make it with
               /usr/bin/python3 scripts/make_photo_set.py build-rel/photos)
    --quick    a smoke run of every code path: small sizes, 2 repetitions, --limit 96
    --n-ferry  (a): elements per ferry / hand-written epoch (default 16,000,000)
    --n-torch  (a): elements per DataLoader epoch (default 1,000,000)
    --n-map    (c): elements per epoch (default 50,000)
    --limit    (b): only the folder's first N images (ImageFolder's order, both sides)
    --no-c-ref skip the C reference runs (build-rel/bench/bench_core, bench_images)
For figures: a Release build on a quiet machine, from the source root:
    PYTHONPATH=build-rel/python /usr/bin/python3 bench/py_bench.py --reps 5 --dir build-rel/photos
Exit status: 0; 1 when a check fails; 2 when ferry cannot be imported; 3 when torch cannot be.
"""
import argparse
import functools
import gc
import importlib.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import timeit

import numpy as np

try:
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset
except ImportError as e:
    print("skip: torch cannot be imported (%s)" % e, flush=True)
    sys.exit(3)
ferry = None  # imported by main() in the measuring process only

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 256
FAILED = []


def cpu_seconds():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def one_thread(worker_id):
    torch.set_num_threads(1)


def fail(msg):
    print("CHECK FAILED: " + msg, flush=True)
    FAILED.append(msg)


def med(xs):
    xs = [x for x in xs if x == x]
    return (statistics.median(xs), min(xs), max(xs)) if xs else (float("nan"),) * 3


def kv(**fields):
    out = []
    for k, v in fields.items():
        if isinstance(v, float):
            v = "%.6g" % v
        out.append("%s=%s" % (k, v))
    print(" ".join(out), flush=True)


def round_robin(part, variants, reps):
    """variants: [(name, run)] with run(rep) -> dict of measurements. Returns {name: [dict, ...]}."""
    res = {name: [] for name, _ in variants}
    for r in range(reps):
        for j in range(len(variants)):
            name, run = variants[(j + r) % len(variants)]
            gc.collect()
            m = run(r)
            res[name].append(m)
            kv(part=part, variant=name, rep=r, **m)
    return res


def summarize(part, res, keys):
    """Prints and returns {name: {key: (median, min, max)}}."""
    out = {}
    for name, ms in res.items():
        s = {k: med([m[k] for m in ms]) for k in keys if k in ms[0]}
        out[name] = s
        fields = {}
        for k, (m, lo, hi) in s.items():
            fields[k], fields[k + "_min"], fields[k + "_max"] = m, lo, hi
        kv(part=part, summary=name, reps=len(ms), **fields)
    return out


def goal_line(part, what, measured, goal, ok):
    """ok None: a ratio printed for the record, without a goal."""
    verdict = "(no goal)" if ok is None else "met" if ok else "NOT MET"
    print("goal part=%s %-58s measured=%-10s goal %-10s %s" % (part, what, "%.3g" % measured, goal, verdict),
          flush=True)
    return ok


def epoch(make_iter, count, on_batch=None, mark=None):
    """One pass as a training loop sees it: making the iterator, every batch, closing it.
    Returns (elements, batches, wall, first_batch_s, steady_rate, cpu_s)."""
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    it = make_iter()
    n = batches = at_mark = 0
    t_first = t_mark = t_last = t0
    for b in it:
        t_last = time.perf_counter()
        if batches == 0:
            t_first = t_last
        if on_batch is not None:
            on_batch(batches, b)
        n += count(b)
        if batches == mark:
            t_mark, at_mark = t_last, n
        batches += 1
    close = getattr(it, "close", None)
    if close is not None:
        close()
    del it
    t1 = time.perf_counter()
    cpu = cpu_seconds() - c0
    steady = (n - at_mark) / (t_last - t_mark) if mark is not None and batches >= 8 and t_last > t_mark \
        else float("nan")
    return n, batches, t1 - t0, t_first - t0, steady, cpu


def table(title, header, rows):
    print("\n" + title, flush=True)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        print("  " + "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(flush=True)


def rng(s, fmt="%.3g", scale=1.0):
    m, lo, hi = s
    if m != m:
        return "-"
    return (fmt + " (" + fmt + "-" + fmt + ")") % (m * scale, lo * scale, hi * scale)


def run_c(cmd):
    """A C reference benchmark's output, or None (printed why)."""
    if not os.path.exists(cmd[0]):
        print("c-ref: %s not built: skipped" % cmd[0], flush=True)
        return None
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print("c-ref: %s (exit status %d)" % (" ".join(cmd), p.returncode), flush=True)
    return p.stdout


# ---- what both processes measure ---------------------------------------------------------------
class IndexDataset(TorchDataset):
    """__getitem__(i) returns fn(i) (i itself without fn)."""

    def __init__(self, n, fn=None):
        self.n, self.fn = n, fn

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i if self.fn is None else self.fn(i)


def loader(ds, workers, batch):
    return DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers, persistent_workers=False,
                      pin_memory=False, worker_init_fn=one_thread if workers > 0 else None)


def hand_written(n):
    for i in range(0, n, BATCH):
        yield np.arange(i, min(i + BATCH, n))


def light(x):
    return x * 2 + 1


def numpy_work(x):
    a = np.full(256, x, dtype=np.float64)
    b = np.sqrt(a * a + 1.0) + np.sin(a) * np.cos(a)
    return np.int64(np.floor(b.sum()))


FUNCTIONS = {"light": light, "numpy_work": numpy_work}


def a_epoch(name, make_iter, total):
    """(a): an epoch of range(total) in batches, its first and last values checked."""
    def on_batch(i, b):
        if i == 0 and int(b[0]) != 0:
            fail("%s: the first batch starts at %d" % (name, int(b[0])))
        if len(b) < BATCH and int(b[-1]) != total - 1:
            fail("%s: the last batch ends at %d, want %d" % (name, int(b[-1]), total - 1))
    n, nb, wall, first, _, cpu = epoch(make_iter, len, on_batch)
    if n != total:
        fail("%s gave %d elements, want %d" % (name, n, total))
    return dict(elements=n, batches=nb, epoch_s=wall, elements_per_s=n / wall, first_batch_ms=first * 1e3,
                cpu_s=cpu, cpu_ns_per_element=cpu / n * 1e9)


def c_epoch(name, fn, make_iter, total):
    """(c): an epoch of fn over range(total) in batches, its last value checked."""
    expect_last = int(fn(np.int64(total - 1)))

    def on_batch(i, b):
        if len(b) < BATCH and int(b[-1]) != expect_last:
            fail("%s(%s): the last value is %d, want %d" % (name, fn.__name__, int(b[-1]), expect_last))
    n, nb, wall, first, _, cpu = epoch(make_iter, len, on_batch)
    if n != total:
        fail("%s(%s) gave %d elements, want %d" % (name, fn.__name__, n, total))
    return dict(elements=n, epoch_s=wall, elements_per_s=n / wall, first_batch_ms=first * 1e3, cpu_s=cpu,
                cpu_us_per_element=cpu / n * 1e6)


def b_epoch(name, make_iter, total, mark, check):
    """(b): an epoch of images, every batch checked."""
    n, nb, wall, first, steady, cpu = epoch(make_iter, lambda b: b[0].shape[0], check, mark)
    if n != total:
        fail("%s gave %d images, want %d" % (name, n, total))
    return dict(images=n, batches=nb, epoch_s=wall, images_per_s=n / wall, startup_s=first,
                steady_images_per_s=steady, cpu_s=cpu, cpu_ms_per_image=cpu / n * 1e3)


def load_p6():
    spec = importlib.util.spec_from_file_location("p6_torch", os.path.join(HERE, "p6_torch.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- the DataLoader's process (see "Two processes" at the top) ---------------------------------
def serve():
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed here goes to stderr, not into the replies
    torch.set_num_threads(1)
    st = {"loaders": {}}

    def get_loader(key, make):
        if key not in st["loaders"]:
            st["loaders"][key] = make()
        return st["loaders"][key]

    def op_info(c):
        import torchvision
        return dict(torch=torch.__version__, torchvision=torchvision.__version__)

    def op_a(c):
        ld = get_loader(("a", c["n"], c["w"]), lambda: loader(IndexDataset(c["n"]), c["w"], BATCH))
        return a_epoch(c["name"], lambda: iter(ld), c["n"])

    def op_warm(c):
        for _ in zip(range(2), loader(IndexDataset(4 * BATCH), 0, BATCH)):
            pass
        return {}

    def op_c(c):
        fn = FUNCTIONS[c["fn"]]
        ld = get_loader(("c", c["fn"], c["n"], c["w"]), lambda: loader(IndexDataset(c["n"], fn), c["w"], BATCH))
        return c_epoch(c["name"], fn, lambda: iter(ld), c["n"])

    def op_b_setup(c):
        p6 = load_p6()
        tds, nclasses, folder = p6.make_dataset(c["dir"], c["limit"])
        total = len(tds)
        nbytes = 0
        for path, _ in folder.samples[:total]:  # a warm page cache, for both sides
            with open(path, "rb") as f:
                nbytes += len(f.read())
        for x, y in p6.make_loader(torch.utils.data.Subset(tds, range(min(total, 2 * p6.BATCH))), 0):
            p6.check_batch(x, y, nclasses)
        st.update(p6=p6, tds=tds, nclasses=nclasses, total=total)
        return dict(images=total, classes=nclasses, nbytes=nbytes, files=[p for p, _ in folder.samples[:total]])

    def op_b(c):
        p6, tds, nclasses, total = st["p6"], st["tds"], st["nclasses"], st["total"]
        mark = (total + p6.BATCH - 1) // p6.BATCH // 4
        return b_epoch(c["name"], lambda: iter(p6.make_loader(tds, c["w"])), total, mark,
                       lambda i, b: p6.check_batch(b[0], b[1], nclasses))

    ops = {"info": op_info, "a": op_a, "warm": op_warm, "c": op_c, "b-setup": op_b_setup, "b": op_b}
    for line in sys.stdin:
        c = json.loads(line)
        del FAILED[:]
        try:
            out = ops[c["op"]](c)
        except BaseException as e:  # p6_torch's checks raise SystemExit
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        out["failed"] = list(FAILED)
        proto.write(json.dumps(out) + "\n")
        proto.flush()


class TorchSide:
    """The helper process that runs the DataLoader variants (see serve)."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--torch-server"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit("the DataLoader's process ended (exit status %s)" % self.p.wait())
        out = json.loads(line)
        for msg in out.pop("failed"):
            fail(msg)
        if "error" in out:
            fail("DataLoader process: " + out["error"])
            raise SystemExit(1)
        return out

    def close(self):
        self.p.stdin.close()
        self.p.wait()


# ---- (a) the trivial pipeline ------------------------------------------------------------------
def part_a(args, ts):
    N, NT = args.n_ferry, args.n_torch
    plain = ferry.Dataset.range(N).map(ferry.identity).batch(BATCH)
    pipelines = {
        "ferry": plain,
        "ferry-prefetch": plain.prefetch(ferry.AUTOTUNE),
        "ferry-par": ferry.Dataset.range(N).map(ferry.identity, num_parallel_calls=ferry.AUTOTUNE).batch(BATCH),
    }
    variants = [(k, lambda r, k=k, ds=ds: a_epoch(k, ds.iterator, N)) for k, ds in pipelines.items()]
    variants.append(("hand-written", lambda r: a_epoch("hand-written", lambda: hand_written(N), N)))
    variants += [("dataloader-w%d" % w, lambda r, w=w: ts(op="a", name="dataloader-w%d" % w, n=NT, w=w))
                 for w in (0, 1, 2)]
    # untimed: one epoch of each ferry pipeline, two DataLoader batches (lazy imports, first calls)
    for ds in pipelines.values():
        for _ in ds:
            pass
    ts(op="warm")
    kv(part="a", n_ferry=N, n_torch=NT, batch=BATCH)
    res = round_robin("a", variants, args.reps)
    s = summarize("a", res, ["elements_per_s", "first_batch_ms", "cpu_s", "cpu_ns_per_element", "epoch_s"])
    # the first batch again, 20 iterators in a row per ferry pipeline (each after the last one
    # of the same pipeline, whose threads ended with it)
    probe = {}
    for k, ds in pipelines.items():
        ms = []
        for _ in range(20):
            t0 = time.perf_counter()
            it = ds.iterator()
            next(it)
            ms.append((time.perf_counter() - t0) * 1e3)
            it.close()
        probe[k] = med(ms)
        kv(part="a", probe=k, iterators=len(ms), first_batch_ms=probe[k][0], first_batch_ms_min=probe[k][1],
           first_batch_ms_max=probe[k][2])
    dl_best = max((k for k in s if k.startswith("dataloader")), key=lambda k: s[k]["elements_per_s"][0])
    dl_rate = s[dl_best]["elements_per_s"][0]
    rows = []
    for k in s:
        rows.append([k, "%d" % res[k][0]["elements"], rng(s[k]["elements_per_s"], "%.2f", 1e-6),
                     rng(s[k]["first_batch_ms"], "%.3f"), rng(probe[k], "%.3f") if k in probe else "",
                     "%.3f" % s[k]["cpu_s"][0], "%.1f" % s[k]["cpu_ns_per_element"][0],
                     "%.2f" % (s[k]["elements_per_s"][0] / dl_rate)])
    c_out = run_c([os.path.join(ROOT, "build-rel/bench/bench_core"), "--only", "P3", "--reps",
                   "1" if args.quick else "3"]) if args.c_ref else None
    if c_out:
        m = re.search(r"parallel map ([\d.]+) M elements/s.*inline map ([\d.]+) M", c_out)
        if m:
            kv(part="a", c_ref="bench_core_P3", parallel_map_elements_per_s=float(m.group(1)) * 1e6,
               inline_map_elements_per_s=float(m.group(2)) * 1e6)
            rows.append(["C: bench_core P3, inline map (+prefetch)", "20000000", "%.2f" % float(m.group(2)), "", "",
                         "", "", "%.2f" % (float(m.group(2)) * 1e6 / dl_rate)])
            rows.append(["C: bench_core P3, parallel map (+prefetch)", "20000000", "%.2f" % float(m.group(1)), "",
                         "", "", "", "%.2f" % (float(m.group(1)) * 1e6 / dl_rate)])
    table("(a) range -> identity -> batch(256): M elements/s, median (min-max) over %d reps" % args.reps,
          ["variant", "elements/epoch", "M elements/s", "first batch ms (epochs)", "first batch ms (20 in a row)",
           "CPU s/epoch", "CPU ns/element", "/ DataLoader best"], rows)
    ferry_keys = [k for k in s if k.startswith("ferry")]
    best = max(ferry_keys, key=lambda k: s[k]["elements_per_s"][0])
    ok = True
    for k in ferry_keys:
        goal_line("a", "%s / DataLoader best (%s), elements/s" % (k, dl_best), s[k]["elements_per_s"][0] / dl_rate,
                  ">= 20", s[k]["elements_per_s"][0] / dl_rate >= 20)
    ok &= s[best]["elements_per_s"][0] / dl_rate >= 20
    for k in ferry_keys:
        ok &= goal_line("a", "%s first batch (epochs), ms" % k, s[k]["first_batch_ms"][0], "<= 1",
                        s[k]["first_batch_ms"][0] <= 1)
        ok &= goal_line("a", "%s first batch (20 iterators in a row), ms" % k, probe[k][0], "<= 1", probe[k][0] <= 1)
    goal_line("a", "ferry (best: %s) / hand-written, elements/s" % best,
              s[best]["elements_per_s"][0] / s["hand-written"]["elements_per_s"][0], "-", None)
    return ok


# ---- (b) P6 from Python ------------------------------------------------------------------------
def part_b(args, ts):
    p6 = load_p6()  # its constants; the DataLoader side runs in the helper process
    info = ts(op="b-setup", dir=args.dir, limit=args.limit)
    total, nclasses = info["images"], info["classes"]
    for path in info["files"]:  # the page cache is warm (read by the helper); read it here too
        with open(path, "rb") as f:
            f.read()
    src = ferry.Dataset.image_folder(args.dir)
    if len(src.class_names) != nclasses:
        fail("ferry finds %d classes, ImageFolder %d" % (len(src.class_names), nclasses))
    if args.limit:
        src = src.take(args.limit)
    fds = (src.image_augment(size=p6.SIZE, crop="random_resized", flip=0.5, dtype="float32", chw=True, mean=p6.MEAN,
                             std=p6.STD, num_parallel_calls=ferry.AUTOTUNE)
           .batch(p6.BATCH).prefetch(ferry.AUTOTUNE))
    mark = (total + p6.BATCH - 1) // p6.BATCH // 4

    def check_ferry(i, b):
        x, y = b
        n = x.shape[0]
        if x.dtype != np.float32 or x.shape[1:] != (3, p6.SIZE, p6.SIZE) or not 1 <= n <= p6.BATCH:
            fail("ferry: a batch of %s %s" % (x.dtype, x.shape))
        if y.dtype != np.int64 or y.shape != (n,) or int(y.min()) < 0 or int(y.max()) >= nclasses:
            fail("ferry: labels %s %s out of range" % (y.dtype, y.shape))
        if not np.isfinite(x[:, :, ::37, ::37]).all():
            fail("ferry: values that are not finite")

    t0 = time.perf_counter()
    n_warm = sum(x.shape[0] for x, _ in fds.iterator(seed=1000))
    kv(part="b", images=total, classes=nclasses, mean_bytes=info["nbytes"] / total, batch=p6.BATCH,
       ferry_first_epoch_images_per_s=n_warm / (time.perf_counter() - t0))
    variants = [("ferry", lambda r: b_epoch("ferry", lambda: fds.iterator(seed=r + 1), total, mark, check_ferry))]
    variants += [("dataloader-w%d" % w, lambda r, w=w: ts(op="b", name="dataloader-w%d" % w, w=w)) for w in (0, 1, 2)]
    res = round_robin("b", variants, args.reps)
    s = summarize("b", res, ["images_per_s", "steady_images_per_s", "startup_s", "cpu_s", "cpu_ms_per_image"])
    dl_best = max((k for k in s if k.startswith("dataloader")), key=lambda k: s[k]["images_per_s"][0])
    dl_rate = s[dl_best]["images_per_s"][0]
    rows = [[k, rng(s[k]["images_per_s"], "%.0f"), rng(s[k]["steady_images_per_s"], "%.0f"),
             "%.1f" % (s[k]["startup_s"][0] * 1e3), "%.3f" % s[k]["cpu_ms_per_image"][0],
             "%.2f" % (s[k]["images_per_s"][0] / dl_rate)] for k in s]
    if args.c_ref:
        cmd = [os.path.join(ROOT, "build-rel/bench/bench_images"), "--dir", args.dir, "--only", "crop", "--reps",
               str(args.reps)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        out = run_c(cmd)
        m = re.search(r"^ferry-crop\s+([\d.]+) \[([\d.]+)-([\d.]+)\]\s+([\d.]+|-)", out or "", re.M)
        if m:
            kv(part="b", c_ref="bench_images_ferry_crop", images_per_s=float(m.group(1)), min=float(m.group(2)),
               max=float(m.group(3)), steady_images_per_s=m.group(4))
            rows.append(["C: bench_images ferry-crop (run after)", "%s (%s-%s)" % m.group(1, 2, 3), m.group(4), "", "",
                         "%.2f" % (float(m.group(1)) / dl_rate)])
    table("(b) P6 from Python: images/s, median (min-max) over %d reps, %d images" % (args.reps, total),
          ["variant", "images/s", "steady images/s", "first batch ms", "CPU ms/image", "/ DataLoader best"], rows)
    r = s["ferry"]["images_per_s"][0] / dl_rate
    return goal_line("b", "ferry / DataLoader best (%s), images/s" % dl_best, r, ">= 2.5", r >= 2.5)


# ---- (c) a Python function in map --------------------------------------------------------------
def part_c(args, ts):
    N = args.n_map
    for fn in (light, numpy_work):
        per_call = min(timeit.repeat(lambda: fn(np.int64(7)), number=2000, repeat=3)) / 2000
        pipelines = {"ferry-p%s" % ("AUTOTUNE" if p == ferry.AUTOTUNE else p):
                     ferry.Dataset.range(N).map(fn, num_parallel_calls=p).batch(BATCH) for p in (0, 1, 2, ferry.AUTOTUNE)}
        pipelines["ferry-p0-prefetch"] = ferry.Dataset.range(N).map(fn).batch(BATCH).prefetch(ferry.AUTOTUNE)
        # a Python map runs on one thread at most unless it says it releases the GIL: the threads
        # themselves, measured with releases_gil=True (these functions do not release it)
        for p in (2, ferry.AUTOTUNE):
            pipelines["ferry-p%s-releases_gil" % ("AUTOTUNE" if p == ferry.AUTOTUNE else p)] = \
                ferry.Dataset.range(N).map(fn, num_parallel_calls=p, releases_gil=True).batch(BATCH)
        variants = [(k, lambda r, k=k, ds=ds: c_epoch(k, fn, ds.iterator, N)) for k, ds in pipelines.items()]
        variants += [("dataloader-w%d" % w, lambda r, w=w: ts(op="c", name="dataloader-w%d" % w, fn=fn.__name__,
                                                                n=N, w=w)) for w in (0, 1, 2)]
        for ds in pipelines.values():  # untimed
            for _ in ds.take(2):
                pass
        part = "c-" + fn.__name__
        kv(part=part, n=N, fn_us_per_call=per_call * 1e6)
        res = round_robin(part, variants, args.reps)
        s = summarize(part, res, ["elements_per_s", "cpu_s", "cpu_us_per_element"])
        dl_best = max((k for k in s if k.startswith("dataloader")), key=lambda k: s[k]["elements_per_s"][0])
        dl_rate = s[dl_best]["elements_per_s"][0]
        inline = s["ferry-p0"]["elements_per_s"][0]
        rows = [[k, rng(s[k]["elements_per_s"], "%.4g", 1e-3), "%.2f" % (1e6 / s[k]["elements_per_s"][0]),
                 "%.2f" % s[k]["cpu_us_per_element"][0], "%.2f" % (s[k]["elements_per_s"][0] / dl_rate),
                 "%.3f" % (s[k]["elements_per_s"][0] / inline) if k.startswith("ferry") else ""] for k in s]
        table("(c) range -> map(%s, %.2f us a call alone) -> batch(256), %d elements: k elements/s, median (min-max) "
              "over %d reps" % (fn.__name__, per_call * 1e6, N, args.reps),
              ["variant", "k elements/s", "wall us/element", "CPU us/element", "/ DataLoader best",
               "/ ferry inline"], rows)
        best = max((k for k in s if k.startswith("ferry")), key=lambda k: s[k]["elements_per_s"][0])
        goal_line(part, "ferry best (%s) / DataLoader best (%s)" % (best, dl_best),
                  s[best]["elements_per_s"][0] / dl_rate, "-", None)
    print("(c) ferry's Python callables take the GIL for every call: a Python map runs on one thread at most\n"
          "    (num_parallel_calls 2 and AUTOTUNE run as 1) unless map(..., releases_gil=True); the releases_gil\n"
          "    variants run these GIL-holding functions on several threads, which take turns on the GIL.\n"
          "    DataLoader workers are processes, each with its own interpreter.", flush=True)
    return True


# ---- (d) conversion cost -----------------------------------------------------------------------
def part_d(args, ts):
    sizes = [("8B", 8), ("1MiB", 1 << 20), ("64MiB", 64 << 20)]
    runs = 3
    variants, keep = [], []
    for label, size in sizes:
        ds = ferry.Dataset.from_tensors(np.zeros(size, np.uint8)).map(ferry.identity)
        it = ds.iterator(output="tensor")
        shared = next(it)  # its bytes are the source array's: read-only, and DLPack refuses it
        it.close()
        try:
            torch.from_dlpack(shared)
            fail("torch.from_dlpack took the read-only %s tensor" % label)
        except BufferError:
            pass
        del shared
        # the conversions: a fresh, writable tensor of the same bytes (a batch of one, [1, size])
        it = ds.batch(1).iterator(output="tensor")
        t = next(it)
        it.close()
        if t.nbytes != size or t.shape != (1, size) or not t.writable:
            fail("from_tensors(%d bytes).batch(1) gave %r (writable %s)" % (size, t, t.writable))
        kv(part="d", size=label, nbytes=t.nbytes, dtype=t.dtype, writable=t.writable)
        keep.append(t)
        a, tt = t.numpy(), torch.from_dlpack(t)
        if a.ctypes.data != t.data_ptr or tt.data_ptr() != t.data_ptr or np.asarray(t).ctypes.data != t.data_ptr:
            fail("a conversion of the %s tensor copied its bytes" % label)
        del a, tt
        variants += [("Tensor.numpy() " + label, t.numpy),
                     ("np.asarray(t) " + label, functools.partial(np.asarray, t)),
                     ("torch.from_dlpack(t) " + label, functools.partial(torch.from_dlpack, t))]
        for out in ("tensor", "numpy", "torch"):
            rit = ds.repeat().iterator(output=out)
            keep.append(rit)
            variants.append(("next() output=%s %s" % (out, label), rit.__next__))
    # per batch of (a)'s pipeline with each output: a fresh, writable batch, no copy
    nb = 2000 if args.quick else 40000
    batches = ferry.Dataset.range(nb * BATCH).map(ferry.identity).batch(BATCH)
    for out in ("tensor", "numpy", "torch"):
        def per_batch(out=out):
            t0 = time.perf_counter()
            for _ in batches.iterator(output=out):
                pass
            return (time.perf_counter() - t0) / nb
        variants.append(("batch pipeline output=%s" % out, per_batch))

    numbers = {}
    for name, fn in variants:  # calibrate: a timeit run of ~20 ms (~5 ms quick)
        if name.startswith("batch pipeline"):
            numbers[name] = 1
            continue
        n = 1
        while True:
            t = timeit.timeit(fn, number=n)
            if t >= (0.005 if args.quick else 0.02) or n >= 1 << 20:
                break
            n *= 2
        numbers[name] = n

    def measure(name, fn):
        def run(r):
            if name.startswith("batch pipeline"):
                us = [fn() * 1e6 for _ in range(runs)]
            else:
                us = [t / numbers[name] * 1e6 for t in timeit.repeat(fn, number=numbers[name], repeat=runs)]
            return dict(us=statistics.median(us), us_runs=",".join("%.4g" % u for u in us), number=numbers[name])
        return run

    res = round_robin("d", [(k, measure(k, fn)) for k, fn in variants], args.reps)
    allus = {k: [float(u) for m in ms for u in m["us_runs"].split(",")] for k, ms in res.items()}
    s = {k: med(v) for k, v in allus.items()}
    for k, v in s.items():
        kv(part="d", summary=k.replace(" ", "_"), runs=len(allus[k]), us=v[0], us_min=v[1], us_max=v[2])
    rows = []
    for conv in ("Tensor.numpy()", "np.asarray(t)", "torch.from_dlpack(t)", "next() output=tensor",
                 "next() output=numpy", "next() output=torch"):
        rows.append([conv] + [rng(s[conv + " " + label], "%.3g") for label, _ in sizes])
    for label, _ in sizes:
        base = s["next() output=tensor " + label][0]
        for out in ("numpy", "torch"):
            kv(part="d", iterator_output=out, size=label,
               us_over_tensor=s["next() output=%s %s" % (out, label)][0] - base)
    rows.append(["iterator's numpy conversion (numpy - tensor)"] +
                ["%.3g" % (s["next() output=numpy " + l][0] - s["next() output=tensor " + l][0]) for l, _ in sizes])
    rows.append(["iterator's torch conversion (torch - tensor)"] +
                ["%.3g" % (s["next() output=torch " + l][0] - s["next() output=tensor " + l][0]) for l, _ in sizes])
    table("(d) us per conversion (fresh writable uint8 tensors [1, size]; the next() rows: one element of a repeated "
          "from_tensors, whose bytes are read-only), median (min-max) of %d timeit runs" % (runs * args.reps),
          ["conversion", "8 B", "1 MiB", "64 MiB"], rows)
    bt = s["batch pipeline output=tensor"][0]
    table("(d) per batch of range(%d) -> identity -> batch(256) (fresh writable batches), us per batch" % (nb * BATCH),
          ["output", "us/batch, median (min-max)", "over output=tensor"],
          [[o, rng(s["batch pipeline output=" + o], "%.3g"), "%.3g" % (s["batch pipeline output=" + o][0] - bt)]
           for o in ("tensor", "numpy", "torch")])
    ok = True
    for conv in ("Tensor.numpy()", "np.asarray(t)", "torch.from_dlpack(t)"):
        worst = max(s[conv + " " + label][0] for label, _ in sizes)
        ok &= goal_line("d", "%s, us (the largest median of 8 B, 1 MiB, 64 MiB)" % conv, worst, "<= 2", worst <= 2)
    worst = max(s["next() output=numpy " + l][0] - s["next() output=tensor " + l][0] for l, _ in sizes)
    ok &= goal_line("d", "iterator's numpy output over tensor output, us", worst, "<= 2", worst <= 2)
    over = s["batch pipeline output=torch"][0] - bt
    ok &= goal_line("d", "iterator's torch output over tensor output, fresh batch, us", over, "<= 2", over <= 2)
    print("(d) output=\"torch\" copies bytes that ferry shares (read-only: from_tensors, cache): the next() "
          "output=torch row", flush=True)
    for obj in keep:  # the repeated iterators
        if hasattr(obj, "close"):
            obj.close()
    return ok


def main():
    global ferry
    if sys.argv[1:] == ["--torch-server"]:
        serve()
        return
    ap = argparse.ArgumentParser(description="ferry from Python against PyTorch's DataLoader (see the top of this file)")
    ap.add_argument("--part", default="a,b,c,d")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default="build-rel/photos")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-ferry", type=int, default=16_000_000)
    ap.add_argument("--n-torch", type=int, default=1_000_000)
    ap.add_argument("--n-map", type=int, default=50_000)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--no-c-ref", dest="c_ref", action="store_false")
    args = ap.parse_args()
    parts = [p.strip() for p in args.part.split(",") if p.strip()]
    if args.reps < 1 or any(p not in "abcd" or len(p) != 1 for p in parts):
        ap.error("--reps must be >= 1 and --part a list of a, b, c, d")
    if args.quick:
        args.reps = min(args.reps, 2)
        args.n_ferry, args.n_torch, args.n_map = 200_000, 20_000, 2_000
        args.limit = args.limit or 96
    try:
        import ferry as f
    except ImportError as e:
        print("ferry cannot be imported (%s): run with PYTHONPATH=build-rel/python" % e, flush=True)
        sys.exit(2)
    ferry = f
    torch.set_num_threads(1)
    ts = TorchSide()
    info = ts(op="info")
    print("py_bench: parts %s, %d reps%s; python %s, numpy %s, torch %s, torchvision %s, ferry %s; %d cores; "
          "load average %s" % (",".join(parts), args.reps, " (quick)" if args.quick else "", sys.version.split()[0],
                               np.__version__, info["torch"], info["torchvision"], ferry.version(), os.cpu_count(),
                               " ".join("%.2f" % x for x in os.getloadavg())), flush=True)
    t0 = time.perf_counter()
    ok = True
    for p in parts:
        print("\n==== part %s ====" % p, flush=True)
        ok &= {"a": part_a, "b": part_b, "c": part_c, "d": part_d}[p](args, ts)
    ts.close()
    print("\nchecks: %s; goals: %s; %.1f s" % ("FAILED (%d)" % len(FAILED) if FAILED else "passed",
                                               "met" if ok else "NOT MET (see the goal lines)",
                                               time.perf_counter() - t0), flush=True)
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
