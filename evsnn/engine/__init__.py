"""The Numba event engine: same description, same records as :func:`evsnn.reference.simulate`.

Modules: :mod:`.pack` (Network → flat arrays), :mod:`.kernels` (scatter kernels),
:mod:`.neurons` (neuron-update kernels), :mod:`.step` (the compiled step loop and
the parallel batch driver), :mod:`.run` (the Python entry, :func:`simulate`).
"""

from evsnn.engine.run import BREAK_EVEN, simulate

__all__ = ["simulate", "BREAK_EVEN"]
