"""Exact resume from Python: save mid-epoch, restore in a fresh iterator (bytes or a file), and the
rest of the stream is exactly what the uninterrupted iterator would have given, random draws,
errors and Python generators included."""
import numpy as np
import pytest

import ferry


def pipeline():
    return (ferry.Dataset.range(500)
            .shuffle(64)
            .map(lambda x: (x, x * 3 % 7), num_parallel_calls=2)
            .filter(lambda a, b: b != 0)
            .batch(16)
            .prefetch(ferry.AUTOTUNE))


def as_lists(values):
    return [tuple(c.tolist() for c in v) for v in values]


@pytest.mark.parametrize("cut", [0, 1, 7, 26])
def test_restore_continues_exactly(cut, tmp_path):
    ds = pipeline()
    full = as_lists(ds.iterator(seed=9))
    it = ds.iterator(seed=9)
    head = as_lists(next(it) for _ in range(cut))
    state = it.save()
    it.save(tmp_path / "state")
    it.close()
    tail = as_lists(pipeline().iterator(state=state))
    assert head + tail == full
    assert as_lists(pipeline().iterator(state=tmp_path / "state")) == tail
    info = ferry._ferry.state_info(state)
    assert info["seed"] == 9 and info["fingerprint"] == ds.fingerprint()


def test_restore_at_the_end_and_with_errors():
    ds = ferry.Dataset.range(20).map(lambda x: x if x % 6 else 1 // (int(x) - int(x)),
                                     output_signature=ferry.TensorSpec((), np.int64))

    def drain(it):
        out = []
        while True:
            try:
                out.append(int(next(it)))
            except StopIteration:
                return out
            except ferry.UserFunctionError:
                out.append("err")
    full = drain(ds.iterator())
    it = ds.iterator()
    head = [int(next(it)) for _ in range(0)]
    for _ in range(7):
        try:
            head.append(int(next(it)))
        except ferry.UserFunctionError:
            head.append("err")
    tail = drain(ds.iterator(state=it.save()))
    assert head + tail == full and full.count("err") == 4
    ended = ds.iterator()
    drain(ended)
    assert drain(ds.iterator(state=ended.save())) == []


def test_generator_replays_on_restore():
    calls = []

    def gen():
        calls.append("start")
        for i in range(10):
            yield i * i
    ds = ferry.Dataset.from_generator(gen, output_signature=ferry.TensorSpec((), np.int64)).batch(3)
    it = ds.iterator()
    first = [next(it).tolist() for _ in range(2)]
    rest = [b.tolist() for b in ds.iterator(state=it.save())]
    assert first + rest == [[0, 1, 4], [9, 16, 25], [36, 49, 64], [81]]
    assert calls.count("start") == 2
