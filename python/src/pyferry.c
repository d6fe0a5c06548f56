/*
 * pyferry.c - ferry._ferry, the CPython extension under the `ferry` Python package.
 *
 * What it holds: thin handle types over libferry (Runtime, Dataset, Iterator, Tensor), one
 * constructor function per dataset op, and the bridges that let Python callables run as ferry
 * callbacks. Everything Pythonic (keyword arguments with tf.data's names, nested structures,
 * defaults) lives in ferry/__init__.py; this file takes flat, already-checked arguments where the
 * Python layer can check them, and checks again whatever reaches libferry.
 *
 * Threads and the GIL. ferry's pipeline runs on its own threads, which never hold the GIL unless
 * they call Python: a Python map function, predicate or generator (py_map, py_filter, gen_*), the
 * release of a numpy array that a tensor wraps (release_pyobj), or the final release of a
 * callback's state (pycall_free). Those take the GIL (py_enter, py_leave), so Python callables
 * run one at a time whatever num_parallel_calls says (documented in ferry/__init__.py). Every
 * libferry call that may wait for ferry's threads (ferry_iterator_next, _create, _restore, _free,
 * _save, and the constructors that iterate to learn a spec) is made with the GIL released;
 * otherwise a worker waiting for the GIL and the consumer waiting for the worker would deadlock.
 *
 * Ctrl-C. ferry_iterator_next runs with the GIL released and an interrupt hook
 * (ferry_iterator_options.interrupt) that ferry calls about every 20 ms while the consumer
 * waits: it takes the GIL and runs PyErr_CheckSignals. A KeyboardInterrupt cancels the iterator
 * and is raised from __next__. A Python callable that runs on the consumer's own thread sees
 * Ctrl-C as the usual KeyboardInterrupt inside it; the bridge keeps it and re-raises it from
 * __next__ instead of turning it into an element error.
 *
 * The C API. This file is written against CPython's C API, with heap types (PyType_FromSpec)
 * as the limited API would have them, but not against the limited API itself: the zero-copy
 * numpy arrays need numpy's C API (PyArray_NewFromDescr over ferry's bytes, with the Tensor as
 * the array's base), and the messages of Python functions that raise read the traceback's frames;
 * the limited API offers neither. No pybind11 or nanobind.
 *
 * Memory. A tensor handed to Python is a Tensor object holding one reference to the ferry tensor;
 * numpy arrays made from it have it as their base, and DLPack capsules hold a reference to it,
 * so the bytes live while anything in Python uses them. While a Tensor lives its bytes are
 * counted against the runtime's byte budget (ferry_runtime_budget_hold), so what Python keeps
 * counts with what ferry buffers. Arrays are writable only when the Tensor holds the only
 * reference to its bytes (a fresh batch, a map's output): cached elements, slices of an input
 * array and the like are shared with ferry and read-only.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <ferry.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * The GIL from ferry's threads. PyGILState_Ensure on a thread without a Python thread state
 * makes one, and the matching Release deletes it: tens of microseconds per call. A ferry thread
 * that calls Python keeps its thread state instead (one more Ensure, never released), and the
 * thread-specific key's destructor deletes it when the thread exits.
 * ------------------------------------------------------------------------------------------- */
static pthread_key_t tstate_key;

/* At the thread's exit. The C library may have cleared Python's own thread-specific slot by now
 * (it clears slots in key order), so the thread state comes from this key's value. */
static void tstate_drop(void *p) {
    PyThreadState *ts = p;
    if (!Py_IsInitialized() || _Py_IsFinalizing()) return; /* the interpreter is going: leave it */
    PyEval_RestoreThread(ts);                              /* the GIL, with this thread's state */
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent(); /* and the GIL released */
}
static PyGILState_STATE py_enter(void) {
    bool fresh = PyGILState_GetThisThreadState() == NULL;
    PyGILState_STATE g = PyGILState_Ensure();
    if (fresh && pthread_setspecific(tstate_key, PyGILState_GetThisThreadState()) == 0)
        (void)PyGILState_Ensure(); /* one more: the matching Release leaves the thread state alive */
    return g;
}
static void py_leave(PyGILState_STATE g) { PyGILState_Release(g); }

/* ---------------------------------------------------------------------------------------------
 * Errors: one exception class per ferry status, all under ferry.Error.
 * ------------------------------------------------------------------------------------------- */
static PyObject *Error; /* ferry.Error */
typedef struct {
    int status;
    const char *name; /* class name */
    const char *base; /* a builtin base besides ferry.Error, or NULL */
    PyObject *cls;
} err_class;
static err_class err_classes[] = {
    {FERRY_EINVAL, "InvalidArgumentError", "ValueError", NULL},
    {FERRY_EMISUSE, "MisuseError", "RuntimeError", NULL},
    {FERRY_ENOMEM, "OutOfMemoryError", "MemoryError", NULL},
    {FERRY_EIO, "FileIOError", "OSError", NULL},
    {FERRY_ECANCELED, "CancelledError", NULL, NULL},
    {FERRY_ECORRUPT, "CorruptDataError", NULL, NULL},
    {FERRY_ETRUNCATED, "TruncatedDataError", NULL, NULL},
    {FERRY_EUSER, "UserFunctionError", NULL, NULL},
    {FERRY_ETYPE, "TypeMismatchError", "TypeError", NULL},
    {FERRY_ENOTFOUND, "NotFoundError", "LookupError", NULL},
    {FERRY_EOUTOFRANGE, "OutOfRangeError", "ValueError", NULL},
    {FERRY_EMISMATCH, "StateMismatchError", NULL, NULL},
    {FERRY_EVERSION, "VersionError", NULL, NULL},
    {FERRY_EUNSUPPORTED, "UnsupportedError", "NotImplementedError", NULL},
    {FERRY_ETOOLARGE, "TooLargeError", "ValueError", NULL},
    {FERRY_EBUDGET, "BudgetExceededError", "MemoryError", NULL},
};
#define N_ERR_CLASSES (sizeof err_classes / sizeof err_classes[0])

/* Raises the class of `status` with `msg` (and the status as .status, its name as .code). */
static PyObject *raise_status(int status, const char *msg) {
    PyObject *cls = Error;
    for (size_t i = 0; i < N_ERR_CLASSES; i++)
        if (err_classes[i].status == status) cls = err_classes[i].cls;
    const char *text = msg && msg[0] ? msg : ferry_strerror(status);
    PyObject *exc = PyObject_CallFunction(cls, "s", text);
    if (!exc) return NULL;
    PyObject *st = PyLong_FromLong(status);
    PyObject *code = PyUnicode_FromString(ferry_error_name(status));
    if (st && code && PyObject_SetAttrString(exc, "status", st) == 0 && PyObject_SetAttrString(exc, "code", code) == 0)
        PyErr_SetObject(cls, exc);
    Py_XDECREF(st);
    Py_XDECREF(code);
    Py_DECREF(exc);
    return NULL;
}
static PyObject *raise_last(int status) { return raise_status(status, ferry_last_error()); }

/* ---------------------------------------------------------------------------------------------
 * dtypes
 * ------------------------------------------------------------------------------------------- */
static int dtype_from_name(const char *s, ferry_dtype *out) {
    for (int d = 1; d < FERRY_DTYPE_COUNT; d++)
        if (strcmp(s, ferry_dtype_name((ferry_dtype)d)) == 0) {
            *out = (ferry_dtype)d;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "unknown dtype '%s'", s);
    return -1;
}
static int dtype_arg(PyObject *o, ferry_dtype *out) {
    const char *s = PyUnicode_AsUTF8(o);
    return s ? dtype_from_name(s, out) : -1;
}
static int npy_type(ferry_dtype d) {
    switch (d) {
    case FERRY_DTYPE_BOOL: return NPY_BOOL;
    case FERRY_DTYPE_INT8: return NPY_INT8;
    case FERRY_DTYPE_INT16: return NPY_INT16;
    case FERRY_DTYPE_INT32: return NPY_INT32;
    case FERRY_DTYPE_INT64: return NPY_INT64;
    case FERRY_DTYPE_UINT8: return NPY_UINT8;
    case FERRY_DTYPE_UINT16: return NPY_UINT16;
    case FERRY_DTYPE_UINT32: return NPY_UINT32;
    case FERRY_DTYPE_UINT64: return NPY_UINT64;
    case FERRY_DTYPE_FLOAT16: return NPY_FLOAT16;
    case FERRY_DTYPE_BFLOAT16: return NPY_UINT16; /* numpy has no bfloat16: its bits as uint16 */
    case FERRY_DTYPE_FLOAT32: return NPY_FLOAT32;
    case FERRY_DTYPE_FLOAT64: return NPY_FLOAT64;
    default: return -1;
    }
}
static ferry_dtype dtype_of_npy(int t) {
    switch (t) {
    case NPY_BOOL: return FERRY_DTYPE_BOOL;
    case NPY_INT8: return FERRY_DTYPE_INT8;
    case NPY_INT16: return FERRY_DTYPE_INT16;
    case NPY_INT32: return FERRY_DTYPE_INT32;
    case NPY_UINT8: return FERRY_DTYPE_UINT8;
    case NPY_UINT16: return FERRY_DTYPE_UINT16;
    case NPY_UINT32: return FERRY_DTYPE_UINT32;
    case NPY_FLOAT16: return FERRY_DTYPE_FLOAT16;
    case NPY_FLOAT32: return FERRY_DTYPE_FLOAT32;
    case NPY_FLOAT64: return FERRY_DTYPE_FLOAT64;
    default: break;
    }
    /* NPY_LONG and NPY_LONGLONG are both 64-bit on LP64 */
    if ((t == NPY_LONG || t == NPY_LONGLONG) && sizeof(long) == 8) return FERRY_DTYPE_INT64;
    if (t == NPY_LONGLONG) return FERRY_DTYPE_INT64;
    if (t == NPY_ULONG || t == NPY_ULONGLONG) return FERRY_DTYPE_UINT64;
    return FERRY_DTYPE_INVALID;
}
/* A shape as a Python tuple, None for unknown dims; None for an unknown rank. */
static PyObject *shape_to_py(const ferry_shape *s) {
    if (s->rank == FERRY_UNKNOWN_RANK) Py_RETURN_NONE;
    PyObject *t = PyTuple_New(s->rank);
    if (!t) return NULL;
    for (int i = 0; i < s->rank; i++) {
        PyObject *d = s->dims[i] == FERRY_UNKNOWN_DIM ? (Py_INCREF(Py_None), Py_None) : PyLong_FromLongLong(s->dims[i]);
        if (!d) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, d);
    }
    return t;
}
/* A shape from None (unknown rank) or a sequence of ints and Nones. */
static int shape_from_py(PyObject *o, ferry_shape *s) {
    memset(s, 0, sizeof *s);
    if (o == Py_None) {
        s->rank = FERRY_UNKNOWN_RANK;
        return 0;
    }
    PyObject *seq = PySequence_Fast(o, "a shape must be None or a sequence of ints and Nones");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > FERRY_MAX_RANK) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "a shape of rank %zd: ferry's maximum rank is %d", n, FERRY_MAX_RANK);
        return -1;
    }
    s->rank = (int)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PySequence_Fast_GET_ITEM(seq, i);
        if (d == Py_None) {
            s->dims[i] = FERRY_UNKNOWN_DIM;
            continue;
        }
        long long v = PyLong_AsLongLong(d);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (v < 0) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "shape dim %zd is %lld: dims are >= 0 or None", i, v);
            return -1;
        }
        s->dims[i] = v;
    }
    Py_DECREF(seq);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Runtime
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD ferry_runtime *rt;
    int generation; /* fork_generation when made */
} RuntimeObject;
static PyTypeObject *RuntimeType;

/* fork(). ferry's threads do not survive it: in a child forked while iterators ran (their
 * threads holding ferry's locks), the objects made before the fork must not be touched, not even
 * to free them. The child handler counts forks and, when iterators were live, marks every
 * runtime made before as stale: its objects refuse to work (RuntimeError saying why) and leak
 * their memory instead of freeing it. The package then gives the child a new runtime (the torch
 * adapter's make(index, count) builds each worker's pipeline on it). A fork while no iterator
 * runs leaves everything usable: no ferry thread exists then. */
static _Atomic int live_iterators;
static int fork_generation, stale_below;
static void after_fork_child(void) {
    fork_generation++;
    if (atomic_load(&live_iterators) > 0) stale_below = fork_generation;
}
static bool rt_stale(PyObject *rto) { return ((RuntimeObject *)rto)->generation < stale_below; }
static int refuse_stale(PyObject *rto) {
    if (!rt_stale(rto)) return 0;
    PyErr_SetString(PyExc_RuntimeError,
                    "ferry: this object was made before this process was forked while ferry's threads ran, and "
                    "threads do not survive fork: make the pipeline again in this process (ferry.torch's "
                    "IterableDataset takes a function make(shard_index, num_shards) for DataLoader workers)");
    return -1;
}

