"""Small helpers shared by the loaders: path checks, gzip sniffing, label checks.

Every problem a user's file can have is raised as
:class:`evsnn.errors.FormatError` (a ``ValueError``) with one line that names
the file, never as an ``assert`` or a raw ``OSError`` traceback.
"""

from __future__ import annotations

import os
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from evsnn.errors import FormatError

GZIP_MAGIC = b"\x1f\x8b"


def require_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a :class:`Path`; FormatError if it is not an existing file."""
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{p}: no such file")
    if not p.is_file():
        raise FormatError(f"{p}: not a regular file")
    return p


def require_dir(path: str | os.PathLike) -> Path:
    """Return ``path`` as a :class:`Path`; FormatError if it is not an existing folder."""
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{p}: no such folder")
    if not p.is_dir():
        raise FormatError(f"{p}: not a folder")
    return p


def read_bytes(path: str | os.PathLike) -> bytes:
    """Whole content of a file, transparently gunzipped when it starts with the gzip magic.

    The compression is recognised by content, not by the ``.gz`` suffix, so a
    renamed file still loads. A damaged or truncated gzip stream is a
    FormatError.
    """
    from evsnn.validate.files import gunzip_capped
    from evsnn.validate.limits import fmt_bytes, max_decompressed_bytes

    p = require_file(path)
    limit = max_decompressed_bytes()
    if p.stat().st_size > limit:
        raise FormatError(f"{p}: {fmt_bytes(p.stat().st_size)} is over the {fmt_bytes(limit)} read limit "
                          "(EVSNN_MAX_DECOMPRESSED_BYTES)")
    raw = p.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    return gunzip_capped(raw, str(p), limit)  # a gzip bomb stops at the limit


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, read with ``allow_pickle=False``.

    The file handle is opened here so it is closed even when NumPy rejects a
    damaged archive. A single ``.npy``, a damaged zip or object arrays are a
    FormatError.
    """
    p = require_file(path)
    try:
        _check_npz_members(p)
        with open(p, "rb") as fh:
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise FormatError(f"{p}: a single .npy array, expected an .npz archive")
            with z:
                return {k: z[k] for k in z.files}
    except FormatError:
        raise
    except _NPZ_ERRORS as exc:
        raise FormatError(f"{p}: not a readable .npz file ({type(exc).__name__}: {str(exc)[:80]})") from None


#: What NumPy and zipfile raise on damaged archives and .npy headers (tokenize errors included).
_NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError,
               NotImplementedError, RuntimeError, OverflowError, LookupError, UnicodeError, SyntaxError,
               IndexError, AttributeError, MemoryError, tokenize.TokenError)


def _check_npz_members(p: Path) -> None:
    """Refuse an .npz whose members declare more than the decompression limit, or whose .npy
    headers declare more data than the member holds (NumPy would allocate the declared array
    before reading). Non-zip files are left to :func:`numpy.load` to refuse."""
    from evsnn.validate.files import check_zip_members
    from evsnn.validate.limits import max_decompressed_bytes

    if not zipfile.is_zipfile(p):
        return
    with zipfile.ZipFile(p) as zf:
        check_zip_members(zf, str(p), max_decompressed_bytes())
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                header = fh.tell()
            n = dtype.itemsize
            for d in shape:
                n *= int(d)
            if n > info.file_size - header:
                raise FormatError(f"{p}: member {info.filename} declares {n} bytes of data but holds "
                                  f"{max(info.file_size - header, 0)}")


def check_split(split: str, allowed: tuple[str, ...]) -> str:
    """Validate a ``split`` argument against ``allowed`` (FormatError otherwise)."""
    if split not in allowed:
        raise FormatError(f"unknown split {split!r}; expected one of: {', '.join(allowed)}")
    return split


def as_labels(y, n: int, source: str) -> np.ndarray:
    """Labels as a 1-D int64 array of length ``n``; FormatError naming ``source`` otherwise.

    Float labels are accepted only when every value is integral.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise FormatError(f"{source}: labels must be 1-D, got shape {y.shape}")
    if y.shape[0] != n:
        raise FormatError(f"{source}: {y.shape[0]} labels for {n} samples")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise FormatError(f"{source}: labels must be integers")
    elif y.dtype.kind not in "iub":
        raise FormatError(f"{source}: labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


def uint8_images(a: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 → float32 in [0, 1] (exactly ``a / 255``)."""
    return (a.astype(np.float32) / np.float32(255.0)).astype(np.float32, copy=False)
