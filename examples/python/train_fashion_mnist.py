#!/usr/bin/python3
"""train_fashion_mnist.py - the main job in Python: a PyTorch classifier of Fashion-MNIST fed by a
ferry pipeline through ferry.torch.IterableDataset and a plain DataLoader (no worker processes).

    ./scripts/install.sh                       # makes build/data/fashion-mnist (ferry convert)
    PYTHONPATH=build/python /usr/bin/python3 examples/python/train_fashion_mnist.py

The pipeline is examples/train.c's, written with ferry's Python API:

    list_files(DATA/train.tfrecord-*) -> tfrecord -> take(samples) -> shuffle(10000)
        -> parse_example(image: bytes, label: int64)           (C, ferry's threads, no GIL)
        -> image_augment(PNG decode, a random 28x28 window of the image padded by 2,
                         float32 normalised)                    (C, ferry's threads, no GIL)
        -> batch(64) -> prefetch(AUTOTUNE)

so while torch runs a training step on the main thread, ferry decodes and augments the next
batches on the other core; the batches reach torch without a copy (DLPack). The model is the C
demo's MLP (784 -> 112 -> 10, SGD with momentum, the learning rate decaying to 0 on a cosine), in
torch with one intra-op thread (the other core is the pipeline's). 8 epochs reach about 86 % test
accuracy.

Checkpoints are exact: --checkpoint FILE --stop-after N saves the model, the optimizer and the
pipeline's position (IterableDataset.state_dict(): ferry's iterator state, a few hundred bytes)
after N steps and stops; --resume FILE goes on from there and ends with the same weights as an
uninterrupted run (the printed checksum is the same).

Flags: --data DIR, --epochs N, --samples N (training records used; 0: all), --quick (1 epoch of
8192 images), --seed N, --checkpoint FILE, --stop-after STEPS, --resume FILE.
"""
import argparse
import glob
import hashlib
import math
import os
import sys
import time

try:
    import torch
except ImportError:
    sys.exit("train_fashion_mnist.py needs PyTorch: apt-get install python3-torch")

import ferry
from ferry.torch import IterableDataset

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel mean and std (of value / 255)
FEATURES = {"image": ferry.FixedLenFeature([], bytes), "label": ferry.FixedLenFeature([], "int64")}


def pipeline(data, split, batch, samples, train):
    files = ferry.Dataset.list_files(os.path.join(data, f"{split}.tfrecord-*"))
    ds = ferry.Dataset.tfrecord(files)
    if samples:
        ds = ds.take(samples)
    if train:
        ds = ds.shuffle(10_000)
    ds = ds.parse_example(FEATURES, num_parallel_calls=ferry.AUTOTUNE)
    ds = ds.image_augment(component=0, crop="random" if train else None, size=28 if train else None,
                          padding=2 if train else 0, dtype="float32", mean=[MEAN], std=[STD],
                          num_parallel_calls=ferry.AUTOTUNE)
    return ds.batch(batch).prefetch(ferry.AUTOTUNE)


def model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 112), torch.nn.ReLU(),
                               torch.nn.Linear(112, 10))


def checksum(net):
    h = hashlib.sha256()
    for p in net.parameters():
        h.update(p.detach().numpy().tobytes())
    return h.hexdigest()[:16]


def evaluate(net, data, batch):
    correct = total = 0
    with torch.no_grad():
        for b in pipeline(data, "test", 1000, 0, False).iterator(output="torch"):
            correct += int((net(b["image"]).argmax(1) == b["label"]).sum())
            total += len(b["label"])
    return correct / total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "build", "data",
                                                   "fashion-mnist"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--samples", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--checkpoint")
    ap.add_argument("--stop-after", type=int, default=0)
    ap.add_argument("--resume")
    a = ap.parse_args()
    if a.quick:
        a.epochs, a.samples = 1, 8192
    a.data = os.path.realpath(a.data)  # the pipeline's seeds mix in the path: the same from any cwd
    if not glob.glob(os.path.join(a.data, "train.tfrecord-*")):
        sys.exit(f"no Fashion-MNIST shards in {a.data}: make them with "
                 f"build/ferry convert fashion-mnist {a.data} (./scripts/install.sh does)")
    if a.stop_after and not a.checkpoint:
        sys.exit("--stop-after needs --checkpoint FILE")
    torch.set_num_threads(1)  # the other core runs the pipeline

    net = model(a.seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    samples = a.samples or 60_000
    steps_total = a.epochs * math.ceil(samples / a.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps_total)))
    data = IterableDataset(pipeline(a.data, "train", a.batch, a.samples, True), seed=a.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=0)
    step = 0
    if a.resume:
        ck = torch.load(a.resume)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        data.load_state_dict(ck["data"])
        step = ck["step"]
        print(f"resumed at step {step} (epoch {data.epoch})")
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    while data.epoch < a.epochs:
        epoch, te, seen, loss_sum = data.epoch, time.perf_counter(), 0, 0.0
        for b in loader:
            loss = loss_fn(net(b["image"]), b["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(b["label"])
            loss_sum += float(loss) * len(b["label"])
            if a.stop_after and step == a.stop_after:
                torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "data": data.state_dict(), "step": step}, a.checkpoint)
                print(f"stopped after step {step}: checkpoint {a.checkpoint}")
                return 0
        dt = time.perf_counter() - te
        print(f"epoch {epoch + 1}/{a.epochs}: {seen} images in {dt:.2f} s ({seen / dt:.0f} images/s), "
              f"loss {loss_sum / max(seen, 1):.4f}")
    print(f"trained in {time.perf_counter() - t0:.1f} s; test accuracy {evaluate(net, a.data, a.batch):.2%}")
    print(f"weights checksum {checksum(net)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