static int runtime_init(RuntimeObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"memory_budget", "cpu_budget", "trace_bytes", NULL};
    unsigned long long budget = 0, trace = 0;
    int cpu = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|KiK", kwlist, &budget, &cpu, &trace)) return -1;
    if (self->rt) {
        PyErr_SetString(PyExc_RuntimeError, "Runtime.__init__ called twice");
        return -1;
    }
    ferry_runtime_options o = {.memory_budget = (size_t)budget, .cpu_budget = cpu, .trace_bytes = (size_t)trace};
    self->generation = fork_generation;
    int rc = ferry_runtime_create(&o, &self->rt);
    if (rc) {
        raise_last(rc);
        return -1;
    }
    return 0;
}
static void runtime_dealloc(RuntimeObject *self) {
    if (self->rt && !rt_stale((PyObject *)self)) {
        /* Everything made with the runtime holds a reference to this object, so it is the last
         * to go; FERRY_TRACE's file is written here. */
        Py_BEGIN_ALLOW_THREADS
        ferry_runtime_free(self->rt);
        Py_END_ALLOW_THREADS
    }
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}
static int check_rt(RuntimeObject *r) {
    if (!r->rt) {
        PyErr_SetString(PyExc_RuntimeError, "the Runtime was not initialised");
        return -1;
    }
    return refuse_stale((PyObject *)r);
}
static PyObject *runtime_stats(RuntimeObject *self, PyObject *unused) {
    if (check_rt(self)) return NULL;
    ferry_runtime_stats s;
    int rc = ferry_runtime_stats_get(self->rt, &s);
    if (rc) return raise_last(rc);
    return Py_BuildValue("{s:n,s:L,s:n,s:n,s:n,s:i,s:L,s:i,s:i,s:i}", "bytes_allocated", (Py_ssize_t)s.bytes_allocated,
                         "blocks_allocated", (long long)s.blocks_allocated, "budget", (Py_ssize_t)s.budget,
                         "budget_used", (Py_ssize_t)s.budget_used, "budget_used_peak", (Py_ssize_t)s.budget_used_peak,
                         "threads_live", s.threads_live, "threads_started", (long long)s.threads_started, "cpu_budget",
                         s.cpu_budget, "threads_busy_peak", s.threads_busy_peak, "threads_granted_peak",
                         s.threads_granted_peak);
}
static PyObject *blob_to_bytes(ferry_blob *b) {
    PyObject *r = PyBytes_FromStringAndSize(ferry_blob_data(b), (Py_ssize_t)ferry_blob_size(b));
    ferry_blob_free(b);
    return r;
}
static PyObject *runtime_trace_json(RuntimeObject *self, PyObject *unused) {
    if (check_rt(self)) return NULL;
    ferry_blob *b;
    int rc = ferry_runtime_trace_json(self->rt, &b);
    if (rc) return raise_last(rc);
    return blob_to_bytes(b);
}
static PyObject *runtime_trace_write(RuntimeObject *self, PyObject *args) {
    const char *path;
    if (check_rt(self) || !PyArg_ParseTuple(args, "s", &path)) return NULL;
    int rc = ferry_runtime_trace_write(self->rt, path);
    if (rc) return raise_last(rc);
    Py_RETURN_NONE;
}
static PyObject *runtime_page_write(RuntimeObject *self, PyObject *args) {
    const char *report, *trace, *path;
    Py_ssize_t rlen, tlen;
    if (check_rt(self) || !PyArg_ParseTuple(args, "y#z#s", &report, &rlen, &trace, &tlen, &path)) return NULL;
    int rc = ferry_report_page_write(self->rt, report, (size_t)rlen, trace, trace ? (size_t)tlen : 0, path);
    if (rc) return raise_last(rc);
    Py_RETURN_NONE;
}
static PyMethodDef runtime_methods[] = {
    {"stats", (PyCFunction)runtime_stats, METH_NOARGS, "the runtime's counters, as a dict"},
    {"trace_json", (PyCFunction)runtime_trace_json, METH_NOARGS, "the trace as Chrome trace JSON bytes"},
    {"trace_write", (PyCFunction)runtime_trace_write, METH_VARARGS, "trace_write(path)"},
    {"report_page_write", (PyCFunction)runtime_page_write, METH_VARARGS,
     "report_page_write(report_json: bytes, trace_json: bytes | None, path)"},
    {NULL, NULL, 0, NULL},
};
static PyType_Slot runtime_slots[] = {
    {Py_tp_init, runtime_init},
    {Py_tp_dealloc, runtime_dealloc},
    {Py_tp_methods, runtime_methods},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "Runtime(memory_budget=0, cpu_budget=0, trace_bytes=0): ferry's threads, allocator and byte budget"},
    {0, NULL},
};
static PyType_Spec runtime_spec = {"ferry._ferry.Runtime", sizeof(RuntimeObject), 0, Py_TPFLAGS_DEFAULT, runtime_slots};

static RuntimeObject *as_runtime(PyObject *o) {
    if (!PyObject_TypeCheck(o, RuntimeType)) {
        PyErr_SetString(PyExc_TypeError, "expected a ferry Runtime");
        return NULL;
    }
    RuntimeObject *r = (RuntimeObject *)o;
    return check_rt(r) ? NULL : r;
}

/* ---------------------------------------------------------------------------------------------
 * Tensor: one reference to a ferry tensor, its bytes held against the budget while it lives.
 * Buffer protocol, __dlpack__ / __dlpack_device__, and the base of the numpy arrays made of it.
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD ferry_tensor *t;
    PyObject *rt; /* the RuntimeObject */
    size_t held;  /* bytes counted against the budget */
    bool writable;
    int rank;
    Py_ssize_t shape[FERRY_MAX_RANK], strides[FERRY_MAX_RANK];
} TensorObject;
static PyTypeObject *TensorType;

/* Takes the reference t. `exclusive`: the caller gave the only reference to t's bytes. */
static TensorObject *tensor_new(PyObject *rto, ferry_tensor *t) {
    TensorObject *o = PyObject_New(TensorObject, TensorType);
    if (!o) {
        ferry_tensor_unref(t);
        return NULL;
    }
    o->t = t;
    Py_INCREF(rto);
    o->rt = rto;
    o->writable = ferry_tensor_mutable_data(t) != NULL;
    o->rank = ferry_tensor_rank(t);
    Py_ssize_t stride = (Py_ssize_t)ferry_dtype_size(ferry_tensor_dtype(t));
    for (int i = o->rank - 1; i >= 0; i--) {
        o->shape[i] = (Py_ssize_t)ferry_tensor_dim(t, i);
        o->strides[i] = stride;
        stride *= o->shape[i] ? o->shape[i] : 1;
    }
    o->held = ferry_tensor_nbytes(t);
    if (o->held) ferry_runtime_budget_hold(((RuntimeObject *)rto)->rt, o->held);
    return o;
}
static void tensor_dealloc(TensorObject *self) {
    if (!rt_stale(self->rt)) {
        if (self->held) ferry_runtime_budget_release(((RuntimeObject *)self->rt)->rt, self->held);
        ferry_tensor_unref(self->t);
    }
    Py_DECREF(self->rt);
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(tp);
}
static const char *buffer_format(ferry_dtype d) {
    switch (d) {
    case FERRY_DTYPE_BOOL: return "?";
    case FERRY_DTYPE_INT8: return "b";
    case FERRY_DTYPE_INT16: return "h";
    case FERRY_DTYPE_INT32: return "i";
    case FERRY_DTYPE_INT64: return "q";
    case FERRY_DTYPE_UINT8: return "B";
    case FERRY_DTYPE_UINT16: return "H";
    case FERRY_DTYPE_BFLOAT16: return "H";
    case FERRY_DTYPE_UINT32: return "I";
    case FERRY_DTYPE_UINT64: return "Q";
    case FERRY_DTYPE_FLOAT16: return "e";
    case FERRY_DTYPE_FLOAT32: return "f";
    case FERRY_DTYPE_FLOAT64: return "d";
    default: return NULL;
    }
}
static int tensor_getbuffer(TensorObject *self, Py_buffer *view, int flags) {
    ferry_dtype d = ferry_tensor_dtype(self->t);
    const char *fmt = buffer_format(d);
    if (!fmt) {
        PyErr_SetString(PyExc_BufferError, "a bytes tensor has no buffer: its values are byte strings");
        view->obj = NULL;
        return -1;
    }
    if ((flags & PyBUF_WRITABLE) && !self->writable) {
        PyErr_SetString(PyExc_BufferError, "this tensor's bytes are shared with ferry (a cache, a source array): "
                                           "read-only");
        view->obj = NULL;
        return -1;
    }
    view->buf = (void *)ferry_tensor_data(self->t);
    view->obj = (PyObject *)self;
    Py_INCREF(self);
    view->len = (Py_ssize_t)ferry_tensor_nbytes(self->t);
    view->readonly = !self->writable;
    view->itemsize = (Py_ssize_t)ferry_dtype_size(d);
    view->format = (flags & PyBUF_FORMAT) ? (char *)fmt : NULL;
    view->ndim = self->rank;
    view->shape = (flags & PyBUF_ND) ? self->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? self->strides : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}

/* DLPack (v0.8 ABI, as torch 1.13 and numpy 1.24 read it). */
typedef struct {
    int32_t device_type, device_id;
} dl_device;
typedef struct {
    uint8_t code, bits;
    uint16_t lanes;
} dl_dtype;
typedef struct {
    void *data;
    dl_device device;
    int32_t ndim;
    dl_dtype dtype;
    int64_t *shape, *strides;
    uint64_t byte_offset;
} dl_tensor;
typedef struct dl_managed {
    dl_tensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct dl_managed *self);
} dl_managed;
typedef struct {
    dl_managed m;
    PyObject *owner; /* the TensorObject */
    int64_t shape[FERRY_MAX_RANK];
} dl_holder;
enum { DL_INT = 0, DL_UINT = 1, DL_FLOAT = 2, DL_BFLOAT = 4, DL_BOOL = 6 };

