"""What each projection kind delivers, in dense NumPy: (N, pre size) signal → (N, post size) current."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from evsnn.ir import ops
from evsnn.ir import snn as S


def dense_matrix(pr: S.DenseProjection) -> sp.csr_matrix:
    """The (pre, post) sparse matrix whose row i holds neuron i's outgoing weights."""
    n_pre, n_post = int(np.prod(pr.pre_shape)), int(np.prod(pr.post_shape))
    return sp.csr_matrix((pr.data, pr.indices, pr.indptr), shape=(n_pre, n_post))


def apply_projection(pr: S.Projection, s: np.ndarray) -> np.ndarray:
    """Input current to ``post`` from signal ``s`` of ``pre`` (spikes × their weight factor)."""
    n = s.shape[0]
    if isinstance(pr, S.DenseProjection):
        return np.asarray(dense_matrix(pr).T.dot(s.T).T)
    if isinstance(pr, S.ConvProjection):
        w = pr.kernel.transpose(3, 2, 0, 1)  # → (Cout, Cin/g, kh, kw)
        y = ops.conv2d(s.reshape((n,) + tuple(pr.pre_shape)), w, pr.stride, pr.pads, pr.groups)
        return y.reshape(n, -1)
    if isinstance(pr, S.PoolProjection):
        win = ops.windows(s.reshape((n,) + tuple(pr.pre_shape)), pr.window, pr.stride, pr.pads)
        return (win.sum(axis=(-1, -2)) * pr.weight).reshape(n, -1)
    if isinstance(pr, S.IdentityProjection):
        return s * pr.weight
    raise TypeError(f"projection kind {pr.kind!r} does not deliver currents")


def window_max(pr: S.MaxProjection, counts: np.ndarray) -> np.ndarray:
    """(N, post size) maximum of the watched inputs' counts over each gate's window (pads never win)."""
    n = counts.shape[0]
    return ops.maxpool2d(counts.reshape((n,) + tuple(pr.pre_shape)), pr.window, pr.stride, pr.pads).reshape(n, -1)
