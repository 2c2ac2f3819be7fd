"""Optional Keras layer for quantization-aware training: :class:`QuantReLU`.

Importing this module imports ``keras`` (Keras 3, any backend). The evsnn
converter never imports it: ``evsnn.frontends.keras`` recognises a saved
``QuantReLU`` by its class name and config alone and maps it to
``QuantAct(levels=L, scale=λ, phase=0 or ½)``.

Forward pass (inference), with L = ``levels`` and λ = ``threshold``::

    round_half=False:  a = floor(clip(x·L/λ, 0, L)) · λ/L        (CQReLU, casc)
    round_half=True:   a = clip(floor(x·L/λ + ½), 0, L) · λ/L    (QCFS)

Training (``training=True``) uses a straight-through estimator: the value is
the same up to float rounding, the gradient is that of clip(x·L/λ (+ ½), 0, L)
(1 inside the range, 0 outside). λ is a fixed hyper-parameter, not a trained
weight, so it lives in the layer config and the file carries no variables for it.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["QuantReLU"]


@keras.saving.register_keras_serializable(package="evsnn")
class QuantReLU(keras.layers.Layer):
    """Quantized ReLU with ``levels`` steps of size ``threshold / levels`` on [0, threshold].

    Args:
        levels: number of non-zero levels L (integer ≥ 1).
        threshold: clipping value λ > 0, in the units of the layer input.
        round_half: False → floor quantizer (phase 0); True → round-half (phase ½).
    """

    def __init__(self, levels: int = 8, threshold: float = 1.0, round_half: bool = False, **kwargs):
        super().__init__(**kwargs)
        if int(levels) != levels or int(levels) < 1:
            raise ValueError(f"QuantReLU levels must be an integer ≥ 1, got {levels!r}")
        if not float(threshold) > 0:
            raise ValueError(f"QuantReLU threshold must be > 0, got {threshold!r}")
        self.levels = int(levels)
        self.threshold = float(threshold)
        self.round_half = bool(round_half)

    def call(self, inputs, training=None):
        """inputs: any shape, float → same shape, values in {k·λ/L : k = 0..L}."""
        levels = float(self.levels)
        phase = 0.5 if self.round_half else 0.0
        y = inputs * (levels / self.threshold) + phase  # one multiply, as the evsnn oracle computes z·(L/λ) + φ
        q = ops.clip(ops.floor(y), 0.0, levels)
        if training:
            c = ops.clip(y, 0.0, levels)  # straight-through: gradient of the clip, value of the floor
            q = c + ops.stop_gradient(q - c)
        return q * (self.threshold / levels)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(levels=self.levels, threshold=self.threshold, round_half=self.round_half)
        return config
