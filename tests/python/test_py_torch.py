"""ferry.torch.IterableDataset with the PyTorch DataLoader: batches pass through as torch tensors
without copies, sharding over workers hands out every element once, and state_dict /
load_state_dict resume exactly."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="python3-torch is not installed")

import ferry  # noqa: E402
from ferry.torch import IterableDataset  # noqa: E402


def make(n=100):
    return ferry.Dataset.range(n).shuffle(50).map(ferry.identity, num_parallel_calls=2).batch(8)


def test_dataloader_without_workers():
    data = IterableDataset(make(), seed=5)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=0)
    epoch0 = [b.tolist() for b in loader]
    epoch1 = [b.tolist() for b in loader]
    assert sorted(sum(epoch0, [])) == list(range(100)) and len(epoch0) == 13
    assert epoch0 != epoch1 and sorted(sum(epoch1, [])) == list(range(100))  # a new order per epoch
    assert data.epoch == 2
    again = IterableDataset(make(), seed=5)
    assert [b.tolist() for b in torch.utils.data.DataLoader(again, batch_size=None)] == epoch0
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.int64 for b in loader)


def test_state_dict_resumes_mid_epoch():
    data = IterableDataset(make(), seed=1)
    full = [b.tolist() for b in data]           # epoch 0
    data2 = IterableDataset(make(), seed=1)
    it = iter(data2)
    head = [next(it).tolist() for _ in range(5)]
    state = data2.state_dict()
    assert state["exact"] and state["epoch"] == 0 and isinstance(state["iterator"], bytes)
    del it
    data3 = IterableDataset(make(), seed=1)
    data3.load_state_dict(state)
    tail = [b.tolist() for b in data3]
    assert head + tail == full
    assert data3.epoch == 1 and data3.state_dict()["iterator"] is None


def test_workers_shard_every_element_once():
    data = IterableDataset(ferry.Dataset.range(103).map(ferry.identity), seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2)
    got = sorted(int(x) for x in loader)
    assert got == list(range(103))


def test_source_sharding_function():
    def build(index, count):
        return ferry.Dataset.range(40).shard(count, index).batch(4)
    loader = torch.utils.data.DataLoader(IterableDataset(build), batch_size=None, num_workers=2)
    got = sorted(sum((b.tolist() for b in loader), []))
    assert got == list(range(40))


def test_numpy_output_and_bad_arguments():
    data = IterableDataset(ferry.Dataset.range(4).batch(2), output="numpy")
    assert all(isinstance(b, np.ndarray) for b in data)
    with pytest.raises(TypeError):
        IterableDataset(3)
    with pytest.raises(ValueError):
        IterableDataset(make(), output="jax")


def test_early_stop_resumes_the_same_epoch():
    data = IterableDataset(make(), seed=3)
    full = [b.tolist() for b in IterableDataset(make(), seed=3)]
    head = []
    for b in data:
        head.append(b.tolist())
        if len(head) == 4:
            break  # a pass stopped early: the next pass goes on after it
    state = data.state_dict()
    assert state["epoch"] == 0 and state["iterator"] is not None
    again = IterableDataset(make(), seed=3)
    again.load_state_dict(state)
    assert again.state_dict()["iterator"] == state["iterator"]  # before the first batch too
    again.set_epoch(0)  # the same epoch: the loaded position is kept
    assert head + [b.tolist() for b in again] == full
    assert head + [b.tolist() for b in data] == full and data.epoch == 1


def test_workers_forked_while_ferry_threads_run():
    """A DataLoader forks its workers while a ferry iterator runs in this process: a Dataset made
    before the fork is refused in the workers with a message saying why (no hang), and the
    make(index, count) form builds each worker's pipeline anew and works."""
    live = iter(ferry.Dataset.range(1000).map(ferry.identity, num_parallel_calls=2).prefetch(4))
    assert int(next(live)) == 0
    data = IterableDataset(ferry.Dataset.range(20).map(ferry.identity), seed=0)
    with pytest.raises(RuntimeError, match="forked while ferry's threads ran"):
        list(torch.utils.data.DataLoader(data, batch_size=None, num_workers=2, timeout=120))

    def build(index, count):
        return ferry.Dataset.range(20).shard(count, index).map(ferry.identity, num_parallel_calls=2)
    loader = torch.utils.data.DataLoader(IterableDataset(build), batch_size=None, num_workers=2, timeout=120)
    assert sorted(int(x) for x in loader) == list(range(20))
    assert int(next(live)) == 1  # this process's iterator is untouched


def test_ranks_take_their_shards(monkeypatch):
    """Under torch.distributed each rank takes its shard (rank r of w: shard r of w x workers)."""
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    seen = []
    for rank in range(3):
        monkeypatch.setattr(dist, "get_rank", lambda r=rank: r)
        seen.append([int(x) for x in IterableDataset(ferry.Dataset.range(10))])
    assert seen == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
