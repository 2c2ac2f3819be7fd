"""NumPy definitions of the linear operators that ANN nodes and SNN projections denote.

These are the *semantics*, written for clarity: batch-first NCHW arrays in,
arrays out. The reference simulator and ``ann_forward`` execute them; the
converter uses them to compose operators; the engine is tested against them.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from evsnn.errors import ConversionError
from evsnn.ir import ann


def _pad(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    t, l, b, r = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def windows(x: np.ndarray, kernel, stride, pads, value: float = 0.0) -> np.ndarray:
    """(N, C, H, W) → (N, C, Ho, Wo, kh, kw) views of every window."""
    xp = _pad(x, pads, value)
    w = sliding_window_view(xp, kernel, axis=(2, 3))
    return w[:, :, :: stride[0], :: stride[1]]


def conv2d(x: np.ndarray, weight: np.ndarray, stride=(1, 1), pads=(0, 0, 0, 0), groups: int = 1,
           bias: np.ndarray | None = None) -> np.ndarray:
    """Cross-correlation. x: (N, Cin, H, W); weight: (Cout, Cin/groups, kh, kw) → (N, Cout, Ho, Wo)."""
    co, cig, kh, kw = weight.shape
    win = windows(x, (kh, kw), stride, pads)  # N, Cin, Ho, Wo, kh, kw
    n, cin, ho, wo = win.shape[:4]
    cog = co // groups
    out = np.empty((n, co, ho, wo), dtype=np.result_type(x, weight))
    for g in range(groups):
        wg = weight[g * cog:(g + 1) * cog]
        xg = win[:, g * cig:(g + 1) * cig]
        out[:, g * cog:(g + 1) * cog] = np.einsum("nchwij,ocij->nohw", xg, wg, optimize=True)
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def avgpool_divisor(in_hw, kernel, stride, pads, count_include_pad: bool) -> np.ndarray:
    """(Ho, Wo) number each window's sum is divided by."""
    ones = np.ones((1, 1) + tuple(in_hw))
    if count_include_pad:
        win = windows(ones, kernel, stride, pads, value=1.0)
    else:
        win = windows(ones, kernel, stride, pads, value=0.0)
    return win.sum(axis=(-1, -2))[0, 0]


def avgpool2d(x: np.ndarray, kernel, stride, pads=(0, 0, 0, 0), count_include_pad: bool = False) -> np.ndarray:
    """Average pooling of (N, C, H, W); see :class:`evsnn.ir.ann.AvgPool` for the divisor rule."""
    s = windows(x, kernel, stride, pads).sum(axis=(-1, -2))
    return s / avgpool_divisor(x.shape[2:], kernel, stride, pads, count_include_pad)


def maxpool2d(x: np.ndarray, kernel, stride, pads=(0, 0, 0, 0)) -> np.ndarray:
    """Max pooling of (N, C, H, W); pads are −∞."""
    return windows(x, kernel, stride, pads, value=-np.inf).max(axis=(-1, -2))


def round_levels(y: np.ndarray, phase: float, cap, rounding: str = "floor") -> np.ndarray:
    """Integer level of a value ``y`` in level units: clip(floor(y + φ), 0, cap) as float64, or with
    ``rounding="half_even"`` clip(rint(y + φ − ½), 0, cap) (ties to even). The one rounding rule of the
    ANN's quantizer (:func:`quantize_levels`) and of the verification oracle."""
    if rounding == "half_even":
        return np.clip(np.rint(y + (phase - 0.5)), 0, cap)
    return np.clip(np.floor(y + phase), 0, cap)


def quantize_levels(z: np.ndarray, levels: int, scale: float, phase: float, rounding: str = "floor") -> np.ndarray:
    """Integer level clip(floor(z·L/λ + φ), 0, L) as float64 (see :func:`round_levels` for half_even)."""
    return round_levels(z * (levels / scale), phase, levels, rounding)


def eval_node(node: ann.Node, ins: list[np.ndarray]) -> np.ndarray:
    """Value of one node given its inputs' values (batch-first float64 arrays)."""
    if isinstance(node, ann.Conv):
        return conv2d(ins[0], node.weight, node.stride, node.pads, node.groups, node.bias)
    if isinstance(node, ann.Dense):
        return ins[0] @ node.weight.T + node.bias
    if isinstance(node, ann.AvgPool):
        return avgpool2d(ins[0], node.kernel, node.stride, node.pads, node.count_include_pad)
    if isinstance(node, ann.MaxPool):
        return maxpool2d(ins[0], node.kernel, node.stride, node.pads)
    if isinstance(node, ann.Add):
        return sum(ins[1:], ins[0])
    if isinstance(node, ann.Flatten):
        return ins[0].reshape(ins[0].shape[0], -1)
    if isinstance(node, ann.Identity):
        return ins[0]
    if isinstance(node, ann.QuantAct):
        return quantize_levels(ins[0], node.levels, node.scale, node.phase, node.rounding) * (node.scale / node.levels)
    if isinstance(node, ann.ClipAct):
        return np.clip(ins[0], 0.0, node.scale)
    if isinstance(node, ann.Relu):
        return np.maximum(ins[0], 0.0)
    raise ConversionError(f"node {node.name!r}: cannot evaluate node kind {type(node).__name__}")
