"""Conversion presets from the literature: neuron model and initial state per method.

| preset     | neuron            | v0 (×θ)         | notes                                         |
|------------|-------------------|-----------------|-----------------------------------------------|
| if         | IF, soft reset    | 0               | baseline rate coding                          |
| deng-gu    | IF, soft reset    | 0               | δ = θ/(2·T_w) added to the input each wake step |
| qcfs       | IF, soft reset    | ½               | QCFS initial membrane                         |
| casc       | CIF, signed spikes| φ of the quantizer | cap S < min(t_w, L); run T_w = L then sleep |
| bitserial  | bit-serial IF     | φ of the quantizer | L = 2^K − 1, K steps per layer, pipelined   |
"""

from __future__ import annotations

from dataclasses import dataclass

from evsnn.errors import ConversionError


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    v0: float | None  # None: take the quantizer's phase φ
    shift: bool = False
    exact: bool = False
    needs_levels: bool = False
    description: str = ""


PRESETS = {
    "if": Preset("if", "if", 0.0, description="baseline IF, soft reset, v0 = 0"),
    "deng-gu": Preset("deng-gu", "if", 0.0, shift=True,
                      description="threshold ReLU with bias shift δ = θ/(2T) (Deng & Gu 2021)"),
    "qcfs": Preset("qcfs", "if", 0.5, description="IF with v0 = θ/2 (QCFS, Bu et al. 2022)"),
    "casc": Preset("casc", "cif", None, exact=True, needs_levels=True,
                   description="CIF neurons with signed spikes, wake T = L then sleep; exact"),
    "bitserial": Preset("bitserial", "bitserial", None, exact=True, needs_levels=True,
                        description="bit-serial coding, K = log2(L+1) steps per layer; exact"),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConversionError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def bits_for_levels(levels: int) -> int:
    """K with L = 2^K − 1, or ConversionError."""
    k = int(levels + 1).bit_length() - 1
    if levels < 1 or (1 << k) != levels + 1:
        raise ConversionError(
            f"bitserial needs L = 2^K − 1 levels (1, 3, 7, 15, ...), the model has L = {levels}")
    return k
