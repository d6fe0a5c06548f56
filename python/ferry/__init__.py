"""ferry: input pipelines for training, tf.data's model run by C threads in your own process.

    import ferry
    ds = (ferry.Dataset.tfrecord(files)
          .map(ferry.parse_example, ...)            # or any Python function
          .shuffle(10_000)
          .batch(256)
          .prefetch(ferry.AUTOTUNE))
    for batch in ds:                               # dicts or tuples of numpy arrays
        ...

How it runs. A Dataset is an immutable description; iterating it starts ferry's threads, which
prepare the next batches while your loop works on the current one. The built-in transformations
(parse_example, decode_image, image_augment, batch, shuffle, ...) run in C on those threads without
the GIL, so they run in parallel with each other and with your training step. A Python function
given to map, filter, from_generator or interleave takes the GIL for each call: Python callables
run one at a time, and they compete with your loop for the GIL. A Python map runs on one thread
(map(..., releases_gil=True) allows more, for functions that spend their time in numpy or I/O
calls that release the GIL). Its stage is named "map[python:NAME]" in the stats and the report,
and the report counts on one thread for it, so a pipeline held back by one names it and does not
promise what more threads cannot give (Iterator.report()).

Zero copy. Iteration yields numpy arrays (or ferry.Tensor objects, or torch tensors: see
Dataset.iterator's `output`) whose memory is ferry's own: nothing is copied on the way out. A
ferry.Tensor exposes the buffer protocol, __array_interface__-free numpy conversion and
__dlpack__ / __dlpack_device__, so np.asarray(t) and torch.from_dlpack(t) share its bytes. The bytes
live while anything in Python refers to them, and they count against the runtime's byte budget
(ferry.configure(memory_budget=...)) until the last reference goes. Arrays are writable when ferry
holds no other reference to their bytes (a fresh batch, a map's output); a cached element or a
slice of an input array is shared and read-only. bytes tensors (strings, encoded images) become
bytes objects, or lists of them: that one conversion copies.

Errors. A failure of one element (a corrupt record, a Python function that raised) is raised from
next() as a ferry.Error subclass that names the stage and the cause, in the element's position;
the iterator goes on with the next element if you call next() again (a `for` loop stops at the
exception, as for any Python iterator; use `on_error="skip"` or Dataset.ignore_errors() to drop
failed elements). Ctrl-C stops a waiting next() within about 20 ms; dropping or closing an
iterator stops and joins every thread it started.
"""
import atexit as _atexit
import os as _os
import threading as _threading
import weakref as _weakref

import numpy as _np

from . import _ferry
from ._ferry import (BudgetExceededError, CancelledError, CorruptDataError, Error, FileIOError,
                     InvalidArgumentError, MisuseError, NotFoundError, OutOfMemoryError,
                     OutOfRangeError, StateMismatchError, Tensor, TooLargeError,
                     TruncatedDataError, TypeMismatchError, UnsupportedError, UserFunctionError,
                     VersionError)

__all__ = [
    "AUTOTUNE", "INFINITE", "UNKNOWN", "Dataset", "Iterator", "Tensor", "TensorSpec",
    "FixedLenFeature", "VarLenFeature", "configure", "runtime", "version", "identity",
    "write_tfrecord", "example_from_json", "example_to_json", "Error", "InvalidArgumentError",
    "MisuseError", "OutOfMemoryError", "FileIOError", "CancelledError", "CorruptDataError",
    "TruncatedDataError", "UserFunctionError", "TypeMismatchError", "NotFoundError",
    "OutOfRangeError", "StateMismatchError", "VersionError", "UnsupportedError", "TooLargeError",
    "BudgetExceededError",
]

AUTOTUNE = _ferry.AUTOTUNE
"""Threads or buffer sizes chosen and changed by ferry's autotuner from what it measures."""
INFINITE = _ferry.INFINITE
"""Cardinality of an endless dataset; repeat(INFINITE) is repeat()."""
UNKNOWN = _ferry.UNKNOWN
"""Cardinality that cannot be known before iterating."""

version = _ferry.version

# ------------------------------------------------------------------------------------------------
# The runtime: one per process by default.
# ------------------------------------------------------------------------------------------------
_lock = _threading.Lock()
_runtime = None
_runtime_options = {}
_live_iterators = _weakref.WeakSet()


