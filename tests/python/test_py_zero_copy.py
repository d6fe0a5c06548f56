"""Zero copy: numpy arrays, ferry.Tensor (buffer protocol, DLPack) and torch tensors share ferry's
bytes (pointer equality), the bytes live while Python holds them, and they count against the byte
budget until released."""
import numpy as np
import pytest

import ferry
from helpers import settle


def batches(n=1000, size=100, **kw):
    ds = ferry.Dataset.range(n).map(ferry.identity, num_parallel_calls=2).batch(size).prefetch(2)
    return ds.iterator(**kw)


def test_numpy_array_is_ferrys_memory():
    it = batches(output="tensor")
    t = next(it)
    assert isinstance(t, ferry.Tensor) and t.shape == (100,) and t.dtype == "int64"
    a = np.asarray(t)                       # buffer protocol
    b = t.numpy()                           # the numpy form the iterator yields
    assert a.ctypes.data == t.data_ptr == b.ctypes.data
    assert a.tolist() == list(range(100)) and t.nbytes == 800
    assert t.writable and a.flags.writeable  # a fresh batch belongs to Python alone
    mv = memoryview(t)
    assert mv.format == "q" and mv.shape == (100,) and not mv.readonly
    it.close()


def test_numpy_output_base_is_the_tensor():
    it = batches()
    a = next(it)
    assert isinstance(a, np.ndarray) and isinstance(a.base, ferry.Tensor)
    assert a.ctypes.data == a.base.data_ptr
    it.close()


def test_dlpack_to_torch_shares_memory():
    torch = pytest.importorskip("torch", reason="python3-torch is not installed")
    it = batches(output="tensor")
    t = next(it)
    assert t.__dlpack_device__() == (1, 0)
    x = torch.from_dlpack(t)
    assert x.data_ptr() == t.data_ptr and x.dtype == torch.int64 and x.tolist() == list(range(100))
    x[0] = 42  # writable: the batch is Python's alone
    assert np.asarray(t)[0] == 42
    y = next(batches(output="torch"))
    assert isinstance(y, torch.Tensor) and y.tolist() == list(range(100))
    f = next(ferry.Dataset.from_tensor_slices(np.ones((4, 3), np.float16)).batch(4).iterator(output="torch"))
    assert f.dtype == torch.float16 and f.shape == (4, 3)
    it.close()


def test_memory_outlives_the_iterator_and_dataset():
    it = batches(output="tensor")
    t = next(it)
    a = t.numpy()
    ptr = a.ctypes.data
    it.close()
    del it, t
    settle()
    assert a.ctypes.data == ptr and a.tolist() == list(range(100))
    torch = pytest.importorskip("torch", reason="python3-torch is not installed")
    x = torch.from_dlpack(next(batches(output="tensor")))
    settle()
    assert x.tolist() == list(range(100))


def test_shared_bytes_are_read_only():
    src = np.arange(12, dtype=np.float32).reshape(4, 3)
    ds = ferry.Dataset.from_tensor_slices(src)
    row = next(ds.iterator(output="tensor"))
    assert not row.writable and row.data_ptr == src.ctypes.data  # a row of the caller's array
    a = row.numpy()
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1
    assert memoryview(row).readonly
    with pytest.raises(TypeError, match="read-only"):
        memoryview(row).cast("B")[0:1] = b"x"
    cached = ferry.Dataset.range(4).map(ferry.identity).batch(2).cache()
    first = list(cached.iterator(output="tensor"))
    again = list(cached.iterator(output="tensor"))
    assert first[0].data_ptr == again[0].data_ptr and not first[0].writable
    torch = pytest.importorskip("torch", reason="python3-torch is not installed")
    with pytest.raises(BufferError, match="read-only"):
        torch.from_dlpack(first[0])  # DLPack cannot say read-only: refused, as numpy refuses
    x = next(cached.iterator(output="torch"))  # copied: torch tensors are always writable
    x[0] = 99
    assert next(cached.iterator()).tolist() == [0, 1]


def test_held_bytes_count_against_the_budget():
    rt = ferry.runtime()
    settle()
    base = rt.stats()["budget_used"]
    it = ferry.Dataset.from_tensors(np.zeros(1 << 16, np.float32)).repeat(8) \
        .map(ferry.identity).batch(2).iterator(output="tensor")
    held = [next(it) for _ in range(3)]
    it.close()
    assert rt.stats()["budget_used"] - base == 3 * 2 * (1 << 16) * 4
    del held
    settle()
    assert rt.stats()["budget_used"] == base


def test_bytes_tensors_become_bytes_lists():
    ds = ferry.Dataset.from_tensor_slices(["ab", "", "c"])
    assert list(ds) == [b"ab", b"", b"c"]
    assert list(ds.batch(2)) == [[b"ab", b""], [b"c"]]
    t = next(ds.iterator(output="tensor"))
    assert t == b"ab"  # bytes are copied out: there is no numpy or DLPack form


def test_conversion_cost_does_not_grow_with_size():
    """Making the numpy array of a ferry tensor costs the same for 8 bytes and 64 MiB: nothing is
    copied. (Checked by counting allocations, not by timing.)"""
    import tracemalloc
    big = next(ferry.Dataset.from_tensors(np.zeros(1 << 24, np.float32)).map(ferry.identity)
               .iterator(output="tensor"))
    tracemalloc.start()
    arrays = [big.numpy() for _ in range(10)]
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert all(a.ctypes.data == big.data_ptr for a in arrays)
    assert current < 1 << 16, current