static void dl_deleter(dl_managed *m) {
    dl_holder *h = (dl_holder *)m;
    if (!Py_IsInitialized() || _Py_IsFinalizing()) return; /* the interpreter is gone: leak */
    PyGILState_STATE g = py_enter();
    Py_DECREF(h->owner);
    PyMem_RawFree(h);
    py_leave(g);
}
static void dl_capsule_destructor(PyObject *cap) {
    /* A capsule never consumed (renamed "used_dltensor" by its consumer) still owns its tensor. */
    if (PyCapsule_IsValid(cap, "dltensor")) {
        dl_managed *m = PyCapsule_GetPointer(cap, "dltensor");
        if (m && m->deleter) m->deleter(m);
    }
}
static int dl_dtype_of(ferry_dtype d, dl_dtype *out) {
    size_t size = ferry_dtype_size(d);
    out->lanes = 1;
    out->bits = (uint8_t)(size * 8);
    switch (d) {
    case FERRY_DTYPE_BOOL: out->code = DL_BOOL; break;
    case FERRY_DTYPE_INT8:
    case FERRY_DTYPE_INT16:
    case FERRY_DTYPE_INT32:
    case FERRY_DTYPE_INT64: out->code = DL_INT; break;
    case FERRY_DTYPE_UINT8:
    case FERRY_DTYPE_UINT16:
    case FERRY_DTYPE_UINT32:
    case FERRY_DTYPE_UINT64: out->code = DL_UINT; break;
    case FERRY_DTYPE_FLOAT16:
    case FERRY_DTYPE_FLOAT32:
    case FERRY_DTYPE_FLOAT64: out->code = DL_FLOAT; break;
    case FERRY_DTYPE_BFLOAT16: out->code = DL_BFLOAT; break;
    default: return -1;
    }
    return 0;
}
static PyObject *tensor_dlpack_capsule(TensorObject *self) {
    dl_holder *h = PyMem_RawCalloc(1, sizeof *h);
    if (!h) return PyErr_NoMemory();
    if (dl_dtype_of(ferry_tensor_dtype(self->t), &h->m.dl_tensor.dtype)) {
        PyMem_RawFree(h);
        PyErr_SetString(PyExc_BufferError, "a bytes tensor cannot go through DLPack: its values are byte strings");
        return NULL;
    }
    for (int i = 0; i < self->rank; i++) h->shape[i] = self->shape[i];
    h->m.dl_tensor.data = (void *)ferry_tensor_data(self->t);
    h->m.dl_tensor.device = (dl_device){1, 0}; /* kDLCPU */
    h->m.dl_tensor.ndim = self->rank;
    h->m.dl_tensor.shape = h->shape;
    h->m.dl_tensor.strides = NULL; /* row-major */
    h->m.manager_ctx = h;
    h->m.deleter = dl_deleter;
    Py_INCREF(self);
    h->owner = (PyObject *)self;
    PyObject *cap = PyCapsule_New(&h->m, "dltensor", dl_capsule_destructor);
    if (!cap) {
        Py_DECREF(self);
        PyMem_RawFree(h);
    }
    return cap;
}
static PyObject *tensor_dlpack(TensorObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"stream", NULL};
    PyObject *stream = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", kwlist, &stream)) return NULL;
    if (stream != Py_None) {
        PyErr_SetString(PyExc_BufferError, "a ferry tensor lives in CPU memory: stream must be None");
        return NULL;
    }
    /* DLPack (0.8) has no read-only flag and its consumers (torch) write: as numpy does for its
     * read-only arrays, bytes shared with ferry are not exported */
    if (!self->writable) {
        PyErr_SetString(PyExc_BufferError, "this tensor's bytes are shared with ferry (a cache, a source array) and "
                                           "read-only, which DLPack cannot say: use its numpy() view, or copy it "
                                           "(iterator output='torch' copies such tensors)");
        return NULL;
    }
    return tensor_dlpack_capsule(self);
}
static PyObject *tensor_dlpack_device(TensorObject *self, PyObject *unused) { return Py_BuildValue("(ii)", 1, 0); }
static PyObject *tensor_to_numpy_array(TensorObject *self);
static PyObject *tensor_numpy(TensorObject *self, PyObject *unused) { return tensor_to_numpy_array(self); }
static PyObject *tensor_get_dtype(TensorObject *self, void *c) {
    return PyUnicode_FromString(ferry_dtype_name(ferry_tensor_dtype(self->t)));
}
static PyObject *tensor_get_shape(TensorObject *self, void *c) {
    ferry_shape s = ferry_tensor_shape(self->t);
    return shape_to_py(&s);
}
static PyObject *tensor_get_nbytes(TensorObject *self, void *c) {
    return PyLong_FromSize_t(ferry_tensor_nbytes(self->t));
}
static PyObject *tensor_get_ptr(TensorObject *self, void *c) {
    return PyLong_FromVoidPtr((void *)ferry_tensor_data(self->t));
}
static PyObject *tensor_get_writable(TensorObject *self, void *c) { return PyBool_FromLong(self->writable); }
static PyObject *tensor_repr(TensorObject *self) {
    ferry_shape s = ferry_tensor_shape(self->t);
    PyObject *shape = shape_to_py(&s);
    if (!shape) return NULL;
    PyObject *r =
        PyUnicode_FromFormat("ferry.Tensor(dtype=%s, shape=%R)", ferry_dtype_name(ferry_tensor_dtype(self->t)), shape);
    Py_DECREF(shape);
    return r;
}
static PyMethodDef tensor_methods[] = {
    {"__dlpack__", (PyCFunction)(void (*)(void))tensor_dlpack, METH_VARARGS | METH_KEYWORDS,
     "a DLPack capsule sharing the tensor's bytes (CPU)"},
    {"__dlpack_device__", (PyCFunction)tensor_dlpack_device, METH_NOARGS, "(1, 0): CPU"},
    {"numpy", (PyCFunction)tensor_numpy, METH_NOARGS, "a numpy array sharing the tensor's bytes"},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef tensor_getset[] = {
    {"dtype", (getter)tensor_get_dtype, NULL, "ferry's dtype name", NULL},
    {"shape", (getter)tensor_get_shape, NULL, "the shape, a tuple", NULL},
    {"nbytes", (getter)tensor_get_nbytes, NULL, "bytes of the values", NULL},
    {"data_ptr", (getter)tensor_get_ptr, NULL, "the address of the values", NULL},
    {"writable", (getter)tensor_get_writable, NULL, "whether the bytes belong to this tensor alone", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyType_Slot tensor_slots[] = {
    {Py_tp_dealloc, tensor_dealloc},
    {Py_tp_methods, tensor_methods},
    {Py_tp_getset, tensor_getset},
    {Py_tp_repr, tensor_repr},
    {Py_bf_getbuffer, tensor_getbuffer},
    {Py_tp_doc, "ferry.Tensor: ferry's bytes, shared without copies through the buffer protocol and DLPack"},
    {0, NULL},
};
static PyType_Spec tensor_spec = {"ferry._ferry.Tensor", sizeof(TensorObject), 0, Py_TPFLAGS_DEFAULT, tensor_slots};

static PyObject *tensor_to_numpy_array(TensorObject *self) {
    int tn = npy_type(ferry_tensor_dtype(self->t));
    if (tn < 0) {
        PyErr_SetString(PyExc_TypeError, "a bytes tensor has no numpy form: iterate it as bytes");
        return NULL;
    }
    npy_intp dims[FERRY_MAX_RANK];
    for (int i = 0; i < self->rank; i++) dims[i] = self->shape[i];
    int flags = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | (self->writable ? NPY_ARRAY_WRITEABLE : 0);
    void *data = (void *)ferry_tensor_data(self->t);
    PyObject *arr =
        PyArray_NewFromDescr(&PyArray_Type, PyArray_DescrFromType(tn), self->rank, dims, NULL, data, flags, NULL);
    if (!arr) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)self) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* ---------------------------------------------------------------------------------------------
 * Converting ferry tensors to Python values and back.
 * ------------------------------------------------------------------------------------------- */
enum { OUT_NUMPY = 0, OUT_TENSOR = 1, OUT_TORCH = 2 };
static PyObject *torch_from_dlpack; /* torch._C._from_dlpack, imported at the first torch output */
static PyObject *torch_from_numpy;  /* torch.from_numpy: bool, which torch 1.13 takes only so */

/* bytes entries [off, off + count) at dim `dim` as nested lists; a scalar as one bytes object. */
static PyObject *bytes_nested(const ferry_tensor *t, int dim, int64_t *idx) {
    int rank = ferry_tensor_rank(t);
    if (dim == rank) {
        const uint8_t *p;
        size_t n;
        if (ferry_tensor_bytes_get(t, *idx, &p, &n)) return raise_last(FERRY_EINVAL);
        (*idx)++;
        return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    }
    int64_t n = ferry_tensor_dim(t, dim);
    PyObject *l = PyList_New((Py_ssize_t)n);
    if (!l) return NULL;
    for (int64_t i = 0; i < n; i++) {
        PyObject *v = bytes_nested(t, dim + 1, idx);
        if (!v) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, v);
    }
    return l;
}

/* Takes the reference t; returns the Python value of one component. */
static PyObject *tensor_to_py(PyObject *rto, ferry_tensor *t, int output) {
    if (ferry_tensor_dtype(t) == FERRY_DTYPE_BYTES) { /* copies: bytes objects own their bytes */
        int64_t idx = 0;
        PyObject *r = bytes_nested(t, 0, &idx);
        ferry_tensor_unref(t);
        return r;
    }
    TensorObject *to = tensor_new(rto, t);
    if (!to) return NULL;
    if (output == OUT_TENSOR) return (PyObject *)to;
    PyObject *r;
    if (output == OUT_TORCH) {
        /* torch has no read-only tensors: bytes shared with ferry (a cache, a source array) are
         * copied, so that writing to the tensor cannot change what ferry hands out later */
        if (ferry_tensor_dtype(t) == FERRY_DTYPE_BOOL) {
            PyObject *arr = tensor_to_numpy_array(to);
            r = arr ? PyObject_CallOneArg(torch_from_numpy, arr) : NULL;
            Py_XDECREF(arr);
        } else {
            PyObject *cap = tensor_dlpack_capsule(to);
            r = cap ? PyObject_CallOneArg(torch_from_dlpack, cap) : NULL;
            Py_XDECREF(cap);
        }
        if (r && !to->writable) {
            PyObject *copy = PyObject_CallMethod(r, "clone", NULL);
            Py_DECREF(r);
            r = copy;
        }
    } else {
        r = tensor_to_numpy_array(to);
    }
    Py_DECREF(to);
    return r;
}

/* The structure of an element: one component, a tuple, or a dict with `keys`. */
enum { KIND_SINGLE = 0, KIND_TUPLE = 1, KIND_DICT = 2 };
typedef struct {
    int kind;
    PyObject *keys; /* a tuple of str for KIND_DICT; else NULL */
} structure;
static int structure_parse(PyObject *kind, PyObject *keys, structure *s) {
    s->kind = (int)PyLong_AsLong(kind);
    if (s->kind == -1 && PyErr_Occurred()) return -1;
    s->keys = NULL;
    if (s->kind == KIND_DICT) {
        if (!PyTuple_Check(keys)) {
            PyErr_SetString(PyExc_TypeError, "a dict structure needs a tuple of keys");
            return -1;
        }
        Py_INCREF(keys);
        s->keys = keys;
    } else if (s->kind != KIND_SINGLE && s->kind != KIND_TUPLE) {
        PyErr_Format(PyExc_ValueError, "unknown structure kind %d", s->kind);
        return -1;
    }
    return 0;
}

/* Takes e; the element as the structure says (a value, a tuple, a dict). Returns NULL with a
 * Python error set on failure. */
static PyObject *element_to_py(PyObject *rto, ferry_element *e, const structure *s, int output) {
    size_t n = ferry_element_size(e);
    ferry_tensor *ts[64], **tv = n <= 64 ? ts : PyMem_Malloc(n * sizeof *tv);
    if (!tv) {
        ferry_element_free(e);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < n; i++) tv[i] = ferry_tensor_ref(ferry_element_get(e, i));
    ferry_element_free(e); /* our references are now the only ones a fresh batch has */
    PyObject *r = NULL;
    size_t i = 0;
    if (s->kind == KIND_SINGLE && n == 1) {
        r = tensor_to_py(rto, tv[0], output);
        i = 1;
    } else if (s->kind == KIND_DICT && s->keys && (size_t)PyTuple_GET_SIZE(s->keys) == n) {
        r = PyDict_New();
        for (; r && i < n; i++) {
            PyObject *v = tensor_to_py(rto, tv[i], output);
            if (!v || PyDict_SetItem(r, PyTuple_GET_ITEM(s->keys, (Py_ssize_t)i), v) < 0) {
                Py_XDECREF(v);
                Py_CLEAR(r);
                i++;
                break;
            }
            Py_DECREF(v);
        }
    } else {
        r = PyTuple_New((Py_ssize_t)n);
        for (; r && i < n; i++) {
            PyObject *v = tensor_to_py(rto, tv[i], output);
            if (!v) {
                Py_CLEAR(r);
                i++;
                break;
            }
            PyTuple_SET_ITEM(r, (Py_ssize_t)i, v);
        }
    }
    for (; i < n; i++) ferry_tensor_unref(tv[i]);
    if (tv != ts) PyMem_Free(tv);
    return r;
}

static void release_pyobj(void *user, void *data) {
    (void)data;
    if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
    PyGILState_STATE g = py_enter();
    Py_DECREF((PyObject *)user);
    py_leave(g);
}

/* A Python value as a ferry tensor: numbers and numpy arrays share the array's memory (the
 * tensor holds the array until its last reference goes); bytes, str and lists or arrays of them
 * become a bytes tensor (copied). `want` (FERRY_DTYPE_INVALID: any) casts numbers of the same
 * kind (float64 to float32, int64 to int32) and refuses others. On failure sets a Python error. */
static int bytes_leaves(PyObject *o, int dim, ferry_shape *shape, PyObject *leaves) {
    if (PyBytes_Check(o) || PyUnicode_Check(o)) {
        if (dim != shape->rank) {
            PyErr_SetString(PyExc_ValueError, "a ragged list of bytes: every row must have the same length");
            return -1;
        }
        return PyList_Append(leaves, o);
    }
    PyObject *seq = PySequence_Fast(o, "expected bytes, str, or a list of them");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (dim == shape->rank) {
        if (shape->rank == FERRY_MAX_RANK) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "a list of bytes nested too deep");
            return -1;
        }
        shape->dims[shape->rank++] = n;
    } else if (shape->dims[dim] != n) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a ragged list of bytes: every row must have the same length");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (bytes_leaves(PySequence_Fast_GET_ITEM(seq, i), dim + 1, shape, leaves) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    Py_DECREF(seq);
    return 0;
}
static bool looks_like_bytes(PyObject *o) {
    while (PyList_Check(o) || PyTuple_Check(o)) {
        if (PySequence_Size(o) <= 0) return false;
        o = PySequence_GetItem(o, 0);
        if (!o) {
            PyErr_Clear();
            return false;
        }
        Py_DECREF(o); /* the container still holds it */
    }
    if (PyArray_Check(o)) {
        int t = PyArray_TYPE((PyArrayObject *)o);
        return t == NPY_OBJECT || t == NPY_STRING || t == NPY_UNICODE;
    }
    return PyBytes_Check(o) || PyUnicode_Check(o);
}
static int py_to_tensor(ferry_runtime *rt, PyObject *o, ferry_dtype want, ferry_tensor **out) {
    *out = NULL;
    if (want == FERRY_DTYPE_BYTES || (want == FERRY_DTYPE_INVALID && looks_like_bytes(o))) {
        PyObject *src = o, *list = NULL;
        if (PyArray_Check(o)) src = list = PyArray_ToList((PyArrayObject *)o);
        if (!src) return -1;
        PyObject *leaves = PyList_New(0);
        ferry_shape shape = {0};
        int rc = leaves ? bytes_leaves(src, 0, &shape, leaves) : -1;
        Py_XDECREF(list);
        if (rc < 0) {
            Py_XDECREF(leaves);
            return -1;
        }
        Py_ssize_t n = PyList_GET_SIZE(leaves);
        const void **ptrs = PyMem_Malloc(((size_t)n + 1) * sizeof *ptrs);
        size_t *lens = PyMem_Malloc(((size_t)n + 1) * sizeof *lens);
        rc = ptrs && lens ? 0 : (PyErr_NoMemory(), -1);
        for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
            PyObject *v = PyList_GET_ITEM(leaves, i);
            Py_ssize_t len;
            if (PyBytes_Check(v)) {
                ptrs[i] = PyBytes_AS_STRING(v);
                len = PyBytes_GET_SIZE(v);
            } else {
                ptrs[i] = PyUnicode_AsUTF8AndSize(v, &len);
                if (!ptrs[i]) rc = -1;
            }
            lens[i] = (size_t)len;
        }
        if (rc == 0) {
            int frc = ferry_tensor_create_bytes(rt, shape.rank, shape.dims, (const void *const *)ptrs, lens, out);
            if (frc) {
                raise_last(frc);
                rc = -1;
            }
        }
        PyMem_Free(ptrs);
        PyMem_Free(lens);
        Py_DECREF(leaves);
        return rc;
    }
    /* native byte order: a big-endian array is converted (copied), never read as if native */
    PyObject *arr =
        PyArray_FROMANY(o, NPY_NOTYPE, 0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED);
    if (!arr) return -1;
    if (!PyArray_ISNOTSWAPPED((PyArrayObject *)arr)) { /* without a dtype asked for, FROMANY keeps it */
        PyArray_Descr *native = PyArray_DescrNewByteorder(PyArray_DESCR((PyArrayObject *)arr), NPY_NATIVE);
        PyObject *swapped = native ? PyArray_CastToType((PyArrayObject *)arr, native, 0) : NULL;
        Py_DECREF(arr);
        if (!swapped) return -1;
        arr = swapped;
    }
    ferry_dtype d = dtype_of_npy(PyArray_TYPE((PyArrayObject *)arr));
    if (want != FERRY_DTYPE_INVALID && d != want) {
        int tn = npy_type(want);
        PyArray_Descr *to = tn >= 0 ? PyArray_DescrFromType(tn) : NULL;
        if (!to || !PyArray_CanCastTypeTo(PyArray_DESCR((PyArrayObject *)arr), to, NPY_SAME_KIND_CASTING)) {
            Py_XDECREF(to);
            PyErr_Format(PyExc_TypeError,
                         "a value of dtype %s where %s is declared (only casts of the same kind, "
                         "such as float64 to float32, are made)",
                         d ? ferry_dtype_name(d) : PyArray_DESCR((PyArrayObject *)arr)->typeobj->tp_name,
                         ferry_dtype_name(want));
            Py_DECREF(arr);
            return -1;
        }
        PyObject *cast = PyArray_CastToType((PyArrayObject *)arr, to, 0);
        Py_DECREF(arr);
        if (!cast) return -1;
        arr = cast;
        d = want;
    }
    if (d == FERRY_DTYPE_INVALID) {
        PyErr_Format(PyExc_TypeError, "numpy dtype %R has no ferry dtype",
                     (PyObject *)PyArray_DESCR((PyArrayObject *)arr));
        Py_DECREF(arr);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)arr;
    int rank = PyArray_NDIM(a);
    if (rank > FERRY_MAX_RANK) {
        PyErr_Format(PyExc_ValueError, "an array of rank %d: ferry's maximum rank is %d", rank, FERRY_MAX_RANK);
        Py_DECREF(arr);
        return -1;
    }
    int64_t dims[FERRY_MAX_RANK];
    for (int i = 0; i < rank; i++) dims[i] = (int64_t)PyArray_DIM(a, i);
    size_t nbytes = (size_t)PyArray_NBYTES(a);
    /* Shared, not copied: the tensor holds the array until its last reference goes (a source
     * array given to from_tensor_slices must not be written while the dataset lives; the values a
     * Python function returns are handed over). */
    int rc = ferry_tensor_wrap(rt, d, rank, dims, PyArray_DATA(a), nbytes, release_pyobj, arr, out);
    if (rc) {
        /* wrap takes `data` also on failure: release_pyobj dropped arr already */
        raise_last(rc);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Dataset handles
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD ferry_dataset *ds;
    PyObject *rt; /* the RuntimeObject */
} DatasetObject;
static PyTypeObject *DatasetType;

