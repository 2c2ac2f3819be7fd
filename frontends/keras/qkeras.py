"""QKeras layers, read from their saved config and float weights alone (QKeras needs TensorFlow; never imported).

Configs are what QKeras' ``get_config`` writes (github.com/google/qkeras,
``qkeras/qlayers.py``, ``qkeras/qconvolutional.py``, ``qkeras/quantizers.py``):

- ``QActivation``: ``{"activation": <quantizer>}``, the quantizer as given,
  a string such as ``"quantized_relu(3,1)"`` or a serialized object
  ``{"class_name": "quantized_relu", "config": {...}}``;
- ``QDense`` / ``QConv2D``: ``kernel_quantizer`` / ``bias_quantizer``
  (``constraints.serialize`` of the quantizer object, or None) and
  ``activation`` (a serialized quantizer, or a Keras activation name), plus
  the Keras Dense/Conv2D keys. Weights are the float ``kernel`` and ``bias``.
- ``QDepthwiseConv2D``: the same with ``depthwise_quantizer`` for the float
  ``depthwise_kernel`` (kh, kw, C, depth_multiplier), plus the Keras
  DepthwiseConv2D keys; output channel c·depth_multiplier + j, as Keras.

Quantizers (inference, ``tf.round`` rounds half to even):

- ``quantized_bits(bits, integer, symmetric, keep_negative, alpha)`` on
  weights, m = 2^(bits − keep_negative), m_i = 2^integer:
  xq = alpha · m_i · clip(rint(x·m/m_i), keep_negative·(symmetric − m), m − 1)/m
  (bits = keep_negative: sign → ±1); then QKeras returns x + (xq − x) in
  float32, which :func:`quantized_bits` reproduces. ``alpha="auto"`` /
  ``"auto_po2"`` (which QDense/QConv2D substitute for None) compute a
  per-output-channel scale from the weights (max, then for po2 five
  least-squares refinements rounded to a power of two) and round
  floor(|x|/scale + ½); reproduced in float32 (TensorFlow's reduction order
  may differ in the last bit, which matters only where log2 of a scale is
  within float32 error of a half-integer).
- ``quantized_relu(bits, integer)`` on activations (use_sigmoid=0,
  negative_slope=0): a = 2^integer · clip(rint(x·2^(bits−integer))/2^bits,
  0, 1 − 2^−bits): ``QuantAct(L = 2^bits − 1, λ = L·2^(integer−bits), φ = ½,
  rounding="half_even")`` (level rint(y + φ − ½) = rint(y), see :mod:`evsnn.ir.ann`).
"""

from __future__ import annotations

import ast
import re

import numpy as np

from evsnn.frontends.keras import layers as KL
from evsnn.frontends.keras.layers import Builder, LayerSpec, Tensor, fail
from evsnn.ir import ann as A

WEIGHT_QUANTIZERS = ("quantized_bits",)
ACT_QUANTIZERS = ("quantized_relu",)
_BITS_ARGS = ("bits", "integer", "symmetric", "keep_negative", "alpha", "use_stochastic_rounding")
_RELU_ARGS = ("bits", "integer", "use_sigmoid", "negative_slope", "use_stochastic_rounding", "relu_upper_bound")
_DEFAULTS = {"quantized_bits": dict(bits=8, integer=0, symmetric=0, keep_negative=True, alpha=None),
             "quantized_relu": dict(bits=8, integer=0, use_sigmoid=0, negative_slope=0.0, relu_upper_bound=None)}


def parse(spec: LayerSpec, key: str, q) -> tuple[str, dict] | None:
    """(class name, arguments) of a quantizer given as a string ``"name(args)"`` or a serialized object."""
    if q is None or q == "" or q == "linear":
        return None
    if isinstance(q, dict):
        name, cfg = str(q.get("class_name", "?")), q.get("config") or {}
        name = name.rsplit(">", 1)[-1]
    elif isinstance(q, str):
        m = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", q)
        if not m:
            fail(spec, f"{key}={q!r} is not a QKeras quantizer")
        name, cfg = m.group(1), {}
        args = ast.parse(f"f({m.group(2) or ''})", mode="eval").body
        names = _BITS_ARGS if name == "quantized_bits" else _RELU_ARGS
        try:
            cfg.update(zip(names, (ast.literal_eval(a) for a in args.args)))
            cfg.update({kw.arg: ast.literal_eval(kw.value) for kw in args.keywords})
        except ValueError:
            fail(spec, f"{key}={q!r}: arguments must be literals")
    else:
        fail(spec, f"{key}={q!r} is not a QKeras quantizer")
    if name not in _DEFAULTS:
        fail(spec, f"{key} quantizer {name!r} is not supported; supported: {', '.join(_DEFAULTS)}")
    return name, {**_DEFAULTS[name], **cfg}


