"""The Dataset API from Python: sources, transformations and their edge cases, against what
tf.data gives for the same pipeline."""
import os

import numpy as np
import pytest

import ferry
from helpers import example, flat, png_bytes


def test_range_forms():
    assert flat(ferry.Dataset.range(5)) == [0, 1, 2, 3, 4]
    assert flat(ferry.Dataset.range(2, 7, 2)) == [2, 4, 6]
    assert flat(ferry.Dataset.range(5, 0, -2)) == [5, 3, 1]
    assert flat(ferry.Dataset.range(0)) == []
    assert ferry.Dataset.range(2, 7, 2).cardinality() == 3
    assert len(ferry.Dataset.range(10)) == 10
    with pytest.raises(ferry.InvalidArgumentError, match="step"):
        ferry.Dataset.range(0, 5, 0)
    with pytest.raises(TypeError):
        ferry.Dataset.range()


def test_from_tensor_slices_structures():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([1, 0, 1, 1])
    single = flat(ferry.Dataset.from_tensor_slices(x))
    assert single == x.tolist()
    pairs = flat(ferry.Dataset.from_tensor_slices((x, y)))
    assert pairs == [(x[i].tolist(), int(y[i])) for i in range(4)]
    dicts = flat(ferry.Dataset.from_tensor_slices({"x": x, "y": y}))
    assert dicts == [{"x": x[i].tolist(), "y": int(y[i])} for i in range(4)]
    nested = list(ferry.Dataset.from_tensor_slices(((x, y), {"z": y})))
    assert nested[2][0][0].tolist() == x[2].tolist() and int(nested[2][1]["z"]) == 1
    spec = ferry.Dataset.from_tensor_slices({"x": x, "y": y}).element_spec
    assert spec == {"x": ferry.TensorSpec((3,), np.float32), "y": ferry.TensorSpec((), np.int64)}
    words = flat(ferry.Dataset.from_tensor_slices(["a", "bc", ""]))
    assert words == [b"a", b"bc", b""]
    with pytest.raises(ferry.InvalidArgumentError):
        ferry.Dataset.from_tensor_slices((np.zeros(3), np.zeros(4)))  # dims 0 differ
    with pytest.raises(ferry.InvalidArgumentError):
        ferry.Dataset.from_tensor_slices(np.float32(1))  # a scalar has no rows


def test_from_tensors_and_empty_slices():
    one = list(ferry.Dataset.from_tensors((np.arange(3), b"tag")))
    assert len(one) == 1 and one[0][0].tolist() == [0, 1, 2] and one[0][1] == b"tag"
    assert flat(ferry.Dataset.from_tensor_slices(np.zeros((0, 2)))) == []


def test_map_python_and_builtin():
    ds = ferry.Dataset.range(6)
    assert flat(ds.map(lambda x: x * x)) == [0, 1, 4, 9, 16, 25]
    assert flat(ds.map(ferry.identity, num_parallel_calls=2)) == list(range(6))
    pairs = ds.map(lambda x: (x, x * 0.5))
    assert pairs.element_spec == (ferry.TensorSpec((), np.int64), ferry.TensorSpec((), np.float64))
    assert flat(pairs.map(lambda a, b: {"s": a + b})) == [{"s": i * 1.5} for i in range(6)]
    declared = ds.map(lambda x: x * 0.5, output_signature=ferry.TensorSpec((), np.float32))
    out = list(declared)
    assert out[3].dtype == np.float32 and float(out[3]) == 1.5
    with pytest.raises(ferry.InvalidArgumentError, match="output_signature"):
        ferry.Dataset.range(0).map(lambda x: x)
    with pytest.raises(TypeError):
        ds.map(3)


def test_map_parallel_keeps_order_and_names_its_stage():
    ds = ferry.Dataset.range(200).map(lambda x: x + 1, num_parallel_calls=ferry.AUTOTUNE)
    assert flat(ds) == list(range(1, 201))
    it = ds.iterator()
    next(it)
    names = [s["name"] for s in it.stats()]
    assert any(n.startswith("map[python:") for n in names), names
    it.close()


def test_map_output_errors_are_type_errors_in_position():
    ds = ferry.Dataset.range(4).map(lambda x: (x, x) if x != 2 else x,
                                    output_signature=(ferry.TensorSpec((), np.int64),) * 2)
    it = ds.iterator()
    assert next(it)[0] == 0 and next(it)[0] == 1
    with pytest.raises(ferry.TypeMismatchError, match="tuple"):
        next(it)
    assert next(it)[0] == 3
    with pytest.raises(StopIteration):
        next(it)


