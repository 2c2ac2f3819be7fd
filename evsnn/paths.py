"""Checks of user-given file paths, shared by the frontends, the stores and the CLI (one-line FormatErrors).

Readers accept regular files only: a FIFO would block forever, ``/dev/zero`` never ends and a
socket cannot be read. Writers refuse an output path that resolves to one of the run's inputs
(same device and inode, so hard and symbolic links count), since writing it would destroy the input.
"""

from __future__ import annotations

import os
import stat

from evsnn.errors import FormatError


def existing_file(path: str | os.PathLike, what: str = "a file") -> str:
    """``path`` as a string; FormatError (one line) unless it is an existing regular file (links followed)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FormatError(f"file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise FormatError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise FormatError(f"{path} is a folder, not {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise FormatError(f"{path} is {kind}, not {what} (evsnn reads regular files only)")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and are the same file (device and inode)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_not_input(output: str | os.PathLike, *inputs) -> None:
    """FormatError if ``output`` is (resolves to) any existing file among ``inputs`` (None entries skipped)."""
    for inp in inputs:
        if inp is None:
            continue
        if same_file(output, inp):
            raise FormatError(f"output {os.fspath(output)} is the input file {os.fspath(inp)}; "
                              "writing it would destroy the input (choose another -o)")


def check_writable(path: str | os.PathLike) -> str:
    """Absolute output path; FormatError (one line) if it is a folder or its folder is missing or not writable."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise FormatError(f"cannot write {path}: it is a folder")
    if os.path.exists(path) and not os.path.isfile(path):
        raise FormatError(f"cannot write {path}: it exists and is not a regular file")
    if not os.path.isdir(folder):
        raise FormatError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise FormatError(f"cannot write {path}: folder {folder} is not writable")
    return path
