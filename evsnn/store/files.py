"""Shared HDF5 conventions: ``format``/``format_version`` root attributes and atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile

import h5py

from evsnn.errors import FormatError
from evsnn.paths import check_writable, existing_file


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    An exception (or a kill) leaves no file under the final name and removes the temporary one.
    """
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(path))
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, fmt: str, version: int):
    """An HDF5 file written through :func:`atomic_file`, its root carrying ``format``/``format_version``."""
    with atomic_file(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = fmt
            f.attrs["format_version"] = version
            yield f


def open_h5(path: str | os.PathLike, fmt: str, versions: tuple[int, ...]) -> h5py.File:
    """Open ``path`` for reading and check its format and version; FormatError with one line otherwise."""
    path = existing_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise FormatError(f"{path} is not an HDF5 file (or it is corrupt)") from None
    found = f.attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode()
    if found != fmt:
        f.close()
        raise FormatError(f"{path} is not an {fmt} file (format attribute: {found!r})")
    version = int(f.attrs.get("format_version", -1))
    if version not in versions:
        f.close()
        raise FormatError(f"{path} has {fmt} format_version {version}; this evsnn reads versions "
                          f"{', '.join(map(str, versions))} (upgrade evsnn to read newer files)")
    return f


def file_format(path: str | os.PathLike) -> str | None:
    """The ``format`` attribute of an HDF5 file, or None if it is not HDF5 or has none."""
    try:
        with h5py.File(os.fspath(path), "r") as f:
            v = f.attrs.get("format")
    except OSError:
        return None
    return v.decode() if isinstance(v, bytes) else v
