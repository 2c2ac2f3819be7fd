"""Shared HDF5 conventions: ``format``/``format_version`` root attributes and atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile

import h5py
import numpy as np

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
    except (OSError, RuntimeError, ValueError, TypeError, KeyError):
        raise FormatError(f"{path} is not an HDF5 file (or it is corrupt)") from None
    try:
        found = f.attrs.get("format")
        found = found.decode(errors="replace") if isinstance(found, bytes) else found
        if not isinstance(found, str) or found != fmt:
            raise FormatError(f"{path} is not an {fmt} file (format attribute: {found!r:.60})")
        version = f.attrs.get("format_version", -1)
        if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)):
            raise FormatError(f"{path}: format_version must be an integer, got {version!r:.40}")
        if int(version) not in versions:
            raise FormatError(f"{path} has {fmt} format_version {int(version)}; this evsnn reads versions "
                              f"{', '.join(map(str, versions))} (upgrade evsnn to read newer files)")
    except FormatError:
        f.close()
        raise
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:
        f.close()
        raise FormatError(f"{path}: damaged HDF5 file ({type(e).__name__})") from None
    return f


def file_format(path: str | os.PathLike) -> str | None:
    """The ``format`` attribute of an HDF5 file, or None if it is not HDF5 or has none (or it is not text)."""
    try:
        with h5py.File(os.fspath(path), "r") as f:
            v = f.attrs.get("format")
    except (OSError, RuntimeError, ValueError, TypeError, KeyError):
        return None
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    return v if isinstance(v, str) else None


def lock_exclusive(path: str | os.PathLike, what: str = "output") -> int:
    """Open (creating it empty if missing) and lock ``path`` exclusively; return the descriptor.

    A second writer fails at once with one FormatError line instead of deleting or renaming the
    first one's file. The lock is the kernel's (``flock``): it ends with the descriptor, so a
    killed run leaves no stale lock. If the file was renamed or removed between opening and
    locking (the first writer finishing), the new file under ``path`` is locked instead.
    """
    import fcntl

    path = os.fspath(path)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FormatError(f"another evsnn run is writing {what} (its unfinished file {path} is locked); "
                              "wait for it or choose another -o") from None
        except OSError:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise FormatError(f"cannot lock {path}: it keeps being replaced")
