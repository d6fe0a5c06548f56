#!/usr/bin/python3
"""p6_torch.py - P6's PyTorch side: the DataLoader + torchvision pipeline a user writes for
ImageNet training, on the photo set of scripts/make_photo_set.py, in images per second.

    ImageFolder(root) (PIL decode, convert("RGB"))
      -> RandomResizedCrop(224) -> RandomHorizontalFlip() -> ToTensor()
      -> Normalize(ImageNet mean, std)
    DataLoader(batch_size=32, shuffle=False, num_workers=W, persistent_workers=False)

for W in 0, 1 and 2. shuffle=False because ferry's side of P6 reads the folder in order as well.
Threads: torch.set_num_threads(1) in the main process and in every worker (the DataLoader's
workers set it too); on the 2-core machine the workers are the parallelism, and a second intra-op
thread per process would only compete with them.

An epoch is what a user's `for x, y in loader:` costs: making the iterator (forking the workers
when W > 0), every batch, and the workers' shutdown at the end (persistent workers off), so worker
startup is counted. Also reported: startup_s (iterator made to first batch in hand) and the steady
rate: the images after the first quarter of the epoch's batches over the time from that batch to
the last (worker start and the filling of the workers' queues left out, and the workers' first
batches, which arrive together; bench_images.c measures ferry's the same way); nan for an epoch of
under 8 batches.
CPU seconds are the process's and its reaped children's (the workers are joined at the end of
every epoch), user + system.

Before timing: every file is read once (a warm page cache, as for ferry's side) and two batches
go through a W = 0 loader (lazy imports and first-call costs, which a program pays once, not
per epoch). Every batch is checked: float32 [b, 3, 224, 224], labels in range, finite values,
and the epoch must give every image.

Output, one line per epoch, key=value (read by bench/bench_images.c):
    torch workers=W rep=R images=N batches=B epoch_s=S images_per_s=X startup_s=S
          steady_images_per_s=X cpu_s=S cpu_s_per_image=S
then, per W, the median and range over the repetitions:
    torch-summary workers=W reps=R images_per_s=MED min=LO max=HI steady_images_per_s=MED
          steady_min=LO steady_max=HI cpu_s_per_image=MED
Repetitions are round-robin over W (rep r starts at the r-th entry, shifted by --rotate), so
drift of the machine affects every W alike.

usage: /usr/bin/python3 bench/p6_torch.py [--dir ROOT] [--reps N] [--workers 0,1,2] [--limit N]
                                          [--rotate K] [--quick]
    --dir      the photo set (default build/photos)
    --reps     epochs per W (default 3)
    --limit    only the first N images (ImageFolder's order)
    --quick    a smoke run: --reps 1 --limit 96
Exit status: 0; 1 when a check fails; 3 when torch or torchvision cannot be imported (one line
starting "skip:" says why).
"""
import argparse
import resource
import statistics
import sys
import time

try:
    import torch
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms
except ImportError as e:  # the C benchmark skips the PyTorch columns on this
    print("skip: torch or torchvision cannot be imported (%s)" % e, flush=True)
    sys.exit(3)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BATCH = 32
SIZE = 224


def cpu_seconds():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def one_thread(worker_id):
    torch.set_num_threads(1)


