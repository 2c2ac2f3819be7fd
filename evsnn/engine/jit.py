"""How the engine's hot functions are compiled.

:data:`kernel` is ``njit(cache=True, _nrt=False)``: compiled without Numba's runtime (NRT), which would
otherwise increment and decrement, with atomic instructions, the reference count of every array
argument at every call and of every view made in a loop. Measured on the digits CNN (casc, 599
samples) that was 27 % of the run (``NRT_incref``/``NRT_decref``); a call with 10 array arguments cost
112 ns against 21 ns without NRT.

Such a function may not allocate or return a new array, and it compiles the functions it calls in its
own (NRT-free) context, so everything it reaches must be allocation-free too (Numba refuses to compile
otherwise: "NRT required but not enabled"). So the per-thread work space is allocated once, by the
batch driver (:func:`evsnn.engine.batch.run_batch`, :func:`evsnn.engine.layers.window_space`), and
passed down; BLAS products go through :func:`evsnn.engine.blas.dot_into`. ``_nrt`` is a private Numba
option (present in Numba 0.59–0.68); a Numba without it fails at import, not silently.
"""

from __future__ import annotations

from numba import njit

kernel = njit(cache=True, _nrt=False)
"""Decorator of the engine's allocation-free compiled functions (no NRT reference counting; see above)."""
