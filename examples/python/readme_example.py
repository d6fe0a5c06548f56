#!/usr/bin/python3
"""readme_example.py - README's C example in Python: range -> map (square) -> batch -> prefetch.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/readme_example.py

The map here is a Python function, so it takes the GIL per call (ferry's built-in maps, such as
ferry.identity, parse_example and image_augment, run in C without it).
"""
import ferry


def square(x):
    return x * x


ds = (ferry.Dataset.range(1000)
      .map(square, num_parallel_calls=ferry.AUTOTUNE)
      .batch(100)
      .prefetch(ferry.AUTOTUNE))

it = ds.iterator(seed=42)
for batch in it:  # numpy int64 arrays of 100, ferry's own memory
    print(f"{batch.shape[0]} values, first {batch[0]}")
print(it.report()["verdict"])
