"""The Numba event engine: same description, same records as :func:`evsnn.reference.simulate`.

Modules: :mod:`.pack` (Network → flat arrays), :mod:`.kernels` (scatter kernels),
:mod:`.neurons` (neuron-update kernels), :mod:`.step` (the compiled step loop and
the parallel batch driver), :mod:`.run` (the Python entry, :func:`simulate`, and
:func:`prepare`, which packs a network once for many calls), :mod:`.cost` and :mod:`.calibrate` (the
path choice's cost model, measured on this machine).
"""

from evsnn.engine._cache import invalidate_stale_cache

invalidate_stale_cache()  # before any kernel is loaded from the Numba cache

from evsnn.engine.run import Prepared, prepare, simulate  # noqa: E402

__all__ = ["simulate", "prepare", "Prepared"]
