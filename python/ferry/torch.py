"""ferry.torch: a ferry Dataset as a torch.utils.data.IterableDataset.

    from ferry.torch import IterableDataset
    data = IterableDataset(ds, seed=0)                        # ds: a batched ferry.Dataset
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=0)
    for epoch in range(epochs):
        for x, y in loader:                                  # torch tensors, ferry's own memory
            ...
        torch.save(data.state_dict(), "ckpt.pt")             # exact resume, mid-epoch too

ferry batches and prefetches on its own threads, so the DataLoader needs no worker processes:
batch_size=None (ferry's batches pass through as they are) and num_workers=0 (no process, no copy,
no shared memory). Tensors come through DLPack without a copy; they are writable when ferry holds
no other reference to their bytes (fresh batches), else the adapter copies them (a cached or
from_tensor_slices element shared with ferry), so writing to a tensor never changes what ferry
hands out later.

fork. DataLoader workers are forked; a worker forked while a ferry iterator runs in the parent
cannot use a Dataset made before the fork (ferry's threads do not survive fork: it raises a
RuntimeError that says so), so give make(shard_index, num_shards) when the parent iterates ferry
pipelines of its own while workers start.

Sharding. With DataLoader workers (num_workers > 0) or several ranks (torch.distributed
initialised), every worker of every rank takes its share: shard index rank * num_workers +
worker_id of rank count * num_workers. Given a Dataset, the adapter shards its output
(Dataset.shard: every worker still runs the whole pipeline up to that point); given a function
make(shard_index, num_shards) -> Dataset, it builds each worker's pipeline with it, so that the
sharding can happen at the files (list_files(...).shard(...)) and each worker reads only its own.

Epochs and resume. Each pass (each iter()) that runs to its end is one epoch; the pipeline seed
of epoch e is derived from `seed` and e, so shuffles differ from epoch to epoch and are the same
on every run. A pass stopped early (a break, an exception) is resumed by the next one. With
DataLoader workers the passes run in the workers' copies of this object: call set_epoch(e)
before each epoch (as with DistributedSampler), or every epoch repeats epoch 0's order.
state_dict() holds the epoch and, mid-epoch, ferry's saved iterator state (positions and
generator states, a few hundred bytes); load_state_dict() makes the next iter() go on exactly
after the last element handed out. Exact resume needs num_workers=0: the iterators of worker
processes live in those processes, so with workers state_dict() holds the epoch only and says so
("exact": False).
"""
import torch as _torch
import torch.utils.data as _tud

from . import Dataset as _Dataset

__all__ = ["IterableDataset"]


def _shard_info():
    wi = _tud.get_worker_info()
    workers, worker = (wi.num_workers, wi.id) if wi is not None else (1, 0)
    rank, world = 0, 1
    dist = getattr(_torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return rank * workers + worker, world * workers, wi is not None


def _epoch_seed(seed, epoch):
    # splitmix64 of (seed, epoch): distinct, reproducible seeds per epoch
    x = (seed * 0x9E3779B97F4A7C15 + epoch + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


class IterableDataset(_tud.IterableDataset):
    """dataset: a ferry.Dataset, or make(shard_index, num_shards) -> ferry.Dataset.
    seed: the base of every epoch's pipeline seed. output: "torch" (tensors) or "numpy".
    on_error: "raise" or "skip" (see ferry.Dataset.iterator)."""

    def __init__(self, dataset, seed=0, output="torch", on_error="raise"):
        super().__init__()
        if not isinstance(dataset, _Dataset) and not callable(dataset):
            raise TypeError("dataset must be a ferry.Dataset or a function (shard_index, num_shards) -> Dataset")
        if output not in ("torch", "numpy"):
            raise ValueError(f"output {output!r}: expected 'torch' or 'numpy'")
        self._source = dataset
        self.seed = int(seed)
        self.output = output
        self.on_error = on_error
        self.epoch = 0            # the epoch the next iter() runs (or the one running)
        self._it = None           # the running ferry iterator (num_workers=0)
        self._resume = None       # a saved iterator state for the next iter()
        self._in_worker = False

    def _dataset(self, index, count):
        if isinstance(self._source, _Dataset):
            return self._source if count == 1 else self._source.shard(count, index)
        ds = self._source(index, count)
        if not isinstance(ds, _Dataset):
            raise TypeError(f"the dataset function returned {type(ds).__name__}, not a ferry.Dataset")
        return ds

    def set_epoch(self, epoch):
        """Makes the next iter() run epoch `epoch` (as DistributedSampler.set_epoch). A position
        loaded with load_state_dict for that same epoch is kept."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._resume = None
        self.epoch = epoch

    def __iter__(self):
        index, count, in_worker = _shard_info()
        self._in_worker = in_worker
        ds = self._dataset(index, count)
        state, self._resume = self._resume, None
        epoch = self.epoch
        it = ds.iterator(seed=_epoch_seed(self.seed, epoch), output=self.output, on_error=self.on_error,
                         state=state)
        self._it = it
        ended = False
        try:
            for value in it:  # not `yield from`: that would close `it` before its position is saved
                yield value
            ended = True
        finally:
            if self._it is it:
                self._it = None
                if ended:
                    self.epoch = epoch + 1
                elif not it._it.closed:
                    # stopped early (break, an exception in the loop, Ctrl-C in the training
                    # step): the next pass goes on after the last element handed out
                    try:
                        self._resume = it.save()
                    except Exception:  # a cancelled iterator (Ctrl-C inside ferry) has no position
                        self._resume = None
            it.close()

    def state_dict(self):
        """{"epoch", "iterator" (bytes or None), "exact"}: the position after the last element
        handed out."""
        it = self._it
        if it is not None and not it._it.closed:
            return {"epoch": self.epoch, "iterator": it.save(), "exact": True}
        return {"epoch": self.epoch, "iterator": self._resume, "exact": not self._in_worker}

    def load_state_dict(self, state):
        """Makes the next iter() go on from `state` (from state_dict())."""
        self.epoch = int(state["epoch"])
        self._resume = state.get("iterator")