static void dataset_dealloc(DatasetObject *self) {
    if (self->ds && !rt_stale(self->rt)) {
        /* The last reference may free Python callbacks (their user_free takes the GIL, which
         * this thread holds: PyGILState_Ensure nests). */
        ferry_dataset_unref(self->ds);
    }
    Py_XDECREF(self->rt);
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(tp);
}
/* Takes ds. */
static PyObject *dataset_new(PyObject *rto, ferry_dataset *ds) {
    DatasetObject *o = PyObject_New(DatasetObject, DatasetType);
    if (!o) {
        ferry_dataset_unref(ds);
        return NULL;
    }
    o->ds = ds;
    Py_INCREF(rto);
    o->rt = rto;
    return (PyObject *)o;
}
static DatasetObject *as_dataset(PyObject *o) {
    if (!PyObject_TypeCheck(o, DatasetType)) {
        PyErr_Format(PyExc_TypeError, "expected a ferry dataset handle, got %R", (PyObject *)Py_TYPE(o));
        return NULL;
    }
    return refuse_stale(((DatasetObject *)o)->rt) ? NULL : (DatasetObject *)o;
}
static ferry_runtime *ds_rt(DatasetObject *d) { return ((RuntimeObject *)d->rt)->rt; }

static PyObject *dataset_specs(DatasetObject *self, PyObject *unused) {
    size_t n = ferry_dataset_num_components(self->ds);
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; l && i < n; i++) {
        ferry_tensor_spec s;
        int rc = ferry_dataset_component_spec(self->ds, i, &s);
        if (rc) {
            Py_DECREF(l);
            return raise_last(rc);
        }
        PyObject *shape = shape_to_py(&s.shape);
        PyObject *t = shape ? Py_BuildValue("(sN)", ferry_dtype_name(s.dtype), shape) : NULL;
        if (!t) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, t);
    }
    return l;
}
static PyObject *dataset_cardinality(DatasetObject *self, PyObject *unused) {
    return PyLong_FromLongLong(ferry_dataset_cardinality(self->ds));
}
static PyObject *dataset_fingerprint(DatasetObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(ferry_dataset_fingerprint(self->ds));
}
static PyObject *dataset_op(DatasetObject *self, PyObject *unused) {
    return PyUnicode_FromString(ferry_dataset_op(self->ds));
}
static PyObject *dataset_name(DatasetObject *self, PyObject *unused) {
    return PyUnicode_FromString(ferry_dataset_name(self->ds));
}
static PyObject *dataset_class_names(DatasetObject *self, PyObject *unused) {
    size_t n = ferry_image_folder_num_classes(self->ds);
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; l && i < n; i++) {
        PyObject *s = PyUnicode_DecodeFSDefault(ferry_image_folder_class(self->ds, (int64_t)i));
        if (!s) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, s);
    }
    return l;
}
static PyMethodDef dataset_methods[] = {
    {"specs", (PyCFunction)dataset_specs, METH_NOARGS, "[(dtype name, shape)] per component"},
    {"cardinality", (PyCFunction)dataset_cardinality, METH_NOARGS, "elements, or -2 infinite, -3 unknown"},
    {"fingerprint", (PyCFunction)dataset_fingerprint, METH_NOARGS, "the pipeline's fingerprint"},
    {"op", (PyCFunction)dataset_op, METH_NOARGS, "the op's name"},
    {"name", (PyCFunction)dataset_name, METH_NOARGS, "the name given, or the op's"},
    {"class_names", (PyCFunction)dataset_class_names, METH_NOARGS, "an image folder's class names"},
    {NULL, NULL, 0, NULL},
};
static PyType_Slot dataset_slots[] = {
    {Py_tp_dealloc, dataset_dealloc},
    {Py_tp_methods, dataset_methods},
    {Py_tp_doc, "a handle to an immutable ferry dataset (ferry.Dataset wraps it)"},
    {0, NULL},
};
static PyType_Spec dataset_spec = {"ferry._ferry.DatasetHandle", sizeof(DatasetObject), 0, Py_TPFLAGS_DEFAULT,
                                   dataset_slots};

/* Checks a constructor's status: a handle, or the exception of its status. */
/* `out` is read after the call: C leaves the order of argument evaluation open. */
static PyObject *ds_result(PyObject *rto, int rc, ferry_dataset **out) {
    if (rc) return raise_last(rc);
    return dataset_new(rto, *out);
}
static const char *opt_name(PyObject *name) {
    if (!name || name == Py_None) return NULL;
    return PyUnicode_AsUTF8(name);
}
#define NAME_OK(name) (!(name) || (name) == Py_None || opt_name(name))

/* ---------------------------------------------------------------------------------------------
 * Python callables as ferry callbacks
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject *fn;
    PyObject *rt; /* the RuntimeObject, to make tensors and Tensor objects */
    structure in, out;
    size_t nout;
    ferry_dtype *out_dtypes; /* nout entries */
    char label[96];          /* "map 'fn_name'" for messages */
} pycall;

static _Thread_local int tl_interrupted; /* a KeyboardInterrupt met in a callable on this thread */
static unsigned long main_thread;        /* threading.main_thread().ident: where signals are handled */

static void pycall_free(void *p) {
    pycall *c = p;
    if (!c) return;
    if (Py_IsInitialized() && !_Py_IsFinalizing()) {
        PyGILState_STATE g = py_enter();
        Py_XDECREF(c->fn);
        Py_XDECREF(c->rt);
        Py_XDECREF(c->in.keys);
        Py_XDECREF(c->out.keys);
        py_leave(g);
    }
    free(c->out_dtypes);
    free(c);
}
static pycall *pycall_new(PyObject *fn, PyObject *rto, PyObject *in_kind, PyObject *in_keys, const char *what) {
    pycall *c = calloc(1, sizeof *c);
    if (!c) return (pycall *)PyErr_NoMemory();
    if (structure_parse(in_kind, in_keys, &c->in) < 0) {
        free(c);
        return NULL;
    }
    Py_INCREF(fn);
    c->fn = fn;
    Py_INCREF(rto);
    c->rt = rto;
    PyObject *qn = PyObject_GetAttrString(fn, "__qualname__");
    if (!qn) {
        PyErr_Clear();
        qn = PyObject_Repr(fn);
    }
    const char *s = qn ? PyUnicode_AsUTF8(qn) : NULL;
    if (!s) PyErr_Clear();
    snprintf(c->label, sizeof c->label, "%s %s", what, s ? s : "?");
    Py_XDECREF(qn);
    return c;
}
static int pycall_set_out(pycall *c, PyObject *out_kind, PyObject *out_keys, PyObject *out_dtypes) {
    if (structure_parse(out_kind, out_keys, &c->out) < 0) return -1;
    PyObject *seq = PySequence_Fast(out_dtypes, "output dtypes must be a sequence");
    if (!seq) return -1;
    c->nout = (size_t)PySequence_Fast_GET_SIZE(seq);
    c->out_dtypes = calloc(c->nout + 1, sizeof *c->out_dtypes);
    int rc = c->out_dtypes ? 0 : (PyErr_NoMemory(), -1);
    for (size_t i = 0; rc == 0 && i < c->nout; i++) rc = dtype_arg(PySequence_Fast_GET_ITEM(seq, i), &c->out_dtypes[i]);
    Py_DECREF(seq);
    return rc;
}

/* The current Python exception as a ferry failure of the callback: its type, message and where
 * it was raised. A KeyboardInterrupt is remembered for __next__ to raise. Clears the error. */
static int fail_from_py(ferry_context *ctx, const pycall *c) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (type && PyErr_GivenExceptionMatches(type, PyExc_KeyboardInterrupt)) tl_interrupted = 1;
    const char *tname = type ? ((PyTypeObject *)type)->tp_name : "error";
    PyObject *msg = value ? PyObject_Str(value) : NULL;
    const char *m = msg ? PyUnicode_AsUTF8(msg) : NULL;
    if (!m) PyErr_Clear();
    char where[160] = "";
    if (tb) { /* the innermost frame */
        PyTracebackObject *t = (PyTracebackObject *)tb;
        while (t->tb_next) t = t->tb_next;
        PyCodeObject *code = PyFrame_GetCode(t->tb_frame);
        const char *file = code ? PyUnicode_AsUTF8(code->co_filename) : NULL;
        if (!file) PyErr_Clear();
        snprintf(where, sizeof where, " (at %s:%d)", file ? file : "?", PyFrame_GetLineNumber(t->tb_frame));
        Py_XDECREF(code);
    }
    int rc = ferry_context_fail(ctx, FERRY_EUSER, "%s raised %s: %s%s", c->label, tname, m ? m : "", where);
    Py_XDECREF(msg);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return rc;
}

/* The arguments for a callable: fn(*tuple), fn(dict) or fn(value). Takes e. */
static PyObject *call_args(const pycall *c, ferry_element *e) {
    PyObject *v = element_to_py(c->rt, e, &c->in, OUT_NUMPY);
    if (!v) return NULL;
    if (c->in.kind == KIND_TUPLE && PyTuple_Check(v)) return v;
    PyObject *args = PyTuple_Pack(1, v);
    Py_DECREF(v);
    return args;
}

/* A Python result as an element of c->nout components. */
static int result_to_element(ferry_context *ctx, const pycall *c, PyObject *r, ferry_element **out) {
    ferry_runtime *rt = ((RuntimeObject *)c->rt)->rt;
    size_t n = c->nout;
    ferry_tensor *ts[64], **tv = n <= 64 ? ts : calloc(n, sizeof *tv);
    if (!tv) return ferry_context_fail(ctx, FERRY_ENOMEM, "%s: out of memory", c->label);
    PyObject *items = NULL;
    if (c->out.kind == KIND_SINGLE) {
        if (n != 1) goto bad_structure;
    } else if (c->out.kind == KIND_TUPLE) {
        if (!PyTuple_Check(r) || (size_t)PyTuple_GET_SIZE(r) != n) goto bad_structure;
    } else {
        if (!PyDict_Check(r) || (size_t)PyDict_GET_SIZE(r) != n) goto bad_structure;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *v = c->out.kind == KIND_SINGLE ? r
                      : c->out.kind == KIND_TUPLE
                          ? PyTuple_GET_ITEM(r, (Py_ssize_t)i)
                          : PyDict_GetItemWithError(r, PyTuple_GET_ITEM(c->out.keys, (Py_ssize_t)i));
        if (!v) {
            for (size_t j = 0; j < i; j++) ferry_tensor_unref(tv[j]);
            if (!PyErr_Occurred()) goto bad_structure;
            if (tv != ts) free(tv);
            return fail_from_py(ctx, c);
        }
        if (py_to_tensor(rt, v, c->out_dtypes[i], &tv[i]) < 0) {
            for (size_t j = 0; j < i; j++) ferry_tensor_unref(tv[j]);
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyObject *msg = value ? PyObject_Str(value) : NULL;
            const char *m = msg ? PyUnicode_AsUTF8(msg) : NULL;
            if (!m) PyErr_Clear();
            int rc = ferry_context_fail(ctx, FERRY_ETYPE, "%s: output component %zu: %s", c->label, i, m ? m : "?");
            Py_XDECREF(msg);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            if (tv != ts) free(tv);
            return rc;
        }
    }
    int rc = ferry_element_create(rt, n, tv, out);
    if (tv != ts) free(tv);
    if (rc) return ferry_context_fail(ctx, rc, "%s: %s", c->label, ferry_last_error());
    return FERRY_OK;
bad_structure:
    Py_XDECREF(items);
    if (tv != ts) free(tv);
    PyObject *tr = PyObject_Repr((PyObject *)Py_TYPE(r));
    const char *trs = tr ? PyUnicode_AsUTF8(tr) : "?";
    int rc2 = ferry_context_fail(ctx, FERRY_ETYPE, "%s returned %s; expected %s of %zu component%s", c->label,
                                 trs ? trs : "?",
                                 c->out.kind == KIND_SINGLE  ? "one value"
                                 : c->out.kind == KIND_TUPLE ? "a tuple"
                                                             : "a dict with the same keys",
                                 n, n == 1 ? "" : "s");
    Py_XDECREF(tr);
    PyErr_Clear();
    return rc2;
}

static int py_map(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    pycall *c = user;
    PyGILState_STATE g = py_enter();
    int rc;
    PyObject *args = call_args(c, in);
    PyObject *r = args ? PyObject_Call(c->fn, args, NULL) : NULL;
    Py_XDECREF(args);
    if (!r) rc = fail_from_py(ctx, c);
    else rc = result_to_element(ctx, c, r, out);
    Py_XDECREF(r);
    py_leave(g);
    return rc;
}
static int py_filter(ferry_context *ctx, const ferry_element *in, bool *keep, void *user) {
    pycall *c = user;
    PyGILState_STATE g = py_enter();
    int rc = FERRY_OK;
    ferry_element *copy = NULL;
    size_t n = ferry_element_size(in);
    ferry_tensor *ts[64], **tv = n <= 64 ? ts : calloc(n + 1, sizeof *tv);
    if (!tv) {
        py_leave(g);
        return ferry_context_fail(ctx, FERRY_ENOMEM, "%s: out of memory", c->label);
    }
    for (size_t i = 0; i < n; i++) tv[i] = ferry_tensor_ref(ferry_element_get(in, i));
    int erc = ferry_element_create(ferry_context_runtime(ctx), n, tv, &copy); /* shares the bytes */
    if (tv != ts) free(tv);
    if (erc) {
        py_leave(g);
        return ferry_context_fail(ctx, erc, "%s: %s", c->label, ferry_last_error());
    }
    PyObject *args = call_args(c, copy);
    PyObject *r = args ? PyObject_Call(c->fn, args, NULL) : NULL;
    Py_XDECREF(args);
    int truth = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (truth < 0) rc = fail_from_py(ctx, c);
    else *keep = truth;
    py_leave(g);
    return rc;
}

