"""ANN graph → SNN network, per conversion preset (see :mod:`.presets` and :mod:`.build`)."""

from evsnn.convert.build import INPUT_MODES, convert, quantize_graph
from evsnn.convert.calibrate import calibrate
from evsnn.convert.presets import PRESETS, bits_for_levels, get_preset

__all__ = ["INPUT_MODES", "PRESETS", "bits_for_levels", "calibrate", "convert", "get_preset", "quantize_graph"]
