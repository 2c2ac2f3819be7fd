"""Keras layers → :class:`~evsnn.ir.AnnGraph` nodes, and the folding passes.

Used by :mod:`evsnn.frontends.keras.graph`; this module only
sees :class:`LayerSpec` records (class name, config dict, input layer names,
weight arrays as stored by Keras) and never imports keras.

Layout. Keras tensors are channels-last (H, W, C); graph nodes are NCHW
(C, H, W). Kernels are transposed on the way in. A vector made by ``Flatten``
from an (H, W, C) map is, in the graph, the NCHW flattening of (C, H, W): its
index i holds Keras index ``keras_order(H, W, C)[i]``. Elementwise layers keep
that order, a ``Dense`` reading it gets its input columns permuted, and where
the Keras order must appear literally (model output, ``Add`` of vectors in
different orders) an exact 0/1 permutation ``Dense`` named ``<node>_keras_order``
is inserted.

Naming. A layer's node carries the layer's name. A Conv2D/Dense/DepthwiseConv2D
with a fused activation emits ``<name>_preact`` (the linear node) and ``<name>``
(the activation), so activation nodes always bear the Keras layer name whose
output they hold. Dropout and linear activations emit nothing.

Affine layers (BatchNormalization, Rescaling) become per-channel affines
(depthwise 1×1 ``Conv`` with groups=C, or a diagonal ``Dense`` on vectors);
ZeroPadding2D becomes an identity depthwise 1×1 ``Conv`` with pads. Then
:func:`fold` merges them exactly where the algebra allows:

- affine after a Conv/Dense whose only consumer it is → scaled weights/bias;
  after an Add whose inputs are all such Conv/Dense nodes → into each of them
  (s·(a + b) + t = (s·a + t) + s·b);
- affine before a Conv/Dense that is its only consumer → scaled input weights,
  bias += W·shift, but only if the shift is 0 or the consumer has no zero
  padding (padding a shifted input is not padding the raw input);
- zero padding before a Conv → the Conv's pads; before a 'valid' AvgPool →
  the pool's pads with ``count_include_pad=True`` (Keras averages the zeros).

Anything left unfolded stays in the graph as an exact node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evsnn.errors import ConversionError
from evsnn.ir import ann as A

_ORDER_LIMIT = 1 << 14  # largest vector reordered by an explicit permutation Dense (F×F weights)


@dataclass
class LayerSpec:
    """One Keras layer: ``name``, class name ``cls``, ``config`` dict, input layer names, weights as stored."""

    name: str
    cls: str
    config: dict
    inputs: list[str] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)  # sub-layer variables by path ("iq/quantizer")


@dataclass
class Tensor:
    """A Keras layer output as held by graph node ``node``.

    ``shape`` is (C, H, W) or (F,). ``hwc`` is (H, W, C) when the vector is a
    flattened map whose Keras order differs from the graph's NCHW order.
    """

    node: str
    shape: tuple
    hwc: tuple | None = None


def keras_order(hwc) -> np.ndarray:
    """perm with graph_vector[i] = keras_vector[perm[i]] for a flattened (H, W, C) map."""
    h, w, c = hwc
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()


def fail(spec: LayerSpec, msg: str):
    """Raise the one-line ConversionError that names the layer and its class."""
    raise ConversionError(f"layer {spec.name!r} ({spec.cls}): {msg}")


class Builder:
    """Collects nodes; remembers which are per-channel affines (scale, shift) and pure paddings."""

    def __init__(self, reserved):
        self.nodes: list[A.Node] = []
        self.names: set[str] = set(reserved)
        self.affine: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.pad_only: set[str] = set()
        self.quantizers: dict[str, dict] = {}  # "<layer>/<quantizer>" → {"node": QuantAct name, "hwc": …}

    def unique(self, base: str) -> str:
        """A node name not used by any Keras layer or node yet."""
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def add(self, node: A.Node) -> str:
        self.nodes.append(node)
        self.names.add(node.name)
        return node.name


# ---------------------------------------------------------------- config helpers

def _pair(spec: LayerSpec, key: str, default=None) -> tuple[int, int]:
    v = spec.config.get(key, default)
    if v is None:
        v = default
    if isinstance(v, (int, float)):
        return int(v), int(v)
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return int(v[0]), int(v[1])
    fail(spec, f"{key}={v!r} is not a pair of integers")


def _channels_last(spec: LayerSpec) -> None:
    fmt = spec.config.get("data_format")
    if fmt not in (None, "channels_last"):
        fail(spec, f"data_format={fmt!r} is not supported; supported: 'channels_last'")


def _image(spec: LayerSpec, xs: list[Tensor]) -> Tensor:
    if len(xs) != 1:
        fail(spec, f"expects one input, got {len(xs)}")
    if len(xs[0].shape) != 3:
        fail(spec, f"expects a 4-D (batch, H, W, C) input, got a vector of {xs[0].shape[0]} features")
    _channels_last(spec)
    return xs[0]


def _one(spec: LayerSpec, xs: list[Tensor]) -> Tensor:
    if len(xs) != 1:
        fail(spec, f"expects one input, got {len(xs)}")
    return xs[0]


def _weights(spec: LayerSpec, n: int) -> list[np.ndarray]:
    if len(spec.weights) != n:
        fail(spec, f"expected {n} weight arrays from the config, the file holds {len(spec.weights)}")
    return [np.asarray(w, dtype=np.float64) for w in spec.weights]


def _kernel_bias(spec: LayerSpec, n_out_axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) in Keras layout; bias zeros when use_bias is False."""
    dtype = spec.config.get("dtype")
    quantized = isinstance(dtype, dict) and "Quantized" in str(dtype.get("class_name"))
    if quantized or spec.config.get("quantization_config"):
        fail(spec, "Keras-quantized weights (int8/int4/float8 dtype policy) are not supported; "
                   "supported: float weights")
    if spec.config.get("use_bias", True):
        kernel, bias = _weights(spec, 2)
    else:
        (kernel,) = _weights(spec, 1)
        bias = np.zeros(kernel.shape[n_out_axis])
    return kernel, bias