def make_dataset(root, limit):
    tf = transforms.Compose([
        transforms.RandomResizedCrop(SIZE),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    ds = datasets.ImageFolder(root, transform=tf)
    if limit and limit < len(ds):
        return Subset(ds, range(limit)), len(ds.classes), ds
    return ds, len(ds.classes), ds


def make_loader(ds, workers):
    return DataLoader(ds, batch_size=BATCH, shuffle=False, num_workers=workers, persistent_workers=False,
                      pin_memory=False, worker_init_fn=one_thread if workers > 0 else None)


def check_batch(x, y, nclasses):
    b = x.shape[0]
    if x.dtype != torch.float32 or tuple(x.shape) != (b, 3, SIZE, SIZE) or not 1 <= b <= BATCH:
        raise SystemExit("torch: a batch of %s %s, want float32 [<=%d, 3, %d, %d]" %
                         (x.dtype, tuple(x.shape), BATCH, SIZE, SIZE))
    if y.dtype != torch.int64 or tuple(y.shape) != (b,) or int(y.min()) < 0 or int(y.max()) >= nclasses:
        raise SystemExit("torch: labels %s %s out of range" % (y.dtype, tuple(y.shape)))
    if not bool(torch.isfinite(x[:, :, ::37, ::37]).all()):
        raise SystemExit("torch: a batch with values that are not finite")
    return b


def epoch(ds, workers, nclasses):
    """One pass: (images, batches, wall, startup, steady rate, cpu)."""
    loader = make_loader(ds, workers)
    mark = (len(ds) + BATCH - 1) // BATCH // 4  # steady: from this batch's arrival to the last's
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    n = batches = at_mark = 0
    t_first = t_mark = t_last = t0
    for x, y in loader:
        b = check_batch(x, y, nclasses)
        t_last = time.perf_counter()
        if batches == 0:
            t_first = t_last
        n += b
        if batches == mark:
            t_mark, at_mark = t_last, n
        batches += 1
    t1 = time.perf_counter()
    # under 8 batches, the workers' first batches are most of the epoch: no steady rate
    steady = (n - at_mark) / (t_last - t_mark) if batches >= 8 and t_last > t_mark else float("nan")
    return n, batches, t1 - t0, t_first - t0, steady, cpu_seconds() - c0


def main():
    ap = argparse.ArgumentParser(description="P6, the PyTorch side (see the top of this file)")
    ap.add_argument("--dir", default="build/photos")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--rotate", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.limit = 1, args.limit or 96
    workers = [int(w) for w in args.workers.split(",")]
    if args.reps < 1 or any(w < 0 for w in workers):
        ap.error("--reps must be >= 1 and --workers a list of counts >= 0")

    torch.set_num_threads(1)
    ds, nclasses, folder = make_dataset(args.dir, args.limit)
    total = len(ds)
    files = [path for path, _ in folder.samples[:total]]
    nbytes = 0
    for path in files:  # a warm page cache
        with open(path, "rb") as f:
            nbytes += len(f.read())
    warm = make_loader(Subset(ds, range(min(total, 2 * BATCH))), 0)
    for x, y in warm:
        check_batch(x, y, nclasses)
    print("torch-info torch=%s torchvision=%s threads_per_process=1 images=%d classes=%d mean_bytes=%.0f batch=%d" %
          (torch.__version__, torchvision.__version__, total, nclasses, nbytes / total, BATCH), flush=True)

    rates = {w: [] for w in workers}
    steady = {w: [] for w in workers}
    cpu_img = {w: [] for w in workers}
    for r in range(args.reps):
        for j in range(len(workers)):
            w = workers[(j + r + args.rotate) % len(workers)]
            n, nb, wall, startup, st, cpu = epoch(ds, w, nclasses)
            if n != total:
                raise SystemExit("torch: workers=%d gave %d images, want %d" % (w, n, total))
            rates[w].append(n / wall)
            steady[w].append(st)
            cpu_img[w].append(cpu / n)
            print("torch workers=%d rep=%d images=%d batches=%d epoch_s=%.4f images_per_s=%.2f startup_s=%.4f "
                  "steady_images_per_s=%.2f cpu_s=%.4f cpu_s_per_image=%.6f" %
                  (w, r, n, nb, wall, n / wall, startup, st, cpu, cpu / n), flush=True)
    for w in workers:
        print("torch-summary workers=%d reps=%d images_per_s=%.2f min=%.2f max=%.2f steady_images_per_s=%.2f "
              "steady_min=%.2f steady_max=%.2f cpu_s_per_image=%.6f" %
              (w, args.reps, statistics.median(rates[w]), min(rates[w]), max(rates[w]),
               statistics.median(steady[w]), min(steady[w]), max(steady[w]), statistics.median(cpu_img[w])),
              flush=True)


if __name__ == "__main__":
    main()