def _mean(a: np.ndarray, axis) -> np.ndarray:
    return np.mean(a, axis=axis, keepdims=True, dtype=np.float32).astype(np.float32)


def _auto_scale(x: np.ndarray, bits: int, integer: int, alpha: str, scale_axis=None, elements_per_scale=None,
                min_po2_exponent=None, max_po2_exponent=None, **_) -> tuple[np.ndarray, np.ndarray]:
    """quantized_bits' alpha="auto"/"auto_po2" branch (symmetric, scale over all axes but the last, channels
    last): (z, scale) with xq = m_i·z·scale, in float32 as TensorFlow computes them."""
    if scale_axis is not None or elements_per_scale is not None:
        raise ValueError("scale_axis / elements_per_scale are not supported; supported: the defaults (None)")
    eps, f32 = np.float32(1e-7), np.float32
    axis = tuple(range(x.ndim - 1)) if x.ndim > 1 else (0,)
    x = x / f32(2.0 ** integer)
    levels = f32((2 ** (bits - 1) - 1) * 2)

    def po2(scale):
        scale = f32(2.0) ** np.round(np.log(scale + eps).astype(np.float32) / f32(np.log(2.0))).astype(np.float32)
        if min_po2_exponent is not None or max_po2_exponent is not None:
            lo = None if min_po2_exponent is None else 2.0 ** min_po2_exponent
            hi = None if max_po2_exponent is None else 2.0 ** max_po2_exponent
            scale = np.clip(scale, lo, hi).astype(np.float32)
        return scale

    def quant(scale):
        v = np.floor(np.abs(x) / scale + f32(0.5))
        return np.sign(x) * np.where(v < levels / 2, v, levels / 2)

    scale = (np.max(np.abs(x), axis=axis, keepdims=True) * f32(2)) / levels
    if alpha == "auto_po2":
        scale = po2(scale)
        for _ in range(5):
            z = quant(scale)
            qx, qq = (_mean(x * z, axis), _mean(z * z, axis)) if x.ndim > 1 else (x * z, z * z)
            scale = po2(qx / (qq + eps))
    elif alpha != "auto":
        raise ValueError(f"alpha={alpha!r} is unknown; known: 'auto', 'auto_po2'")
    return quant(scale).astype(np.float32), scale.astype(np.float32)


def quantized_bits(x: np.ndarray, bits=8, integer=0, symmetric=0, keep_negative=True, alpha=None,
                   **extra) -> np.ndarray:
    """QKeras ``quantized_bits`` as TensorFlow computes it in float32 (returned as float64)."""
    x = np.asarray(x, dtype=np.float32)
    unsigned = int(bits) - int(bool(keep_negative))
    m, m_i = np.float32(2.0 ** unsigned), np.float32(2.0 ** integer)
    if isinstance(alpha, str):
        z, scale = _auto_scale(x, int(bits), integer, alpha, **extra)
        xq = (scale * m) * (m_i * z / m)
        return (m_i * (x / m_i) + (-(m_i * (x / m_i)) + xq)).astype(np.float64)
    scale = np.float32(1.0 if alpha is None else alpha)
    if unsigned > 0:
        p = x * m / m_i
        lo = np.float32(int(bool(keep_negative)) * (-m + int(symmetric)))
        xq = m_i * np.clip(np.rint(p), lo, m - 1) / m
    else:
        xq = np.sign(x)
        xq = xq + (np.float32(1.0) - np.abs(xq))
        if not keep_negative:
            xq = (xq + np.float32(1.0)) / np.float32(2.0)
    xq = (scale * xq).astype(np.float32)
    return (x + (-x + xq)).astype(np.float64)  # the straight-through form x + stop_gradient(−x + xq)


def _weights(spec: LayerSpec, key: str, w: np.ndarray) -> np.ndarray:
    q = parse(spec, key, spec.config.get(key))
    if q is None:
        return w
    name, cfg = q
    if name not in WEIGHT_QUANTIZERS:
        fail(spec, f"{key} {name!r} is not supported on weights; supported: {', '.join(WEIGHT_QUANTIZERS)}")
    if cfg.get("use_stochastic_rounding"):
        fail(spec, f"{key}: use_stochastic_rounding is not supported; supported: deterministic rounding")
    if cfg.get("post_training_scale") is not None:
        fail(spec, f"{key}: post_training_scale is not supported; supported: None")
    args = {k: v for k, v in cfg.items() if k not in ("qnoise_factor", "use_stochastic_rounding", "var_name",
                                                      "use_ste", "use_variables", "post_training_scale")}
    try:
        return quantized_bits(w, **args)
    except (ValueError, TypeError) as e:
        fail(spec, f"{key} quantized_bits{tuple(args.items())}: {e}")


