"""Checks of user-given file paths, shared by the frontends, the stores and the CLI (one-line FormatErrors)."""

from __future__ import annotations

import os

from evsnn.errors import FormatError


def existing_file(path: str | os.PathLike, what: str = "a file") -> str:
    """``path`` as a string; FormatError (one line) if it does not exist or is a folder."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"file not found: {path}")
    if os.path.isdir(path):
        raise FormatError(f"{path} is a folder, not {what}")
    return path


def check_writable(path: str | os.PathLike) -> str:
    """Absolute output path; FormatError (one line) if it is a folder or its folder is missing or not writable."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise FormatError(f"cannot write {path}: it is a folder")
    if not os.path.isdir(folder):
        raise FormatError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise FormatError(f"cannot write {path}: folder {folder} is not writable")
    return path
