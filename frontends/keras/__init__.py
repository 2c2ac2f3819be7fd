"""Keras frontend: ``.keras`` archives and legacy HDF5 ``.h5`` models → :class:`~evsnn.ir.AnnGraph`.

Modules: :mod:`.reader` (files, model config → layer specs; see its docstring
for the formats), :mod:`.graph` (specs → graph, folding), :mod:`.layers`
(Keras' own layers), and the quantization-aware-training libraries, read from
their config and weights alone (the library is never imported):
:mod:`.hgq` (HGQ2) and :mod:`.qkeras` (QKeras configs), with :mod:`.fixed_point`
(fixed-point quantizer math) and :mod:`.qat` (placing activation quantizers).
Quantizers keep the tool's exact semantics, ties included: the exact presets
compute in float64 with an exact drive (:mod:`evsnn.ir.drive`), so fixed-point
sums are exact and need no margin.
"""

from evsnn.frontends.keras.reader import SUPPORTED, can_open, load, model_specs

__all__ = ["SUPPORTED", "can_open", "load", "model_specs"]
