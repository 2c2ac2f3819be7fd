"""evsnn: event-driven simulation of spiking networks converted from quantized ANNs.

The package is split as in ``design.md``: :mod:`evsnn.ir` holds plain data
(the ANN graph and the SNN network), :mod:`evsnn.convert` turns one into the
other, :mod:`evsnn.reference` executes both in plain NumPy (the oracle), and
the Numba event engine executes the same description faster.
"""

from evsnn.errors import ConversionError, EvsnnError, FormatError, ShapeError

__version__ = "0.1.0"

__all__ = ["ConversionError", "EvsnnError", "FormatError", "ShapeError", "__version__"]