def _relu_quant(spec: LayerSpec, key: str, cfg: dict) -> tuple[int, float]:
    """(L, λ) of a quantized_relu; refuses the options a QuantAct cannot express."""
    for opt in ("use_sigmoid", "negative_slope", "use_stochastic_rounding", "relu_upper_bound"):
        if cfg.get(opt):
            fail(spec, f"{key} quantized_relu {opt}={cfg[opt]!r} is not supported; supported: {opt} off (0/None)")
    bits, integer = int(cfg["bits"]), int(cfg["integer"])
    if not 1 <= bits <= 30:
        fail(spec, f"{key} quantized_relu bits={bits} is not supported; supported: 1..30")
    levels = 2 ** bits - 1
    return levels, levels * 2.0 ** (integer - bits)


def _activation_quantizer(spec: LayerSpec, key: str, q) -> tuple[int, float]:
    name, cfg = q
    if name not in ACT_QUANTIZERS:
        fail(spec, f"{key} {name!r} is not supported as an activation; supported: {', '.join(ACT_QUANTIZERS)}")
    return _relu_quant(spec, key, cfg)


def _activate(b: Builder, spec: LayerSpec, x: Tensor, key: str, levels: int, lam: float) -> Tensor:
    """A QuantAct named after the layer on ``x`` (skipping a ReLU right before it)."""
    node = spec.name
    src = x.node
    prev = next(n for n in b.nodes if n.name == src)
    if isinstance(prev, A.Relu):  # a ReLU before it changes nothing: quantized_relu clips at 0
        src = prev.inputs[0]
    b.add(A.QuantAct(node, (src,), levels=levels, scale=lam, phase=0.5, rounding="half_even"))
    b.quantizers[f"{spec.name}/{key}"] = {"node": node, "output": node, "hwc": list(x.hwc) if x.hwc else None}
    return Tensor(node, x.shape, x.hwc)


def qactivation(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """QActivation(quantized_relu(...)), or a plain Keras activation name."""
    x = KL._one(spec, xs)
    act = spec.config.get("activation")
    if isinstance(act, str) and act.lower() in KL.ACTIVATIONS:
        return KL.activation(b, LayerSpec(spec.name, "Activation", {"activation": act}), [x])
    q = parse(spec, "activation", act)
    return x if q is None else _activate(b, spec, x, "activation", *_activation_quantizer(spec, "activation", q))


def _linear(plain: str, convert, kernel_key: str = "kernel_quantizer"):
    def run(b: Builder, spec: LayerSpec, xs) -> Tensor:
        use_bias = bool(spec.config.get("use_bias", True))
        n = 2 if use_bias else 1
        if len(spec.weights) != n:
            fail(spec, f"expected {n} weight arrays, the file holds {len(spec.weights)}")
        w = [_weights(spec, kernel_key, np.asarray(spec.weights[0], dtype=np.float64))]
        if use_bias:
            w.append(_weights(spec, "bias_quantizer", np.asarray(spec.weights[1], dtype=np.float64)))
        act = spec.config.get("activation")
        keras_act = act is None or (isinstance(act, str) and act.lower() in KL.ACTIVATIONS) or (
            isinstance(act, dict) and act.get("class_name") == "function")
        q = None if keras_act else parse(spec, "activation", act)
        if q is None:
            return convert(b, LayerSpec(spec.name, spec.cls, spec.config, spec.inputs, w), xs)
        levels, lam = _activation_quantizer(spec, "activation", q)
        y = convert(b, LayerSpec(spec.name, spec.cls, dict(spec.config, activation="linear"), spec.inputs, w), xs)
        linear = b.nodes[-1]  # the Conv/Dense named after the layer: rename it, the quantizer takes the name
        linear.name = b.unique(f"{spec.name}_preact")
        return _activate(b, spec, Tensor(linear.name, y.shape, y.hwc), "activation", levels, lam)

    run.__doc__ = f"QKeras Q{plain}: quantized_bits {kernel_key[:-10]}/bias → {plain} → quantized activation."
    return run


CONVERTERS = {"QActivation": qactivation, "QDense": _linear("Dense", KL.dense),
              "QConv2D": _linear("Conv2D", KL.conv2d),
              "QDepthwiseConv2D": _linear("DepthwiseConv2D", KL.depthwise_conv2d, "depthwise_quantizer")}


def is_qkeras(spec: LayerSpec) -> bool:
    """A QKeras layer config (quantizer strings/objects, not HGQ2 quantizer configs)."""
    return spec.cls == "QActivation" or "kernel_quantizer" in spec.config or "depthwise_quantizer" in spec.config


__all__ = ["CONVERTERS", "is_qkeras", "parse", "quantized_bits"]
