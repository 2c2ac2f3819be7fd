"""Plain ``.npz`` array files: ``x`` (model input) and optional ``y`` (labels)."""

from __future__ import annotations

import os

import numpy as np

from evsnn.errors import FormatError

from ._common import as_labels, read_npz, require_file


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Load ``x`` and optional ``y`` from an ``.npz`` (opened with ``allow_pickle=False``).

    ``x`` must already be in the model's input layout, samples first
    (``(n, C, H, W)`` or ``(n, F)``); it is returned as float32 with values
    unchanged (no scaling: the file is taken to hold what the model expects).
    ``y``, if present, becomes int64 ``(n,)``. An event-stream file (arrays
    ``t`` and ``polarity``/``p``) is refused with a pointer to
    :func:`evsnn.datasets.events.load_events_npz`.
    """
    p = require_file(path)
    d = read_npz(p)
    if "t" in d and ("polarity" in d or "p" in d):
        raise FormatError(f"{p}: this is an event stream (t, x, y, polarity); use evsnn.datasets.load_events_npz")
    if "x" not in d:
        raise FormatError(f"{p}: .npz has no array 'x' (found: {', '.join(sorted(d)) or 'none'})")
    x, y = d["x"], d.get("y")
    if x.dtype.kind not in "biuf":
        raise FormatError(f"{p}: x must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise FormatError(f"{p}: x must be samples × features or samples × C × H × W, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if y is not None:
        y = as_labels(y, x.shape[0], str(p))
    return x, y
