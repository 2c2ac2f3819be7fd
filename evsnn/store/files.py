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
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and not e.filename and e.errno is not None:
            # a write through a handle (a plot library, a ZIP writer) names no file: name the one we were writing
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), path) from e
        raise


#: Set once an HDF5 write to disk failed: HDF5 may then crash while shutting down, so the CLI
#: leaves with ``os._exit`` after printing its one line (see :func:`evsnn.cli.main`).
WRITE_FAILED = []


def note_write_failure(exc: BaseException) -> None:
    WRITE_FAILED.append(type(exc).__name__)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` through :func:`atomic_file` with plain Python I/O (fsync'd):
    disk full or any write error is an OSError and leaves nothing under ``path``."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return os.path.abspath(os.fspath(path))


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, fmt: str, version: int):
    """An HDF5 file, its root carrying ``format``/``format_version``, written atomically.

    The file is built in memory (HDF5's core driver, nothing on disk) and its image written with
    plain Python I/O, so a full disk is one OSError, never an HDF5 write failure (after which
    HDF5 can crash the process on exit).
    """
    check_writable(path)
    f = h5py.File(f"evsnn-mem-{id(path)}.h5", "w", driver="core", backing_store=False)
    try:
        f.attrs["format"] = fmt
        f.attrs["format_version"] = version
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    write_bytes_atomic(path, image)


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
