"""HGQ2 layers (``hgq.layers``, hgq2 0.2.0), read from their ``.keras`` config and variables alone.

An HGQ2 layer quantizes its *input* with ``iq`` (and, if ``enable_oq``, its
output with ``oq``); Conv/Dense layers also quantize their kernel (``kq``)
and bias (``bq``). In a ``.keras`` file each quantizer's config is a
serialized ``QuantizerConfig`` under ``iq_conf``/``oq_conf``/``kq_conf``/
``bq_conf`` and its variables sit in the layer's group at
``<iq|oq|kq|bq>/quantizer/vars``, trainable variables first (Keras' save
order): ``i, f, k`` for ``q_type='kif'`` (``f, k, i, i_decay_speed`` in
WRAP mode, where i is not trained), ``b, i, k`` for ``'kbi'`` (``b, k, i,
i_decay_speed`` in WRAP mode); k is uint8, f = b − i, and b, i, f are rounded
half to even as HGQ2 does. Shapes are the bit-width shapes (batch axis first
for activations), broadcast to the tensor.

- Weight and bias quantizers are applied to the float kernel/bias with
  :func:`.fixed_point.quantize` (HGQ2's inference path, including its
  round-only shortcut for trainable WRAP weight quantizers), so the graph
  holds exactly the values HGQ2 computes with.
- Activation quantizers become ``QuantAct`` nodes via :mod:`.qat` (see
  :mod:`.fixed_point` for which ones: saturating, TRN/RND/RND_CONV (half to
  even), unsigned or after a ReLU, one L per layer). A fused
  ``activation='relu'`` followed by the next layer's ``iq`` becomes a single
  population named ``<next layer>_iq``.

Layers: QConv2D (with Keras' ``groups``; groups = input channels is a
depthwise convolution, as hgq2 0.2.0 has no QDepthwiseConv2D), QDense,
QMaxPooling2D/QAveragePooling2D/QGlobalAveragePooling2D (and their
``QMaxPool2D``… aliases), QAdd (one iq per input), QBatchNormalization and
the stand-alone ``Quantizer`` layer.
Float (minifloat) quantizers, ``scaler``/``affine`` options and custom
bit-width mappers are refused with a ConversionError naming the layer.
"""

from __future__ import annotations

import numpy as np

from evsnn.frontends.keras import fixed_point as FP
from evsnn.frontends.keras import layers as KL
from evsnn.frontends.keras import qat
from evsnn.frontends.keras.layers import Builder, LayerSpec, Tensor, fail

Q_TYPES = ("kif", "kbi")


def _conf(spec: LayerSpec, key: str, c=None) -> dict | None:
    """The inner dict of a serialized QuantizerConfig at ``spec.config[key]`` or ``c`` (None if absent)."""
    c = spec.config.get(key) if c is None else c
    if c is None:
        return None
    inner = c.get("config") if isinstance(c, dict) and "q_type" not in c else c
    if not isinstance(inner, dict) or "q_type" not in inner:
        fail(spec, f"{key} is not a serialized HGQ2 QuantizerConfig: {str(c)[:80]}")
    return inner


