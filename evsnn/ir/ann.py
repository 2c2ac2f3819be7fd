"""Framework-neutral ANN graph: what frontends produce and ``convert`` reads.

Layout is NCHW without the batch axis: an image node has shape ``(C, H, W)``,
a vector node ``(F,)``. Weights are float64 NumPy arrays. Nodes are kept in
topological order; each node names its inputs. BatchNorm never appears: the
frontends fold it into the preceding Conv/Dense, or emit a depthwise 1×1
``Conv`` (a per-channel affine) where it cannot be folded.

Activation semantics (z is the pre-activation, a the output):

- ``QuantAct(L, λ, φ)``:  a = λ · clip(floor(z·L/λ + φ), 0, L) / L.
  φ = 0 is the floor (CQReLU) quantizer, φ = ½ the round-half (QCFS) one.
  The integer ``clip(floor(z·L/λ + φ), 0, L)`` is the neuron's *level*.
  With ``rounding="half_even"`` the level is clip(rint(z·L/λ + φ − ½), 0, L)
  (ties to even, as ONNX ``QuantizeLinear`` and QONNX ``ROUND``); it differs
  from the floor form with the same φ only where z·L/λ + φ is an integer.
  casc and bitserial realise either rule exactly (``Population.rounding``, see
  :mod:`evsnn.ir.snn`); the rate presets ignore it.
- ``ClipAct(λ)``: a = clip(z, 0, λ) (threshold ReLU, Deng & Gu).
- ``Relu``: a = max(z, 0); needs calibration to get λ before conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from evsnn.errors import ConversionError, ShapeError

Shape = tuple[int, ...]


@dataclass
class Node:
    """Base of every graph node: a unique ``name`` and the names of its ``inputs``."""

    name: str
    inputs: tuple[str, ...] = ()

    kind = "node"


@dataclass
class Input(Node):
    """Graph input; ``shape`` excludes the batch axis: (C, H, W) or (F,)."""

    shape: Shape = ()
    kind = "input"


@dataclass
class Conv(Node):
    """2-D convolution (cross-correlation, as ONNX/PyTorch), dilation 1.

    ``weight``: (C_out, C_in/groups, kh, kw); ``bias``: (C_out,);
    ``stride``: (sh, sw); ``pads``: (top, left, bottom, right), zero padding.
    """

    weight: np.ndarray = None
    bias: np.ndarray = None
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1
    kind = "conv"


@dataclass
class Dense(Node):
    """Fully connected layer: y = weight @ x + bias; ``weight``: (out, in)."""

    weight: np.ndarray = None
    bias: np.ndarray = None
    kind = "dense"


@dataclass
class AvgPool(Node):
    """Average pooling over ``kernel`` windows with ``stride`` and zero ``pads``.

    With ``count_include_pad`` False (the ONNX default) a window is divided by
    the number of real (non-pad) inputs it covers.
    """

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False
    kind = "avgpool"


@dataclass
class MaxPool(Node):
    """Max pooling; padded positions never win (they count as −∞)."""

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    kind = "maxpool"


@dataclass
class Add(Node):
    """Elementwise sum of two or more inputs of equal shape (residual add)."""

    kind = "add"


@dataclass
class Flatten(Node):
    """(C, H, W) → (C·H·W,) in C-order (NCHW flattening); an index map, no arithmetic."""

    kind = "flatten"


@dataclass
class Identity(Node):
    """y = x (Dropout at inference, Identity ops)."""

    kind = "identity"


@dataclass
class QuantAct(Node):
    """Quantized ReLU: a = λ·clip(floor(z·L/λ + φ), 0, L)/L with L=``levels``, λ=``scale``, φ=``phase``."""

    levels: int = 1
    scale: float = 1.0
    phase: float = 0.0
    rounding: str = "floor"  # or "half_even" (see the module docstring)
    kind = "quant"


@dataclass
class ClipAct(Node):
    """Threshold ReLU: a = clip(z, 0, λ) with λ=``scale``."""

    scale: float = 1.0
    kind = "clip"


@dataclass
class Relu(Node):
    """a = max(z, 0). Conversion needs a scale λ, found by calibration."""

    kind = "relu"


ACTIVATIONS = (QuantAct, ClipAct, Relu)
ROUNDINGS = ("floor", "half_even")
LINEAR = (Conv, Dense, AvgPool, Add, Flatten, Identity)


def conv_out_size(size: int, k: int, s: int, p0: int, p1: int) -> int:
    """Output length of a conv/pool window along one axis (floor mode)."""
    return (size + p0 + p1 - k) // s + 1


@dataclass
class AnnGraph:
    """Nodes in topological order; ``output`` names the node whose value is the model output."""

    nodes: list[Node] = field(default_factory=list)
    output: str = ""
    name: str = "model"
    meta: dict = field(default_factory=dict)  # frontend notes, e.g. {"tensors": {node name: source tensor name}}

    def __post_init__(self) -> None:
        if not self.output and self.nodes:
            self.output = self.nodes[-1].name

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def input(self) -> Input:
        inputs = [n for n in self.nodes if isinstance(n, Input)]
        if len(inputs) != 1:
            raise ConversionError(f"model has {len(inputs)} inputs; evsnn supports exactly one")
        return inputs[0]

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def shapes(self) -> dict[str, Shape]:
        """Infer every node's output shape (no batch axis); raises ConversionError if inconsistent."""
        shapes: dict[str, Shape] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i not in shapes:
                    raise ConversionError(f"node {n.name!r} ({n.kind}) reads {i!r}, which is not defined before it")
            ins = [shapes[i] for i in n.inputs]
            shapes[n.name] = _infer_shape(n, ins)
        return shapes

    def validate(self) -> None:
        """Check names are unique, the graph is topologically ordered and shapes agree."""
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            dup = sorted({x for x in names if names.count(x) > 1})
            raise ConversionError(f"duplicate node names: {dup}")
        if self.output not in names:
            raise ConversionError(f"output node {self.output!r} is not in the graph")
        self.input  # exactly one input
        self.shapes()