def test_filter():
    assert flat(ferry.Dataset.range(10).filter(lambda x: x % 3 == 0)) == [0, 3, 6, 9]
    assert flat(ferry.Dataset.range(5).filter(lambda x: False)) == []
    d = ferry.Dataset.from_tensor_slices({"a": np.arange(5)}).filter(lambda e: e["a"] > 2)
    assert flat(d) == [{"a": 3}, {"a": 4}]


def test_batch_remainders():
    ds = ferry.Dataset.range(10)
    assert [len(b) for b in ds.batch(4)] == [4, 4, 2]
    assert [len(b) for b in ds.batch(4, drop_remainder=True)] == [4, 4]
    assert [len(b) for b in ds.batch(10)] == [10]
    assert [len(b) for b in ds.batch(11, drop_remainder=True)] == []
    assert ds.batch(4, drop_remainder=True).element_spec == ferry.TensorSpec((4,), np.int64)
    with pytest.raises(ferry.InvalidArgumentError, match="batch_size"):
        ds.batch(0)


def test_padded_batch_and_unbatch():
    ds = ferry.Dataset.range(1, 5).map(lambda x: np.arange(x))
    b = list(ds.padded_batch(2, padding_values=-1))
    assert b[0].tolist() == [[0, -1], [0, 1]]
    assert b[1].tolist() == [[0, 1, 2, -1], [0, 1, 2, 3]]
    fixed = list(ds.padded_batch(4, padded_shapes=(6,)))
    assert fixed[0].shape == (4, 6)
    rows = flat(ferry.Dataset.from_tensors(np.arange(6).reshape(3, 2)).unbatch())
    assert rows == [[0, 1], [2, 3], [4, 5]]


def test_shuffle_is_a_permutation_and_seeded():
    ds = ferry.Dataset.range(100).shuffle(32)
    a, b = flat(ds, seed=1), flat(ds, seed=1)
    c = flat(ds, seed=2)
    assert sorted(a) == list(range(100)) and a == b and a != c and a != list(range(100))


def test_repeat_take_skip_shard():
    ds = ferry.Dataset.range(5)
    assert flat(ds.repeat(2)) == [0, 1, 2, 3, 4] * 2
    assert flat(ds.repeat().take(12)) == ([0, 1, 2, 3, 4] * 3)[:12]
    assert ds.repeat().cardinality() == ferry.INFINITE
    assert flat(ds.take(0)) == [] and flat(ds.take(-1)) == list(range(5))
    assert flat(ds.skip(3)) == [3, 4] and flat(ds.skip(9)) == []
    shards = [flat(ferry.Dataset.range(10).shard(3, i)) for i in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ferry.InvalidArgumentError):
        ds.shard(3, 3)


def test_enumerate_zip_concatenate():
    ds = ferry.Dataset.from_tensor_slices((np.array([5, 6]), np.array([7, 8])))
    assert flat(ds.enumerate(start=10)) == [(10, (5, 7)), (11, (6, 8))]
    z = ferry.Dataset.zip(ferry.Dataset.range(3), ferry.Dataset.range(10, 20))
    assert flat(z) == [(0, 10), (1, 11), (2, 12)]
    assert flat(ferry.Dataset.range(2).concatenate(ferry.Dataset.range(5, 7))) == [0, 1, 5, 6]
    with pytest.raises(ferry.TypeMismatchError):
        ferry.Dataset.range(2).concatenate(ferry.Dataset.from_tensor_slices(["a"]))


def test_cache_replays_the_first_pass(tmp_path):
    calls = []

    def note(x):
        calls.append(int(x))
        return x
    ds = ferry.Dataset.range(4).map(note).cache()
    assert flat(ds.repeat(3)) == [0, 1, 2, 3] * 3
    assert calls == [0, 0, 1, 2, 3]  # the first element once to learn the spec, then one pass
    fds = ferry.Dataset.range(4).map(ferry.identity).cache(str(tmp_path / "c"))
    assert flat(fds) == flat(fds) == [0, 1, 2, 3]


