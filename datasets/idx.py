"""MNIST / Fashion-MNIST IDX files (``*-idx3-ubyte``, ``*-idx1-ubyte``, gzipped or not).

IDX format (LeCun et al.): two zero bytes, a type byte (0x08 uint8, 0x09 int8,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of
dimensions d, then d big-endian uint32 sizes, then the data, big-endian,
row-major. Nothing is downloaded: get the files from the dataset's own page
(MNIST: http://yann.lecun.com/exdb/mnist/ or a mirror such as
https://ossci-datasets.s3.amazonaws.com/mnist/; Fashion-MNIST:
https://github.com/zalandoresearch/fashion-mnist).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from evsnn.errors import FormatError

from ._common import as_labels, check_split, read_bytes, require_dir, uint8_images

_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: Prefix of the standard file names per split.
_MNIST_PREFIX = {"test": "t10k", "train": "train"}

_MNIST_HINT = (
    "get the four IDX files from http://yann.lecun.com/exdb/mnist/ (MNIST) or "
    "https://github.com/zalandoresearch/fashion-mnist (Fashion-MNIST); evsnn never downloads"
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or plain) into an array of its stored shape and type.

    Returns the array in native byte order (e.g. uint8 ``(n, 28, 28)`` for
    MNIST images, uint8 ``(n,)`` for labels). Raises FormatError on a bad
    magic number, an unknown type byte, or a size that does not match the
    header (truncated file or trailing bytes).
    """
    p = Path(path)
    raw = read_bytes(p)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise FormatError(f"{p}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise FormatError(f"{p}: not an IDX file (unknown type byte 0x{code:02x})")
    if ndim == 0:
        raise FormatError(f"{p}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FormatError(f"{p}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = dtype.itemsize
    for d in shape:
        expected *= d  # Python ints: 255 dimensions of 2^32 cannot overflow
    found = len(raw) - header
    if found < expected:
        raise FormatError(f"{p}: truncated IDX file: header promises {expected} data bytes, found {found}")
    if found > expected:
        raise FormatError(f"{p}: IDX file has {found - expected} bytes after the data the header declares")
    arr = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(shape).astype(dtype.newbyteorder("="))


def load_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load an IDX image file and, optionally, its IDX label file.

    Returns ``(x, y)``: ``x`` float32, ``(n, 1, H, W)`` for a 3-D image file
    (``(n, F)`` for a 2-D file of feature vectors); uint8 pixels are scaled
    to [0, 1] by dividing by 255, float files are kept as stored. ``y`` is
    int64 ``(n,)``, or None without ``labels_path``. Signed integer image
    files are refused (no scale is defined for them).
    """
    imgs = read_idx(images_path)
    if imgs.ndim not in (2, 3):
        raise FormatError(
            f"{images_path}: expected images (n, H, W) or vectors (n, F), got IDX shape {imgs.shape}"
        )
    if imgs.dtype == np.uint8:
        x = uint8_images(imgs)
    elif imgs.dtype.kind == "f":
        x = imgs.astype(np.float32)
    else:
        raise FormatError(f"{images_path}: IDX images of type {imgs.dtype} are not supported (uint8 or float)")
    if x.ndim == 3:
        x = x[:, None, :, :]
    y = None
    if labels_path is not None:
        y = as_labels(read_idx(labels_path), x.shape[0], str(labels_path))
    return np.ascontiguousarray(x), y


def _find(folder: Path, stem: str, kind: str) -> Path | None:
    """First existing file among the common spellings of one MNIST file name."""
    # Official: "t10k-images-idx3-ubyte"; some mirrors: "t10k-images.idx3-ubyte".
    base, _, rest = kind.partition("-")  # "images", "idx3-ubyte"
    names = [f"{stem}-{base}-{rest}", f"{stem}-{base}.{rest}"]
    for sub in (folder, folder / "raw"):
        for name in names:
            for cand in (sub / name, sub / (name + ".gz")):
                if cand.is_file():
                    return cand
    return None


def load_mnist(folder: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from a folder holding the standard IDX files.

    ``split`` is ``"test"`` (``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
    10,000 images) or ``"train"`` (``train-…``, 60,000 images). Each file may
    be plain or ``.gz``, spelled ``…-images-idx3-ubyte`` or
    ``…-images.idx3-ubyte``, and may sit in ``folder`` or ``folder/raw``
    (torchvision's layout). Returns ``x`` float32 ``(n, 1, 28, 28)`` in [0, 1]
    and ``y`` int64 ``(n,)``.
    """
    check_split(split, ("test", "train"))
    root = require_dir(folder)
    stem = _MNIST_PREFIX[split]
    img = _find(root, stem, "images-idx3-ubyte")
    lab = _find(root, stem, "labels-idx1-ubyte")
    if img is None or lab is None:
        missing = f"{stem}-images-idx3-ubyte" if img is None else f"{stem}-labels-idx1-ubyte"
        raise FormatError(f"{root}: no {missing}[.gz] found; {_MNIST_HINT}")
    return load_idx(img, lab)