def ancestors(items, output: str) -> set[str]:
    """Names of ``output`` and everything it reads, transitively; ``items`` have ``name`` and ``inputs``
    (graph nodes, or a frontend's layer records)."""
    by_name = {it.name: it for it in items}
    seen, todo = set(), [output]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(by_name[name].inputs)
    return seen


def _need(cond: bool, node: Node, msg: str) -> None:
    if not cond:
        raise ConversionError(f"node {node.name!r} ({node.kind}): {msg}")


def _window_shape(n: Node, x: Shape, kernel, stride, pads, cout: int) -> Shape:
    _need(len(x) == 3, n, f"expects a (C, H, W) input, got shape {x}")
    _need(len(tuple(kernel)) == 2 and all(int(k) >= 1 for k in kernel), n, f"kernel must be two sizes ≥ 1, got {kernel}")
    _need(len(tuple(stride)) == 2 and all(int(s) >= 1 for s in stride), n, f"stride must be two steps ≥ 1, got {stride}")
    _need(len(tuple(pads)) == 4 and all(int(p) >= 0 for p in pads), n,
          f"pads must be four sizes ≥ 0 (top, left, bottom, right), got {pads}")
    ho = conv_out_size(x[1], kernel[0], stride[0], pads[0], pads[2])
    wo = conv_out_size(x[2], kernel[1], stride[1], pads[1], pads[3])
    _need(ho > 0 and wo > 0, n, f"window {kernel} larger than padded input {x}")
    return (cout, ho, wo)