def configure(memory_budget=0, cpu_budget=0, trace_bytes=0):
    """Sets the options of the process's ferry runtime. Call it before the first Dataset is made.

    memory_budget: bytes that every buffer together (prefetch, parallel map, shuffle, cache, and
        the batches Python still holds) may use; 0: half of the machine's memory.
    cpu_budget: cores ferry may keep busy (your loop's own included); 0: every online core.
    trace_bytes: memory for a trace of what every thread does (Runtime.trace_json); 0: off,
        unless the environment variable FERRY_TRACE names a file.
    """
    global _runtime_options
    with _lock:
        if _runtime is not None:
            raise MisuseError("ferry.configure: the runtime already exists (call configure before "
                              "making the first Dataset)")
        for k, v in (("memory_budget", memory_budget), ("cpu_budget", cpu_budget),
                     ("trace_bytes", trace_bytes)):
            if not isinstance(v, int) or v < 0:
                raise InvalidArgumentError(f"ferry.configure: {k} must be an int >= 0, got {v!r}")
        _runtime_options = dict(memory_budget=memory_budget, cpu_budget=cpu_budget,
                                trace_bytes=trace_bytes)


def runtime():
    """The process's ferry runtime (made at the first call): its stats(), trace_json() and
    report_page_write()."""
    global _runtime
    r = _runtime
    if r is None:
        with _lock:
            if _runtime is None:
                _runtime = _ferry.Runtime(**_runtime_options)
            r = _runtime
    return r


def _after_fork_in_child():
    # Forked while ferry's threads ran: what was made before is unusable here (see pyferry.c);
    # new pipelines get a new runtime.
    global _runtime
    if _ferry.fork_stale():
        _runtime = None
        _live_iterators.clear()


_os.register_at_fork(after_in_child=_after_fork_in_child)


@_atexit.register
def _close_all():
    # Threads that call Python must be stopped while the interpreter still runs.
    for it in list(_live_iterators):
        it.close()


# ------------------------------------------------------------------------------------------------
# dtypes, specs and structures
# ------------------------------------------------------------------------------------------------
_NUMPY_NAMES = {
    _np.dtype(_np.bool_): "bool", _np.dtype(_np.int8): "int8", _np.dtype(_np.int16): "int16",
    _np.dtype(_np.int32): "int32", _np.dtype(_np.int64): "int64", _np.dtype(_np.uint8): "uint8",
    _np.dtype(_np.uint16): "uint16", _np.dtype(_np.uint32): "uint32",
    _np.dtype(_np.uint64): "uint64", _np.dtype(_np.float16): "float16",
    _np.dtype(_np.float32): "float32", _np.dtype(_np.float64): "float64",
}
_FERRY_NAMES = set(_NUMPY_NAMES.values()) | {"bytes", "bfloat16"}


def _dtype_name(d):
    """ferry's name for a dtype given as a numpy dtype, a type, or a name ("bytes" and "string"
    for byte strings, "bfloat16")."""
    if d in (bytes, str, object) or d in ("bytes", "string", "str"):
        return "bytes"
    if isinstance(d, str) and d in _FERRY_NAMES:
        return d
    try:
        nd = _np.dtype(d)
    except TypeError:
        raise TypeError(f"not a dtype: {d!r}") from None
    if nd.kind in "SUO":
        return "bytes"
    if nd.byteorder not in "=|":
        nd = nd.newbyteorder("=")  # ferry's tensors are native; values are converted
    try:
        return _NUMPY_NAMES[nd]
    except KeyError:
        raise TypeError(f"numpy dtype {nd} has no ferry dtype") from None


