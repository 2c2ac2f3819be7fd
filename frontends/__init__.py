"""Model-file frontends: each turns a file into an :class:`evsnn.ir.AnnGraph`.

A frontend is a module (or object) with ``can_open(path) -> bool`` (decided by
the file's content, not only its suffix) and ``load(path) -> AnnGraph``.
Built-in frontends are listed in :data:`BUILTIN`; third-party packages add
their own through the ``evsnn.frontends`` entry-point group, whose entries
point at such a module or object.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from evsnn.errors import FormatError
from evsnn.paths import existing_file

BUILTIN = {"onnx": "evsnn.frontends.onnx", "keras": "evsnn.frontends.keras"}
ENTRY_POINT_GROUP = "evsnn.frontends"


def available() -> dict[str, object]:
    """Name → frontend for the built-in frontends and every registered plugin."""
    found: dict[str, object] = {}
    for name, mod in BUILTIN.items():
        found[name] = importlib.import_module(mod)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def find_frontend(path: str | os.PathLike):
    """The first frontend whose ``can_open`` accepts ``path``; FormatError if none does."""
    path = existing_file(path, "a model file")
    fronts = available()
    for fe in fronts.values():
        if fe.can_open(path):
            return fe
    raise FormatError(f"{path}: not a model format evsnn can read (known: {', '.join(fronts)})")


def load_model(path: str | os.PathLike):
    """Read a model file with whichever frontend recognises it; returns an AnnGraph."""
    return find_frontend(path).load(os.fspath(path))


__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "available", "find_frontend", "load_model"]
