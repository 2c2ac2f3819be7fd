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

Quantizers (inference, ``tf.round`` rounds half to even):

- ``quantized_bits(bits, integer, symmetric, keep_negative, alpha)`` on
  weights, m = 2^(bits − keep_negative), m_i = 2^integer:
  xq = alpha · m_i · clip(rint(x·m/m_i), keep_negative·(symmetric − m), m − 1)/m
  (bits = keep_negative: sign → ±1); then QKeras returns x + (xq − x) in
  float32, which :func:`quantized_bits` reproduces. ``alpha`` must be None or
  a number: ``"auto"``/``"auto_po2"`` (which QDense/QConv2D substitute for
  None) compute a scale from the weights and are refused; use alpha=1.
- ``quantized_relu(bits, integer)`` on activations (use_sigmoid=0,
  negative_slope=0): a = 2^integer · clip(rint(x·2^(bits−integer))/2^bits,
  0, 1 − 2^−bits): ``QuantAct(L = 2^bits − 1, λ = L·2^(integer−bits), φ = 0,
  rounding="half_even")``.
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


def quantized_bits(x: np.ndarray, bits=8, integer=0, symmetric=0, keep_negative=True, alpha=None,
                   **_) -> np.ndarray:
    """QKeras ``quantized_bits`` with a fixed alpha, as TensorFlow computes it in float32 (returned as float64)."""
    x = np.asarray(x, dtype=np.float32)
    unsigned = int(bits) - int(bool(keep_negative))
    scale = np.float32(1.0 if alpha is None else alpha)
    if unsigned > 0:
        m, m_i = np.float32(2.0 ** unsigned), np.float32(2.0 ** integer)
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
    alpha = cfg.get("alpha")
    if isinstance(alpha, str):
        fail(spec, f"{key} quantized_bits alpha={alpha!r} computes its scale from the weights at run time; "
                   "supported: alpha=None or a number (QDense/QConv2D turn None into 'auto_po2': give alpha=1)")
    if cfg.get("use_stochastic_rounding"):
        fail(spec, f"{key}: use_stochastic_rounding is not supported; supported: deterministic rounding")
    return quantized_bits(w, **cfg)


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
    b.add(A.QuantAct(node, (src,), levels=levels, scale=lam, phase=0.0, rounding="half_even"))
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


def _linear(plain: str, convert):
    def run(b: Builder, spec: LayerSpec, xs) -> Tensor:
        use_bias = bool(spec.config.get("use_bias", True))
        n = 2 if use_bias else 1
        if len(spec.weights) != n:
            fail(spec, f"expected {n} weight arrays, the file holds {len(spec.weights)}")
        w = [_weights(spec, "kernel_quantizer", np.asarray(spec.weights[0], dtype=np.float64))]
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

    run.__doc__ = f"QKeras Q{plain}: quantized_bits kernel/bias → {plain} → quantized activation."
    return run


CONVERTERS = {"QActivation": qactivation, "QDense": _linear("Dense", KL.dense),
              "QConv2D": _linear("Conv2D", KL.conv2d)}


def is_qkeras(spec: LayerSpec) -> bool:
    """A QKeras layer config (quantizer strings/objects, not HGQ2 quantizer configs)."""
    return spec.cls == "QActivation" or "kernel_quantizer" in spec.config


__all__ = ["CONVERTERS", "is_qkeras", "parse", "quantized_bits"]