/* Generator: the callable makes a Python iterator per ferry iterator (init); next pulls it. */
static int gen_init(ferry_context *ctx, void *user, void **state) {
    pycall *c = user;
    PyGILState_STATE g = py_enter();
    PyObject *r = PyObject_CallNoArgs(c->fn);
    PyObject *it = r ? PyObject_GetIter(r) : NULL;
    Py_XDECREF(r);
    int rc = it ? FERRY_OK : fail_from_py(ctx, c);
    *state = it;
    py_leave(g);
    return rc;
}
static int gen_next(ferry_context *ctx, void *state, ferry_element **out) {
    /* the state is gen_init_wrap's pair: the Python iterator, then the pycall */
    PyObject **pair = state;
    pycall *c = (pycall *)pair[1];
    PyGILState_STATE g = py_enter();
    PyObject *v = PyIter_Next(pair[0]);
    int rc;
    if (!v) rc = PyErr_Occurred() ? fail_from_py(ctx, c) : FERRY_END;
    else rc = result_to_element(ctx, c, v, out);
    Py_XDECREF(v);
    py_leave(g);
    return rc;
}
static int gen_init_wrap(ferry_context *ctx, void *user, void **state) {
    void **pair = malloc(2 * sizeof *pair);
    if (!pair) return ferry_context_fail(ctx, FERRY_ENOMEM, "generator: out of memory");
    void *it = NULL;
    int rc = gen_init(ctx, user, &it);
    if (rc) {
        free(pair);
        return rc;
    }
    pair[0] = it;
    pair[1] = user;
    *state = pair;
    return FERRY_OK;
}
static void gen_fini(void *state, void *user) {
    void **pair = state;
    if (Py_IsInitialized() && !_Py_IsFinalizing()) {
        PyGILState_STATE g = py_enter();
        Py_XDECREF((PyObject *)pair[0]);
        py_leave(g);
    }
    free(pair);
}

/* interleave / flat_map: the callable returns a ferry.Dataset (its handle in `_h`) per element. */
static int py_dataset_fn(ferry_context *ctx, const ferry_element *in, ferry_dataset **out, void *user) {
    pycall *c = user;
    PyGILState_STATE g = py_enter();
    int rc = FERRY_OK;
    size_t n = ferry_element_size(in);
    ferry_tensor *ts[64];
    if (n > 64) {
        py_leave(g);
        return ferry_context_fail(ctx, FERRY_EINVAL, "%s: more than 64 components", c->label);
    }
    for (size_t i = 0; i < n; i++) ts[i] = ferry_tensor_ref(ferry_element_get(in, i));
    ferry_element *copy;
    int erc = ferry_element_create(ferry_context_runtime(ctx), n, ts, &copy);
    if (erc) {
        py_leave(g);
        return ferry_context_fail(ctx, erc, "%s: %s", c->label, ferry_last_error());
    }
    PyObject *args = call_args(c, copy);
    PyObject *r = args ? PyObject_Call(c->fn, args, NULL) : NULL;
    Py_XDECREF(args);
    PyObject *h = r ? PyObject_GetAttrString(r, "_h") : NULL;
    if (!h) {
        rc = fail_from_py(ctx, c);
    } else if (!PyObject_TypeCheck(h, DatasetType)) {
        rc = ferry_context_fail(ctx, FERRY_ETYPE, "%s must return a ferry.Dataset", c->label);
    } else {
        *out = ferry_dataset_ref(((DatasetObject *)h)->ds);
    }
    Py_XDECREF(h);
    Py_XDECREF(r);
    py_leave(g);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Builtin C map functions
 * ------------------------------------------------------------------------------------------- */
static int identity_map(ferry_context *ctx, ferry_element *in, ferry_element **out, void *user) {
    (void)ctx;
    (void)user;
    *out = in;
    return FERRY_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Dataset constructors (module functions). The Python layer passes flat arguments.
 * ------------------------------------------------------------------------------------------- */
static int parallel_arg(PyObject *o, int *out) {
    if (o == Py_None) {
        *out = 0;
        return 0;
    }
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = (int)v;
    return 0;
}

static PyObject *f_range(PyObject *m, PyObject *args) {
    PyObject *rto, *name;
    long long start, stop, step;
    if (!PyArg_ParseTuple(args, "OLLLO", &rto, &start, &stop, &step, &name)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    if (!r || !NAME_OK(name)) return NULL;
    ferry_dataset *out;
    ferry_range_options o = {.name = opt_name(name)};
    return ds_result(rto, ferry_dataset_range(r->rt, start, stop, step, &o, &out), &out);
}

/* A list of values as tensors (the caller drops them with tensors_drop). */
static int tensors_from_list(ferry_runtime *rt, PyObject *list, ferry_tensor ***out, size_t *n) {
    PyObject *seq = PySequence_Fast(list, "expected a list of arrays");
    if (!seq) return -1;
    *n = (size_t)PySequence_Fast_GET_SIZE(seq);
    *out = calloc(*n + 1, sizeof **out);
    if (!*out) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < *n; i++)
        if (py_to_tensor(rt, PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i), FERRY_DTYPE_INVALID, &(*out)[i]) < 0) {
            for (size_t j = 0; j < i; j++) ferry_tensor_unref((*out)[j]);
            free(*out);
            *out = NULL;
            Py_DECREF(seq);
            return -1;
        }
    Py_DECREF(seq);
    return 0;
}
static void tensors_drop(ferry_tensor **t, size_t n) {
    for (size_t i = 0; i < n; i++) ferry_tensor_unref(t[i]);
    free(t);
}
static PyObject *f_from_tensor_slices(PyObject *m, PyObject *args) {
    PyObject *rto, *list, *name, *slices;
    if (!PyArg_ParseTuple(args, "OOOO", &rto, &list, &slices, &name)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    if (!r || !NAME_OK(name)) return NULL;
    ferry_tensor **t;
    size_t n;
    if (tensors_from_list(r->rt, list, &t, &n) < 0) return NULL;
    ferry_dataset *out;
    int rc;
    if (PyObject_IsTrue(slices)) {
        ferry_from_tensor_slices_options o = {.name = opt_name(name)};
        rc = ferry_dataset_from_tensor_slices(r->rt, n, t, &o, &out);
    } else {
        ferry_from_tensors_options o = {.name = opt_name(name)};
        rc = ferry_dataset_from_tensors(r->rt, n, t, &o, &out);
    }
    tensors_drop(t, n);
    return ds_result(rto, rc, &out);
}

static int specs_from_py(PyObject *dtypes, PyObject *shapes, ferry_tensor_spec **out, size_t *n) {
    PyObject *ds = PySequence_Fast(dtypes, "dtypes must be a sequence"), *ss = NULL;
    if (!ds) return -1;
    ss = PySequence_Fast(shapes, "shapes must be a sequence");
    if (!ss) {
        Py_DECREF(ds);
        return -1;
    }
    *n = (size_t)PySequence_Fast_GET_SIZE(ds);
    int rc = (size_t)PySequence_Fast_GET_SIZE(ss) == *n
                 ? 0
                 : (PyErr_SetString(PyExc_ValueError, "dtypes and shapes differ in length"), -1);
    *out = rc ? NULL : calloc(*n + 1, sizeof **out);
    if (!rc && !*out) rc = (PyErr_NoMemory(), -1);
    for (size_t i = 0; !rc && i < *n; i++) {
        rc = dtype_arg(PySequence_Fast_GET_ITEM(ds, (Py_ssize_t)i), &(*out)[i].dtype);
        if (!rc) rc = shape_from_py(PySequence_Fast_GET_ITEM(ss, (Py_ssize_t)i), &(*out)[i].shape);
    }
    if (rc) {
        free(*out);
        *out = NULL;
    }
    Py_DECREF(ds);
    Py_DECREF(ss);
    return rc;
}

static PyObject *f_generator(PyObject *m, PyObject *args) {
    PyObject *rto, *fn, *dtypes, *shapes, *kind, *keys, *name;
    long long card;
    if (!PyArg_ParseTuple(args, "OOOOOOLO", &rto, &fn, &dtypes, &shapes, &kind, &keys, &card, &name)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    if (!r || !NAME_OK(name)) return NULL;
    ferry_tensor_spec *specs;
    size_t n;
    if (specs_from_py(dtypes, shapes, &specs, &n) < 0) return NULL;
    PyObject *none_kind = PyLong_FromLong(KIND_TUPLE);
    pycall *c = none_kind ? pycall_new(fn, rto, none_kind, Py_None, "generator") : NULL;
    Py_XDECREF(none_kind);
    if (!c || pycall_set_out(c, kind, keys, dtypes) < 0) {
        pycall_free(c);
        free(specs);
        return NULL;
    }
    ferry_generator_options o = {.name = opt_name(name),
                                 .init = gen_init_wrap,
                                 .next = gen_next,
                                 .fini = gen_fini,
                                 .user = c,
                                 .user_free = pycall_free,
                                 .num_components = n,
                                 .specs = specs,
                                 .cardinality = card};
    ferry_dataset *out;
    int rc = ferry_dataset_generator(r->rt, &o, &out);
    free(specs);
    if (rc) pycall_free(c);
    return ds_result(rto, rc, &out);
}

static PyObject *f_map(PyObject *m, PyObject *args) {
    PyObject *dso, *fn, *par, *in_kind, *in_keys, *out_kind, *out_keys, *dtypes, *shapes, *name;
    int deterministic, max_par;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOOpOOOOOOKiO", &dso, &fn, &par, &deterministic, &in_kind, &in_keys, &out_kind,
                          &out_keys, &dtypes, &shapes, &seed, &max_par, &name))
        return NULL;
    DatasetObject *d = as_dataset(dso);
    int np_;
    if (!d || !NAME_OK(name) || parallel_arg(par, &np_) < 0) return NULL;
    ferry_map_options o = {.name = opt_name(name),
                           .num_parallel_calls = np_,
                           .relaxed_order = !deterministic,
                           .seed = seed,
                           .max_parallel_calls = max_par};
    ferry_dataset *out;
    int rc;
    if (fn == Py_None) { /* the builtin identity */
        rc = ferry_dataset_map(d->ds, identity_map, NULL, &o, &out);
        return ds_result(d->rt, rc, &out);
    }
    ferry_tensor_spec *specs;
    size_t n;
    if (specs_from_py(dtypes, shapes, &specs, &n) < 0) return NULL;
    pycall *c = pycall_new(fn, d->rt, in_kind, in_keys, "map");
    if (!c || pycall_set_out(c, out_kind, out_keys, dtypes) < 0) {
        pycall_free(c);
        free(specs);
        return NULL;
    }
    o.num_outputs = n;
    o.output_specs = specs;
    o.user_free = pycall_free;
    rc = ferry_dataset_map(d->ds, py_map, c, &o, &out);
    free(specs);
    if (rc) pycall_free(c);
    return ds_result(d->rt, rc, &out);
}

static PyObject *f_filter(PyObject *m, PyObject *args) {
    PyObject *dso, *fn, *in_kind, *in_keys, *name;
    if (!PyArg_ParseTuple(args, "OOOOO", &dso, &fn, &in_kind, &in_keys, &name)) return NULL;
    DatasetObject *d = as_dataset(dso);
    if (!d || !NAME_OK(name)) return NULL;
    pycall *c = pycall_new(fn, d->rt, in_kind, in_keys, "filter");
    if (!c) return NULL;
    ferry_filter_options o = {.name = opt_name(name), .user_free = pycall_free};
    ferry_dataset *out;
    int rc = ferry_dataset_filter(d->ds, py_filter, c, &o, &out);
    if (rc) pycall_free(c);
    return ds_result(d->rt, rc, &out);
}

static PyObject *f_interleave(PyObject *m, PyObject *args) {
    PyObject *dso, *fn, *in_kind, *in_keys, *par, *name;
    int cycle, block, deterministic, flat;
    if (!PyArg_ParseTuple(args, "OOOOiiOppO", &dso, &fn, &in_kind, &in_keys, &cycle, &block, &par, &deterministic,
                          &flat, &name))
        return NULL;
    DatasetObject *d = as_dataset(dso);
    int np_;
    if (!d || !NAME_OK(name) || parallel_arg(par, &np_) < 0) return NULL;
    pycall *c = pycall_new(fn, d->rt, in_kind, in_keys, flat ? "flat_map" : "interleave");
    if (!c) return NULL;
    ferry_dataset *out;
    int rc;
    /* the spec comes from the first dataset made: that iterates the input (GIL released) */
    if (flat) {
        ferry_flat_map_options o = {.name = opt_name(name), .user_free = pycall_free};
        Py_BEGIN_ALLOW_THREADS
        rc = ferry_dataset_flat_map(d->ds, py_dataset_fn, c, &o, &out);
        Py_END_ALLOW_THREADS
    } else {
        ferry_interleave_options o = {.name = opt_name(name),
                                      .cycle_length = cycle,
                                      .block_length = block,
                                      .num_parallel_calls = np_,
                                      .relaxed_order = !deterministic,
                                      .user_free = pycall_free};
        Py_BEGIN_ALLOW_THREADS
        rc = ferry_dataset_interleave(d->ds, py_dataset_fn, c, &o, &out);
        Py_END_ALLOW_THREADS
    }
    if (rc) {
        const char *msg = ferry_last_error();
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", msg);
        pycall_free(c);
        if (tl_interrupted) {
            tl_interrupted = 0;
            PyErr_SetNone(PyExc_KeyboardInterrupt);
            return NULL;
        }
        return raise_status(rc, copy);
    }
    return dataset_new(d->rt, out);
}

static PyObject *f_batch(PyObject *m, PyObject *args) {
    PyObject *dso, *name;
    long long n;
    int drop;
    if (!PyArg_ParseTuple(args, "OLpO", &dso, &n, &drop, &name)) return NULL;
    DatasetObject *d = as_dataset(dso);
    if (!d || !NAME_OK(name)) return NULL;
    ferry_batch_options o = {.name = opt_name(name), .drop_remainder = drop};
    ferry_dataset *out;
    return ds_result(d->rt, ferry_dataset_batch(d->ds, n, &o, &out), &out);
}

static PyObject *f_padded_batch(PyObject *m, PyObject *args) {
    PyObject *dso, *shapes, *values, *name;
    long long n;
    int drop;
    if (!PyArg_ParseTuple(args, "OLpOOO", &dso, &n, &drop, &shapes, &values, &name)) return NULL;
    DatasetObject *d = as_dataset(dso);
    if (!d || !NAME_OK(name)) return NULL;
    size_t nc = ferry_dataset_num_components(d->ds);
    ferry_shape *ps = NULL;
    ferry_tensor **pv = NULL;
    PyObject *ret = NULL;
    ps = shapes == Py_None ? NULL : calloc(nc + 1, sizeof *ps);
    pv = values == Py_None ? NULL : calloc(nc + 1, sizeof *pv);
    if ((shapes != Py_None && !ps) || (values != Py_None && !pv)) {
        PyErr_NoMemory();
        goto done;
    }
    if (ps) {
        if (PySequence_Size(shapes) != (Py_ssize_t)nc) {
            PyErr_Format(PyExc_ValueError, "padded_shapes has %zd entries for %zu components", PySequence_Size(shapes),
                         nc);
            goto done;
        }
        for (size_t i = 0; i < nc; i++) {
            PyObject *s = PySequence_GetItem(shapes, (Py_ssize_t)i);
            int rc = s ? shape_from_py(s, &ps[i]) : -1;
            Py_XDECREF(s);
            if (rc < 0) goto done;
        }
    }
    if (pv) {
        if (PySequence_Size(values) != (Py_ssize_t)nc) {
            PyErr_Format(PyExc_ValueError, "padding_values has %zd entries for %zu components", PySequence_Size(values),
                         nc);
            goto done;
        }
        for (size_t i = 0; i < nc; i++) {
            PyObject *v = PySequence_GetItem(values, (Py_ssize_t)i);
            if (!v) goto done;
            if (v != Py_None) {
                ferry_tensor_spec sp;
                int rc = ferry_dataset_component_spec(d->ds, i, &sp);
                if (rc) {
                    Py_DECREF(v);
                    raise_last(rc);
                    goto done;
                }
                rc = py_to_tensor(ds_rt(d), v, sp.dtype, &pv[i]);
                Py_DECREF(v);
                if (rc < 0) goto done;
            } else {
                Py_DECREF(v);
            }
        }
    }
    ferry_padded_batch_options o = {
        .name = opt_name(name), .drop_remainder = drop, .padded_shapes = ps, .padding_values = pv};
    ferry_dataset *out;
    ret = ds_result(d->rt, ferry_dataset_padded_batch(d->ds, n, &o, &out), &out);
done:
    if (pv)
        for (size_t i = 0; i < nc; i++) ferry_tensor_unref(pv[i]);
    free(pv);
    free(ps);
    return ret;
}

/* The ops of one dataset input, a count or two and a name. */
static PyObject *f_simple(PyObject *m, PyObject *args) {
    const char *op;
    PyObject *dso, *name;
    long long a = 0, b = 0;
    unsigned long long seed = 0;
    int flag = 0;
    if (!PyArg_ParseTuple(args, "sOLLKpO", &op, &dso, &a, &b, &seed, &flag, &name)) return NULL;
    DatasetObject *d = as_dataset(dso);
    if (!d || !NAME_OK(name)) return NULL;
    const char *nm = opt_name(name);
    ferry_dataset *out = NULL;
    int rc;
    if (!strcmp(op, "unbatch")) {
        rc = ferry_dataset_unbatch(d->ds, &(ferry_unbatch_options){.name = nm}, &out);
    } else if (!strcmp(op, "shuffle")) {
        rc = ferry_dataset_shuffle(
            d->ds, a, &(ferry_shuffle_options){.name = nm, .seed = seed, .same_order_each_epoch = !flag}, &out);
    } else if (!strcmp(op, "repeat")) {
        rc = ferry_dataset_repeat(d->ds, a, &(ferry_repeat_options){.name = nm}, &out);
    } else if (!strcmp(op, "take")) {
        rc = ferry_dataset_take(d->ds, a, &(ferry_take_options){.name = nm}, &out);
    } else if (!strcmp(op, "skip")) {
        rc = ferry_dataset_skip(d->ds, a, &(ferry_skip_options){.name = nm}, &out);
    } else if (!strcmp(op, "shard")) {
        rc = ferry_dataset_shard(d->ds, a, b, &(ferry_shard_options){.name = nm}, &out);
    } else if (!strcmp(op, "enumerate")) {
        rc = ferry_dataset_enumerate(d->ds, &(ferry_enumerate_options){.name = nm, .start = a}, &out);
    } else if (!strcmp(op, "ignore_errors")) {
        rc = ferry_dataset_ignore_errors(d->ds, &(ferry_ignore_errors_options){.name = nm}, &out);
    } else if (!strcmp(op, "prefetch")) {
        rc = ferry_dataset_prefetch(d->ds, a, &(ferry_prefetch_options){.name = nm}, &out);
    } else {
        PyErr_Format(PyExc_ValueError, "unknown op '%s'", op);
        return NULL;
    }
    return ds_result(d->rt, rc, &out);
}

static PyObject *f_cache(PyObject *m, PyObject *args) {
    PyObject *dso, *name;
    const char *path;
    if (!PyArg_ParseTuple(args, "OzO", &dso, &path, &name)) return NULL;
    DatasetObject *d = as_dataset(dso);
    if (!d || !NAME_OK(name)) return NULL;
    ferry_dataset *out;
    ferry_cache_options o = {.name = opt_name(name), .path = path};
    return ds_result(d->rt, ferry_dataset_cache(d->ds, &o, &out), &out);
}

static PyObject *f_zip(PyObject *m, PyObject *args) {
    PyObject *list, *name;
    if (!PyArg_ParseTuple(args, "OO", &list, &name)) return NULL;
    if (!NAME_OK(name)) return NULL;
    PyObject *seq = PySequence_Fast(list, "zip needs a sequence of datasets");
    if (!seq) return NULL;
    size_t n = (size_t)PySequence_Fast_GET_SIZE(seq);
    ferry_dataset **in = calloc(n + 1, sizeof *in);
    PyObject *rto = NULL;
    for (size_t i = 0; in && i < n; i++) {
        DatasetObject *d = as_dataset(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i));
        if (!d) {
            free(in);
            Py_DECREF(seq);
            return NULL;
        }
        in[i] = d->ds;
        rto = d->rt;
    }
    if (!in || !rto) {
        free(in);
        Py_DECREF(seq);
        if (!in) return PyErr_NoMemory();
        PyErr_SetString(PyExc_ValueError, "zip needs at least one dataset");
        return NULL;
    }
    ferry_dataset *out;
    ferry_zip_options o = {.name = opt_name(name)};
    int rc = ferry_dataset_zip(n, in, &o, &out);
    free(in);
    PyObject *r = ds_result(rto, rc, &out);
    Py_DECREF(seq);
    return r;
}
static PyObject *f_concatenate(PyObject *m, PyObject *args) {
    PyObject *a, *b, *name;
    if (!PyArg_ParseTuple(args, "OOO", &a, &b, &name)) return NULL;
    DatasetObject *da = as_dataset(a), *db = da ? as_dataset(b) : NULL;
    if (!db || !NAME_OK(name)) return NULL;
    ferry_dataset *out;
    ferry_concatenate_options o = {.name = opt_name(name)};
    return ds_result(da->rt, ferry_dataset_concatenate(da->ds, db->ds, &o, &out), &out);
}

