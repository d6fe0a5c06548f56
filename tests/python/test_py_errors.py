"""Errors and teardown from Python: one exception class per ferry status with ferry's message,
errors in position that do not end the iteration, bad arguments named, Ctrl-C, and iterators
dropped mid-epoch."""
import dis
import os
import signal
import sys
import threading

import numpy as np
import pytest

import ferry
from helpers import settle


def test_exception_classes():
    assert issubclass(ferry.InvalidArgumentError, ferry.Error)
    assert issubclass(ferry.InvalidArgumentError, ValueError)
    assert issubclass(ferry.TypeMismatchError, TypeError)
    assert issubclass(ferry.FileIOError, OSError)
    assert issubclass(ferry.OutOfMemoryError, MemoryError)
    assert issubclass(ferry.NotFoundError, LookupError)
    statuses = {c.status for c in (ferry.InvalidArgumentError, ferry.MisuseError, ferry.OutOfMemoryError,
                                   ferry.FileIOError, ferry.CancelledError, ferry.CorruptDataError,
                                   ferry.TruncatedDataError, ferry.UserFunctionError,
                                   ferry.TypeMismatchError, ferry.NotFoundError, ferry.OutOfRangeError,
                                   ferry.StateMismatchError, ferry.VersionError, ferry.UnsupportedError,
                                   ferry.TooLargeError, ferry.BudgetExceededError)}
    assert len(statuses) == 16 and all(s < 0 for s in statuses)
    with pytest.raises(ferry.InvalidArgumentError) as e:
        ferry.Dataset.range(3).batch(-1)
    assert e.value.status == ferry.InvalidArgumentError.status and e.value.code == "FERRY_EINVAL"
    assert "batch_size" in str(e.value)


def test_errors_in_position_do_not_end_the_iteration():
    def f(x):
        if x in (0, 5, 9):
            raise ValueError(f"bad {int(x)}")
        return x
    it = ferry.Dataset.range(10).map(f, output_signature=ferry.TensorSpec((), np.int64),
                                     num_parallel_calls=2).iterator()
    got = []
    while True:
        try:
            got.append(int(next(it)))
        except StopIteration:
            break
        except ferry.UserFunctionError as e:
            assert "ValueError" in str(e) and "bad" in str(e)
            got.append(str(e).split("bad ")[1].split()[0])
    assert got == ["0", 1, 2, 3, 4, "5", 6, 7, 8, "9"]  # first and last element included


def test_for_loop_stops_at_the_error_and_skip_goes_on():
    ds = ferry.Dataset.range(6).map(lambda x: x if x != 2 else 1 // (int(x) - 2),
                                    output_signature=ferry.TensorSpec((), np.int64))
    seen = []
    with pytest.raises(ferry.UserFunctionError, match="ZeroDivisionError"):
        for x in ds:
            seen.append(int(x))
    assert seen == [0, 1]
    it = ds.iterator(on_error="skip")
    assert [int(x) for x in it] == [0, 1, 3, 4, 5] and it.skipped_errors == 1
    assert [int(x) for x in ds.ignore_errors()] == [0, 1, 3, 4, 5]


def test_corrupt_tfrecord_names_file_and_offset(tmp_path):
    p = tmp_path / "bad.tfrecord"
    ferry.write_tfrecord(p, [b"a" * 10, b"b" * 10, b"c" * 10])
    raw = bytearray(p.read_bytes())
    raw[12 + 26 + 3] ^= 0xFF  # a data byte of the second record (12-byte header, 16 bytes of framing)
    p.write_bytes(bytes(raw))
    it = ferry.Dataset.tfrecord(p).iterator()
    assert next(it) == b"a" * 10
    with pytest.raises(ferry.CorruptDataError) as e:
        next(it)
    assert str(p) in str(e.value) and "offset 26" in str(e.value)
    assert next(it) == b"c" * 10
    trunc = tmp_path / "short.tfrecord"
    trunc.write_bytes(bytes(raw[:30]))
    with pytest.raises(ferry.TruncatedDataError):
        list(ferry.Dataset.tfrecord(trunc).skip(1))
    it = ferry.Dataset.tfrecord(str(tmp_path / "absent.tfrecord")).iterator()
    with pytest.raises(ferry.NotFoundError, match="absent.tfrecord"):
        next(it)


def test_bad_arguments_are_named():
    ds = ferry.Dataset.range(3)
    with pytest.raises(ferry.InvalidArgumentError, match="buffer_size"):
        ds.shuffle(0)
    with pytest.raises(ferry.InvalidArgumentError, match="num_parallel_calls"):
        ds.map(ferry.identity, num_parallel_calls=-7)
    with pytest.raises(ferry.InvalidArgumentError, match="output"):
        ds.iterator(output="jax")
    with pytest.raises(ferry.InvalidArgumentError, match="name"):
        ds.batch(2, name="x" * 100)
    with pytest.raises(TypeError):
        ds.map(ferry.identity, num_parallel_calls="many")
    with pytest.raises(ferry.InvalidArgumentError, match="padded_shapes|rank|shape"):
        ferry.Dataset.range(3).map(lambda x: np.arange(x)).padded_batch(2, padded_shapes=(1, 2, 3))


def test_closed_iterator_and_bad_state():
    it = ferry.Dataset.range(3).iterator()
    next(it)
    it.close()
    it.close()  # twice is fine
    assert it.report()["elements"] == 1  # the verdict as it was at close()
    with pytest.raises(ValueError, match="closed"):
        next(it)
    with pytest.raises(ferry.CorruptDataError):
        ferry.Dataset.range(3).iterator(state=b"\x00" * 64)
    state = ferry.Dataset.range(5).iterator().save()
    with pytest.raises(ferry.StateMismatchError):
        ferry.Dataset.range(6).iterator(state=state)


