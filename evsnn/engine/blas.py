"""BLAS products for the engine's kernels, which are compiled without reference counting
(:data:`evsnn.engine.jit.kernel`).

``np.dot(a, b, out)`` is not usable there (its implementation returns ``out``, which NRT-free code
may not do), so :func:`dot_into` makes the same BLAS call as ``np.dot(a, b, out)`` does (Numba's own
code generation for it, hence the same sums bit for bit: tested) and returns nothing.
"""

from __future__ import annotations

from numba import types
from numba.core.errors import TypingError
from numba.core.extending import intrinsic
from numba.np import linalg as _LA

@intrinsic
def dot_into(typingctx, a, b, out):
    """out = a @ b (``a``: (m, k) or (k,), ``b``: (k, n), ``out``: (m, n) or (n,), all C-contiguous, one
    float dtype) through the BLAS call ``np.dot(a, b, out)`` makes; returns None. Shapes are checked
    (ValueError), as np.dot checks them."""
    arrays = (a, b, out)
    if not all(isinstance(x, types.Array) for x in arrays):
        raise TypingError("dot_into takes three arrays")
    if any(x.layout != "C" for x in arrays):
        raise TypingError(f"dot_into needs C-contiguous arrays, got layouts {[x.layout for x in arrays]}")
    if len({a.dtype, b.dtype, out.dtype}) != 1 or a.dtype not in (types.float32, types.float64):
        raise TypingError("dot_into needs one float dtype (float32 or float64)")
    if b.ndim != 2 or (a.ndim, out.ndim) not in ((2, 2), (1, 1)):
        raise TypingError("dot_into computes (m, k)·(k, n) → (m, n) or (k,)·(k, n) → (n,)")
    sig = types.none(a, b, out)

    def codegen(context, builder, signature, args):
        _LA.ensure_blas()
        inner = out(a, b, out)
        res = (_LA.dot_3_mm if a.ndim == 2 else _LA.dot_3_vm)(context, builder, inner, args)
        if context.enable_nrt:  # np.dot's code returns out as a new reference; it is dropped here
            context.nrt.decref(builder, out, res)
        return context.get_dummy_value()

    return sig, codegen
