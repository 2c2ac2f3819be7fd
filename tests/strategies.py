"""Hypothesis strategies: random quantized ANN graphs with dyadic weights, and inputs for them.

Structure (depth, layer kinds, strides, pads, L, quantizer) is drawn by
Hypothesis; weight values come from a NumPy generator seeded by a drawn
integer, which keeps drawing fast for realistic widths.

Every number lives on a dyadic grid so float sums are exact in any order:
weights k/64, biases k/128, inputs k/256, and scales λ = L·2^e (so a spike's
value λ/L is a power of two even for L = 2^K − 1). Exactness failures are
then semantics bugs, never rounding.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from evsnn.ir import ann as A


def _quant(draw, name, inp, levels, phase, choices=None, scale=None, rounding="floor"):
    e = draw(st.sampled_from([-4, -3, -2]))
    if choices is not None:  # each layer its own L
        levels = draw(st.sampled_from(choices))
    if scale is not None:
        return A.QuantAct(name, (inp,), levels, scale, phase, rounding)
    return A.QuantAct(name, (inp,), levels, float(levels * 2.0 ** e), phase, rounding)


def _f32(a):
    """Real (non-dyadic) values as a model file stores them: float32, held as float64."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


@st.composite
def graphs(draw, levels=(1, 2, 4, 8, 16), phases=(0.0, 0.5), max_depth=6, maxpool=True, residual=True,
           image=None, mixed_levels=False, real=False, tie_first=False, roundings=("floor",)):
    """A valid AnnGraph of 1..max_depth quantized activations and a readout Dense layer.

    All activations share one phase and one L (drawn from ``levels``), or with
    ``mixed_levels`` each draws its own L.

    ``real``: He-normal float32 weights and biases and one real (non-dyadic) float32 scale λ for every
    activation (equal scales keep average pools of levels and identity residual adds exact, so hidden
    layers see exact ties too). ``tie_first``: the first layer is an identity (1×1 conv or dense with
    weight 1, bias 0) into an activation, so :func:`tie_inputs` can put its pre-activations exactly on
    level boundaries and round-half ties. ``roundings``: the quantizers' tie rule, drawn once for the
    graph ("floor", or "half_even" as ONNX QDQ, QONNX and QKeras; with dyadic numbers both see many
    exact ties in every layer: average pools, residual adds and k/64 weights of levels).
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shared = None
    if real:
        shared = float(_f32(draw(st.floats(0.3, 4.0, allow_nan=False, allow_infinity=False))))
    L = draw(st.sampled_from(levels))
    phase = draw(st.sampled_from(phases))
    rounding = draw(st.sampled_from(roundings))
    depth = draw(st.integers(1, max_depth))
    is_image = draw(st.booleans()) if image is None else image

    def w(*shape, fan_in):
        if real:  # He-normal, scaled so a layer's pre-activation spans a few levels of λ
            return _f32(rng.standard_normal(shape) * np.sqrt(2.0 / fan_in) * (shared or 1.0))
        hi = max(2, int(96 / np.sqrt(fan_in)))
        return rng.integers(-hi, hi + 1, size=shape) / 64.0

    def b(n):
        if real:
            return _f32(rng.standard_normal(n) * 0.2 * shared)
        return rng.integers(-16, 33, size=n) / 128.0

    nodes: list[A.Node] = []
    k = 0

    def add(node):
        nodes.append(node)
        return node.name

    if is_image:
        shape = (draw(st.integers(1, 3)), draw(st.integers(4, 9)), draw(st.integers(4, 9)))
    else:
        shape = (draw(st.integers(2, 12)),)
    cur = add(A.Input("x", (), shape))
    acts = 0
    while acts < depth:
        k += 1
        if tie_first and acts == 0:  # identity first layer (see the docstring)
            n0 = shape[0]
            if len(shape) == 3:
                cur = add(A.Conv(f"id{k}", (cur,), np.eye(n0).reshape(n0, n0, 1, 1), np.zeros(n0), (1, 1),
                                 (0, 0, 0, 0), 1))
            else:
                cur = add(A.Dense(f"id{k}", (cur,), np.eye(n0), np.zeros(n0)))
            cur = add(_quant(draw, f"act{k}", cur, L, phase, None, shared, rounding))
            acts += 1
            continue
        if len(shape) == 3:
            c, h, wd = shape
            kinds = ["conv", "conv", "pool_conv", "conv_pool", "pool", "dense"]
            kind = draw(st.sampled_from(kinds + (["residual", "residual_down"] if residual else [])))
            if kind == "residual" and (acts == 0 or nodes[-1].kind not in ("quant", "maxpool")):
                kind = "conv"
            if kind == "pool" and (acts == 0 or h < 2 or wd < 2):
                kind = "conv"
            if kind in ("pool_conv", "conv_pool", "residual_down") and (h < 4 or wd < 4):
                kind = "conv"
            if kind == "dense":
                cur = add(A.Flatten(f"flat{k}", (cur,)))
                shape = (c * h * wd,)
                continue
            if kind == "pool_conv":
                cur = add(A.AvgPool(f"pool{k}", (cur,), (2, 2), (2, 2)))
                h, wd = h // 2, wd // 2
            if kind == "residual":
                wk = w(c, c, 3, 3, fan_in=9 * c)
                y = add(A.Conv(f"conv{k}", (cur,), wk, b(c), (1, 1), (1, 1, 1, 1), 1))
                cur = add(A.Add(f"add{k}", (y, cur)))
            elif kind == "residual_down":  # ResNet downsampling block: 3×3/2 conv + 1×1/2 shortcut
                co = draw(st.integers(1, 6))
                y = add(A.Conv(f"conv{k}", (cur,), w(co, c, 3, 3, fan_in=9 * c), b(co), (2, 2), (1, 1, 1, 1), 1))
                sc = add(A.Conv(f"short{k}", (cur,), w(co, c, 1, 1, fan_in=c), b(co), (2, 2), (0, 0, 0, 0), 1))
                cur = add(A.Add(f"add{k}", (y, sc)))
                h, wd, c = (h - 1) // 2 + 1, (wd - 1) // 2 + 1, co
            elif kind == "pool":  # average pool straight between two activations (a pool projection)
                ks = 2  # divisors stay powers of two (dyadic): no pad, or pad counted in the divisor
                padded = draw(st.booleans())
                pads = (1, 1, 1, 1) if padded else (0, 0, 0, 0)
                cur = add(A.AvgPool(f"pool{k}", (cur,), (ks, ks), (2, 2), pads, padded))
                h, wd = (h + pads[0] + pads[2] - ks) // 2 + 1, (wd + pads[1] + pads[3] - ks) // 2 + 1
            elif kind == "conv_pool":  # conv then average pool before the activation
                co = draw(st.integers(1, 6))
                y = add(A.Conv(f"conv{k}", (cur,), w(co, c, 3, 3, fan_in=9 * c), b(co), (1, 1), (1, 1, 1, 1), 1))
                cur = add(A.AvgPool(f"pool{k}", (y,), (2, 2), (2, 2)))
                h, wd, c = h // 2, wd // 2, co
            else:
                ks = draw(st.sampled_from([q for q in (1, 2, 3) if q <= min(h, wd)]))
                s = draw(st.sampled_from([1, 2])) if min(h, wd) >= 4 else 1
                pads = tuple(draw(st.integers(0, 1)) for _ in range(4)) if ks > 1 else (0, 0, 0, 0)
                depthwise = draw(st.booleans()) and c > 1
                co = c if depthwise else draw(st.integers(1, 6))
                g = c if depthwise else 1
                wk = w(co, c // g, ks, ks, fan_in=ks * ks * (c // g))
                cur = add(A.Conv(f"conv{k}", (cur,), wk, b(co), (s, s), pads, g))
                h = (h + pads[0] + pads[2] - ks) // s + 1
                wd = (wd + pads[1] + pads[3] - ks) // s + 1
                c = co
            cur = add(_quant(draw, f"act{k}", cur, L, phase, levels if mixed_levels else None, shared, rounding))
            acts += 1
            shape = (c, h, wd)
            if maxpool and min(h, wd) >= 2 and draw(st.integers(0, 3)) == 0:
                cur = add(A.MaxPool(f"max{k}", (cur,), (2, 2), (2, 2)))
                shape = (c, h // 2, wd // 2)
        else:
            f = shape[0]
            fo = draw(st.integers(1, 12))
            cur = add(A.Dense(f"dense{k}", (cur,), w(fo, f, fan_in=f), b(fo)))
            cur = add(_quant(draw, f"act{k}", cur, L, phase, levels if mixed_levels else None, shared, rounding))
            shape = (fo,)
            acts += 1
    if len(shape) == 3:
        cur = add(A.Flatten("flat_out", (cur,)))
        shape = (int(np.prod(shape)),)
    classes = draw(st.integers(2, 5))
    add(A.Dense("logits", (cur,), w(classes, shape[0], fan_in=shape[0]), b(classes)))
    graph = A.AnnGraph(nodes, "logits", "random")
    graph.validate()
    return graph


@st.composite
def inputs(draw, graph: A.AnnGraph, max_samples: int = 3):
    """(N, *input_shape) float64 on the k/256 grid in [−1, 1]."""
    n = draw(st.integers(1, max_samples))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(-256, 257, size=(n,) + tuple(graph.input.shape)) / 256.0


@st.composite
def tie_inputs(draw, graph: A.AnnGraph, max_samples: int = 3):
    """(N, *input_shape) inputs exactly on the first activation's level boundaries and round-half ties:
    x = (k + h)·λ/L in float64 with k ∈ −1..L+1 and h ∈ {0, ½} drawn per element (for a graph drawn
    with ``tie_first``, whose first pre-activation is x itself). These are the ties of both roundings:
    z·L/λ + φ an integer, for φ = 0 (h = 0) and φ = ½ (h = ½); a half-even quantizer's tie of an odd
    k + h + φ − ½ rounds down, of an even one up."""
    q = next(n for n in graph.nodes if isinstance(n, A.QuantAct))
    n = draw(st.integers(1, max_samples))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n,) + tuple(graph.input.shape)
    k = rng.integers(-1, int(q.levels) + 2, size=shape)
    h = rng.integers(0, 2, size=shape) / 2.0
    return (k + h) * q.scale / q.levels


@st.composite
def real_inputs(draw, graph: A.AnnGraph, max_samples: int = 3):
    """(N, *input_shape) standard-normal float32 inputs (real data: no exact ties)."""
    n = draw(st.integers(1, max_samples))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return _f32(rng.standard_normal((n,) + tuple(graph.input.shape)))


@st.composite
def graph_and_input(draw, **kw):
    g = draw(graphs(**kw))
    return g, draw(inputs(g))