def _kif(spec: LayerSpec, what: str, conf: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, i, f) of quantizer ``what`` from its stored variables."""
    qt = str(conf["q_type"]).lower()
    if qt not in Q_TYPES:
        fail(spec, f"{what} quantizer q_type={conf['q_type']!r} is not supported; supported: fixed-point "
                   f"{', '.join(repr(q) for q in Q_TYPES)}")
    for opt in ("scaler", "affine", "bw_mapper"):
        if conf.get(opt) is not None:
            fail(spec, f"{what} quantizer option {opt}={conf[opt]!r} is not supported; supported: {opt}=None")
    err = FP.check_modes(conf.get("round_mode", "?"), conf.get("overflow_mode", "?"))
    if err:
        fail(spec, f"{what} quantizer: {err}")
    v = spec.parts.get(f"{what}/quantizer")
    if v is None or len(v) < 3:
        fail(spec, f"the file holds no variables for the {what} quantizer (found {sorted(spec.parts)}); HGQ2 "
                   "layers are read from .keras archives written by model.save('x.keras')")
    wrap = str(conf["overflow_mode"]).upper() == "WRAP"
    order = {("kif", False): "ifk", ("kif", True): "fki", ("kbi", False): "bik", ("kbi", True): "bki"}[qt, wrap]
    got = dict(zip(order, v))
    if got["k"].dtype != np.uint8:
        fail(spec, f"the {what} quantizer's variables are not in HGQ2's order ({order}, k as uint8); found dtypes "
                   f"{[str(a.dtype) for a in v]}")
    k = np.asarray(got["k"], dtype=np.float64)
    i = np.round(np.asarray(got["i"], dtype=np.float64))
    if qt == "kif":
        return k, i, np.round(np.asarray(got["f"], dtype=np.float64))
    return k, i, np.round(np.asarray(got["b"], dtype=np.float64)) - i


def _enabled(spec: LayerSpec, what: str) -> dict | None:
    flag = {"iq": "enable_iq", "oq": "enable_oq"}.get(what)
    if flag is not None and not spec.config.get(flag, what == "iq"):
        return None
    conf = _conf(spec, f"{what}_conf")
    if conf is None or str(conf.get("q_type", "")).lower() == "dummy":
        return None
    return conf


def quantize_weights(spec: LayerSpec, what: str, w: np.ndarray) -> np.ndarray:
    """A kernel or bias as HGQ2 computes it at inference."""
    conf = _enabled(spec, what)
    if conf is None:
        return w
    k, i, f = _kif(spec, what, conf)
    rm, ov = str(conf["round_mode"]).upper(), str(conf["overflow_mode"]).upper()
    rm0 = rm[2:] if rm.startswith("S_") else rm
    shortcut = (ov == "WRAP" and conf.get("trainable", True) and conf.get("is_weight", False)
                and (str(conf["q_type"]).lower() == "kif" or rm0 == "RND"))
    try:
        k, i, f = (np.broadcast_to(a, w.shape) for a in (k, i, f))
    except ValueError:
        fail(spec, f"{what} quantizer bit widths of shape {np.shape(k)} do not fit the weights {w.shape}")
    return FP.quantize(w, k, i, f, rm, ov, round_only=shortcut)


def quantize_act(b: Builder, spec: LayerSpec, x: Tensor, what: str) -> tuple[Tensor, np.ndarray | None]:
    """Apply the activation quantizer ``what`` (iq/oq) if enabled: (tensor, post scale or None)."""
    conf = _enabled(spec, what)
    if conf is None:
        return x, None
    k, i, f = _kif(spec, what, conf)
    return qat.quantize(b, spec, x, what, k, i, f, conf["round_mode"], conf["overflow_mode"])


def _one(spec: LayerSpec, xs) -> Tensor:
    if len(xs) != 1:
        fail(spec, f"expects one input, got {len(xs)}")
    return xs[0]


def _kernel_bias(spec: LayerSpec) -> list[np.ndarray]:
    use_bias = bool(spec.config.get("use_bias", True))
    n = 2 if use_bias else 1
    if len(spec.weights) < n:
        fail(spec, f"expected {n} weight arrays (kernel{', bias' if use_bias else ''}), the file holds "
                   f"{len(spec.weights)}")
    out = [quantize_weights(spec, "kq", np.asarray(spec.weights[0], dtype=np.float64))]
    if use_bias:
        out.append(quantize_weights(spec, "bq", np.asarray(spec.weights[1], dtype=np.float64)))
    return out


def _finish(b: Builder, spec: LayerSpec, y: Tensor) -> Tensor:
    y, post = quantize_act(b, spec, y, "oq")
    return y if post is None else qat.apply_post(b, spec, y, post, "oq")


def _linear(plain: str, convert):
    def run(b: Builder, spec: LayerSpec, xs) -> Tensor:
        x, post = quantize_act(b, spec, _one(spec, xs), "iq")
        weights = _kernel_bias(spec)
        if post is not None:
            weights[0] = qat.kernel_rows(spec, weights[0], post, int(spec.config.get("groups") or 1))
        inner = LayerSpec(spec.name, spec.cls, spec.config, spec.inputs, weights)
        return _finish(b, spec, convert(b, inner, [x]))

    run.__doc__ = f"HGQ2 Q{plain}: iq → {plain} with kq/bq-quantized kernel and bias → oq."
    return run


def _plain(plain: str, convert):
    def run(b: Builder, spec: LayerSpec, xs) -> Tensor:
        x, post = quantize_act(b, spec, _one(spec, xs), "iq")
        if post is not None:
            x = qat.apply_post(b, spec, x, post, "iq")
        return _finish(b, spec, convert(b, LayerSpec(spec.name, spec.cls, spec.config, spec.inputs), [x]))

    run.__doc__ = f"HGQ2 Q{plain}: iq → {plain} → oq."
    return run


def quantizer_layer(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """Stand-alone HGQ2 ``Quantizer`` layer: one activation quantizer (its variables under ``quantizer``)."""
    x = _one(spec, xs)
    conf = _conf(spec, "config")
    if conf is None or str(conf.get("q_type", "")).lower() == "dummy":
        return x
    spec.parts = {f"q/{k}": v for k, v in spec.parts.items()}  # variables at "quantizer/vars"
    k, i, f = _kif(spec, "q", conf)
    y, post = qat.quantize(b, spec, x, "q", k, i, f, conf["round_mode"], conf["overflow_mode"])
    return qat.apply_post(b, spec, y, post, "q")


def qbatch_norm(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """HGQ2 QBatchNormalization at inference: iq → x·kq(s) + bq(β − μ·s), s = γ/√(σ² + ε), computed in float32 as
    hgq2 does (γ = 1 without ``scale``; β = 1 without ``center``, as hgq2 0.2.0 has it) → oq. The quantized
    scale and offset become an exact per-channel affine, folded into the Conv/Dense before or after it where
    the algebra allows (:mod:`.layers`), else kept as an exact depthwise node."""
    x, post = quantize_act(b, spec, _one(spec, xs), "iq")
    if post is not None:
        x = qat.apply_post(b, spec, x, post, "iq")
    cfg = spec.config
    if not KL._channel_axis_ok(spec, x):
        fail(spec, f"axis={cfg.get('axis')!r} is not supported; supported: the channel axis (-1)")
    scaled, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    n = int(scaled) + int(center) + 2
    if len(spec.weights) != n:
        fail(spec, f"expected {n} weight arrays (gamma, beta, moving mean and variance as configured), the file "
                   f"holds {len(spec.weights)}")
    w = [np.asarray(a, dtype=np.float32) for a in spec.weights]
    if any(a.shape != (x.shape[0],) for a in w):
        fail(spec, f"weights of shapes {[a.shape for a in w]} for {x.shape[0]} channels")
    eps = cfg.get("epsilon", 1e-3)
    if not isinstance(eps, (int, float)) or not eps >= 0:
        fail(spec, f"epsilon={eps!r} is not a number >= 0")
    gamma = w.pop(0) if scaled else np.float32(1.0)
    beta = w.pop(0) if center else np.float32(1.0)
    mean, var = w
    scale = gamma / np.sqrt(var + np.float32(eps))
    offset = beta - mean * scale
    qscale = quantize_weights(spec, "kq", np.broadcast_to(scale, mean.shape).astype(np.float64))
    qoffset = quantize_weights(spec, "bq", np.broadcast_to(offset, mean.shape).astype(np.float64))
    return _finish(b, spec, KL._affine(b, spec.name, x, qscale, qoffset))


def qadd(b: Builder, spec: LayerSpec, xs) -> Tensor:
    """HGQ2 QAdd: input n quantized by its own iq (``iq_confs``, variables at ``iq/quantizers/quantizer[_n]``,
    recorded as ``<layer>/iq<n>``), then summed, then oq."""
    if len(xs) < 2:
        fail(spec, f"expects at least two inputs, got {len(xs)}")
    confs = spec.config.get("iq_confs") if spec.config.get("enable_iq", True) else None
    if isinstance(confs, dict) or confs is None:
        confs = [confs] * len(xs)
    if not isinstance(confs, list) or len(confs) != len(xs):
        fail(spec, f"iq_confs holds {len(confs) if isinstance(confs, list) else confs!r} configs for "
                   f"{len(xs)} inputs")
    ys = []
    for n, (x, c) in enumerate(zip(xs, confs)):
        conf = _conf(spec, "iq_confs", c)
        if conf is None or str(conf.get("q_type", "")).lower() == "dummy":
            ys.append(x)
            continue
        what = f"iq{n}"
        v = spec.parts.get("iq/quantizers/quantizer" + (f"_{n}" if n else "") + "/quantizer")
        if v is not None:
            spec.parts[f"{what}/quantizer"] = v
        k, i, f = _kif(spec, what, conf)
        y, post = qat.quantize(b, spec, x, what, k, i, f, conf["round_mode"], conf["overflow_mode"])
        ys.append(qat.apply_post(b, spec, y, post, what))
    return _finish(b, spec, KL.add(b, LayerSpec(spec.name, "Add", spec.config, spec.inputs), ys))


CONVERTERS = {
    "QAdd": qadd,
    "QBatchNormalization": qbatch_norm,
    "QConv2D": _linear("Conv2D", KL.conv2d),
    "QDense": _linear("Dense", KL.dense),
    "QMaxPooling2D": _plain("MaxPooling2D", KL.max_pool),
    "QAveragePooling2D": _plain("AveragePooling2D", KL.avg_pool),
    "QGlobalAveragePooling2D": _plain("GlobalAveragePooling2D", KL.global_avg_pool),
    "Quantizer": quantizer_layer,
}
ALIASES = {"QMaxPool2D": "QMaxPooling2D", "QAvgPool2D": "QAveragePooling2D",
           "QGlobalAvgPool2D": "QGlobalAveragePooling2D"}


def is_hgq(spec: LayerSpec) -> bool:
    """An HGQ2 layer config (it names quantizer configs, not QKeras quantizer strings)."""
    return any(k in spec.config for k in ("iq_conf", "iq_confs", "kq_conf", "oq_conf")) or spec.cls == "Quantizer"
