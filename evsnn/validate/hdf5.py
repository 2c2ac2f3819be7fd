"""Untrusted HDF5: what every HDF5 file evsnn reads must pass before its content is used.

Refused, each with one FormatError line naming the object:

- external links and soft links (a file must be self-contained; soft links can also loop);
- datasets with external storage (raw data in another file, e.g. ``/etc/passwd``), virtual
  datasets (data mapped from other files) and any filter outside HDF5's built-in ones and
  h5py's LZF (a user-defined filter is a plugin, i.e. code loaded from disk);
- datasets or attributes larger than :func:`evsnn.validate.limits.max_array_bytes`;
- datasets that declare more data than the file stores (``check_sizes``): an unfiltered
  dataset must store all its bytes, a compressed one at most ~1100:1, and no dataset may claim
  more storage than the file's size. Reading one would otherwise allocate the declared size
  of fill values (800 M floats from a few hundred bytes).
- more than :data:`MAX_OBJECTS` objects (a cheap cap on hard-link loops and crafted trees).

h5py already keeps HDF5's own error stack quiet; errors from damaged metadata met during the
walk (OSError, RuntimeError, KeyError, ...) become "damaged HDF5 file".
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from evsnn.errors import FormatError
from evsnn.paths import existing_file
from evsnn.validate.limits import GZIP_MAX_RATIO, fmt_bytes, max_array_bytes

#: Filters HDF5 implements itself (deflate, shuffle, fletcher32, szip, nbit, scaleoffset) and h5py's LZF.
BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
                   32000: "lzf"}
MAX_OBJECTS = 200_000
_SLACK = 1 << 16
#: exceptions h5py raises on damaged metadata (turned into one FormatError line by the readers)
DAMAGE = _DAMAGE = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError, OverflowError,
           SystemError, UnicodeDecodeError)


def _nbytes(shape, dtype) -> int:
    n = 1
    for s in shape or ():
        n *= int(s)
    return n * max(int(dtype.itemsize), 1)


def check_dataset(ds: h5py.Dataset, source: str, check_sizes: bool = True, file_bytes: int | None = None) -> None:
    """Refuse one dataset (see the module docstring)."""
    where = f"{source}: dataset {ds.name}"
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL or ds.is_virtual:
        raise FormatError(f"{where} is a virtual dataset (data from other files); evsnn refuses it")
    if dcpl.get_external_count() > 0:
        name = dcpl.get_external(0)[0]
        name = name.decode(errors="replace") if isinstance(name, bytes) else name
        raise FormatError(f"{where} keeps its data in an external file ({name!r}); evsnn refuses it")
    filtered = False
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in BUILTIN_FILTERS:
            raise FormatError(f"{where} uses HDF5 filter {code}, which is not built in "
                              f"(allowed: {', '.join(sorted(BUILTIN_FILTERS.values()))})")
        filtered = filtered or code in (1, 4, 5, 6, 32000)
    declared = _nbytes(ds.shape, ds.dtype)
    cap = max_array_bytes()
    if declared > cap:
        raise FormatError(f"{where} declares {fmt_bytes(declared)}, more than the {fmt_bytes(cap)} evsnn reads "
                          "(set EVSNN_MAX_ARRAY_BYTES to allow more)")
    if not check_sizes or declared == 0 or ds.dtype.kind == "O" or h5py.check_vlen_dtype(ds.dtype) is not None:
        return
    stored = int(ds.id.get_storage_size())
    if file_bytes is not None and stored > file_bytes:
        raise FormatError(f"{where} claims {fmt_bytes(stored)} of storage in a file of {fmt_bytes(file_bytes)}")
    if filtered:
        if declared > stored * GZIP_MAX_RATIO + _SLACK:
            raise FormatError(f"{where} declares {fmt_bytes(declared)} but stores only {fmt_bytes(stored)} "
                              "(unwritten or impossibly compressed data)")
    elif stored < declared:
        raise FormatError(f"{where} declares {fmt_bytes(declared)} but the file stores {fmt_bytes(stored)} "
                          "(truncated or crafted file)")


def _check_attrs(obj, source: str) -> None:
    cap = max_array_bytes()
    for name in obj.attrs:
        aid = h5py.h5a.open(obj.id, name.encode() if isinstance(name, str) else name)
        n = _nbytes(aid.shape, aid.dtype)
        if n > cap:
            raise FormatError(f"{source}: attribute {name!r} of {obj.name} declares {fmt_bytes(n)}, "
                              f"more than the {fmt_bytes(cap)} evsnn reads")


def check_tree(f: h5py.File, source: str, check_sizes: bool = True, file_bytes: int | None = None) -> None:
    """Walk every link from the root and check every object (see the module docstring).

    ``file_bytes``: the file's real size, for files opened from memory (no descriptor to ask)."""
    if file_bytes is None:
        try:
            file_bytes = os.fstat(f.id.get_vfd_handle()).st_size
        except (OSError, ValueError, TypeError, AttributeError, RuntimeError):  # RuntimeError: in-memory file
            file_bytes = None
    seen: set = set()
    todo = [f]
    try:
        while todo:
            g = todo.pop()
            _check_attrs(g, source)
            for name in g:
                link = g.get(name, getlink=True)
                path = f"{g.name.rstrip('/')}/{name}"
                if isinstance(link, h5py.ExternalLink):
                    raise FormatError(f"{source}: {path} is an external link to {link.filename}:{link.path}; "
                                      "evsnn refuses links out of the file")
                if isinstance(link, h5py.SoftLink):
                    raise FormatError(f"{source}: {path} is a soft link to {link.path}; evsnn refuses links")
                if not isinstance(link, h5py.HardLink):
                    raise FormatError(f"{source}: {path} is a user-defined link; evsnn refuses it")
                obj = g[name]
                key = h5py.h5o.get_info(obj.id).addr
                if key in seen:
                    continue
                seen.add(key)
                if len(seen) > MAX_OBJECTS:
                    raise FormatError(f"{source}: more than {MAX_OBJECTS} HDF5 objects")
                if isinstance(obj, h5py.Dataset):
                    _check_attrs(obj, source)
                    check_dataset(obj, source, check_sizes, file_bytes)
                elif isinstance(obj, h5py.Group):
                    todo.append(obj)
                else:
                    _check_attrs(obj, source)  # a committed datatype
    except FormatError:
        raise
    except _DAMAGE as e:
        raise FormatError(f"{source}: damaged HDF5 file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                          ) from None


def open_untrusted(path: str | os.PathLike, what: str = "an HDF5 file", check_sizes: bool = True) -> h5py.File:
    """Open a regular file read-only as HDF5 and :func:`check_tree` it; the caller closes it."""
    path = existing_file(path, what)
    try:
        f = h5py.File(path, "r")
    except _DAMAGE:
        raise FormatError(f"{path} is not an HDF5 file (or it is corrupt)") from None
    try:
        check_tree(f, path, check_sizes)
    except BaseException:
        f.close()
        raise
    return f


def check_h5_file(path: str | os.PathLike, what: str = "an HDF5 file", check_sizes: bool = True) -> None:
    """:func:`open_untrusted` and close: for readers that open the file themselves afterwards
    (e.g. Keras ``.h5`` weights, or a ``model.weights.h5`` extracted from a ``.keras`` zip)."""
    open_untrusted(path, what, check_sizes).close()


def read_array(ds, source: str, ndim: int | None = None, kinds: str = "biuf") -> np.ndarray:
    """``ds[()]`` after checking its rank and dtype kind; FormatError naming the dataset otherwise."""
    if not isinstance(ds, h5py.Dataset):
        raise FormatError(f"{source}: {getattr(ds, 'name', ds)} must be a dataset")
    if ds.dtype.kind not in kinds:
        raise FormatError(f"{source}: {ds.name} has dtype {ds.dtype}, expected a numeric array")
    if ndim is not None and ds.ndim != ndim:
        raise FormatError(f"{source}: {ds.name} must be {ndim}-D, got shape {ds.shape}")
    try:
        return ds[()]
    except _DAMAGE as e:
        raise FormatError(f"{source}: cannot read {ds.name} ({type(e).__name__})") from None
