"""evsnn.engine.blas: dot_into makes np.dot(a, b, out)'s BLAS call from code compiled without NRT."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from numba.core.errors import TypingError

from evsnn.engine.blas import dot_into
from evsnn.engine.jit import kernel


@kernel
def _dot_no_nrt(a, b, out):
    dot_into(a, b, out)


@njit
def _dot_nrt(a, b, out):
    dot_into(a, b, out)


@njit
def _np_dot(a, b, out):
    np.dot(a, b, out)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 9), st.integers(1, 40), st.integers(1, 12),
       st.sampled_from([np.float32, np.float64]))
def test_dot_into_equals_np_dot_bit_for_bit(seed, m, k, n, dtype):
    """Matrix (m ≥ 1) or vector (m = 0) times matrix, real (non-dyadic) values: the same numbers as np.dot
    with an output array, whether the caller counts references or not."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k) if m else k).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    want = np.full((m, n) if m else n, np.nan, dtype)
    _np_dot(a, b, want)
    for fn in (_dot_no_nrt, _dot_nrt):
        got = np.full_like(want, np.nan)
        fn(a, b, got)
        np.testing.assert_array_equal(got, want)


def test_dot_into_refuses_what_np_dot_would_copy_or_reject():
    a, b = np.ones((4, 6)), np.ones((6, 3))
    with pytest.raises(TypingError, match="C-contiguous"):
        _dot_no_nrt(a[:, ::2], b[::2], np.empty((4, 3)))
    with pytest.raises(TypingError, match="one float dtype"):
        _dot_no_nrt(a, b.astype(np.float32), np.empty((4, 3)))
    with pytest.raises(ValueError, match="incompatible"):
        _dot_no_nrt(a, b, np.empty((4, 4)))
