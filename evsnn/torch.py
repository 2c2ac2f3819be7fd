"""Optional PyTorch tools for quantization-aware training (install the ``torch`` extra).

Importing this module imports ``torch``; nothing else in evsnn does. It offers:

- :class:`QuantReLU`: the quantized ReLU evsnn converts exactly, with a
  trainable threshold λ (QCFS style);
- :func:`popcount` and :func:`popcount_penalty`: the ℓ1 popcount regularizer
  that trains down the spikes of a bit-serial conversion;
- :func:`export_onnx`: an ONNX export the evsnn ONNX frontend reads;
- :func:`to_graph`: an :class:`~evsnn.ir.ann.AnnGraph` straight from a simple
  ``nn.Sequential`` (no file, no frontend), BatchNorm folded.

QuantReLU, with L = ``levels`` and λ = ``threshold``::

    round_half=False:  a = floor(clamp(x·L/λ, 0, L)) · λ/L         (floor / CQReLU, phase φ = 0)
    round_half=True:   a = clamp(floor(x·L/λ + ½), 0, L) · λ/L     (QCFS, phase φ = ½)

The integer q = a·L/λ ∈ {0, …, L} is the neuron's *level*: the net spike count
of a casc neuron, and for L = 2^K − 1 the K bits a bit-serial neuron emits.

Training (``module.train()``): straight-through estimator, the floor is taken
as the identity in the backward pass (QCFS, Bu et al. 2022): the gradient with
respect to x is L/λ·(λ/L) = 1 inside (0, λ) and 0 outside; with respect to λ
it is q/L − x/λ inside and 1 above the clip, so λ learns the clipping point.
The value is exactly the inference value.

Inference and export (``module.eval()``): the plain formula above with λ read
as a Python float, so ``torch.onnx.export`` writes the constant pattern
``Mul(x, L/λ) → Clip(0, L) → Floor → Mul(λ/L)`` (round-half:
``Mul → Add(½) → Floor → Clip → Mul``) and no straight-through nodes; λ is a
constant of the exported graph, not an input.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from evsnn.errors import ConversionError
from evsnn.ir import ann as A

__all__ = [
    "QuantReLU", "export_onnx", "popcount", "popcount_penalty", "quant_modules", "to_graph",
]


class QuantReLU(nn.Module):
    """Quantized ReLU with ``levels`` steps on [0, λ] and a trainable threshold λ.

    Args:
        levels: number of non-zero levels L (integer ≥ 1).
        threshold: initial λ > 0.
        round_half: False → floor quantizer (φ = 0), True → round-half (φ = ½).
        trainable: learn λ (QCFS); False keeps it fixed.

    In training mode the module keeps the levels of its last call, with their
    straight-through gradient, in ``last_levels`` (for :func:`popcount_penalty`).
    """

    def __init__(self, levels: int = 7, threshold: float = 1.0, round_half: bool = False, trainable: bool = True):
        super().__init__()
        if int(levels) != levels or int(levels) < 1:
            raise ValueError(f"QuantReLU levels must be an integer ≥ 1, got {levels!r}")
        if not float(threshold) > 0:
            raise ValueError(f"QuantReLU threshold must be > 0, got {threshold!r}")
        self.levels = int(levels)
        self.round_half = bool(round_half)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)), requires_grad=bool(trainable))
        self.last_levels: torch.Tensor | None = None

    @property
    def phase(self) -> float:
        return 0.5 if self.round_half else 0.0

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold):.4g}, round_half={self.round_half}"

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Levels q ∈ {0..L} (float tensor) with the straight-through gradient of clamp(x·L/λ + φ, 0, L)."""
        L = float(self.levels)
        y = x * (L / self.threshold)
        if self.round_half:
            y = y + 0.5
        c = torch.clamp(y, 0.0, L)
        return c + (torch.floor(c) - c).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = float(self.levels)
        if self.training:
            q = self.quantize(x)
            self.last_levels = q
            return q * (self.threshold / L)
        self.last_levels = None
        with warnings.catch_warnings():  # tracing: λ is meant to become a constant of the export
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            lam = float(self.threshold.detach())
        y = x * (L / lam)
        if self.round_half:
            return torch.clamp(torch.floor(y + 0.5), 0.0, L) * (lam / L)
        return torch.floor(torch.clamp(y, 0.0, L)) * (lam / L)