def _same_pads(hw, kernel, stride) -> tuple[int, int, int, int]:
    """Keras/TensorFlow 'same' pads (top, left, bottom, right): the odd pixel goes bottom/right."""
    pads = []
    for n, k, s in zip(hw, kernel, stride):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (t, b), (l, r) = pads
    return t, l, b, r


def _pads(spec: LayerSpec, x: Tensor, kernel, stride) -> tuple[int, int, int, int]:
    mode = str(spec.config.get("padding", "valid")).lower()
    if mode == "valid":
        return 0, 0, 0, 0
    if mode == "same":
        return _same_pads(x.shape[1:], kernel, stride)
    fail(spec, f"padding={mode!r} is not supported; supported: 'valid', 'same'")


def _window_out(spec: LayerSpec, x: Tensor, kernel, stride, pads) -> tuple[int, int]:
    ho = A.conv_out_size(x.shape[1], kernel[0], stride[0], pads[0], pads[2])
    wo = A.conv_out_size(x.shape[2], kernel[1], stride[1], pads[1], pads[3])
    if ho <= 0 or wo <= 0:
        fail(spec, f"window {kernel} does not fit the (H, W) = {x.shape[1:]} input")
    return ho, wo


# ---------------------------------------------------------------- activations

ACTIVATIONS = ("linear", "relu", "relu6")


def _activation_name(spec: LayerSpec, act) -> str:
    """Normalise a Keras activation config entry (string or serialized function) to a name."""
    if act is None:
        return "linear"
    if isinstance(act, dict) and act.get("class_name") == "function" and isinstance(act.get("config"), str):
        act = act["config"]
    if isinstance(act, str) and act.lower() in ACTIVATIONS:
        return act.lower()
    fail(spec, f"activation {act!r} is not supported (a spiking layer cannot compute it); "
               f"supported: {', '.join(repr(a) for a in ACTIVATIONS)}")


def _act_node(name: str, inp: str, act: str) -> A.Node:
    if act == "relu":
        return A.Relu(name, (inp,))
    return A.ClipAct(name, (inp,), scale=6.0)


def _emit_linear(b: Builder, spec: LayerSpec, make, shape) -> Tensor:
    """Add the node built by ``make(name)``, then the fused activation (if any) named after the layer."""
    act = _activation_name(spec, spec.config.get("activation"))
    if act == "linear":
        return Tensor(b.add(make(spec.name)), shape)
    pre = b.add(make(b.unique(f"{spec.name}_preact")))
    return Tensor(b.add(_act_node(spec.name, pre, act)), shape)