@pytest.fixture
def sigint_handler():
    """Python's own SIGINT handler, as in a terminal: a program started in the background (as
    ctest may be) inherits SIGINT ignored, and then Python installs none."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _in_ferry_next(frame):
    """Whether the thread of this innermost frame is inside ferry's C next(): the frame is
    ferry.Iterator.__next__ and its current instruction is the call of the C iterator (CALL, or
    PRECALL, which the specialising interpreter makes call builtins itself); signals are then
    handled only by ferry's interrupt hook, not between bytecodes."""
    calls = (dis.opmap["CALL"], dis.opmap.get("PRECALL", dis.opmap["CALL"]))
    return (frame is not None and frame.f_code is ferry.Iterator.__next__.__code__
            and frame.f_code.co_code[frame.f_lasti] in calls)


def _sigint_when(event, in_next=False):
    """Sends SIGINT once event is set and, with in_next, once the main thread is inside ferry's
    C next() (_in_ferry_next): a state, not a delay."""
    main = threading.main_thread().ident

    def run():
        event.wait()
        while in_next and not _in_ferry_next(sys._current_frames().get(main)):
            threading.Event().wait(0.001)
        os.kill(os.getpid(), signal.SIGINT)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_ctrl_c_while_waiting_for_a_stage(sigint_handler):
    """next() waits on a prefetch whose producer is stuck in a Python generator; Ctrl-C raises
    KeyboardInterrupt from next(), and the iterator is closed."""
    entered, release = threading.Event(), threading.Event()

    def gen():
        yield 0
        entered.set()
        release.wait(120)  # stuck until the test lets it go (releases the GIL meanwhile)
        yield 1
    ds = ferry.Dataset.from_generator(gen, output_signature=ferry.TensorSpec((), np.int64)).prefetch(1)
    it = ds.iterator()
    assert int(next(it)) == 0
    t = _sigint_when(entered, in_next=True)
    with pytest.raises(KeyboardInterrupt):
        next(it)  # blocks until the signal
    t.join()
    with pytest.raises(ferry.CancelledError, match="interrupted"):
        next(it)
    release.set()  # the producer's call returns; close() joins it
    it.close()


def test_ctrl_c_inside_a_python_function_on_the_main_thread(sigint_handler):
    entered = threading.Event()

    def slow(x):
        if x == 3:
            entered.set()
            threading.Event().wait(60)  # interrupted by the signal handler's exception
        return x
    it = ferry.Dataset.range(10).map(slow, output_signature=ferry.TensorSpec((), np.int64)).iterator()
    t = _sigint_when(entered)
    with pytest.raises(KeyboardInterrupt):
        for _ in it:
            pass
    t.join()
    it.close()


def test_dropping_iterators_mid_epoch_joins_threads():
    rt = ferry.runtime()
    settle()
    for _ in range(20):
        ds = ferry.Dataset.range(10_000).map(lambda x: x + 1, num_parallel_calls=2).batch(8).prefetch(4)
        it = iter(ds)
        next(it)
        del it  # mid-epoch: cancels, wakes and joins
    settle()
    assert rt.stats()["threads_live"] == 0


@pytest.mark.parametrize("then_raise", [False, True])
def test_a_signal_handler_may_close_the_iterator(sigint_handler, then_raise):
    entered, release = threading.Event(), threading.Event()

    def gen():
        entered.set()
        release.wait(120)
        yield 0
    it = ferry.Dataset.from_generator(gen, output_signature=ferry.TensorSpec((), np.int64)).prefetch(1).iterator()
    closed = []

    def handler(signum, frame):  # a checkpoint-and-stop handler closes the iterator mid-next()
        release.set()  # the producer's call returns: the close that follows joins it
        it.close()
        closed.append(True)
        if then_raise:
            raise KeyboardInterrupt  # next() raises what the handler raised
    signal.signal(signal.SIGINT, handler)
    t = _sigint_when(entered, in_next=True)
    with pytest.raises(KeyboardInterrupt if then_raise else ValueError):
        next(it)  # closed by the handler
    t.join()
    release.set()
    assert closed and it._it.closed
    with pytest.raises(ValueError, match="closed"):
        next(it)


def test_keyboard_interrupt_in_a_function_keeps_the_good_elements(sigint_handler):
    def f(x):
        if x == 1:
            raise KeyboardInterrupt
        return x
    it = ferry.Dataset.range(4).map(f, output_signature=ferry.TensorSpec((), np.int64)).ignore_errors().iterator()
    got = [int(next(it))]
    with pytest.raises(KeyboardInterrupt):
        next(it)
    got += [int(x) for x in it]
    assert got == [0, 2, 3]  # 1 failed (and was dropped); 2 came with the interrupt and is kept


def test_torch_output_dtypes():
    torch = pytest.importorskip("torch", reason="python3-torch is not installed")
    b = next(ferry.Dataset.from_tensor_slices(np.array([True, False])).map(ferry.identity).batch(2)
             .iterator(output="torch"))
    assert b.dtype == torch.bool and b.tolist() == [True, False]
    with pytest.raises(ferry.TypeMismatchError, match="uint16"):
        ferry.Dataset.from_tensor_slices(np.zeros(2, np.uint16)).iterator(output="torch")
