"""Converters of the ONNX frontend: one small function per ONNX op family.

Each converter is registered for the op types it handles and the opset that
introduced the signature it reads (``@converter("ReduceMean", since=18)``
reads ``axes`` from an input, the ``since=11`` one from an attribute).
:func:`lookup` picks the newest registration not newer than the model's
opset. A converter receives the conversion context (``ctx``, see
:class:`evsnn.frontends.onnx.convert.Converter`) and one ``onnx.NodeProto``; it either emits an
:mod:`evsnn.ir.ann` node, queues elementwise :class:`~.chain.Token`\\ s on
its input (activations, BatchNormalization, affine ops; resolved later by
:func:`~.chain.plan_chain`), or records a constant.

Shapes are per sample (no batch axis): (C, H, W) or (F,).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx

from evsnn.frontends.onnx.chain import INF
from evsnn.ir import ann as A
from evsnn.validate.onnx_model import dtype_name

MIN_OPSET = 11
BATCH = -987654321  # stands for the (dynamic) batch size inside shape computations; fits int32

_REGISTRY: dict[tuple[str, str], list[tuple[int, Callable]]] = {}
_CONST: dict[tuple[str, str], Callable] = {}
DOMAIN_ALIASES = {"ai.onnx": ""}


def _key(domain: str, op: str) -> tuple[str, str]:
    return (DOMAIN_ALIASES.get(domain, domain), op)


def converter(*op_types: str, since: int = MIN_OPSET, domains: tuple[str, ...] = ("",)):
    """Register the decorated ``fn(ctx, node)`` for ``op_types`` (in ``domains``) from opset ``since`` on."""

    def deco(fn):
        for dom in domains:
            for op in op_types:
                entries = _REGISTRY.setdefault(_key(dom, op), [])
                entries.append((since, fn))
                entries.sort(key=lambda e: e[0])
        return fn

    return deco


def const_evaluator(*op_types: str, domains: tuple[str, ...] = ("",)):
    """Register ``fn(ctx, node) -> list of arrays`` to evaluate ``op_types`` on constant inputs
    (instead of ``onnx.reference``; used for quantizers, folded exactly as onnxruntime computes them)."""

    def deco(fn):
        for dom in domains:
            for op in op_types:
                _CONST[_key(dom, op)] = fn
        return fn

    return deco


def lookup(op_type: str, opset: int, domain: str = "") -> Callable | None:
    """Converter for ``op_type`` at ``opset`` (newest registration with since ≤ opset), or None."""
    best = None
    for since, fn in _REGISTRY.get(_key(domain, op_type), ()):
        if since <= opset:
            best = fn
    return best


def lookup_const(op_type: str, domain: str = "") -> Callable | None:
    return _CONST.get(_key(domain, op_type))


def known_domains() -> list[str]:
    return sorted({d for d, _ in _REGISTRY} | {d for d, _ in _CONST})


def supported_ops(domain: str = "") -> list[str]:
    dom = DOMAIN_ALIASES.get(domain, domain)
    return sorted({op for d, op in _REGISTRY if d == dom})


def attrs(node: onnx.NodeProto) -> dict:
    """Attribute name → Python value (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _need_image(ctx, node, v) -> None:
    if len(v.shape) != 3:
        raise ctx.fail(node, f"needs an image input (N, C, H, W); got per-sample shape {v.shape}")


def _need_vector(ctx, node, v) -> None:
    if len(v.shape) != 1:
        raise ctx.fail(node, f"needs a (N, features) input; got per-sample shape {v.shape} (flatten first)")


# ---------------------------------------------------------------- windows


def _window_pads(ctx, node, at: dict, hw, kernel, stride) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from ``pads`` / ``auto_pad`` (dilation 1)."""
    mode = at.get("auto_pad", "NOTSET") or "NOTSET"
    if mode == "NOTSET":
        p = [int(x) for x in at.get("pads", [0, 0, 0, 0])]
        if len(p) != 4 or min(p) < 0:
            raise ctx.fail(node, f"pads {p} must be 4 non-negative values (2-D only)")
        return (p[0], p[1], p[2], p[3])
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.fail(node, f"auto_pad={mode!r} is not supported")
    begin, end = [], []
    for size, k, s in zip(hw, kernel, stride, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + k - size)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def _window(ctx, node, v, kernel_key: str = "kernel_shape", kernel=None):
    """(kernel, stride, pads) of a 2-D Conv/pool node; rejects dilation ≠ 1 and output-changing ceil_mode."""
    at = attrs(node)
    kernel = tuple(int(k) for k in (kernel if kernel is not None else at.get(kernel_key, ())))
    if len(kernel) != 2:
        raise ctx.fail(node, f"kernel {kernel}: only 2-D windows are supported")
    dil = [int(d) for d in at.get("dilations", [1, 1])]
    if any(d != 1 for d in dil):
        raise ctx.fail(node, f"dilations {dil} are not supported (only dilation 1)")
    stride = tuple(int(s) for s in at.get("strides", [1, 1]))
    if len(stride) != 2 or min(stride) < 1:
        raise ctx.fail(node, f"strides {stride} must be two positive integers")
    pads = _window_pads(ctx, node, at, v.shape[1:], kernel, stride)
    if v.pad:
        pads = tuple(p + q for p, q in zip(pads, v.pad, strict=True))
    if at.get("ceil_mode", 0):
        for size, k, s, p0, p1 in zip(v.shape[1:], kernel, stride, pads[:2], pads[2:], strict=True):
            if (size + p0 + p1 - k) % s:
                raise ctx.fail(node, "ceil_mode=1 changes the output size here; only floor mode is supported")
    return kernel, stride, pads


# ---------------------------------------------------------------- linear layers


@converter("Conv")
def conv(ctx, node) -> None:
    """Conv (2-D, any stride/pads/groups, dilation 1) → ``Conv``; a preceding zero Pad is folded in."""
    src, v = ctx.source(node, 0)
    _need_image(ctx, node, v)
    w = ctx.weight(node, 1, "weight")
    if w.ndim != 4:
        raise ctx.fail(node, f"weight of shape {w.shape}: only 2-D convolution is supported")
    b = ctx.weight(node, 2, "bias", optional=True)
    b = np.zeros(w.shape[0]) if b is None else b.reshape(-1)
    groups = int(attrs(node).get("group", 1))
    if w.shape[1] * groups != v.shape[0]:
        raise ctx.fail(node, f"weight {w.shape} with group={groups} does not fit {v.shape[0]} input channels")
    kernel, stride, pads = _window(ctx, node, v, kernel=w.shape[2:])
    ks = attrs(node).get("kernel_shape")
    if ks is not None and tuple(ks) != tuple(w.shape[2:]):
        raise ctx.fail(node, f"kernel_shape {tuple(ks)} disagrees with the weight shape {w.shape}")
    out = A.Conv(ctx.name_for(node), (src.name,), weight=w, bias=b, stride=stride, pads=pads, groups=groups)
    ctx.emit(out, node.output[0], foldable=True)


def _dense(ctx, node, v, weight: np.ndarray, bias: np.ndarray) -> None:
    _need_vector(ctx, node, v)
    if weight.shape[1] != v.shape[0]:
        raise ctx.fail(node, f"weight maps {weight.shape[1]} features, the input has {v.shape[0]}")
    if isinstance(v.layout, np.ndarray):  # input flattened from NHWC: fold the order into the columns
        w = np.empty_like(weight)
        w[:, v.layout] = weight
        weight = w
    src = ctx.materialize(node.input[0])
    ctx.emit(A.Dense(ctx.name_for(node), (src.name,), weight=weight, bias=bias), node.output[0], foldable=True)


@converter("Gemm")
def gemm(ctx, node) -> None:
    """Gemm(x, B, C) with constant B, C and transA=0 → ``Dense`` (weight = α·Bᵀ or α·B, bias = β·C)."""
    at = attrs(node)
    if at.get("transA", 0):
        raise ctx.fail(node, "transA=1 is not supported")
    v = ctx.data(node, 0)
    b = ctx.weight(node, 1, "B")
    if b.ndim != 2:
        raise ctx.fail(node, f"B of shape {b.shape} must be 2-D")
    w = (b if at.get("transB", 0) else b.T) * float(at.get("alpha", 1.0))
    c = ctx.weight(node, 2, "C", optional=True)
    if c is None:
        bias = np.zeros(w.shape[0])
    elif c.ndim <= 2 and (c.ndim < 2 or c.shape[0] == 1) and c.size in (1, w.shape[0]):
        bias = np.broadcast_to(c.reshape(-1), (w.shape[0],)) * float(at.get("beta", 1.0))
    else:
        raise ctx.fail(node, f"C of shape {c.shape} is not a bias for {w.shape[0]} outputs")
    _dense(ctx, node, v, np.ascontiguousarray(w), np.array(bias, dtype=np.float64))


@converter("MatMul")
def matmul(ctx, node) -> None:
    """MatMul(x, W) with a constant 2-D W → ``Dense`` with zero bias (a following Add folds into it)."""
    if ctx.const(node.input[0]) is not None:
        raise ctx.fail(node, "constant @ tensor is not supported; only tensor @ constant weight")
    v = ctx.data(node, 0)
    w = ctx.weight(node, 1, "weight")
    if w.ndim != 2:
        raise ctx.fail(node, f"weight of shape {w.shape} must be 2-D")
    _dense(ctx, node, v, np.ascontiguousarray(w.T), np.zeros(w.shape[1]))


# ---------------------------------------------------------------- elementwise → tokens


@converter("BatchNormalization")
def batchnorm(ctx, node) -> None:
    """Inference BatchNormalization → per-channel affine (folded into the preceding Conv/Dense if any)."""
    at = attrs(node)
    if at.get("training_mode", 0) or any(ctx.is_used(o) for o in node.output[1:]):
        raise ctx.fail(node, "BatchNormalization in training mode cannot be folded; export in eval mode")
    v = ctx.data(node, 0)
    names = ("scale", "B", "mean", "var")
    p = [ctx.weight(node, i + 1, names[i], reason="to fold BatchNormalization").reshape(-1) for i in range(4)]
    if any(x.shape != (v.shape[0],) for x in p):
        raise ctx.fail(node, f"parameters {[x.shape for x in p]} do not match {v.shape[0]} channels")
    a = p[0] / np.sqrt(p[3] + float(at.get("epsilon", 1e-5)))
    ctx.extend(node, node.input[0], [ctx.token(node, "affine", a=a, b=p[1] - p[2] * a, per_channel=True)])


@converter("Add", "Sub", "Mul", "Div")
def arithmetic(ctx, node) -> None:
    """Tensor + tensor → residual ``Add``; tensor ∘ constant (scalar or per-channel) → affine token."""
    c0, c1 = ctx.const(node.input[0]), ctx.const(node.input[1])
    if c0 is None and c1 is None:
        if node.op_type == "Add":
            return _add(ctx, node, list(node.input))
        raise ctx.fail(node, f"{node.op_type} of two tensors is not supported (only Add, as a residual sum)")
    di = 0 if c1 is not None else 1
    v = ctx.data(node, di)
    val, pc = ctx.channel_param(node, c1 if di == 0 else c0, v.shape, v)
    op = node.op_type
    if op == "Add":
        a, b = 1.0, val
    elif op == "Sub":
        a, b = (1.0, -val) if di == 0 else (-1.0, val)
    elif op == "Mul":
        a, b = val, 0.0 * val
    else:
        if di == 1:
            raise ctx.fail(node, "constant / tensor is not supported")
        if np.any(np.asarray(val) == 0):
            raise ctx.fail(node, "division by zero")
        a, b = 1.0 / val, 0.0 * val
    ctx.extend(node, node.input[di], [ctx.token(node, "affine", a=a, b=b, per_channel=pc)])


@converter("Neg")
def neg(ctx, node) -> None:
    ctx.extend(node, node.input[0], [ctx.token(node, "affine", a=-1.0, b=0.0)])


@converter("Relu")
def relu(ctx, node) -> None:
    ctx.extend(node, node.input[0], [ctx.token(node, "clip", lo=0.0, hi=INF)])


def _scalar_bound(ctx, node, idx: int, default: float) -> float:
    name = node.input[idx] if idx < len(node.input) else ""
    if not name:
        return default
    c = ctx.const(name)
    if c is None or c.size != 1:
        raise ctx.fail(node, f"bound {name!r} must be a constant scalar")
    return float(c.reshape(()))


@converter("Clip")
def clip(ctx, node) -> None:
    """Clip(x, min, max) with constant scalar bounds (inputs since opset 11) → clip token."""
    lo, hi = _scalar_bound(ctx, node, 1, -INF), _scalar_bound(ctx, node, 2, INF)
    ctx.extend(node, node.input[0], [ctx.token(node, "clip", lo=lo, hi=hi)])


@converter("Max", "Min")
def minmax(ctx, node) -> None:
    """Max(x, c) / Min(x, c) with one constant scalar → clip token."""
    ins = [i for i in node.input if i]
    consts = [i for i, n in enumerate(ins) if ctx.const(n) is not None]
    if len(ins) != 2 or len(consts) != 1:
        raise ctx.fail(node, f"{node.op_type} needs exactly one tensor and one constant scalar")
    di = 1 - consts[0]
    c = _scalar_bound(ctx, node, consts[0], 0.0)
    lo, hi = (c, INF) if node.op_type == "Max" else (-INF, c)
    ctx.extend(node, ins[di], [ctx.token(node, "clip", lo=lo, hi=hi)])


@converter("Floor")
def floor(ctx, node) -> None:
    ctx.extend(node, node.input[0], [ctx.token(node, "floor")])


@converter("Round")
def round_(ctx, node) -> None:
    """Round (half to even, the ONNX spec) → ``A(1, ½) F(half_even)``: the same tokens as QuantizeLinear's
    rounding, so a float-arithmetic quantizer with Round converts exactly, ties included."""
    ctx.extend(node, node.input[0], [ctx.token(node, "affine", a=1.0, b=0.5),
                                     ctx.token(node, "floor", rounding="half_even")])


@converter("Identity")
def identity(ctx, node) -> None:
    ctx.extend(node, node.input[0], [])


@converter("Dropout")
def dropout(ctx, node) -> None:
    """Dropout at inference = identity; a constant-true training_mode or a used mask is an error."""
    tm = node.input[2] if len(node.input) > 2 else ""
    if tm:
        c = ctx.const(tm)
        if c is None or bool(c.reshape(())):
            raise ctx.fail(node, "Dropout in training mode is not supported")
    if len(node.output) > 1 and ctx.is_used(node.output[1]):
        raise ctx.fail(node, "the Dropout mask output is not supported")
    ctx.extend(node, node.input[0], [])


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@converter("Cast")
def cast(ctx, node) -> None:
    to = attrs(node).get("to")
    if to not in _FLOAT_TYPES:
        raise ctx.fail(node, f"Cast to {dtype_name(to)} is not supported (float types only)")
    ctx.extend(node, node.input[0], [])


# ---------------------------------------------------------------- structure


def _add(ctx, node, inputs: list[str]) -> None:
    ins = [i for i in inputs if i]
    if len(ins) == 1:
        return ctx.extend(node, ins[0], [])
    vals = [ctx.values.get(i) for i in ins]
    if any(v is None for v in vals):
        raise ctx.fail(node, "mixes tensors and constants; only sums of tensors are supported")
    tags = [v.layout if isinstance(v.layout, str) or v.layout is None else tuple(v.layout) for v in vals]
    if any(t != tags[0] for t in tags):
        raise ctx.fail(node, "adds tensors of different layouts (NCHW and channels-last); not supported")
    if any(v.shape != vals[0].shape for v in vals):
        raise ctx.fail(node, f"adds tensors of shapes {[v.shape for v in vals]}; broadcasting is not supported")
    srcs = [ctx.materialize(i).name for i in ins]
    ctx.emit(A.Add(ctx.name_for(node), tuple(srcs)), node.output[0])
    ctx.values[node.output[0]].layout = vals[0].layout


@converter("Sum")
def sum_(ctx, node) -> None:
    _add(ctx, node, list(node.input))


@converter("AveragePool")
def average_pool(ctx, node) -> None:
    src, v = ctx.source(node, 0)
    _need_image(ctx, node, v)
    k, s, p = _window(ctx, node, v)
    cip = bool(attrs(node).get("count_include_pad", 0))
    ctx.emit(A.AvgPool(ctx.name_for(node), (src.name,), kernel=k, stride=s, pads=p, count_include_pad=cip),
             node.output[0])


@converter("MaxPool")
def max_pool(ctx, node) -> None:
    if len(node.output) > 1 and ctx.is_used(node.output[1]):
        raise ctx.fail(node, "the Indices output of MaxPool is not supported")
    src, v = ctx.source(node, 0)
    _need_image(ctx, node, v)
    if v.pad:
        raise ctx.fail(node, "zero Pad before MaxPool is not supported (MaxPool pads with −∞)")
    k, s, p = _window(ctx, node, v)
    ctx.emit(A.MaxPool(ctx.name_for(node), (src.name,), kernel=k, stride=s, pads=p), node.output[0], activation=True)


def _global_pool(ctx, node, cls, name: str | None = None, out: str | None = None) -> A.Node:
    v = ctx.data(node, 0)
    _need_image(ctx, node, v)
    src = ctx.materialize(node.input[0])
    hw = tuple(v.shape[1:])
    n = cls(name or ctx.name_for(node), (src.name,), kernel=hw, stride=(1, 1))
    ctx.emit(n, out if out is not None else node.output[0], activation=cls is A.MaxPool)
    return n


@converter("GlobalAveragePool")
def global_average_pool(ctx, node) -> None:
    _global_pool(ctx, node, A.AvgPool)


@converter("GlobalMaxPool")
def global_max_pool(ctx, node) -> None:
    _global_pool(ctx, node, A.MaxPool)


def _reduce_mean(ctx, node, axes) -> None:
    """ReduceMean over the two spatial axes = global average pooling (+ Flatten when keepdims=0)."""
    v = ctx.data(node, 0)
    _need_image(ctx, node, v)
    norm = sorted(int(a) + 4 if int(a) < 0 else int(a) for a in (axes if axes is not None else []))
    if norm != [2, 3]:
        raise ctx.fail(node, f"ReduceMean over axes {axes} is not supported (only the spatial axes [2, 3])")
    if attrs(node).get("keepdims", 1):
        _global_pool(ctx, node, A.AvgPool)
        return
    pool = _global_pool(ctx, node, A.AvgPool, name=ctx.unique(ctx.onnx_name(node) + "/pool"), out="")
    ctx.emit(A.Flatten(ctx.name_for(node), (pool.name,)), node.output[0])


@converter("ReduceMean")
def reduce_mean_11(ctx, node) -> None:
    _reduce_mean(ctx, node, attrs(node).get("axes"))


@converter("ReduceMean", since=18)
def reduce_mean_18(ctx, node) -> None:
    ax = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    _reduce_mean(ctx, node, None if ax is None else ax.reshape(-1).tolist())


def _flatten_to(ctx, node, v, sample: tuple) -> None:
    """Emit Flatten when ``sample`` is the flattened per-sample shape, pass through when unchanged.

    Flattening a channels-last tensor emits the NCHW Flatten and tags the vector with the order
    (see :mod:`.layout`)."""
    from evsnn.frontends.onnx.layout import flatten_perm, onnx_shape

    flat = (int(np.prod(v.shape)),)
    if tuple(sample) == onnx_shape(v):
        ctx.extend(node, node.input[0], [])
    elif tuple(sample) == flat:
        src = ctx.materialize(node.input[0])
        ctx.emit(A.Flatten(ctx.name_for(node), (src.name,)), node.output[0])
        if v.layout is not None:
            ctx.values[node.output[0]].layout = flatten_perm(v.shape)
    else:
        raise ctx.fail(node, f"reshapes per-sample shape {v.shape} to {tuple(sample)}; only flattening "
                             f"to (N, {flat[0]}) is supported")


@converter("Flatten")
def flatten(ctx, node) -> None:
    v = ctx.data(node, 0)
    axis = int(attrs(node).get("axis", 1))
    axis = axis + len(v.shape) + 1 if axis < 0 else axis
    if axis != 1:
        raise ctx.fail(node, f"Flatten with axis={axis} is not supported (only axis=1, keeping the batch axis)")
    _flatten_to(ctx, node, v, (int(np.prod(v.shape)),))


def _reshape_target(ctx, node, v, t: list[int], allowzero: bool) -> tuple:
    """Per-sample shape a Reshape target means, with the batch axis first (BATCH, fixed N, 0 or −1)."""
    from evsnn.frontends.onnx.layout import onnx_shape

    full = [BATCH, *onnx_shape(v)]
    t = [full[i] if (d == 0 and not allowzero and i < len(full)) else d for i, d in enumerate(t)]
    size = int(np.prod(v.shape))
    if not t or not (t[0] in (BATCH, -1) or t[0] == ctx.fixed_batch):
        raise ctx.fail(node, f"Reshape target {t} does not keep the batch axis first")
    rest = list(t[1:])
    if t[0] == -1 and (-1 in rest or BATCH in rest):
        raise ctx.fail(node, f"Reshape target {t} leaves the batch size undetermined")
    if rest.count(-1) == 1:
        known = int(np.prod([d for d in rest if d != -1]))
        if known <= 0 or size % known:
            raise ctx.fail(node, f"Reshape target {t} does not fit per-sample shape {v.shape}")
        rest[rest.index(-1)] = size // known
    if any(d <= 0 for d in rest) or int(np.prod(rest)) != size:
        raise ctx.fail(node, f"Reshape target {t} does not fit per-sample shape {v.shape}")
    return tuple(rest)


@converter("Reshape")
def reshape(ctx, node) -> None:
    """Reshape that keeps the batch axis and flattens (or keeps) the rest; targets may come from Shape."""
    v = ctx.data(node, 0)
    target = ctx.const(node.input[1])
    if target is not None:
        sample = _reshape_target(ctx, node, v, [int(d) for d in target.reshape(-1)],
                                 bool(attrs(node).get("allowzero", 0)))
    else:
        dims = ctx.inferred(node.output[0])
        if dims is None or any(d is None for d in dims[1:]):
            raise ctx.fail(node, "the Reshape target is computed at run time and its shape cannot be inferred")
        sample = tuple(dims[1:])
    _flatten_to(ctx, node, v, sample)


def _squeeze(ctx, node, axes) -> None:
    v = ctx.data(node, 0)
    norm = sorted(int(a) + len(v.shape) + 1 if int(a) < 0 else int(a) for a in (axes or []))
    if len(v.shape) != 3 or norm != [2, 3] or v.shape[1:] != (1, 1):
        raise ctx.fail(node, f"Squeeze axes {axes} of per-sample shape {v.shape}: only squeezing a "
                             "(C, 1, 1) map on axes [2, 3] is supported")
    _flatten_to(ctx, node, v, (v.shape[0],))


@converter("Squeeze")
def squeeze_11(ctx, node) -> None:
    _squeeze(ctx, node, attrs(node).get("axes"))


@converter("Squeeze", since=13)
def squeeze_13(ctx, node) -> None:
    ax = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    _squeeze(ctx, node, None if ax is None else ax.reshape(-1).tolist())


@converter("Shape")
def shape(ctx, node) -> None:
    """Shape of a data tensor: a constant whose batch entry is the BATCH marker (start/end since 15)."""
    from evsnn.frontends.onnx.layout import onnx_shape

    v = ctx.data(node, 0)
    full = np.array([BATCH, *onnx_shape(v)], dtype=np.int64)
    at = attrs(node)
    start, end = int(at.get("start", 0)), at.get("end")
    ctx.set_const(node.output[0], full[start:None if end is None else int(end)])


@converter("Pad")
def pad(ctx, node) -> None:
    """Zero, constant-mode Pad of H/W feeding only Conv nodes: folded into their ``pads``."""
    at = attrs(node)
    v = ctx.data(node, 0)
    _need_image(ctx, node, v)
    if at.get("mode", "constant") != "constant":
        raise ctx.fail(node, f"Pad mode {at.get('mode')!r} is not supported (constant zero padding only)")
    p = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if p is None:
        raise ctx.fail(node, "pads must be constant")
    p = [int(x) for x in p.reshape(-1)]
    value = _scalar_bound(ctx, node, 2, 0.0)
    axes = ctx.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    full = [0] * 8
    ax = [int(a) % 4 for a in axes.reshape(-1)] if axes is not None else list(range(len(p) // 2))
    for i, a in enumerate(ax):
        full[a], full[a + 4] = p[i], p[i + len(ax)]
    if value != 0 or any(full[i] for i in (0, 1, 4, 5)) or min(full) < 0:
        raise ctx.fail(node, f"only non-negative zero padding of H and W is supported (pads {p}, value {value})")
    if not all(c.op_type == "Conv" for c in ctx.consumers(node.output[0])):
        raise ctx.fail(node, "Pad is supported only when every consumer is a Conv (it is folded into its pads)")
    ctx.set_padded(node, (full[2], full[3], full[6], full[7]))
