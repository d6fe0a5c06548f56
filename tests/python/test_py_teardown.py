"""No leak over 10,000 create / partial-read / drop cycles: Python's allocations (tracemalloc),
ferry's live blocks and bytes (runtime stats), threads and the byte budget all come back."""
import tracemalloc

import numpy as np

import ferry
from helpers import settle


def cycle(i, src):
    ds = (ferry.Dataset.from_tensor_slices(src)
          .map(lambda x: x + 1, num_parallel_calls=2)
          .batch(4)
          .prefetch(2))
    it = ds.iterator(seed=i)
    b = next(it)
    assert b.shape == (4, 3)
    if i % 3 == 0:
        next(it)
    return b.sum()


def test_ten_thousand_cycles_leak_nothing():
    rt = ferry.runtime()
    src = np.arange(60, dtype=np.float32).reshape(20, 3)
    for i in range(200):  # warm-up: caches, lazily made objects
        cycle(i, src)
    settle()
    before = rt.stats()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for i in range(10_000):
        cycle(i, src)
    settle()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    after = rt.stats()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert grown < 256 * 1024, snap1.compare_to(snap0, "lineno")[:10]
    assert after["threads_live"] == 0
    assert after["budget_used"] == before["budget_used"]
    assert after["blocks_allocated"] <= before["blocks_allocated"] + 64, (before, after)
    assert after["bytes_allocated"] <= before["bytes_allocated"] + 256 * 1024, (before, after)