/* Files: a list of str paths as C strings (valid while `seq` lives). */
static int paths_from_py(PyObject *list, PyObject **seq_out, const char ***out, size_t *n) {
    PyObject *seq = PySequence_Fast(list, "expected a list of file names");
    if (!seq) return -1;
    *n = (size_t)PySequence_Fast_GET_SIZE(seq);
    *out = calloc(*n + 1, sizeof **out);
    if (!*out) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < *n; i++) {
        (*out)[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i));
        if (!(*out)[i]) {
            free(*out);
            Py_DECREF(seq);
            return -1;
        }
    }
    *seq_out = seq;
    return 0;
}
static int compression_arg(const char *s, ferry_compression *out) {
    if (!s || !*s || !strcmp(s, "NONE") || !strcmp(s, "none")) *out = FERRY_COMPRESSION_NONE;
    else if (!strcmp(s, "GZIP") || !strcmp(s, "gzip")) *out = FERRY_COMPRESSION_GZIP;
    else if (!strcmp(s, "ZLIB") || !strcmp(s, "zlib")) *out = FERRY_COMPRESSION_ZLIB;
    else {
        PyErr_Format(PyExc_ValueError, "compression_type '%s': expected '', 'GZIP' or 'ZLIB'", s);
        return -1;
    }
    return 0;
}

static PyObject *f_list_files(PyObject *m, PyObject *args) {
    PyObject *rto, *name;
    const char *pattern;
    int shuffle;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OspKO", &rto, &pattern, &shuffle, &seed, &name)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    if (!r || !NAME_OK(name)) return NULL;
    ferry_list_files_options o = {.name = opt_name(name), .shuffle = shuffle, .seed = seed};
    ferry_dataset *out;
    return ds_result(rto, ferry_dataset_list_files(r->rt, pattern, &o, &out), &out);
}

static PyObject *f_tfrecord(PyObject *m, PyObject *args) {
    PyObject *rto, *files, *par, *name;
    const char *comp;
    unsigned long long buffer;
    if (!PyArg_ParseTuple(args, "OOzKOO", &rto, &files, &comp, &buffer, &par, &name)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    ferry_compression c;
    int np_;
    if (!r || !NAME_OK(name) || compression_arg(comp, &c) < 0 || parallel_arg(par, &np_) < 0) return NULL;
    ferry_tfrecord_options o = {
        .name = opt_name(name), .compression = c, .buffer_size = (size_t)buffer, .num_parallel_reads = np_};
    ferry_dataset *out;
    if (PyObject_TypeCheck(files, DatasetType))
        return ds_result(rto, ferry_dataset_tfrecord_files(((DatasetObject *)files)->ds, &o, &out), &out);
    PyObject *seq;
    const char **paths;
    size_t n;
    if (paths_from_py(files, &seq, &paths, &n) < 0) return NULL;
    int rc = ferry_dataset_tfrecord(r->rt, n, paths, &o, &out);
    free(paths);
    Py_DECREF(seq);
    return ds_result(rto, rc, &out);
}

static PyObject *f_text_lines(PyObject *m, PyObject *args) {
    PyObject *rto, *files, *name;
    const char *comp;
    unsigned long long buffer;
    if (!PyArg_ParseTuple(args, "OOzKO", &rto, &files, &comp, &buffer, &name)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    ferry_compression c;
    if (!r || !NAME_OK(name) || compression_arg(comp, &c) < 0) return NULL;
    PyObject *seq;
    const char **paths;
    size_t n;
    if (paths_from_py(files, &seq, &paths, &n) < 0) return NULL;
    ferry_text_line_options o = {.name = opt_name(name), .compression = c, .buffer_size = (size_t)buffer};
    ferry_dataset *out;
    int rc = ferry_dataset_text_lines(r->rt, n, paths, &o, &out);
    free(paths);
    Py_DECREF(seq);
    return ds_result(rto, rc, &out);
}

static PyObject *f_fixed_length(PyObject *m, PyObject *args) {
    PyObject *rto, *files, *name;
    const char *comp;
    long long rec, header, footer;
    unsigned long long buffer;
    if (!PyArg_ParseTuple(args, "OOLLLzKO", &rto, &files, &rec, &header, &footer, &comp, &buffer, &name)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    ferry_compression c;
    if (!r || !NAME_OK(name) || compression_arg(comp, &c) < 0) return NULL;
    PyObject *seq;
    const char **paths;
    size_t n;
    if (paths_from_py(files, &seq, &paths, &n) < 0) return NULL;
    ferry_fixed_length_options o = {.name = opt_name(name),
                                    .record_bytes = rec,
                                    .header_bytes = header,
                                    .footer_bytes = footer,
                                    .compression = c,
                                    .buffer_size = (size_t)buffer};
    ferry_dataset *out;
    int rc = ferry_dataset_fixed_length_records(r->rt, n, paths, &o, &out);
    free(paths);
    Py_DECREF(seq);
    return ds_result(rto, rc, &out);
}

static PyObject *f_image_folder(PyObject *m, PyObject *args) {
    PyObject *rto, *name;
    const char *root;
    if (!PyArg_ParseTuple(args, "OsO", &rto, &root, &name)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    if (!r || !NAME_OK(name)) return NULL;
    ferry_image_folder_options o = {.name = opt_name(name)};
    ferry_dataset *out;
    return ds_result(rto, ferry_dataset_image_folder(r->rt, root, &o, &out), &out);
}

/* parse_example(ds, features, par, deterministic, name): features is a list of
 * (key, dtype, kind, shape, default or None, with_lengths, required); returns (handle, names). */
static PyObject *f_parse_example(PyObject *m, PyObject *args) {
    PyObject *dso, *features, *par, *name;
    int deterministic;
    if (!PyArg_ParseTuple(args, "OOOpO", &dso, &features, &par, &deterministic, &name)) return NULL;
    DatasetObject *d = as_dataset(dso);
    int np_;
    if (!d || !NAME_OK(name) || parallel_arg(par, &np_) < 0) return NULL;
    PyObject *seq = PySequence_Fast(features, "features must be a list");
    if (!seq) return NULL;
    size_t n = (size_t)PySequence_Fast_GET_SIZE(seq);
    ferry_example_feature *f = calloc(n + 1, sizeof *f);
    PyObject *ret = NULL;
    if (!f) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    size_t made = 0;
    for (; made < n; made++) {
        PyObject *dt, *shape, *dflt;
        const char *key;
        int kind, lengths, required;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)made), "sOiOOpp", &key, &dt, &kind, &shape,
                              &dflt, &lengths, &required))
            goto done;
        f[made].key = key;
        f[made].kind = (ferry_example_kind)kind;
        f[made].with_lengths = lengths;
        f[made].required = required;
        if (dtype_arg(dt, &f[made].dtype) < 0 || shape_from_py(shape, &f[made].shape) < 0) goto done;
        if (dflt != Py_None && py_to_tensor(ds_rt(d), dflt, f[made].dtype, &f[made].default_value) < 0) goto done;
    }
    ferry_example_spec spec = {.num_features = n, .features = f};
    ferry_example_parser *parser;
    int rc = ferry_example_parser_create(ds_rt(d), &spec, &parser);
    if (rc) {
        raise_last(rc);
        goto done;
    }
    ferry_parse_example_options o = {
        .name = opt_name(name), .num_parallel_calls = np_, .relaxed_order = !deterministic};
    ferry_dataset *out;
    rc = ferry_dataset_parse_example(d->ds, parser, &o, &out);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ferry_last_error());
        ferry_example_parser_free(parser);
        raise_status(rc, msg);
        goto done;
    }
    size_t nout = 0;
    const ferry_tensor_spec *specs;
    (void)ferry_example_parser_output_specs(parser, &nout, &specs);
    PyObject *names = PyTuple_New((Py_ssize_t)nout);
    for (size_t i = 0; names && i < nout; i++) {
        PyObject *s = PyUnicode_FromString(ferry_example_parser_output_name(parser, i));
        if (!s) Py_CLEAR(names);
        else PyTuple_SET_ITEM(names, (Py_ssize_t)i, s);
    }
    ferry_example_parser_free(parser);
    PyObject *h = names ? dataset_new(d->rt, out) : (ferry_dataset_unref(out), NULL);
    if (h) ret = Py_BuildValue("(NN)", h, names);
    else Py_XDECREF(names);