def _infer_shape(n: Node, ins: list[Shape]) -> Shape:
    if isinstance(n, Input):
        _need(len(n.shape) in (1, 3), n, f"input shape must be (C, H, W) or (F,), got {n.shape}")
        return tuple(int(s) for s in n.shape)
    if isinstance(n, Add):
        _need(len(ins) >= 2, n, "needs at least two inputs")
        _need(all(s == ins[0] for s in ins), n, f"inputs have different shapes {ins}")
        return ins[0]
    _need(len(ins) == 1, n, f"expects one input, got {len(ins)}")
    x = ins[0]
    if isinstance(n, (Conv, Dense)):
        nd = 4 if isinstance(n, Conv) else 2
        _need(isinstance(n.weight, np.ndarray) and n.weight.ndim == nd, n,
              f"weight must be a {nd}-D array, got {getattr(n.weight, 'shape', n.weight)!r}")
        _need(isinstance(n.bias, np.ndarray), n, "bias is missing (give zeros for a layer without bias)")
    if isinstance(n, Conv):
        co, cig, kh, kw = n.weight.shape
        _need(n.groups >= 1 and co % n.groups == 0, n, f"C_out={co} not divisible by groups={n.groups}")
        _need(len(x) == 3 and x[0] == cig * n.groups, n, f"weight expects {cig * n.groups} input channels, input has shape {x}")
        _need(n.bias.shape == (co,), n, f"bias shape {n.bias.shape} != ({co},)")
        return _window_shape(n, x, (kh, kw), n.stride, n.pads, co)
    if isinstance(n, Dense):
        _need(len(x) == 1 and n.weight.shape[1] == x[0], n, f"weight {n.weight.shape} does not fit input shape {x}")
        _need(n.bias.shape == (n.weight.shape[0],), n, f"bias shape {n.bias.shape} != ({n.weight.shape[0]},)")
        return (n.weight.shape[0],)
    if isinstance(n, (AvgPool, MaxPool)):
        return _window_shape(n, x, n.kernel, n.stride, n.pads, x[0] if len(x) == 3 else 0)
    if isinstance(n, Flatten):
        return (int(np.prod(x)),)
    if isinstance(n, (Identity, QuantAct, ClipAct, Relu)):
        if isinstance(n, QuantAct):
            # levels must be a whole number: ann_forward uses it as given, convert as int(levels)
            lv = float(n.levels)
            _need(not isinstance(n.levels, bool) and np.isfinite(lv) and lv == int(lv) and lv >= 1, n,
                  f"levels must be a whole number ≥ 1, got {n.levels}")
            _need(np.isfinite(n.phase), n, f"phase must be finite, got {n.phase}")
            _need(n.rounding in ROUNDINGS, n, f"rounding must be one of {ROUNDINGS}, got {n.rounding!r}")
        if isinstance(n, (QuantAct, ClipAct)):
            _need(np.isfinite(n.scale) and n.scale > 0, n, f"scale must be finite and > 0, got {n.scale}")
        return x
    raise ConversionError(f"node {n.name!r}: unknown node kind {type(n).__name__}")


def as_batch(x, shape, expects: str = "the model") -> np.ndarray:
    """``x`` as float64 (N, *shape) (one unbatched sample gets N = 1); ShapeError naming both shapes."""
    x = np.asarray(x, dtype=np.float64)
    want = tuple(shape)
    if x.shape == want:
        x = x[None]
    if x.shape[1:] != want:
        got = x.shape if x.ndim <= len(want) else x.shape[1:]  # too few axes: not a batch, name it whole
        raise ShapeError(f"input data has shape {got} per sample, {expects} expects {want}")
    return x


def quantize_input(x: np.ndarray, spec: dict | None) -> np.ndarray:
    """Apply a model's input quantizer (``meta["input_quant"]``, e.g. an ONNX QDQ pair on the graph input).

    ``spec``: ``scale`` s, ``zero_point`` zp, ``qmin``/``qmax`` and ``rounding`` ("half_even", "half_up"
    or "floor"); x ↦ s·(clip(round(x/s) + zp, qmin, qmax) − zp), computed in float32 as the model's
    runtime does (onnxruntime's QuantizeLinear/DequantizeLinear), returned as float64. None: x unchanged.
    """
    if not spec:
        return x
    s, zp = np.float32(spec["scale"]), np.float32(spec["zero_point"])
    y = x.astype(np.float32) / s
    rnd = spec.get("rounding", "half_even")
    y = np.rint(y) if rnd == "half_even" else np.floor(y + np.float32(0.5)) if rnd == "half_up" else np.floor(y)
    q = np.clip(y + zp, np.float32(spec["qmin"]), np.float32(spec["qmax"]))
    return ((q - zp) * s).astype(np.float64)


def prepare_input(x, shape, meta: dict, expects: str = "the model") -> np.ndarray:
    """``x`` as float64 (N, *shape) NCHW, as the model's own first ops see it: a channels-last model
    (``meta["input_layout"] == "NHWC"``, e.g. Keras' ONNX export) takes (N, H, W, C) data, transposed
    here; then the input quantizer (``meta["input_quant"]``, :func:`quantize_input`) if any."""
    if meta.get("input_layout") == "NHWC" and len(shape) == 3:
        c, h, w = shape
        x = as_batch(x, (h, w, c), expects + " (channels-last)").transpose(0, 3, 1, 2)
    else:
        x = as_batch(x, shape, expects)
    return quantize_input(x, meta.get("input_quant"))


def check_input(graph: AnnGraph, x: np.ndarray) -> np.ndarray:
    """Return ``x`` as float64 (N, *input_shape) through :func:`prepare_input` (the model's input
    layout and quantizer, from ``graph.meta``); raise ShapeError naming both shapes if it does not fit."""
    return prepare_input(x, graph.input.shape, graph.meta)