def activation(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """Activation('relu' | 'relu6' | 'linear')."""
    x = _one(spec, xs)
    act = _activation_name(spec, spec.config.get("activation"))
    if act == "linear":
        return x
    return Tensor(b.add(_act_node(spec.name, x.node, act)), x.shape, x.hwc)


def relu(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """ReLU(max_value) → Relu, or ClipAct(max_value); negative_slope/threshold must be 0."""
    x, cfg = _one(spec, xs), spec.config
    for key in ("negative_slope", "threshold"):
        if float(cfg.get(key) or 0.0) != 0.0:
            fail(spec, f"{key}={cfg[key]} is not supported; supported: ReLU with {key}=0 "
                       "and optional max_value (→ threshold ReLU)")
    mx = cfg.get("max_value")
    if mx is None:
        return Tensor(b.add(A.Relu(spec.name, (x.node,))), x.shape, x.hwc)
    if not float(mx) > 0:
        fail(spec, f"max_value={mx} must be > 0")
    return Tensor(b.add(A.ClipAct(spec.name, (x.node,), scale=float(mx))), x.shape, x.hwc)


def quant_relu(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """evsnn QuantReLU(levels, threshold, round_half) → QuantAct(L, λ, φ = 0 or ½)."""
    x, cfg = _one(spec, xs), spec.config
    if "levels" not in cfg or "threshold" not in cfg:
        fail(spec, "custom layer config lacks 'levels'/'threshold' (saved without get_config?); "
                   "expected the evsnn QuantReLU(levels, threshold, round_half) config")
    levels, lam = cfg["levels"], float(cfg["threshold"])
    if not isinstance(levels, (int, float)) or int(levels) != levels or levels < 1 or not lam > 0:
        fail(spec, f"levels={levels!r} must be an integer ≥ 1 and threshold={lam!r} > 0")
    phase = 0.5 if cfg.get("round_half", False) else 0.0
    node = A.QuantAct(spec.name, (x.node,), levels=int(levels), scale=lam, phase=phase)
    return Tensor(b.add(node), x.shape, x.hwc)


# ---------------------------------------------------------------- linear layers

def conv2d(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """Conv2D: kernel (kh, kw, Cin/groups, Cout) → weight (Cout, Cin/groups, kh, kw)."""
    x = _image(spec, xs)
    if _pair(spec, "dilation_rate", 1) != (1, 1):
        fail(spec, "dilation_rate != 1 is not supported; supported: dilation_rate=1")
    kernel, bias = _kernel_bias(spec)
    groups = int(spec.config.get("groups") or 1)
    weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    if kernel.ndim != 4 or weight.shape[1] * groups != x.shape[0]:
        fail(spec, f"kernel {kernel.shape} with groups={groups} does not fit {x.shape[0]} input channels")
    k, s = weight.shape[2:], _pair(spec, "strides", 1)
    pads = _pads(spec, x, k, s)
    shape = (weight.shape[0],) + _window_out(spec, x, k, s, pads)
    return _emit_linear(b, spec, lambda n: A.Conv(n, (x.node,), weight=weight, bias=bias, stride=s,
                                                  pads=pads, groups=groups), shape)


def depthwise_conv2d(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """DepthwiseConv2D: kernel (kh, kw, C, m) → weight (C·m, 1, kh, kw), groups=C; out channel c·m + j."""
    x = _image(spec, xs)
    if _pair(spec, "dilation_rate", 1) != (1, 1):
        fail(spec, "dilation_rate != 1 is not supported; supported: dilation_rate=1")
    kernel, bias = _kernel_bias(spec)
    if kernel.ndim != 4 or kernel.shape[2] != x.shape[0]:
        fail(spec, f"depthwise kernel {kernel.shape} does not fit {x.shape[0]} input channels")
    kh, kw, c, m = kernel.shape
    weight = np.ascontiguousarray(kernel.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None])
    s = _pair(spec, "strides", 1)
    pads = _pads(spec, x, (kh, kw), s)
    shape = (c * m,) + _window_out(spec, x, (kh, kw), s, pads)
    return _emit_linear(b, spec, lambda n: A.Conv(n, (x.node,), weight=weight, bias=bias, stride=s,
                                                  pads=pads, groups=c), shape)


def dense(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """Dense on a vector: kernel (in, out) → weight (out, in), columns put in the graph's order."""
    x = _one(spec, xs)
    if len(x.shape) != 1:
        fail(spec, f"applied to a 4-D tensor (H, W, C) = {x.shape[1:] + x.shape[:1]}; evsnn supports Dense "
                   "on vectors only (put Flatten or GlobalAveragePooling2D before it)")
    kernel, bias = _kernel_bias(spec)
    if kernel.ndim != 2 or kernel.shape[0] != x.shape[0]:
        fail(spec, f"kernel {kernel.shape} does not fit {x.shape[0]} input features")
    weight = kernel.T
    if x.hwc is not None:
        weight = weight[:, keras_order(x.hwc)]
    weight = np.ascontiguousarray(weight)
    return _emit_linear(b, spec, lambda n: A.Dense(n, (x.node,), weight=weight, bias=bias), (kernel.shape[1],))


def _affine(b: Builder, name: str, x: Tensor, scale: np.ndarray, shift: np.ndarray) -> Tensor:
    """Per-channel y = scale·x + shift (scale, shift in Keras channel order) as one exact node."""
    if x.hwc is not None:
        perm = keras_order(x.hwc)
        scale, shift = scale[perm], shift[perm]
    c = x.shape[0]
    if len(x.shape) == 3:
        node = A.Conv(name, (x.node,), weight=scale.reshape(c, 1, 1, 1).copy(), bias=shift.copy(), groups=c)
    else:
        node = A.Dense(name, (x.node,), weight=np.diag(scale), bias=shift.copy())
    b.add(node)
    b.affine[name] = (scale.copy(), shift.copy())
    return Tensor(name, x.shape, x.hwc)


def _channel_axis_ok(spec: LayerSpec, x: Tensor) -> bool:
    axis = spec.config.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        axis = axis[0] if len(axis) == 1 else None
    return axis in (-1, len(x.shape))


def batch_norm(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """BatchNormalization (inference): y = γ·(x − μ)/√(σ² + ε) + β, per channel."""
    x, cfg = _one(spec, xs), spec.config
    if not _channel_axis_ok(spec, x):
        fail(spec, f"axis={cfg.get('axis')!r} is not supported; supported: the channel axis (-1)")
    if cfg.get("renorm"):
        fail(spec, "renorm=True is not supported; supported: plain BatchNormalization")
    want = int(bool(cfg.get("scale", True))) + int(bool(cfg.get("center", True))) + 2
    w = _weights(spec, want)
    gamma = w.pop(0) if cfg.get("scale", True) else 1.0
    beta = w.pop(0) if cfg.get("center", True) else 0.0
    mean, var = w
    if mean.shape != (x.shape[0],):
        fail(spec, f"{mean.shape[0]} statistics for {x.shape[0]} channels")
    scale = gamma / np.sqrt(var + float(cfg.get("epsilon", 1e-3)))
    shift = beta - mean * scale
    return _affine(b, spec.name, x, np.broadcast_to(scale, mean.shape), np.broadcast_to(shift, mean.shape))


def rescaling(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """Rescaling: y = scale·x + offset, scalars or per-channel (last axis) values."""
    x = _one(spec, xs)
    c = x.shape[0]
    out = []
    for key, default in (("scale", 1.0), ("offset", 0.0)):
        v = spec.config.get(key, default)
        try:
            arr = np.asarray(v, dtype=np.float64).reshape(-1)
            out.append(np.broadcast_to(arr, (c,)).astype(np.float64))
        except (TypeError, ValueError):
            fail(spec, f"{key}={v!r} is not supported; supported: a number or one value per channel ({c})")
    return _affine(b, spec.name, x, out[0], out[1])


def zero_padding(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """ZeroPadding2D((top, bottom), (left, right)) → identity depthwise 1×1 Conv with pads."""
    x = _image(spec, xs)
    p = spec.config.get("padding", 1)
    try:
        if isinstance(p, (int, float)):
            (t, bo), (l, r) = (p, p), (p, p)
        elif all(isinstance(q, (int, float)) for q in p):
            (t, bo), (l, r) = (p[0], p[0]), (p[1], p[1])
        else:
            (t, bo), (l, r) = p
    except (TypeError, ValueError):
        fail(spec, f"padding={p!r} is not supported; supported: int, (ph, pw) or ((top, bottom), (left, right))")
    pads = tuple(int(v) for v in (t, l, bo, r))
    c = x.shape[0]
    b.add(A.Conv(spec.name, (x.node,), weight=np.ones((c, 1, 1, 1)), bias=np.zeros(c), groups=c, pads=pads))
    b.pad_only.add(spec.name)
    return Tensor(spec.name, (c, x.shape[1] + pads[0] + pads[2], x.shape[2] + pads[1] + pads[3]))


# ---------------------------------------------------------------- pooling, shape and merge layers

def _pool(b: Builder, spec: LayerSpec, xs, cls) -> Tensor:
    x = _image(spec, xs)
    k = _pair(spec, "pool_size", 2)
    s = _pair(spec, "strides", k) if spec.config.get("strides") is not None else k
    pads = _pads(spec, x, k, s)
    if cls is A.AvgPool and (pads[0] != pads[2] or pads[1] != pads[3]):
        fail(spec, f"padding='same' pads unevenly here (top, left, bottom, right) = {pads}, and Keras backends "
                   "average such edge windows differently (TensorFlow/JAX exclude the pad, PyTorch replicates "
                   "the edge); supported: 'valid', or 'same' with even padding")
    shape = (x.shape[0],) + _window_out(spec, x, k, s, pads)
    extra = {"count_include_pad": False} if cls is A.AvgPool else {}
    return Tensor(b.add(cls(spec.name, (x.node,), kernel=k, stride=s, pads=pads, **extra)), shape)


def avg_pool(b, spec, xs):
    """AveragePooling2D: 'same' windows divide by their real inputs only (count_include_pad=False)."""
    return _pool(b, spec, xs, A.AvgPool)


def max_pool(b, spec, xs):
    """MaxPooling2D: 'same' pads never win."""
    return _pool(b, spec, xs, A.MaxPool)


def global_avg_pool(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """GlobalAveragePooling2D → AvgPool over (H, W), then Flatten unless keepdims."""
    x = _image(spec, xs)
    c, h, w = x.shape
    keep = bool(spec.config.get("keepdims", False))
    name = spec.name if keep else b.unique(f"{spec.name}_pool")
    b.add(A.AvgPool(name, (x.node,), kernel=(h, w), stride=(h, w)))
    if keep:
        return Tensor(name, (c, 1, 1))
    return Tensor(b.add(A.Flatten(spec.name, (name,))), (c,))


def flatten(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """Flatten: NCHW flattening in the graph; the Keras (H, W, C) order is remembered in ``hwc``."""
    x = _one(spec, xs)
    _channels_last(spec)
    if len(x.shape) == 1:
        return x
    c, h, w = x.shape
    hwc = (h, w, c) if h * w > 1 and c > 1 else None
    return Tensor(b.add(A.Flatten(spec.name, (x.node,))), (c * h * w,), hwc)


def reorder(b: Builder, x: Tensor) -> Tensor:
    """Exact 0/1 permutation Dense putting a flattened vector back into Keras order."""
    n = x.shape[0]
    if n > _ORDER_LIMIT:
        raise ConversionError(f"node {x.node!r}: restoring Keras' (H, W, C) flatten order of {n} values needs a "
                              f"{n}×{n} permutation; supported up to {_ORDER_LIMIT}")
    weight = np.zeros((n, n))
    weight[keras_order(x.hwc), np.arange(n)] = 1.0
    name = b.unique(f"{x.node}_keras_order")
    return Tensor(b.add(A.Dense(name, (x.node,), weight=weight, bias=np.zeros(n))), x.shape)


def add(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """Add: elementwise sum of ≥ 2 equal-shape tensors."""
    if len(xs) < 2:
        fail(spec, f"expects at least two inputs, got {len(xs)}")
    if any(t.shape != xs[0].shape for t in xs):
        fail(spec, f"inputs have different shapes {[t.shape for t in xs]}")
    if len({t.hwc for t in xs}) > 1:
        xs = [reorder(b, t) if t.hwc is not None else t for t in xs]
    return Tensor(b.add(A.Add(spec.name, tuple(t.node for t in xs))), xs[0].shape, xs[0].hwc)


def identity(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """Dropout and friends: the identity at inference; no node."""
    return _one(spec, xs)


CONVERTERS = {
    "Activation": activation, "Add": add, "AveragePooling2D": avg_pool, "BatchNormalization": batch_norm,
    "Conv2D": conv2d, "Dense": dense, "DepthwiseConv2D": depthwise_conv2d, "Dropout": identity,
    "Flatten": flatten, "GlobalAveragePooling2D": global_avg_pool, "MaxPooling2D": max_pool,
    "QuantReLU": quant_relu, "ReLU": relu, "Rescaling": rescaling, "SpatialDropout2D": identity,
    "ZeroPadding2D": zero_padding,
}
ALIASES = {"Convolution2D": "Conv2D", "AvgPool2D": "AveragePooling2D", "MaxPool2D": "MaxPooling2D",
           "GlobalAvgPool2D": "GlobalAveragePooling2D"}
SUPPORTED = ("InputLayer",) + tuple(sorted(CONVERTERS))