# ---------------------------------------------------------------- popcount regularizer

def _popcount_int(q: torch.Tensor) -> torch.Tensor:
    """Number of 1-bits of each non-negative integer in ``q`` (any float/int tensor), as float."""
    qi = torch.clamp(torch.round(q.detach()), min=0).to(torch.int64)
    out = torch.zeros_like(qi)
    while bool((qi > 0).any()):
        out += qi & 1
        qi = qi >> 1
    return out.to(q.dtype)


class _Popcount(torch.autograd.Function):
    """popcount(q) forward; backward d/dq log2(1 + q) = 1 / ((1 + q)·ln 2) (straight-through surrogate)."""

    @staticmethod
    def forward(ctx, q):
        ctx.save_for_backward(q)
        return _popcount_int(q)

    @staticmethod
    def backward(ctx, grad):
        (q,) = ctx.saved_tensors
        return grad / ((1.0 + torch.clamp(q, min=0.0)) * math.log(2.0))


def popcount(q: torch.Tensor) -> torch.Tensor:
    """Σ_k bit_k(q) of integer-valued levels ``q`` ≥ 0, with a straight-through gradient.

    Value: the exact popcount, i.e. the number of spikes a bit-serial neuron at
    level q emits. Gradient: that of the smooth envelope log2(1 + q), which
    equals popcount at q = 2^m − 1, bounds it from above at every level and is
    steepest near q = 0, so the penalty pushes small activations to level 0
    (no spike at all) hardest. (The exact popcount is piecewise constant and
    not monotone, so its own gradient is useless; a finite difference flips
    sign from level to level.) The gradient reaches x through the
    straight-through levels of :meth:`QuantReLU.quantize`.
    """
    return _Popcount.apply(q)


def quant_modules(model: nn.Module) -> list[QuantReLU]:
    """Every QuantReLU of ``model`` in module order."""
    return [m for m in model.modules() if isinstance(m, QuantReLU)]


def popcount_penalty(model: nn.Module, beta: float = 1.0) -> torch.Tensor:
    """β · mean popcount over all quantized neurons of ``model``'s last training forward pass.

    The mean is over samples and over every neuron of every QuantReLU (total
    1-bits per sample / number of neurons), so it is the bit-serial network's
    spikes per sample divided by its neuron count. Call after ``model(x)`` in
    training mode; add the result to the task loss.
    """
    total, count = None, 0
    for m in quant_modules(model):
        q = m.last_levels
        if q is None:
            continue
        s = popcount(q).sum()
        total = s if total is None else total + s
        count += q.numel()
    if total is None:
        raise RuntimeError("popcount_penalty: no QuantReLU has recorded levels; run the model in train() mode first")
    return beta * total / count


# ---------------------------------------------------------------- export and conversion

