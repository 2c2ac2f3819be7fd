"""What each projection kind delivers, in dense NumPy: (N, pre size) signal → (N, post size) current.

The definitions live in :mod:`evsnn.ir.drive` (shared with the engine's drive and the verification
oracle); this module names them for the reference simulator.
"""

from __future__ import annotations

import numpy as np

from evsnn.ir import ops
from evsnn.ir import snn as S
from evsnn.ir.drive import dense_matrix, project as apply_projection

__all__ = ["apply_projection", "dense_matrix", "window_max"]


def window_max(pr: S.MaxProjection, counts: np.ndarray) -> np.ndarray:
    """(N, post size) maximum of the watched inputs' counts over each gate's window (pads never win)."""
    n = counts.shape[0]
    return ops.maxpool2d(counts.reshape((n,) + tuple(pr.pre_shape)), pr.window, pr.stride, pr.pads).reshape(n, -1)