done:
    for (size_t i = 0; i < made + 1 && i < n; i++) ferry_tensor_unref(f[i].default_value);
    free(f);
    Py_DECREF(seq);
    return ret;
}

static PyObject *f_decode_image(PyObject *m, PyObject *args) {
    PyObject *dso, *par, *name;
    int channels, deterministic;
    unsigned long long component;
    long long max_pixels;
    if (!PyArg_ParseTuple(args, "OiKLOpO", &dso, &channels, &component, &max_pixels, &par, &deterministic, &name))
        return NULL;
    DatasetObject *d = as_dataset(dso);
    int np_;
    if (!d || !NAME_OK(name) || parallel_arg(par, &np_) < 0) return NULL;
    ferry_decode_image_options o = {.name = opt_name(name),
                                    .channels = channels,
                                    .component = (size_t)component,
                                    .max_pixels = max_pixels,
                                    .num_parallel_calls = np_,
                                    .relaxed_order = !deterministic};
    ferry_dataset *out;
    return ds_result(d->rt, ferry_dataset_decode_image(d->ds, &o, &out), &out);
}

static int floats4(PyObject *o, float *out) {
    if (o == Py_None) return 0;
    PyObject *seq = PySequence_Fast(o, "mean and std must be sequences of up to 4 numbers");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 4) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "mean and std have at most 4 entries (one per channel)");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        out[i] = (float)v;
    }
    Py_DECREF(seq);
    return 0;
}
static PyObject *f_image_augment(PyObject *m, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"ds",
                             "component",
                             "num_parallel_calls",
                             "deterministic",
                             "channels",
                             "max_pixels",
                             "crop",
                             "height",
                             "width",
                             "scale",
                             "ratio",
                             "decode_whole",
                             "padding",
                             "resize",
                             "flip",
                             "vertical_flip",
                             "brightness",
                             "contrast",
                             "dtype",
                             "chw",
                             "mean",
                             "std",
                             "seed",
                             "name",
                             NULL};
    PyObject *dso, *par = Py_None, *name = Py_None, *mean = Py_None, *std = Py_None, *dtype = Py_None;
    unsigned long long component = 0, seed = 0;
    int deterministic = 1, channels = 0, crop = 0, decode_whole = 0, resize = 0, chw = 0;
    long long max_pixels = 0, height = 0, width = 0, padding = 0;
    double smin = 0, smax = 0, rmin = 0, rmax = 0, flip = 0, vflip = 0, bright = 0, contrast = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|KOpiLiLL(dd)(dd)pLiddddOpOOKO", kwlist, &dso, &component, &par,
                                     &deterministic, &channels, &max_pixels, &crop, &height, &width, &smin, &smax,
                                     &rmin, &rmax, &decode_whole, &padding, &resize, &flip, &vflip, &bright, &contrast,
                                     &dtype, &chw, &mean, &std, &seed, &name))
        return NULL;
    DatasetObject *d = as_dataset(dso);
    int np_;
    if (!d || !NAME_OK(name) || parallel_arg(par, &np_) < 0) return NULL;
    ferry_image_augment_options o = {.name = opt_name(name),
                                     .component = (size_t)component,
                                     .num_parallel_calls = np_,
                                     .relaxed_order = !deterministic,
                                     .channels = channels,
                                     .max_pixels = max_pixels,
                                     .crop = (ferry_image_crop)crop,
                                     .height = height,
                                     .width = width,
                                     .scale_min = smin,
                                     .scale_max = smax,
                                     .ratio_min = rmin,
                                     .ratio_max = rmax,
                                     .decode_whole = decode_whole,
                                     .padding = padding,
                                     .resize = (ferry_resize_method)resize,
                                     .flip = flip,
                                     .vertical_flip = vflip,
                                     .brightness = bright,
                                     .contrast = contrast,
                                     .chw = chw,
                                     .seed = seed};
    if (dtype != Py_None && dtype_arg(dtype, &o.dtype) < 0) return NULL;
    if (floats4(mean, o.mean) < 0 || floats4(std, o.std) < 0) return NULL;
    ferry_dataset *out;
    return ds_result(d->rt, ferry_dataset_image_augment(d->ds, &o, &out), &out);
}

/* ---------------------------------------------------------------------------------------------
 * Iterator
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD ferry_iterator *it;
    PyObject *ds; /* the DatasetObject */
    structure st;
    int output;        /* OUT_* */
    bool skip_errors;  /* on_error="skip": errors are counted, not raised */
    int64_t skipped;   /* errors skipped */
    PyObject *pending; /* a KeyboardInterrupt met by the interrupt hook (type, value, tb) */
    PyObject *pending_value, *pending_tb;
    bool ended;
    bool in_next;           /* a thread is inside ferry_iterator_next (GIL released) */
    bool close_pending;     /* close() came meanwhile (a signal handler, another thread) */
    ferry_element *held;    /* an element that arrived with a KeyboardInterrupt: the next __next__'s */
    PyObject *final_report; /* the report JSON taken by close(), for report_json() after it */
} IteratorObject;
static PyTypeObject *IteratorType;

/* ferry calls this from the consumer's thread (the one in __next__, GIL released) about every
 * 20 ms while it waits. Python runs signal handlers only on the main thread, so elsewhere it
 * only looks for a close() made meanwhile. A handler may raise (KeyboardInterrupt: kept for
 * __next__ to raise) or close the iterator (close_pending): both stop the wait. */
static int py_interrupt(void *user) {
    IteratorObject *self = user;
    if (PyThread_get_thread_ident() != main_thread) return __atomic_load_n(&self->close_pending, __ATOMIC_RELAXED);
    PyGILState_STATE g = py_enter();
    int stop = self->close_pending;
    if (!stop && PyErr_CheckSignals() < 0) {
        PyErr_Fetch(&self->pending, &self->pending_value, &self->pending_tb);
        stop = 1;
    }
    stop |= self->close_pending;
    py_leave(g);
    return stop;
}

/* Frees the ferry iterator (GIL released: it joins threads that may call Python). */
static void iterator_free_(IteratorObject *self) {
    ferry_iterator *it = self->it;
    if (!it) return;
    self->it = NULL;
    if (rt_stale(((DatasetObject *)self->ds)->rt)) return; /* forked while it ran: leave it */
    Py_BEGIN_ALLOW_THREADS
    ferry_iterator_free(it); /* cancels and joins every thread */
    Py_END_ALLOW_THREADS
    atomic_fetch_sub(&live_iterators, 1);
}
static void iterator_close_(IteratorObject *self) {
    if (self->in_next) { /* the thread in __next__ frees it on its way out */
        __atomic_store_n(&self->close_pending, true, __ATOMIC_RELAXED);
        return;
    }
    ferry_element_free(self->held);
    self->held = NULL;
    if (self->it && !self->final_report && !rt_stale(((DatasetObject *)self->ds)->rt)) { /* kept for report_json() */
        ferry_blob *b;
        if (ferry_iterator_report_json(self->it, &b) == FERRY_OK) {
            self->final_report = PyUnicode_FromStringAndSize(ferry_blob_data(b), (Py_ssize_t)ferry_blob_size(b));
            ferry_blob_free(b);
            if (!self->final_report) PyErr_Clear();
        }
    }
    iterator_free_(self);
}
static void iterator_dealloc(IteratorObject *self) {
    iterator_free_(self);
    if (!rt_stale(((DatasetObject *)self->ds)->rt)) ferry_element_free(self->held);
    Py_XDECREF(self->final_report);
    Py_XDECREF(self->ds);
    Py_XDECREF(self->st.keys);
    Py_XDECREF(self->pending);
    Py_XDECREF(self->pending_value);
    Py_XDECREF(self->pending_tb);
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(tp);
}

/* iterator(ds, kind, keys, seed, output, skip_errors, warm_start, no_rewrites, state) */
static PyObject *f_iterator(PyObject *m, PyObject *args) {
    PyObject *dso, *kind, *keys, *state;
    unsigned long long seed;
    int output, skip, warm, norew;
    if (!PyArg_ParseTuple(args,
                          "OOOKippp"
                          "O",
                          &dso, &kind, &keys, &seed, &output, &skip, &warm, &norew, &state))
        return NULL;
    DatasetObject *d = as_dataset(dso);
    if (!d) return NULL;
    if (output == OUT_TORCH && !torch_from_dlpack) {
        PyObject *tc = PyImport_ImportModule("torch");
        if (!tc) return NULL;
        PyObject *c = PyImport_ImportModule("torch._C");
        PyObject *fd = c ? PyObject_GetAttrString(c, "_from_dlpack") : NULL;
        PyObject *fn = fd ? PyObject_GetAttrString(tc, "from_numpy") : NULL;
        Py_XDECREF(c);
        Py_DECREF(tc);
        if (!fn) {
            Py_XDECREF(fd);
            return NULL;
        }
        torch_from_dlpack = fd;
        torch_from_numpy = fn;
    }
    for (size_t i = 0; output == OUT_TORCH && i < ferry_dataset_num_components(d->ds); i++) {
        ferry_tensor_spec sp;
        if (ferry_dataset_component_spec(d->ds, i, &sp) == FERRY_OK &&
            (sp.dtype == FERRY_DTYPE_UINT16 || sp.dtype == FERRY_DTYPE_UINT32 || sp.dtype == FERRY_DTYPE_UINT64)) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "output='torch': component %zu is %s, which torch has no tensors of; use output='numpy', "
                     "or cast it in the pipeline",
                     i, ferry_dtype_name(sp.dtype));
            return raise_status(FERRY_ETYPE, msg);
        }
    }
    IteratorObject *self = PyObject_New(IteratorObject, IteratorType);
    if (!self) return NULL;
    self->it = NULL;
    Py_INCREF(dso);
    self->ds = dso;
    self->st.keys = NULL;
    self->output = output;
    self->skip_errors = skip;
    self->skipped = 0;
    self->pending = self->pending_value = self->pending_tb = NULL;
    self->ended = false;
    self->in_next = self->close_pending = false;
    self->held = NULL;
    self->final_report = NULL;
    if (structure_parse(kind, keys, &self->st) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    ferry_iterator_options o = {
        .seed = seed, .warm_start = warm, .no_rewrites = norew, .interrupt = py_interrupt, .interrupt_user = self};
    int rc;
    char msg[1024] = "";
    if (state == Py_None) {
        Py_BEGIN_ALLOW_THREADS
        rc = ferry_iterator_create(d->ds, &o, &self->it);
        if (rc) snprintf(msg, sizeof msg, "%s", ferry_last_error());
        Py_END_ALLOW_THREADS
    } else if (PyUnicode_Check(state)) {
        const char *path = PyUnicode_AsUTF8(state);
        if (!path) {
            Py_DECREF(self);
            return NULL;
        }
        Py_BEGIN_ALLOW_THREADS
        rc = ferry_iterator_restore_file(d->ds, path, &o, &self->it);
        if (rc) snprintf(msg, sizeof msg, "%s", ferry_last_error());
        Py_END_ALLOW_THREADS
    } else {
        Py_buffer b;
        if (PyObject_GetBuffer(state, &b, PyBUF_SIMPLE) < 0) {
            Py_DECREF(self);
            return NULL;
        }
        Py_BEGIN_ALLOW_THREADS
        rc = ferry_iterator_restore(d->ds, b.buf, (size_t)b.len, &o, &self->it);
        if (rc) snprintf(msg, sizeof msg, "%s", ferry_last_error());
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&b);
    }
    if (rc) {
        Py_DECREF(self);
        return raise_status(rc, msg);
    }
    atomic_fetch_add(&live_iterators, 1);
    return (PyObject *)self;
}

static int check_open(IteratorObject *self) {
    if (!self->it || self->close_pending) {
        PyErr_SetString(PyExc_ValueError, "the iterator is closed");
        return -1;
    }
    if (refuse_stale(((DatasetObject *)self->ds)->rt)) return -1;
    if (self->in_next) { /* a signal handler or another thread, while __next__ waits */
        PyErr_SetString(PyExc_RuntimeError, "the iterator is inside next() (in another thread, or this signal "
                                            "handler interrupted it): only close() may be called now");
        return -1;
    }
    return 0;
}

static PyObject *iterator_next(IteratorObject *self) {
    if (check_open(self)) return NULL;
    if (self->held) { /* the element that came with a KeyboardInterrupt */
        ferry_element *e = self->held;
        self->held = NULL;
        return element_to_py(((DatasetObject *)self->ds)->rt, e, &self->st, self->output);
    }
    for (;;) {
        if (self->ended) return NULL; /* StopIteration */
        ferry_element *e = NULL;
        int rc;
        tl_interrupted = 0;
        self->in_next = true;
        Py_BEGIN_ALLOW_THREADS
        rc = ferry_iterator_next(self->it, &e);
        Py_END_ALLOW_THREADS
        self->in_next = false;
        if (self->close_pending) { /* close() came while ferry waited */
            ferry_element_free(e);
            self->close_pending = false;
            iterator_close_(self);
            if (self->pending) { /* the handler that closed it also raised: that exception */
                PyErr_Restore(self->pending, self->pending_value, self->pending_tb);
                self->pending = self->pending_value = self->pending_tb = NULL;
            } else if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "the iterator was closed during next()");
            }
            return NULL;
        }
        if (self->pending) { /* Ctrl-C while ferry waited: the iterator is cancelled */
            ferry_element_free(e);
            PyErr_Restore(self->pending, self->pending_value, self->pending_tb);
            self->pending = self->pending_value = self->pending_tb = NULL;
            return NULL;
        }
        if (tl_interrupted) { /* Ctrl-C inside a Python callable on this thread */
            tl_interrupted = 0;
            if (rc == FERRY_OK) self->held = e; /* a good element is not lost: the next call's */
            PyErr_SetNone(PyExc_KeyboardInterrupt);
            return NULL;
        }
        if (rc == FERRY_OK) return element_to_py(((DatasetObject *)self->ds)->rt, e, &self->st, self->output);
        if (rc == FERRY_END) {
            self->ended = true;
            return NULL;
        }
        if (self->skip_errors && rc != FERRY_ECANCELED && rc != FERRY_EMISUSE && rc != FERRY_EINVAL) {
            self->skipped++;
            if (PyErr_CheckSignals() < 0) return NULL; /* a long run of errors stays interruptible */
            continue;
        }
        return raise_status(rc, ferry_iterator_error(self->it));
    }
}