def test_interleave_and_flat_map():
    ds = ferry.Dataset.range(1, 4).interleave(lambda x: ferry.Dataset.range(x).map(ferry.identity),
                                              cycle_length=2, block_length=1)
    # tf.data: cycle over range(1)=[0] and range(2)=[0,1], then range(3)
    assert flat(ds) == [0, 0, 1, 0, 1, 2]
    fm = ferry.Dataset.range(3).flat_map(lambda x: ferry.Dataset.from_tensors(x).repeat(2))
    assert flat(fm) == [0, 0, 1, 1, 2, 2]
    par = ferry.Dataset.range(1, 9).interleave(lambda x: ferry.Dataset.range(x), cycle_length=4,
                                               num_parallel_calls=2)
    seq = ferry.Dataset.range(1, 9).interleave(lambda x: ferry.Dataset.range(x), cycle_length=4)
    assert flat(par) == flat(seq)


def test_prefetch_and_autotune_values():
    ds = ferry.Dataset.range(1000).map(ferry.identity, num_parallel_calls=ferry.AUTOTUNE) \
        .batch(100).prefetch(ferry.AUTOTUNE)
    got = np.concatenate(list(ds))
    assert got.tolist() == list(range(1000))


def test_text_lines_and_tfrecord_files(tmp_path):
    t = tmp_path / "a.txt"
    t.write_bytes(b"one\ntwo\r\n\nlast")
    assert flat(ferry.Dataset.text_lines(str(t))) == [b"one", b"two", b"", b"last"]
    recs = [b"", b"x" * 1000, b"abc"]
    p = tmp_path / "r.tfrecord"
    assert ferry.write_tfrecord(p, recs) == 3
    assert flat(ferry.Dataset.tfrecord(p)) == recs
    gz = tmp_path / "r.tfrecord.gz"
    ferry.write_tfrecord(gz, recs, compression_type="GZIP")
    assert flat(ferry.Dataset.tfrecord([str(gz)], compression_type="GZIP")) == recs
    files = ferry.Dataset.list_files(str(tmp_path / "*.tfrecord"))
    assert flat(ferry.Dataset.tfrecord(files)) == recs
    with pytest.raises(ferry.NotFoundError, match="no file matches"):
        ferry.Dataset.list_files(str(tmp_path / "*.none"))
    with pytest.raises(ValueError, match="compression_type"):
        ferry.Dataset.tfrecord(p, compression_type="LZ4")


def test_fixed_length_records(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"HH" + b"abcdefgh" + b"F")
    ds = ferry.Dataset.fixed_length_records(str(p), 4, header_bytes=2, footer_bytes=1)
    assert flat(ds) == [b"abcd", b"efgh"]


def test_parse_example_dict_spec():
    recs = [example(label=i, x=[float(i), 2.0], tags=[b"a"] * i, name=f"n{i}") for i in range(3)]
    ds = ferry.Dataset.from_tensor_slices(recs).parse_example({
        "label": ferry.FixedLenFeature([], np.int64),
        "x": ferry.FixedLenFeature([2], np.float32),
        "tags": ferry.VarLenFeature(bytes, with_lengths=True),
        "name": ferry.FixedLenFeature([], bytes),
        "missing": ferry.FixedLenFeature([], np.int64, default_value=-7),
    })
    out = list(ds)
    assert set(out[0]) == {"label", "x", "tags", "tags:lengths", "name", "missing"}
    assert int(out[2]["label"]) == 2 and out[2]["x"].tolist() == [2.0, 2.0]
    assert out[2]["tags"] == [b"a", b"a"] and int(out[2]["tags:lengths"]) == 2
    assert out[1]["name"] == b"n1" and int(out[0]["missing"]) == -7
    batched = list(ferry.Dataset.from_tensor_slices(recs).batch(3).parse_example({
        "label": ferry.FixedLenFeature([], np.int64), "tags": ferry.VarLenFeature(bytes)}))
    assert batched[0]["label"].tolist() == [0, 1, 2]
    assert batched[0]["tags"] == [[b"", b""], [b"a", b""], [b"a", b"a"]]
    it = ferry.Dataset.from_tensor_slices(recs).parse_example(
        {"nope": ferry.FixedLenFeature([], np.int64)}).iterator()
    with pytest.raises(ferry.NotFoundError, match="nope"):
        next(it)
    with pytest.raises(ferry.InvalidArgumentError):
        ferry.Dataset.range(3).parse_example({"a": ferry.FixedLenFeature([], np.int64)})