def export_onnx(model: nn.Module, path, input_shape: tuple[int, ...], opset: int = 17) -> None:
    """Write ``model`` (eval mode) to ONNX with the legacy exporter and a dynamic batch axis.

    ``input_shape`` excludes the batch axis. The module is put in eval mode
    (and left there). Constant folding fuses BatchNorm into the convolutions
    where the exporter can; the evsnn ONNX frontend folds what remains.
    """
    model.eval()
    dummy = torch.zeros((1,) + tuple(input_shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _fold_bn(w: np.ndarray, b: np.ndarray, bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    g = _np(bn.weight) if bn.affine else np.ones(bn.num_features)
    beta = _np(bn.bias) if bn.affine else np.zeros(bn.num_features)
    s = g / np.sqrt(_np(bn.running_var) + bn.eps)
    w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    return w, (b - _np(bn.running_mean)) * s + beta


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def to_graph(model: nn.Module, input_shape: tuple[int, ...], name: str = "model") -> A.AnnGraph:
    """AnnGraph of a plain ``nn.Sequential`` (nested Sequentials allowed) in float64, BN folded.

    Supported modules: Conv2d (zero padding, dilation 1), Linear, BatchNorm1d/2d
    right after a Conv2d/Linear, QuantReLU, ReLU, AvgPool2d, MaxPool2d, Flatten,
    Dropout, Identity. Anything else is a ConversionError naming the module.
    Node names are the module paths (``"0"``, ``"block.2"``); the output is the last node.
    """
    if not isinstance(model, nn.Sequential):
        raise ConversionError(f"evsnn.torch.to_graph reads an nn.Sequential, got {type(model).__name__}; "
                              "export other models with export_onnx and read the file with evsnn.frontends")
    mods = [(n, m) for n, m in model.named_modules() if not isinstance(m, nn.Sequential)]
    nodes: list[A.Node] = [A.Input("input", (), tuple(int(s) for s in input_shape))]
    prev = "input"
    for i, (mname, m) in enumerate(mods):
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            last = nodes[-1]
            if not isinstance(last, (A.Conv, A.Dense)) or last.name != prev:
                raise ConversionError(f"module {mname!r} (BatchNorm): only a BatchNorm right after a Conv2d or "
                                      "Linear can be folded")
            last.weight, last.bias = _fold_bn(last.weight, last.bias, m)
            continue
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or _pair(m.dilation) != (1, 1) or isinstance(m.padding, str):
                raise ConversionError(f"module {mname!r} (Conv2d): only zero padding given as numbers and "
                                      "dilation 1 are supported")
            ph, pw = _pair(m.padding)
            bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels)
            node = A.Conv(mname, (prev,), _np(m.weight), bias, _pair(m.stride), (ph, pw, ph, pw), m.groups)
        elif isinstance(m, nn.Linear):
            bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_features)
            node = A.Dense(mname, (prev,), _np(m.weight), bias)
        elif isinstance(m, QuantReLU):
            node = A.QuantAct(mname, (prev,), m.levels, float(m.threshold.detach()), m.phase)
        elif isinstance(m, nn.ReLU):
            node = A.Relu(mname, (prev,))
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            k = _pair(m.kernel_size)
            s = _pair(m.stride if m.stride is not None else m.kernel_size)
            p = _pair(m.padding)
            if getattr(m, "ceil_mode", False) or (isinstance(m, nn.MaxPool2d) and _pair(m.dilation) != (1, 1)):
                raise ConversionError(f"module {mname!r} ({type(m).__name__}): ceil_mode/dilation not supported")
            if isinstance(m, nn.AvgPool2d):
                if m.divisor_override is not None:
                    raise ConversionError(f"module {mname!r} (AvgPool2d): divisor_override not supported")
                node = A.AvgPool(mname, (prev,), k, s, (p[0], p[1], p[0], p[1]), bool(m.count_include_pad))
            else:
                node = A.MaxPool(mname, (prev,), k, s, (p[0], p[1], p[0], p[1]))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ConversionError(f"module {mname!r} (Flatten): only start_dim=1, end_dim=-1 is supported")
            node = A.Flatten(mname, (prev,))
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            node = A.Identity(mname, (prev,))
        else:
            raise ConversionError(
                f"module {mname!r} ({type(m).__name__}) is not supported by evsnn.torch.to_graph; supported: "
                "Conv2d, Linear, BatchNorm after Conv2d/Linear, QuantReLU, ReLU, AvgPool2d, MaxPool2d, "
                "Flatten, Dropout, Identity")
        nodes.append(node)
        prev = node.name
    graph = A.AnnGraph(nodes, prev, name, {"source": "torch"})
    graph.validate()
    return graph