class TensorSpec:
    """The dtype and shape of one component (tf.TensorSpec). shape: a tuple of ints and Nones
    (unknown sizes), or None for an unknown rank. dtype: a numpy dtype or type, or "bytes"."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape = None if shape is None else tuple(None if d is None else int(d) for d in shape)
        self.dtype = _dtype_name(dtype)

    def __repr__(self):
        return f"TensorSpec(shape={self.shape}, dtype={self.dtype!r})"

    def __eq__(self, other):
        return isinstance(other, TensorSpec) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self):
        return hash((self.shape, self.dtype))


class FixedLenFeature:
    """A feature with exactly prod(shape) values (tf.io.FixedLenFeature). dtype: int64, float32
    or bytes. default_value: used when the key is missing (else the record is an error)."""

    def __init__(self, shape, dtype, default_value=None):
        self.shape, self.dtype, self.default_value = tuple(shape), _dtype_name(dtype), default_value


class VarLenFeature:
    """A feature with any number of values, as a 1-D array (padded with zeros when batched before
    parsing). with_lengths adds "KEY:lengths"; required makes a missing key an error."""

    def __init__(self, dtype, with_lengths=False, required=False):
        self.dtype, self.with_lengths, self.required = _dtype_name(dtype), with_lengths, required


_LEAF = None  # a structure is _LEAF, a tuple of structures or a dict of them


def _structure_of(value):
    if isinstance(value, tuple):
        return tuple(_structure_of(v) for v in value)
    if isinstance(value, dict):
        return {k: _structure_of(v) for k, v in value.items()}
    return _LEAF


def _flatten(value, structure):
    if structure is _LEAF:
        return [value]
    out = []
    if isinstance(structure, tuple):
        if not isinstance(value, tuple) or len(value) != len(structure):
            raise TypeError(f"expected a tuple of {len(structure)}, got {type(value).__name__}")
        for v, s in zip(value, structure):
            out += _flatten(v, s)
    else:
        if not isinstance(value, dict) or set(value) != set(structure):
            raise TypeError(f"expected a dict with keys {sorted(structure)}, got "
                            f"{sorted(value) if isinstance(value, dict) else type(value).__name__}")
        for k, s in structure.items():
            out += _flatten(value[k], s)
    return out


def _count(structure):
    if structure is _LEAF:
        return 1
    vals = structure if isinstance(structure, tuple) else structure.values()
    return sum(_count(s) for s in vals)


def _pack(flat, structure, pos=0):
    if structure is _LEAF:
        return flat[pos], pos + 1
    if isinstance(structure, tuple):
        out = []
        for s in structure:
            v, pos = _pack(flat, s, pos)
            out.append(v)
        return tuple(out), pos
    out = {}
    for k, s in structure.items():
        out[k], pos = _pack(flat, s, pos)
    return out, pos


def _c_kind(structure):
    """(kind, keys, flat) for the C layer: one value, a flat tuple, a flat dict; anything nested
    travels as a flat tuple that Python packs (flat False)."""
    if structure is _LEAF:
        return 0, None, True
    if isinstance(structure, tuple):
        return 1, None, all(s is _LEAF for s in structure)
    if all(s is _LEAF for s in structure.values()):
        return 2, tuple(structure), True
    return 1, None, False


def _wrap_callable(fn, structure):
    """fn as the C layer calls it: with the components as separate arguments (a tuple), the dict,
    or the value; a nested structure is packed first, as tf.data passes it."""
    kind, keys, flat = _c_kind(structure)
    if flat:
        return fn, kind, keys
    def packed(*args):
        value = _pack(args, structure)[0]
        return fn(*value) if isinstance(value, tuple) else fn(value)
    packed.__qualname__ = getattr(fn, "__qualname__", "fn")
    return packed, 1, None


def _nest_wrap_result(fn, out_structure):
    """fn whose nested result is flattened to a tuple for the C layer."""
    def flat(*args):
        return tuple(_flatten(fn(*args), out_structure))
    flat.__qualname__ = getattr(fn, "__qualname__", "fn")
    return flat


def _as_value(x):
    """An input value for from_tensor_slices / from_tensors: numbers as a C-contiguous numpy
    array (shared when it already is one), byte strings as they are."""
    if isinstance(x, (bytes, str)):
        return x
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, (bytes, str)) for v in _leaves_of(x)):
        return x
    return _np.asarray(x, order="C")


def _leaves_of(x):
    for v in x:
        if isinstance(v, (list, tuple)):
            yield from _leaves_of(v)
        else:
            yield v


def _paths(filenames):
    """A path (str, bytes, os.PathLike) or a sequence of them, as a list of str."""
    import os
    if isinstance(filenames, (str, bytes)) or hasattr(filenames, "__fspath__"):
        filenames = [filenames]
    return [os.fsdecode(os.fspath(f)) for f in filenames]


def _name(op, fn):
    qn = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "fn"
    room = 63 - len(f"{op}[python:]")
    if len(qn.encode()) > room:  # keep the end: "...<locals>.<lambda>" says more than the start
        qn = "..." + qn.encode()[-(room - 3):].decode("utf-8", "ignore")
    return f"{op}[python:{qn}]"


class _Identity:
    """The built-in identity map function: runs in C, without the GIL."""

    __qualname__ = "identity"

    def __repr__(self):
        return "ferry.identity"


identity = _Identity()


def _parse_example_features(features):
    if not isinstance(features, dict) or not features:
        raise InvalidArgumentError("parse_example: features must be a non-empty dict of "
                                   "FixedLenFeature / VarLenFeature")
    out = []
    for key, f in features.items():
        if isinstance(f, FixedLenFeature):
            out.append((key, f.dtype, 0, f.shape, f.default_value, False, False))
        elif isinstance(f, VarLenFeature):
            out.append((key, f.dtype, 1, (), None, f.with_lengths, f.required))
        else:
            raise InvalidArgumentError(f"parse_example: feature '{key}' is {type(f).__name__}; "
                                       "expected FixedLenFeature or VarLenFeature")
    return out


# ------------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------------
class Dataset:
    """An immutable pipeline description (tf.data.Dataset). Make one with a source (range,
    from_tensor_slices, tfrecord, text_lines, image_folder, from_generator, ...) and chain
    transformations; iterate it, or call iterator() for the options."""

    __slots__ = ("_h", "_structure", "_passes")

    def __init__(self, handle, structure=_LEAF):
        if not isinstance(handle, _ferry.DatasetHandle):
            raise TypeError("Dataset objects are made by ferry.Dataset's sources and transformations")
        self._h = handle
        self._structure = structure
        self._passes = 0  # for loops made so far: each gets its own seed

    def _derive(self, handle, structure=None):
        return Dataset(handle, self._structure if structure is None else structure)

    # -------------------------------------------------------------------- sources
    @staticmethod
    def range(*args, name=None):
        """range(stop), range(start, stop[, step]): int64 scalars, as Python's range."""
        if not 1 <= len(args) <= 3:
            raise TypeError(f"range expected 1 to 3 arguments, got {len(args)}")
        start, stop, step = (0, args[0], 1) if len(args) == 1 else (args + (1,))[:3]
        return Dataset(_ferry.range(runtime(), int(start), int(stop), int(step), name))

    @staticmethod
    def from_tensor_slices(tensors, name=None):
        """One element per row of the arrays in `tensors` (an array, a tuple or a dict of them),
        sliced along their first dim. numpy arrays are shared, not copied: do not write to them
        while the dataset lives. Lists of bytes or str become bytes elements (copied)."""
        structure = _structure_of(tensors)
        flat = [_as_value(v) for v in _flatten(tensors, structure)]
        return Dataset(_ferry.from_tensor_slices(runtime(), flat, True, name), structure)

    @staticmethod
    def from_tensors(tensors, name=None):
        """One element: `tensors` (an array, a tuple or a dict of them), shared as in
        from_tensor_slices."""
        structure = _structure_of(tensors)
        flat = [_as_value(v) for v in _flatten(tensors, structure)]
        return Dataset(_ferry.from_tensor_slices(runtime(), flat, False, name), structure)

    @staticmethod
    def from_generator(generator, output_signature, cardinality=None, name=None):
        """The values of generator() (called once per iteration), which must match
        output_signature: a TensorSpec, or a tuple or dict of them. Values are converted to the
        declared dtypes (casts of the same kind only). Runs with the GIL; a restored iterator
        calls generator() again and replays the positions already produced."""
        structure = _structure_of_specs(output_signature)
        specs = _flatten(output_signature, structure)
        kind, keys, flat = _c_kind(structure)
        fn = generator
        if not flat:
            def fn():
                for v in generator():
                    yield tuple(_flatten(v, structure))
        card = 0 if cardinality is None else int(cardinality)
        h = _ferry.generator(runtime(), fn, [s.dtype for s in specs], [s.shape for s in specs], kind,
                             keys, card, name or _name("generator", generator))
        return Dataset(h, structure)

    @staticmethod
    def list_files(file_pattern, shuffle=False, seed=None, name=None):
        """The files matching a glob pattern, matched now, sorted (shuffle: a new order every
        iteration drawn from the pipeline seed and `seed`)."""
        return Dataset(_ferry.list_files(runtime(), str(file_pattern), bool(shuffle), int(seed or 0), name))

    @staticmethod
    def tfrecord(filenames, compression_type=None, buffer_size=None, num_parallel_reads=None, name=None):
        """The records of TFRecord files (tf.data.TFRecordDataset): bytes scalars. filenames: a
        path, a list of paths, or a Dataset of paths (list_files)."""
        files = filenames._h if isinstance(filenames, Dataset) else _paths(filenames)
        return Dataset(_ferry.tfrecord(runtime(), files, compression_type, int(buffer_size or 0),
                                       num_parallel_reads, name))

    @staticmethod
    def text_lines(filenames, compression_type=None, buffer_size=None, name=None):
        """The lines of text files without their line endings (tf.data.TextLineDataset)."""
        files = _paths(filenames)
        return Dataset(_ferry.text_lines(runtime(), files, compression_type, int(buffer_size or 0), name))

    @staticmethod
    def fixed_length_records(filenames, record_bytes, header_bytes=0, footer_bytes=0,
                             compression_type=None, buffer_size=None, name=None):
        """Records of record_bytes each (tf.data.FixedLengthRecordDataset)."""
        files = _paths(filenames)
        return Dataset(_ferry.fixed_length_records(runtime(), files, int(record_bytes), int(header_bytes),
                                                   int(footer_bytes), compression_type,
                                                   int(buffer_size or 0), name))

    @staticmethod
    def image_folder(root, name=None):
        """(encoded image bytes, int64 label) per file of root/CLASS/FILE (.jpg, .jpeg, .png), as
        torchvision's ImageFolder; class_names gives the labels' names. Decode with
        decode_image or image_augment."""
        ds = Dataset(_ferry.image_folder(runtime(), str(root), name), (_LEAF, _LEAF))
        return ds

    @property
    def class_names(self):
        """An image_folder dataset's class names, in label order."""
        return self._h.class_names()

    @staticmethod
    def zip(*datasets, name=None):
        """Tuples of the inputs' elements (tf.data.Dataset.zip); ends with the shortest."""
        if len(datasets) == 1 and isinstance(datasets[0], (tuple, list)):
            datasets = tuple(datasets[0])
        if not datasets or not all(isinstance(d, Dataset) for d in datasets):
            raise TypeError("zip takes ferry Datasets")
        return Dataset(_ferry.zip([d._h for d in datasets], name), tuple(d._structure for d in datasets))

    # -------------------------------------------------------------------- transformations
    def map(self, map_func, num_parallel_calls=None, deterministic=None, output_signature=None,
            seed=0, releases_gil=False, name=None):
        """map_func applied to every element. ferry.identity runs in C; a Python function takes
        the GIL per call (see the module's doc). The function gets the components as arguments
        (a tuple element), the dict, or the value. Without output_signature ferry calls it once
        on the first element now, to learn its output's dtypes and ranks (as tf.data traces):
        that reads the input's first element once more, so give output_signature when the input
        cannot be read twice (a generator that yields only once) or the function has side
        effects.
        num_parallel_calls: None or 0 inline, N threads, or AUTOTUNE. A Python function runs on
        one thread at most (off the consumer's thread: it still runs ahead), since its calls
        serialise on the GIL, and the report counts on one; releases_gil=True is for a function
        that spends its time in calls that release the GIL (numpy on large arrays, I/O): then up
        to num_parallel_calls calls run at once. deterministic=False hands results out as they
        finish."""
        det = True if deterministic is None else bool(deterministic)
        if map_func is identity:
            h = _ferry.map(self._h, None, num_parallel_calls, det, 0, None, 0, None, [], [], seed, 0, name)
            return self._derive(h)
        if not callable(map_func):
            raise TypeError(f"map_func must be callable, got {type(map_func).__name__}")
        fn, in_kind, in_keys = _wrap_callable(map_func, self._structure)
        if output_signature is None:
            out_structure, specs = self._trace(fn, in_kind, in_keys)
        else:
            out_structure = _structure_of_specs(output_signature)
            specs = _flatten(output_signature, out_structure)
        out_kind, out_keys, flat = _c_kind(out_structure)
        if not flat:
            fn = _nest_wrap_result(fn, out_structure)
        h = _ferry.map(self._h, fn, num_parallel_calls, det, in_kind, in_keys, out_kind, out_keys,
                       [s.dtype for s in specs], [s.shape for s in specs], seed, 0 if releases_gil else 1,
                       name or _name("map", map_func))
        return Dataset(h, out_structure)

    def _trace(self, fn, in_kind, in_keys):
        it = _ferry.iterator(self._h, in_kind, in_keys, 0, 0, False, False, False, None)
        try:
            first = next(it)
        except StopIteration:
            raise InvalidArgumentError("map: the input is empty, so the function's output cannot be "
                                       "learnt from its first element: give output_signature") from None
        finally:
            it.close()
        args = first if in_kind == 1 else (first,)
        result = fn(*args)
        structure = _structure_of(result)
        specs = []
        for v in _flatten(result, structure):
            if isinstance(v, (bytes, str)):
                specs.append(TensorSpec((), "bytes"))
            elif isinstance(v, list) and v and isinstance(next(_leaves_of(v), None), (bytes, str)):
                specs.append(TensorSpec(None, "bytes"))
            else:
                a = _np.asarray(v)
                specs.append(TensorSpec((None,) * a.ndim, a.dtype))
        return structure, specs

    def filter(self, predicate, name=None):
        """The elements for which predicate(...) is true (called as map_func is). Runs with the
        GIL on the thread that pulls this stage."""
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
        fn, kind, keys = _wrap_callable(predicate, self._structure)
        return self._derive(_ferry.filter(self._h, fn, kind, keys, name or _name("filter", predicate)))

    def batch(self, batch_size, drop_remainder=False, name=None):
        """Stacks batch_size consecutive elements along a new first dim; the last batch is
        shorter unless drop_remainder. A batch right after a parallel map runs fused with it."""
        return self._derive(_ferry.batch(self._h, int(batch_size), bool(drop_remainder), name))

    def padded_batch(self, batch_size, padded_shapes=None, padding_values=None, drop_remainder=False,
                     name=None):
        """batch, padding each component to the batch's longest (or to padded_shapes, a
        structure of shapes with None for "longest") with padding_values (0 / b"")."""
        shapes = None if padded_shapes is None else _flatten(padded_shapes, self._structure)
        values = None if padding_values is None else _flatten(padding_values, self._structure)
        return self._derive(_ferry.padded_batch(self._h, int(batch_size), bool(drop_remainder), shapes,
                                                values, name))

    def unbatch(self, name=None):
        """Splits every element along its first dim."""
        return self._derive(_ferry.simple("unbatch", self._h, 0, 0, 0, False, name))

    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True, name=None):
        """Random order from a buffer of buffer_size elements; the draws come from the iterator's
        seed and `seed`, so a seed gives the same order on every run."""
        return self._derive(_ferry.simple("shuffle", self._h, int(buffer_size), 0, int(seed or 0),
                                          bool(reshuffle_each_iteration), name))

    def repeat(self, count=None, name=None):
        """The elements count times over (None or INFINITE: forever)."""
        c = INFINITE if count is None or count == -1 else int(count)
        return self._derive(_ferry.simple("repeat", self._h, c, 0, 0, False, name))

    def take(self, count, name=None):
        """The first count elements (-1: all)."""
        c = INFINITE if count == -1 else int(count)
        return self._derive(_ferry.simple("take", self._h, c, 0, 0, False, name))

    def skip(self, count, name=None):
        """All but the first count elements (-1: none)."""
        c = INFINITE if count == -1 else int(count)
        return self._derive(_ferry.simple("skip", self._h, c, 0, 0, False, name))

    def shard(self, num_shards, index, name=None):
        """Every num_shards-th element, starting at index."""
        return self._derive(_ferry.simple("shard", self._h, int(num_shards), int(index), 0, False, name))

    def enumerate(self, start=0, name=None):
        """(counter, element) pairs."""
        structure = (_LEAF, self._structure)
        return Dataset(_ferry.simple("enumerate", self._h, int(start), 0, 0, False, name), structure)

    def ignore_errors(self, name=None):
        """Drops the elements whose production failed (counted in the stats)."""
        return self._derive(_ferry.simple("ignore_errors", self._h, 0, 0, 0, False, name))

    def prefetch(self, buffer_size, name=None):
        """Prepares up to buffer_size elements ahead on a background thread (AUTOTUNE: sized by
        ferry)."""
        return self._derive(_ferry.simple("prefetch", self._h, int(buffer_size), 0, 0, False, name))

    def cache(self, filename="", name=None):
        """Keeps the first pass's elements (in memory, or in a file) and replays them."""
        return self._derive(_ferry.cache(self._h, str(filename) if filename else None, name))

    def concatenate(self, dataset, name=None):
        """This dataset's elements, then dataset's."""
        return self._derive(_ferry.concatenate(self._h, dataset._h, name))

    def interleave(self, map_func, cycle_length=None, block_length=None, num_parallel_calls=None,
                   deterministic=None, name=None):
        """map_func (a Python function returning a Dataset) per element, cycle_length of them
        read at once, block_length elements from each in turn (tf.data's order)."""
        return self._interleave(map_func, cycle_length, block_length, num_parallel_calls,
                                deterministic, False, name)

    def flat_map(self, map_func, name=None):
        """The Datasets map_func returns, one after another."""
        return self._interleave(map_func, None, None, None, None, True, name)

    def _interleave(self, map_func, cycle, block, par, det, flat, name):
        if not callable(map_func):
            raise TypeError(f"map_func must be callable, got {type(map_func).__name__}")
        fn, kind, keys = _wrap_callable(map_func, self._structure)
        box = {}

        def make(*args):
            ds = fn(*args)
            if not isinstance(ds, Dataset):
                raise TypeError(f"{getattr(map_func, '__qualname__', 'map_func')} must return a ferry.Dataset, "
                                f"got {type(ds).__name__}")
            box.setdefault("structure", ds._structure)
            return ds
        make.__qualname__ = getattr(map_func, "__qualname__", "fn")
        h = _ferry.interleave(self._h, make, kind, keys, int(cycle or 0), int(block or 0), par,
                              True if det is None else bool(det), flat,
                              name or _name("flat_map" if flat else "interleave", map_func))
        return Dataset(h, box.get("structure", _LEAF))

    def apply(self, transformation_func):
        """transformation_func(self)."""
        return transformation_func(self)

    # -------------------------------------------------------------------- built-in C maps
    def parse_example(self, features, num_parallel_calls=None, deterministic=None, name=None):
        """Parses serialized tf.train.Example records (component 0, a bytes scalar or a batch of
        them) into a dict {key: array}, in C on ferry's threads. features: {key: FixedLenFeature
        or VarLenFeature}."""
        h, names = _ferry.parse_example(self._h, _parse_example_features(features), num_parallel_calls,
                                        True if deterministic is None else bool(deterministic), name)
        return Dataset(h, {n: _LEAF for n in names})

    def decode_image(self, channels=0, component=0, max_pixels=0, num_parallel_calls=None,
                     deterministic=None, name=None):
        """Decodes the JPEG or PNG in a component (flat index) into uint8 [h, w, c], in C."""
        h = _ferry.decode_image(self._h, int(channels), int(component), int(max_pixels), num_parallel_calls,
                                True if deterministic is None else bool(deterministic), name)
        return self._derive(h)

    _CROPS = {None: 0, "none": 0, "center": 1, "random": 2, "random_resized": 3}
    _RESIZES = {"bilinear": 0, "area": 1}

    def image_augment(self, size=None, crop=None, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), padding=0,
                      flip=0.0, vertical_flip=0.0, brightness=0.0, contrast=0.0, dtype="uint8",
                      chw=False, mean=None, std=None, resize="bilinear", channels=0, component=0,
                      decode_whole=False, max_pixels=0, seed=0, num_parallel_calls=None,
                      deterministic=None, name=None):
        """Decode (when encoded), crop ("center", "random" with padding, "random_resized" with
        scale and ratio, or None: the whole image resized to size), flip, brightness and
        contrast, normalise with mean and std, as dtype ("uint8", "float32", "float16",
        "bfloat16"), HWC or CHW: one fused C map with torchvision's semantics (see ferry.h,
        ferry_dataset_image_augment). size: (height, width) or an int."""
        if isinstance(size, int):
            size = (size, size)
        hgt, wid = (0, 0) if size is None else (int(size[0]), int(size[1]))
        if crop not in self._CROPS:
            raise InvalidArgumentError(f"image_augment: crop {crop!r}: expected one of "
                                       "None, 'center', 'random', 'random_resized'")
        if resize not in self._RESIZES:
            raise InvalidArgumentError(f"image_augment: resize {resize!r}: expected 'bilinear' or 'area'")
        h = _ferry.image_augment(self._h, component=int(component), num_parallel_calls=num_parallel_calls,
                                 deterministic=True if deterministic is None else bool(deterministic),
                                 channels=int(channels), max_pixels=int(max_pixels),
                                 crop=self._CROPS[crop], height=hgt, width=wid,
                                 scale=tuple(map(float, scale)), ratio=tuple(map(float, ratio)),
                                 decode_whole=bool(decode_whole), padding=int(padding),
                                 resize=self._RESIZES[resize], flip=float(flip),
                                 vertical_flip=float(vertical_flip), brightness=float(brightness),
                                 contrast=float(contrast), dtype=_dtype_name(dtype), chw=bool(chw),
                                 mean=mean, std=std, seed=int(seed), name=name)
        return self._derive(h)

    # -------------------------------------------------------------------- information
    @property
    def element_spec(self):
        """TensorSpecs in the element's structure."""
        specs = [TensorSpec(shape, dtype) for dtype, shape in self._h.specs()]
        return _pack(specs, self._structure)[0]

    def cardinality(self):
        """The number of elements, INFINITE, or UNKNOWN."""
        return self._h.cardinality()

    def __len__(self):
        n = self._h.cardinality()
        if n < 0:
            raise TypeError("the dataset's length is " + ("infinite" if n == INFINITE else "unknown"))
        return n

    def fingerprint(self):
        """A hash of the pipeline's ops and parameters: equal in every process that builds it."""
        return self._h.fingerprint()

    def __repr__(self):
        return f"<ferry.Dataset {self._h.name()} element_spec={self.element_spec}>"

    # -------------------------------------------------------------------- iteration
    def iterator(self, seed=0, output="numpy", on_error="raise", state=None, warm_start=False,
                 no_rewrites=False):
        """One pass over the dataset.

        seed: the pipeline seed (the same seed gives the same elements in the same order).
        output: "numpy" (arrays), "tensor" (ferry.Tensor: buffer protocol and DLPack) or "torch"
            (torch tensors through DLPack, sharing ferry's bytes).
        on_error: "raise" (an element that failed raises; next() then goes on after it) or
            "skip" (failed elements are dropped and counted in Iterator.skipped_errors).
        state: bytes from Iterator.save(), or the path of Iterator.save(path): go on exactly
            where that iterator was (the seed comes from the state).
        """
        outputs = {"numpy": 0, "tensor": 1, "torch": 2}
        if output not in outputs:
            raise InvalidArgumentError(f"iterator: output {output!r}: expected 'numpy', 'tensor' or 'torch'")
        if on_error not in ("raise", "skip"):
            raise InvalidArgumentError(f"iterator: on_error {on_error!r}: expected 'raise' or 'skip'")
        return Iterator(self, int(seed), outputs[output], on_error == "skip", state, bool(warm_start),
                        bool(no_rewrites))

    def __iter__(self):
        """A pass with seed 0, 1, 2, ... for the first, second, third `for` over this object, so
        that shuffles and augmentations differ from pass to pass (tf.data's
        reshuffle_each_iteration) and are the same on every run; iterator(seed=...) picks one."""
        seed = self._passes
        self._passes += 1
        return self.iterator(seed=seed)

    def as_numpy_iterator(self):
        """An iterator yielding numpy arrays (tf.data's name)."""
        return self.iterator()