def test_image_folder_decode_and_augment(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for cls in ("cat", "dog"):
        os.makedirs(tmp_path / cls)
        for i in range(3):
            px = rng.integers(0, 256, size=(20 + i, 30, 3), dtype=np.uint8)
            (tmp_path / cls / f"{i}.png").write_bytes(png_bytes(px))
            images[(cls, i)] = px
    ds = ferry.Dataset.image_folder(str(tmp_path))
    assert ds.class_names == ["cat", "dog"]
    decoded = list(ds.decode_image(channels=3))
    assert len(decoded) == 6 and decoded[4][0].tolist() == images[("dog", 1)].tolist()
    assert [int(y) for _, y in decoded] == [0, 0, 0, 1, 1, 1]
    aug = ds.image_augment(size=16, crop="random_resized", flip=0.5, dtype="float32", chw=True,
                           mean=[0.5] * 3, std=[0.25] * 3, num_parallel_calls=2).batch(3)
    b1, b2 = [x for x, _ in aug.iterator(seed=3)], [x for x, _ in aug.iterator(seed=3)]
    assert b1[0].shape == (3, 3, 16, 16) and b1[0].dtype == np.float32
    assert all((a == b).all() for a, b in zip(b1, b2))
    center = list(ds.image_augment(size=(8, 10), crop="center"))
    px = images[("cat", 0)]
    top, left = round((20 - 8) / 2), round((30 - 10) / 2)
    assert center[0][0].tolist() == px[top:top + 8, left:left + 10].tolist()
    with pytest.raises(ferry.InvalidArgumentError, match="crop"):
        ds.image_augment(size=8, crop="diagonal")


def test_generator_and_specs():
    def gen():
        for i in range(4):
            yield {"i": i, "s": "x" * i}
    sig = {"i": ferry.TensorSpec((), np.int64), "s": ferry.TensorSpec((), bytes)}
    ds = ferry.Dataset.from_generator(gen, output_signature=sig)
    assert flat(ds) == [{"i": i, "s": b"x" * i} for i in range(4)]
    assert flat(ds.batch(3))[1] == {"i": [3], "s": [b"xxx"]}
    with pytest.raises(TypeError):
        ferry.Dataset.from_generator(gen, output_signature=3)


def test_real_tfrecords_from_shared_data():
    import conftest
    d = os.path.join(conftest.SHARED_DATA, "tfrecord")
    if not os.path.isdir(d):
        pytest.skip(f"no shared data at {d} (the TFRecord files written by TensorFlow tools)")
    cifar = ferry.Dataset.tfrecord(os.path.join(d, "cifar_test_tiny.tfrecord")).parse_example({
        "image": ferry.FixedLenFeature([], bytes), "label": ferry.FixedLenFeature([], np.int64)})
    labels = [int(e["label"]) for e in cifar]
    assert len(labels) == 100 and sum(labels) == 401
    images = list(cifar.decode_image(channels=3).batch(50))
    assert images[0]["image"].shape == (50, 32, 32, 3)
    taxi = ferry.Dataset.list_files(os.path.join(d, "csv_example_gen", "*.gz"))
    shards = [sum(1 for _ in ferry.Dataset.tfrecord(taxi.shard(5, i), compression_type="GZIP",
                                                    num_parallel_reads=2)) for i in range(5)]
    assert sum(shards) == 5091
    penguins = ferry.Dataset.tfrecord(os.path.join(d, "penguin_eval.tfrecord.gz"), compression_type="GZIP")
    species = penguins.batch(100).parse_example({"species": ferry.FixedLenFeature([], np.int64)})
    assert int(next(iter(species))["species"].sum()) == 84


def test_for_passes_reshuffle_and_big_endian_arrays():
    ds = ferry.Dataset.range(50).shuffle(50)
    first, second = [int(x) for x in ds], [int(x) for x in ds]
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    again = ferry.Dataset.range(50).shuffle(50)
    assert [int(x) for x in again] == first  # the same on every run
    be = np.arange(3, dtype=">i4")
    assert flat(ferry.Dataset.from_tensor_slices(be)) == [0, 1, 2]
    out = list(ferry.Dataset.range(2).map(lambda x: np.array(x + 0.5, dtype=">f8")))
    assert [float(v) for v in out] == [0.5, 1.5]
    assert flat(ferry.Dataset.text_lines([os.fsencode(__file__)]).take(1))[0].startswith(b'"""')
