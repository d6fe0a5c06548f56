"""Helpers shared by ferry's Python tests: tiny encoders for test inputs (a PNG writer on zlib,
tf.train.Example records through ferry's JSON form) and runtime checks."""
import gc
import struct
import zlib

import numpy as np

import ferry


def png_bytes(pixels):
    """A PNG (8-bit gray, RGB or RGBA) of a uint8 [h, w] or [h, w, c] array."""
    a = np.asarray(pixels, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    color = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def example(**features):
    """A serialized tf.train.Example: ints -> int64, floats -> float, bytes/str (and empty lists)
    -> bytes."""
    import json
    feats = {}
    for k, v in features.items():
        vals = v if isinstance(v, (list, tuple)) else [v]
        if not vals:
            feats[k] = {"bytes": []}
        elif all(isinstance(x, int) for x in vals):
            feats[k] = {"int64": list(vals)}
        elif all(isinstance(x, (int, float)) for x in vals):
            feats[k] = {"float": [float(x) for x in vals]}
        else:
            feats[k] = {"bytes": [x.decode() if isinstance(x, bytes) else x for x in vals]}
    return ferry.example_from_json(json.dumps({"features": feats}))


def settle():
    """Collects garbage so that dropped iterators and tensors are really gone."""
    for _ in range(3):
        gc.collect()


def flat(ds, **kw):
    """Every element of ds as plain Python values (arrays to lists)."""
    out = []
    for v in ds.iterator(**kw):
        out.append(_plain(v))
    return out


def _plain(v):
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v
