"""BLAS products for the engine's kernels that are compiled without reference counting.

The hot kernels are compiled with :data:`kernel` (``njit(cache=True, _nrt=False)``): Numba's runtime
(NRT) would otherwise increment and decrement, with atomic instructions, the reference count of every
array argument at every call and of every view made in a loop. Measured on the digits CNN (casc, 599
samples) this was 27 % of the run (``NRT_incref``/``NRT_decref``); a call with 10 array arguments cost
112 ns against 21 ns without NRT. Such a function may not allocate or return a new array, and it
compiles the functions it calls in its own (NRT-free) context, so everything it reaches must be
allocation-free too (Numba refuses to compile otherwise: "NRT required but not enabled").

``np.dot(a, b, out)`` is not usable there (its implementation returns ``out``, which NRT-free code
may not do), so :func:`dot_into` makes the same BLAS call as ``np.dot(a, b, out)`` does (Numba's own
code generation for it, hence the same sums bit for bit: tested) and returns nothing.
"""

from __future__ import annotations

from numba import njit, types
from numba.core.errors import TypingError
from numba.core.extending import intrinsic
from numba.np import linalg as _LA

kernel = njit(cache=True, _nrt=False)
"""Decorator of the engine's allocation-free compiled functions (no NRT reference counting; see above)."""


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