def _structure_of_specs(sig):
    if isinstance(sig, TensorSpec):
        return _LEAF
    if isinstance(sig, tuple):
        return tuple(_structure_of_specs(s) for s in sig)
    if isinstance(sig, dict):
        return {k: _structure_of_specs(s) for k, s in sig.items()}
    raise TypeError(f"output_signature must be a TensorSpec or a tuple or dict of them, got {type(sig).__name__}")


class Iterator:
    """One pass over a Dataset (Dataset.iterator). next() gives the next element; a failed
    element raises its ferry.Error and the next call goes on after it. close() (or dropping the
    iterator) stops and joins its threads."""

    __slots__ = ("_it", "_structure", "_flat", "dataset", "__weakref__")

    def __init__(self, dataset, seed, output, skip, state, warm_start, no_rewrites):
        kind, keys, flat = _c_kind(dataset._structure)
        if hasattr(state, "__fspath__"):  # a path (pathlib); bytes are a state, str a path
            state = _os.fspath(state)
        self._it = _ferry.iterator(dataset._h, kind, keys, seed, output, skip, warm_start, no_rewrites, state)
        self._structure = dataset._structure
        self._flat = flat
        self.dataset = dataset
        _live_iterators.add(self)

    def __iter__(self):
        return self

    def __next__(self):
        v = next(self._it)
        return v if self._flat else _pack(v, self._structure)[0]

    def save(self, path=None):
        """The state after the last element handed out: bytes, or written crash-safely to path."""
        return self._it.save(None if path is None else str(path))

    def stats(self):
        """Per-stage counters (ferry_stage_stats), root first."""
        return self._it.stats()

    def report(self):
        """The verdict (what limits the pipeline and what to change) and every stage's stats, as
        a dict; report()["verdict"] is the verdict in words."""
        import json
        return json.loads(self._it.report_json())

    def report_json(self):
        return self._it.report_json()

    def write_report_page(self, path, trace=True):
        """Writes the report page (one self-contained HTML file) to path, with the runtime's trace
        when tracing is on."""
        rt = runtime()
        tj = None
        if trace:
            try:
                tj = rt.trace_json()
            except InvalidArgumentError:
                tj = None
        rt.report_page_write(self._it.report_json().encode(), tj, str(path))

    @property
    def skipped_errors(self):
        return self._it.skipped_errors

    def close(self):
        """Stops and joins every thread of the iterator; later next() calls raise ValueError.
        report() still gives the verdict of the pass, as it was at close()."""
        self._it.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_tfrecord(path, records, compression_type=None):
    """Writes records (bytes) to a TFRecord file, as TensorFlow's TFRecordWriter. Returns the
    count."""
    return _ferry.tfrecord_write(runtime(), str(path), records, compression_type)


def example_from_json(json_text):
    """A serialized tf.train.Example from its JSON form (see ferry.h, ferry_example_to_json)."""
    return _ferry.example_from_json(runtime(), json_text)


def example_to_json(record):
    """The JSON form of a serialized tf.train.Example."""
    return _ferry.example_to_json(runtime(), record)
