"""CIFAR-10 / CIFAR-100 "python version" batches (pickled dicts).

Each batch file is a pickle of a dict with ``b'data'`` (uint8, ``(n, 3072)``:
1024 red, then 1024 green, then 1024 blue values, each a row-major 32×32
plane) and ``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` / ``b'coarse_labels'``
(CIFAR-100).

Security: these files are pickles by format, and loading a pickle can run
code. evsnn reads only the files the user names, with a restricted unpickler
that resolves nothing but NumPy's array/dtype constructors and
``_codecs.encode`` (all a CIFAR batch needs); any other global makes the load
fail with a FormatError. Still, only open CIFAR files you obtained from a
source you trust (https://www.cs.toronto.edu/~kriz/cifar.html). Nothing is
downloaded.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path

import numpy as np

from evsnn.errors import FormatError

from ._common import as_labels, check_split, require_dir, require_file, uint8_images

_HINT = "get cifar-10-python.tar.gz / cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it; evsnn never downloads"

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_SCALAR = np.uint8(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


def _sized(ctor, limit: int):
    """``ctor(cls_or_shape...)`` refusing arrays larger than ``limit`` bytes (the file's own size:
    a real batch never builds an array bigger than the data it carries)."""

    def build(*args):
        shape = args[1] if ctor is _RECONSTRUCT else (args[0] if args else ())
        dtype = args[2] if ctor is _RECONSTRUCT else (args[1] if len(args) > 1 else float)
        if ctor is _RECONSTRUCT:
            if not (args and (args[0] is np.ndarray or getattr(args[0], "_evsnn_ndarray", False))):
                raise pickle.UnpicklingError("refusing to build an array subclass")
            args = (np.ndarray,) + tuple(args[1:])
        dims = shape if isinstance(shape, (tuple, list)) else (shape,)
        total = np.dtype(dtype).itemsize
        for d in dims:
            if not isinstance(d, (int, np.integer)) or d < 0:
                raise pickle.UnpicklingError(f"bad array shape {shape!r:.40}")
            total *= int(d)
        if total > limit:
            raise pickle.UnpicklingError(f"array of {total} bytes declared in a {limit}-byte file")
        return ctor(*args)

    build._evsnn_ndarray = ctor is np.ndarray  # stands for the class where _reconstruct expects it
    return build


def _encode(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as NumPy's pickles use it: text to latin-1 bytes only."""
    if not isinstance(obj, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode other than str → latin1")
    return codecs.encode(obj, "latin1", "strict")


def _dtype(obj, align=False, copy=False):
    """``numpy.dtype`` for plain numeric and bytes types only (no records, objects or subarrays)."""
    if not isinstance(obj, str) or len(obj) > 8:
        raise pickle.UnpicklingError(f"refusing dtype {obj!r:.30}")
    dt = np.dtype(obj)
    if dt.kind not in "biufS" or dt.itemsize > 16:
        raise pickle.UnpicklingError(f"refusing dtype {obj!r:.30}")
    return dt


def _load_build(self):
    """BUILD (``obj.__setstate__(state)``) for arrays only; a dtype's state must be the one it has.

    NumPy trusts the state it is given: a fuzzed dtype state yields dtypes that crash NumPy
    later, so a dtype only accepts the state it already has (what a real pickle carries)."""
    state = self.stack.pop()
    inst = self.stack[-1]
    if isinstance(inst, np.dtype):
        try:
            same = state == inst.__reduce__()[2]
        except Exception:  # noqa: BLE001 - a malformed state of any kind
            same = False
        if same is not True:
            raise pickle.UnpicklingError("unexpected dtype state")
        return
    if type(inst) is np.ndarray:
        inst.__setstate__(state)
        return
    raise pickle.UnpicklingError(f"refusing to set the state of a {type(inst).__name__}")


class _RestrictedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler (its memo is a dict, so no index can make it allocate) that only
    resolves the NumPy constructors a CIFAR batch uses, with size checks, and builds only arrays."""

    limit = 0
    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build

    def find_class(self, module, name):
        try:
            ctor = _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None
        if ctor is _RECONSTRUCT or ctor is np.ndarray:
            return _sized(ctor, self.limit)
        if ctor is codecs.encode:
            return _encode
        if ctor is np.dtype:
            return _dtype
        return ctor


def _unpickle(path: Path) -> dict:
    """Unpickle one batch file (``encoding='bytes'``, restricted globals, scanned first).

    The file is read into memory (a regular file, at most EVSNN_MAX_DECOMPRESSED_BYTES) and
    scanned by :func:`evsnn.validate.pickles.scan_pickle` before unpickling from that buffer,
    so no declared length or memo index can make the unpickler allocate more than the file.
    """
    from evsnn.validate.limits import fmt_bytes, max_decompressed_bytes
    from evsnn.validate.pickles import scan_pickle

    limit = max_decompressed_bytes()
    if path.stat().st_size > limit:
        raise FormatError(f"{path}: {fmt_bytes(path.stat().st_size)} is larger than a CIFAR batch can be "
                          f"(limit {fmt_bytes(limit)}, EVSNN_MAX_DECOMPRESSED_BYTES)")
    data = path.read_bytes()
    scan_pickle(data, str(path), "CIFAR python batch")
    try:
        up = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes")
        up.limit = len(data)
        obj = up.load()
    except Exception as exc:  # only the constructors above can run: any failure is a malformed file
        raise FormatError(f"{path}: not a readable CIFAR python batch "
                          f"({type(exc).__name__}: {str(exc)[:80] or 'truncated'})") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: not a CIFAR batch (pickle holds {type(obj).__name__}, not a dict)")
    return obj


def _get(d: dict, key: str):
    """Value under ``b'key'`` or ``'key'`` (files re-saved under Python 3 may use str keys)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def read_cifar_batch(path: str | os.PathLike, labels: str = "fine") -> tuple[np.ndarray, np.ndarray | None]:
    """Read one CIFAR python batch file.

    Returns ``x`` float32 ``(n, 3, S, S)`` in [0, 1] (uint8 / 255; S = 32 for
    CIFAR, any square size with rows of 3·S·S values is accepted) and ``y``
    int64 ``(n,)`` from ``b'labels'``, or ``b'fine_labels'`` /
    ``b'coarse_labels'`` (``labels="fine"|"coarse"``) for CIFAR-100; None if
    the batch has no labels.
    """
    p = require_file(path)
    d = _unpickle(p)
    data = _get(d, "data")
    if data is None:
        raise FormatError(f"{p}: not a CIFAR batch (no b'data' entry; keys: {sorted(map(str, d))[:6]})")
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise FormatError(f"{p}: CIFAR b'data' must be uint8, got {data.dtype}")
    if data.ndim == 2:
        side = int(round((data.shape[1] / 3) ** 0.5))
        if 3 * side * side != data.shape[1]:
            raise FormatError(f"{p}: CIFAR rows of {data.shape[1]} values are not 3 square planes")
        data = data.reshape(data.shape[0], 3, side, side)
    elif not (data.ndim == 4 and data.shape[1] == 3):
        raise FormatError(f"{p}: CIFAR b'data' must be (n, 3072) or (n, 3, H, W), got {data.shape}")
    x = np.ascontiguousarray(uint8_images(data))
    if labels not in ("fine", "coarse"):
        raise FormatError(f"unknown CIFAR-100 label kind {labels!r}; expected 'fine' or 'coarse'")
    raw = _get(d, "labels")
    if raw is None:
        raw = _get(d, f"{labels}_labels")
    y = None if raw is None else as_labels(raw, x.shape[0], str(p))
    return x, y


def _resolve(root: Path, variant: str | None) -> tuple[str, Path]:
    """Find the CIFAR-10 or CIFAR-100 batch folder at or just below ``root``."""
    c10 = next((d for d in (root, root / "cifar-10-batches-py") if (d / "test_batch").is_file()), None)
    c100 = next((d for d in (root, root / "cifar-100-python") if (d / "test").is_file()), None)
    if variant == "cifar10" or (variant is None and c10 is not None and c100 is None):
        if c10 is None:
            raise FormatError(f"{root}: no CIFAR-10 test_batch found (here or in cifar-10-batches-py/); {_HINT}")
        return "cifar10", c10
    if variant == "cifar100" or (variant is None and c100 is not None and c10 is None):
        if c100 is None:
            raise FormatError(f"{root}: no CIFAR-100 'test' file found (here or in cifar-100-python/); {_HINT}")
        return "cifar100", c100
    if variant is not None:
        raise FormatError(f"unknown CIFAR variant {variant!r}; expected 'cifar10' or 'cifar100'")
    if c10 is not None:
        raise FormatError(f"{root}: holds both CIFAR-10 and CIFAR-100; name the sub-folder")
    raise FormatError(f"{root}: no CIFAR batches found (test_batch or test); {_HINT}")


def load_cifar(
    folder_or_file: str | os.PathLike,
    split: str = "test",
    *,
    labels: str = "fine",
    variant: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load CIFAR-10 or CIFAR-100 from its unpacked python-version folder, or one batch file.

    A folder may be ``cifar-10-batches-py`` / ``cifar-100-python`` itself or
    the folder that contains it; the variant is detected from the file names
    (``test_batch`` → CIFAR-10, ``test`` → CIFAR-100) unless ``variant`` is
    ``"cifar10"`` or ``"cifar100"``. ``split="test"`` reads ``test_batch`` /
    ``test`` (10,000 images); ``"train"`` reads ``data_batch_1``…``_5`` in
    order / ``train`` (50,000). For a file, ``split`` is ignored and that one
    batch is read. ``labels`` picks CIFAR-100's ``"fine"`` (100 classes) or
    ``"coarse"`` (20) labels. Returns ``x`` float32 ``(n, 3, 32, 32)`` in [0, 1]
    and ``y`` int64 ``(n,)`` (None if the file has no labels). See the module
    docstring about pickle.
    """
    check_split(split, ("test", "train"))
    p = Path(folder_or_file)
    if p.is_file():
        return read_cifar_batch(p, labels)
    root = require_dir(p)
    kind, folder = _resolve(root, variant)
    if kind == "cifar10":
        names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    else:
        names = [split]
    parts = [read_cifar_batch(require_file(folder / n), labels) for n in names]
    x = np.concatenate([a for a, _ in parts]) if len(parts) > 1 else parts[0][0]
    ys = [b for _, b in parts]
    y = None if any(b is None for b in ys) else np.concatenate(ys)
    return x, y