static PyObject *iterator_save(IteratorObject *self, PyObject *args) {
    const char *path = NULL;
    if (check_open(self) || !PyArg_ParseTuple(args, "|z", &path)) return NULL;
    int rc;
    ferry_blob *b = NULL;
    char msg[1024] = "";
    Py_BEGIN_ALLOW_THREADS
    rc = path ? ferry_iterator_save_file(self->it, path) : ferry_iterator_save(self->it, &b);
    if (rc) snprintf(msg, sizeof msg, "%s", ferry_iterator_error(self->it));
    Py_END_ALLOW_THREADS
    if (rc) return raise_status(rc, msg);
    if (path) Py_RETURN_NONE;
    return blob_to_bytes(b);
}

static PyObject *iterator_stats(IteratorObject *self, PyObject *unused) {
    if (check_open(self)) return NULL;
    size_t count = 0;
    int rc = ferry_iterator_stats(self->it, NULL, 0, &count);
    if (rc) return raise_status(rc, ferry_iterator_error(self->it));
    ferry_stage_stats *s = calloc(count + 1, sizeof *s);
    if (!s) return PyErr_NoMemory();
    rc = ferry_iterator_stats(self->it, s, count, &count);
    if (rc) {
        free(s);
        return raise_status(rc, ferry_iterator_error(self->it));
    }
    PyObject *l = PyList_New((Py_ssize_t)count);
    for (size_t i = 0; l && i < count; i++) {
        ferry_stage_stats *x = &s[i];
        PyObject *d = Py_BuildValue(
            "{s:s,s:s,s:i,s:i,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L}", "name", x->name,
            "op", x->op, "node", x->node, "input", x->input, "elements_out", (long long)x->elements_out, "bytes_out",
            (long long)x->bytes_out, "errors_out", (long long)x->errors_out, "errors_dropped",
            (long long)x->errors_dropped, "work_ns", (long long)x->work_ns, "assemble_ns", (long long)x->assemble_ns,
            "lock_wait_ns", (long long)x->lock_wait_ns, "wait_input_ns", (long long)x->wait_input_ns,
            "wait_consumer_ns", (long long)x->wait_consumer_ns, "thread_ns", (long long)x->thread_ns, "cpu_ns",
            (long long)x->cpu_ns, "cpu_wait_ns", (long long)x->cpu_wait_ns, "buffered_elements",
            (long long)x->buffered_elements, "buffered_bytes", (long long)x->buffered_bytes, "buffer_capacity",
            (long long)x->buffer_capacity, "parallelism", (long long)x->parallelism, "idle_full_ns",
            (long long)x->idle_full_ns);
        if (!d) Py_CLEAR(l);
        else PyList_SET_ITEM(l, (Py_ssize_t)i, d);
    }
    free(s);
    return l;
}
static PyObject *iterator_report_json(IteratorObject *self, PyObject *unused) {
    if (!self->it && !self->in_next && self->final_report) return Py_NewRef(self->final_report);
    if (check_open(self)) return NULL;
    ferry_blob *b;
    int rc = ferry_iterator_report_json(self->it, &b);
    if (rc) return raise_status(rc, ferry_iterator_error(self->it));
    PyObject *r = PyUnicode_FromStringAndSize(ferry_blob_data(b), (Py_ssize_t)ferry_blob_size(b));
    ferry_blob_free(b);
    return r;
}
static PyObject *iterator_close(IteratorObject *self, PyObject *unused) {
    iterator_close_(self);
    Py_RETURN_NONE;
}
static PyObject *iterator_get_skipped(IteratorObject *self, void *c) { return PyLong_FromLongLong(self->skipped); }
static PyObject *iterator_get_closed(IteratorObject *self, void *c) { return PyBool_FromLong(self->it == NULL); }
static PyObject *iterator_iter(PyObject *self) {
    Py_INCREF(self);
    return self;
}
static PyMethodDef iterator_methods[] = {
    {"save", (PyCFunction)iterator_save, METH_VARARGS,
     "save(path=None): the state after the last element handed out, as bytes (or to a file, crash-safely)"},
    {"stats", (PyCFunction)iterator_stats, METH_NOARGS, "per-stage counters, a list of dicts"},
    {"report_json", (PyCFunction)iterator_report_json, METH_NOARGS, "the verdict and every stage's stats, JSON"},
    {"close", (PyCFunction)iterator_close, METH_NOARGS, "stops every thread of the iterator and frees it"},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef iterator_getset[] = {
    {"skipped_errors", (getter)iterator_get_skipped, NULL, "errors skipped with on_error='skip'", NULL},
    {"closed", (getter)iterator_get_closed, NULL, "whether close() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyType_Slot iterator_slots[] = {
    {Py_tp_dealloc, iterator_dealloc},
    {Py_tp_iter, iterator_iter},
    {Py_tp_iternext, iterator_next},
    {Py_tp_methods, iterator_methods},
    {Py_tp_getset, iterator_getset},
    {Py_tp_doc, "one pass over a dataset (ferry.Dataset.iterator makes it)"},
    {0, NULL},
};
static PyType_Spec iterator_spec = {"ferry._ferry.IteratorHandle", sizeof(IteratorObject), 0, Py_TPFLAGS_DEFAULT,
                                    iterator_slots};

/* ---------------------------------------------------------------------------------------------
 * Small module functions
 * ------------------------------------------------------------------------------------------- */
static PyObject *f_state_info(PyObject *m, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    ferry_state_info info;
    int rc = ferry_state_info_get(b.buf, (size_t)b.len, &info);
    PyBuffer_Release(&b);
    if (rc) return raise_last(rc);
    return Py_BuildValue("{s:I,s:K,s:K,s:L,s:n,s:n}", "version", info.version, "fingerprint",
                         (unsigned long long)info.fingerprint, "seed", (unsigned long long)info.seed, "position",
                         (long long)info.position, "size", (Py_ssize_t)info.size, "payload_size",
                         (Py_ssize_t)info.payload_size);
}
static PyObject *f_example_from_json(PyObject *m, PyObject *args) {
    PyObject *rto;
    const char *json;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "Os#", &rto, &json, &len)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    if (!r) return NULL;
    ferry_blob *b;
    int rc = ferry_example_from_json(r->rt, json, (size_t)len, &b);
    if (rc) return raise_last(rc);
    return blob_to_bytes(b);
}
static PyObject *f_example_to_json(PyObject *m, PyObject *args) {
    PyObject *rto;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Oy*", &rto, &data)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    if (!r) {
        PyBuffer_Release(&data);
        return NULL;
    }
    ferry_blob *b;
    int rc = ferry_example_to_json(r->rt, data.buf, (size_t)data.len, &b);
    PyBuffer_Release(&data);
    if (rc) return raise_last(rc);
    PyObject *s = PyUnicode_FromStringAndSize(ferry_blob_data(b), (Py_ssize_t)ferry_blob_size(b));
    ferry_blob_free(b);
    return s;
}
static PyObject *f_tfrecord_write(PyObject *m, PyObject *args) {
    PyObject *rto, *records;
    const char *path, *comp;
    if (!PyArg_ParseTuple(args, "OsOz", &rto, &path, &records, &comp)) return NULL;
    RuntimeObject *r = as_runtime(rto);
    ferry_compression c;
    if (!r || compression_arg(comp, &c) < 0) return NULL;
    PyObject *it = PyObject_GetIter(records);
    if (!it) return NULL;
    ferry_tfrecord_writer *w;
    ferry_tfrecord_writer_options o = {.compression = c};
    int rc = ferry_tfrecord_writer_open(r->rt, path, &o, &w);
    if (rc) {
        Py_DECREF(it);
        return raise_last(rc);
    }
    PyObject *rec;
    int64_t n = 0;
    while ((rec = PyIter_Next(it))) {
        Py_buffer b;
        if (PyObject_GetBuffer(rec, &b, PyBUF_SIMPLE) < 0) {
            Py_DECREF(rec);
            break;
        }
        rc = ferry_tfrecord_writer_write(w, b.buf, (size_t)b.len);
        PyBuffer_Release(&b);
        Py_DECREF(rec);
        if (rc) {
            raise_status(rc, ferry_tfrecord_writer_error(w));
            break;
        }
        n++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        (void)ferry_tfrecord_writer_close(w);
        return NULL;
    }
    rc = ferry_tfrecord_writer_close(w);
    if (rc) return raise_last(rc);
    return PyLong_FromLongLong(n);
}

static PyObject *f_version(PyObject *m, PyObject *unused) { return PyUnicode_FromString(ferry_version()); }
/* Whether the last fork made this process's objects stale (the child of a fork during iteration). */
static PyObject *f_fork_stale(PyObject *m, PyObject *unused) {
    return PyBool_FromLong(stale_below > 0 && stale_below == fork_generation);
}

static PyMethodDef module_methods[] = {
    {"range", f_range, METH_VARARGS, NULL},
    {"from_tensor_slices", f_from_tensor_slices, METH_VARARGS, NULL},
    {"generator", f_generator, METH_VARARGS, NULL},
    {"map", f_map, METH_VARARGS, NULL},
    {"filter", f_filter, METH_VARARGS, NULL},
    {"interleave", f_interleave, METH_VARARGS, NULL},
    {"batch", f_batch, METH_VARARGS, NULL},
    {"padded_batch", f_padded_batch, METH_VARARGS, NULL},
    {"simple", f_simple, METH_VARARGS, NULL},
    {"cache", f_cache, METH_VARARGS, NULL},
    {"zip", f_zip, METH_VARARGS, NULL},
    {"concatenate", f_concatenate, METH_VARARGS, NULL},
    {"list_files", f_list_files, METH_VARARGS, NULL},
    {"tfrecord", f_tfrecord, METH_VARARGS, NULL},
    {"text_lines", f_text_lines, METH_VARARGS, NULL},
    {"fixed_length_records", f_fixed_length, METH_VARARGS, NULL},
    {"image_folder", f_image_folder, METH_VARARGS, NULL},
    {"parse_example", f_parse_example, METH_VARARGS, NULL},
    {"decode_image", f_decode_image, METH_VARARGS, NULL},
    {"image_augment", (PyCFunction)(void (*)(void))f_image_augment, METH_VARARGS | METH_KEYWORDS, NULL},
    {"iterator", f_iterator, METH_VARARGS, NULL},
    {"state_info", f_state_info, METH_VARARGS, NULL},
    {"example_from_json", f_example_from_json, METH_VARARGS, NULL},
    {"example_to_json", f_example_to_json, METH_VARARGS, NULL},
    {"tfrecord_write", f_tfrecord_write, METH_VARARGS, NULL},
    {"version", f_version, METH_NOARGS, NULL},
    {"fork_stale", f_fork_stale, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT,
                                        "ferry._ferry",
                                        "ferry's C extension; use the ferry package",
                                        -1,
                                        module_methods,
                                        NULL,
                                        NULL,
                                        NULL,
                                        NULL};

static int add_type(PyObject *mod, PyType_Spec *spec, PyTypeObject **out, const char *name) {
    *out = (PyTypeObject *)PyType_FromSpec(spec);
    if (!*out) return -1;
    Py_INCREF(*out);
    if (PyModule_AddObject(mod, name, (PyObject *)*out) < 0) {
        Py_DECREF(*out);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__ferry(void);
PyMODINIT_FUNC PyInit__ferry(void) {
    import_array();
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *mt = threading ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
    PyObject *ident = mt ? PyObject_GetAttrString(mt, "ident") : NULL;
    Py_XDECREF(threading);
    Py_XDECREF(mt);
    if (!ident) return NULL;
    main_thread = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (PyErr_Occurred()) return NULL;
    if (pthread_atfork(NULL, NULL, after_fork_child) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "ferry: pthread_atfork failed");
        return NULL;
    }
    if (pthread_key_create(&tstate_key, tstate_drop) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "ferry: pthread_key_create failed");
        return NULL;
    }
    PyObject *mod = PyModule_Create(&module_def);
    if (!mod) return NULL;
    if (add_type(mod, &runtime_spec, &RuntimeType, "Runtime") < 0 ||
        add_type(mod, &tensor_spec, &TensorType, "Tensor") < 0 ||
        add_type(mod, &dataset_spec, &DatasetType, "DatasetHandle") < 0 ||
        add_type(mod, &iterator_spec, &IteratorType, "IteratorHandle") < 0)
        goto fail;
    Error = PyErr_NewExceptionWithDoc("ferry.Error", "a ferry failure; .status is ferry's code, .code its name", NULL,
                                      NULL);
    if (!Error || PyModule_AddObjectRef(mod, "Error", Error) < 0) goto fail;
    for (size_t i = 0; i < N_ERR_CLASSES; i++) {
        err_class *e = &err_classes[i];
        PyObject *bases;
        if (e->base) {
            PyObject *b = PyDict_GetItemString(PyEval_GetBuiltins(), e->base);
            bases = PyTuple_Pack(2, Error, b);
        } else {
            bases = PyTuple_Pack(1, Error);
        }
        char full[96];
        snprintf(full, sizeof full, "ferry.%s", e->name);
        e->cls = bases ? PyErr_NewException(full, bases, NULL) : NULL;
        Py_XDECREF(bases);
        if (!e->cls || PyModule_AddObjectRef(mod, e->name, e->cls) < 0) goto fail;
        PyObject *code = PyLong_FromLong(e->status);
        if (!code || PyObject_SetAttrString(e->cls, "status", code) < 0) {
            Py_XDECREF(code);
            goto fail;
        }
        Py_DECREF(code);
    }
    if (PyModule_AddIntConstant(mod, "AUTOTUNE", FERRY_AUTOTUNE) < 0 ||
        PyModule_AddIntConstant(mod, "INFINITE", FERRY_INFINITE) < 0 ||
        PyModule_AddIntConstant(mod, "UNKNOWN", FERRY_UNKNOWN) < 0)
        goto fail;
    return mod;
fail:
    Py_DECREF(mod);
    return NULL;
}
