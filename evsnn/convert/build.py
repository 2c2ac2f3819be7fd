"""ANN graph → SNN network.

Every activation node (QuantAct, ClipAct) becomes a population named after
it; a MaxPool fed by an activation becomes a ``maxpool`` gate population (a
MaxPool placed before its activation is moved after it first: max commutes
with a monotone activation). The linear nodes between populations become
projections (see :mod:`.compose`) and their biases become per-neuron bias
currents. The graph output becomes the readout.

Normalisation (design.md, "Exactness"), generalised to layers with different L:
thresholds are 1; a spike of population "pre" is worth u_pre in ANN units and
a threshold of "post" u_post, with u = λ/L for the exact presets (a level) and
u = λ for the rate presets (a full-rate spike). A projection carries
W·u_pre/u_post. Rate presets: the input (analog value x, or a rate spike)
carries W/u_post and a bias b/u_post per wake step. Exact presets: every
population gets a *drive* (:mod:`evsnn.ir.drive`): its ``bias`` is the ANN
offset b, its analog input projections carry W unscaled (ANN units), and
``drive_scale`` = L/λ (computed as the ANN's quantizer computes it) turns
(W·x + b) into level units once; casc spreads it exactly over its wake steps,
bitserial adds it at step 0. Rate or event input spikes into a casc network
still carry W/(u_post·T_w) per spike. casc runs T_w = max L wake steps, so a
neuron receives X = L_post·z/λ_post in total: with one L this is the design's
W·λ_pre/λ_post. The readout has u = 1/T_w (casc), 1/L (bitserial) or 1 (rate
presets): after an exact run it holds T_w × the ANN output; its input and bias
are per-wake-step currents (bitserial: once, n = 1).

Every population takes its quantizer's ``rounding`` (floor, or half-even ties as
ONNX QuantizeLinear, QONNX ROUND and QKeras round): casc's CIF and bitserial
neurons then realise the file's tie rule exactly (see :mod:`evsnn.ir.snn`);
the rate presets' IF neurons ignore it, max-pool gates are "floor".

A network carries its schedule: ``default_wake`` (casc L, bitserial
K·(depth+1), rate presets 32) and ``default_sleep`` ("auto" for casc, 0
otherwise), which the executors use when a call gives none.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from evsnn.convert.compose import LinOp, compose, linop_of
from evsnn.convert.presets import bits_for_levels, get_preset
from evsnn.errors import ConversionError
from evsnn.ir import ann as A
from evsnn.ir import snn as S
from evsnn.ir.ops import avgpool_divisor, eval_node

INPUT_MODES = ("analog", "rate", "events")


def _hoist_maxpools(graph: A.AnnGraph) -> A.AnnGraph:
    """Rewrite ``z → MaxPool → act`` as ``z → act' → MaxPool`` (named like act) so the gate sees spikes."""
    nodes = list(graph.nodes)
    acts = {n.name for n in nodes if isinstance(n, A.ACTIVATIONS)}
    out = []
    for i, n in enumerate(nodes):
        if isinstance(n, A.MaxPool) and n.inputs[0] not in acts:
            users = graph.consumers(n.name)
            src = graph.node(n.inputs[0])
            if isinstance(src, (A.Input, A.MaxPool)) or len(users) != 1 or not isinstance(users[0], A.ACTIVATIONS):
                raise ConversionError(
                    f"node {n.name!r} (maxpool): a MaxPool must follow an activation, or be followed by exactly "
                    f"one activation (it is then moved after it); here it reads {src.name!r} ({src.kind})")
            continue
        if isinstance(n, A.ACTIVATIONS):
            src = graph.node(n.inputs[0])
            if isinstance(src, A.MaxPool) and src.inputs[0] not in acts:
                pre = dataclasses.replace(n, name=n.name + "/prepool", inputs=src.inputs)
                out += [pre, dataclasses.replace(src, name=n.name, inputs=(pre.name,))]
                continue
        out.append(n)
    return A.AnnGraph(out, graph.output, graph.name, dict(graph.meta))


def quantize_graph(graph: A.AnnGraph, levels: int, phase: float = 0.0) -> A.AnnGraph:
    """Copy of ``graph`` with every ClipAct(λ) replaced by QuantAct(levels, λ, phase).

    This is the quantized ANN an exact conversion of a threshold-ReLU model is exact against.
    """
    nodes = [A.QuantAct(n.name, n.inputs, int(levels), float(n.scale), phase) if isinstance(n, A.ClipAct) else n
             for n in graph.nodes]
    return A.AnnGraph(nodes, graph.output, graph.name, dict(graph.meta))


def _check_activations(graph: A.AnnGraph, exact: bool, levels: int | None, preset: str) -> A.AnnGraph:
    for n in graph.nodes:
        if isinstance(n, A.Relu):
            raise ConversionError(
                f"node {n.name!r} is a plain ReLU with no scale: calibrate the model on data first "
                "(evsnn.convert.calibrate, or --calibrate DATA on the command line)")
    if exact:
        if levels is not None:
            graph = quantize_graph(graph, levels)
        elif any(isinstance(n, A.ClipAct) for n in graph.nodes):
            raise ConversionError(f"preset {preset!r} needs quantized activations: give levels (--levels L)")
    quants = [n for n in graph.nodes if isinstance(n, A.QuantAct)]
    found = sorted({int(n.levels) for n in quants})
    if levels is not None and found and found != [int(levels)]:
        raise ConversionError(f"the model is quantized with L = {found} but levels = {levels} was requested")
    if preset == "bitserial" and len(found) > 1:
        raise ConversionError(f"bitserial needs one L for all layers, the model has L = {found}")
    return graph


def _trace(graph: A.AnnGraph, name: str, sources: set, shapes: dict, memo: dict) -> list[tuple[str, list[LinOp]]]:
    """Terms (source, chain of LinOps) whose sum is the bias-free value of node ``name``."""
    if name in sources:
        return [(name, [])]
    if name in memo:
        return memo[name]
    node = graph.node(name)
    if isinstance(node, A.Add):
        terms = [t for i in node.inputs for t in _trace(graph, i, sources, shapes, memo)]
    elif isinstance(node, A.LINEAR):
        op = linop_of(node, shapes[node.inputs[0]], shapes[name])
        terms = [(src, chain + [op]) for src, chain in _trace(graph, node.inputs[0], sources, shapes, memo)]
    else:
        raise ConversionError(f"node {name!r} ({node.kind}) cannot appear between two activations")
    memo[name] = terms
    return terms


def _projection(pre: str, post: str, pre_shape, post_shape, op: LinOp, scale: float) -> S.Projection:
    base = dict(pre=pre, post=post, pre_shape=tuple(pre_shape), post_shape=tuple(post_shape))
    if op.kind == "conv":
        return S.ConvProjection(**base, kernel=np.ascontiguousarray(op.weight.transpose(2, 3, 1, 0) * scale),
                                stride=tuple(op.stride), pads=tuple(op.pads), groups=int(op.groups))
    if op.kind == "pool":
        div = avgpool_divisor(pre_shape[1:], op.kernel, op.stride, op.pads, op.include_pad)
        return S.PoolProjection(**base, window=tuple(op.kernel), stride=tuple(op.stride), pads=tuple(op.pads),
                                weight=scale / div)
    if op.kind == "dense":
        import scipy.sparse as sp  # lazy: loading a network file (which imports this module) needs no SciPy

        m = sp.csr_matrix(op.weight.T * scale)
        m.eliminate_zeros()
        return S.DenseProjection(**base, indptr=m.indptr.astype(np.int64), indices=m.indices.astype(np.int64),
                                 data=m.data.astype(np.float64))
    return S.IdentityProjection(**base, weight=float(scale))


def convert(graph: A.AnnGraph, preset: str = "casc", levels: int | None = None,
            input_mode: str = "analog") -> S.Network:
    """Convert ``graph`` with ``preset`` (if, deng-gu, qcfs, casc, bitserial).

    ``levels`` quantizes threshold-ReLU (ClipAct) models to L levels for the
    exact presets; for already-quantized models it must match their L.
    ``input_mode``: "analog" (the first layers receive x every wake step),
    "rate" (Bernoulli spikes with p = clip(x, 0, 1)) or "events" (binned
    address events, one spike of value 1 per event: the model's input is the
    event-count frame of one time bin).
    """
    p = get_preset(preset)
    if levels is not None:
        try:
            lv = float(levels)
        except (TypeError, ValueError):
            lv = float("nan")
        if isinstance(levels, bool) or not np.isfinite(lv) or lv != int(lv) or lv < 1:
            raise ConversionError(f"levels must be a whole number ≥ 1, got {levels!r}")
        levels = int(lv)
    if input_mode not in INPUT_MODES:
        raise ConversionError(f"unknown input mode {input_mode!r}; known: {', '.join(INPUT_MODES)}")
    if preset == "bitserial" and input_mode != "analog":
        raise ConversionError("bitserial networks take analog input only")
    graph.validate()
    g = _check_activations(_hoist_maxpools(graph), p.exact, levels, preset)
    shapes = g.shapes()
    inp = g.input
    acts = [n for n in g.nodes if isinstance(n, (A.QuantAct, A.ClipAct))]
    lvls = sorted({int(n.levels) for n in acts if isinstance(n, A.QuantAct)})
    L = lvls[-1] if lvls else (int(levels) if levels else None)  # casc: T_w = the largest L
    if p.exact and L is None:  # e.g. a model with no activation at all
        raise ConversionError(f"preset {preset!r} needs quantized activations or levels (--levels L); "
                              "the model has no activation")
    bits = bits_for_levels(L) if preset == "bitserial" else None
    # value of one spike (pre) and of one threshold (post), in ANN units; see the module docstring
    n_apply = 1.0 if preset != "casc" else float(L)  # wake steps that deliver input and bias
    scale, unit = {inp.name: 1.0}, {inp.name: 1.0}
    pops: list[S.Population] = []
    for n in g.nodes:
        if isinstance(n, (A.QuantAct, A.ClipAct)):
            scale[n.name] = float(n.scale)
            lv = int(n.levels) if isinstance(n, A.QuantAct) else None
            unit[n.name] = scale[n.name] / lv if p.exact else scale[n.name]
            v0 = p.v0 if p.v0 is not None else float(getattr(n, "phase", 0.0))
            model, lv = p.model, (lv if p.exact else None)
            rounding = getattr(n, "rounding", "floor")  # the quantizer's tie rule (IF neurons ignore it)
        elif isinstance(n, A.MaxPool):
            if n.inputs[0] not in scale or n.inputs[0] == inp.name:
                raise ConversionError(f"node {n.name!r} (maxpool) must read an activation")
            src = next(pp for pp in pops if pp.name == n.inputs[0])
            scale[n.name], unit[n.name] = scale[src.name], unit[src.name]
            v0, model, lv, rounding = 0.0, "maxpool", src.levels, "floor"
        else:
            continue
        size = int(np.prod(shapes[n.name]))
        pops.append(S.Population(n.name, tuple(shapes[n.name]), model, np.ones(size), np.zeros(size), v0, lv,
                                 shift=p.shift, scale=scale[n.name], rounding=rounding))
    sources = set(scale)
    for pp in pops:
        if pp.name in (S.INPUT, "readout"):
            raise ConversionError(f"node {pp.name!r}: the name {pp.name!r} is reserved for evsnn's own "
                                  "input/readout; rename this layer in the model")

    # affine offsets: every node's value when all sources output zero
    vals = {}
    for n in g.nodes:
        vals[n.name] = (np.zeros((1,) + tuple(shapes[n.name])) if n.name in sources
                        else eval_node(n, [vals[i] for i in n.inputs]))

    readout_name = g.output if g.output not in sources else "readout"
    readout_in = g.output if g.output not in sources else None
    readout = S.Readout(readout_name, tuple(shapes[g.output]), np.zeros(int(np.prod(shapes[g.output]))))
    # the readout sums T·(ANN output) over a run: T = L (exact presets) or the steps run (rate presets)
    unit[readout_name] = 1.0 / L if p.exact else 1.0

    projections: list[S.Projection] = []
    memo: dict = {}
    targets = [(pp.name, g.node(pp.name).inputs[0], pp) for pp in pops] + [(readout_name, readout_in, readout)]
    for post, src_node, obj in targets:
        if src_node is None:  # output is itself a population: readout = its spikes × their value
            projections.append(S.IdentityProjection(g.output, post, readout.shape, readout.shape,
                                                    weight=unit[g.output] / unit[post]))
            continue
        if isinstance(obj, S.Population) and obj.model == "maxpool":
            node = g.node(post)
            projections.append(S.MaxProjection(src_node, post, tuple(shapes[src_node]), obj.shape,
                                               window=tuple(node.kernel), stride=tuple(node.stride),
                                               pads=tuple(node.pads)))
            continue
        drive = p.exact and isinstance(obj, S.Population)  # see the module docstring
        for pre, chain in _trace(g, src_node, sources, shapes, memo):
            op = compose(chain, shapes[pre])
            if pre != inp.name:
                w = unit[pre] / unit[post]
            elif drive and input_mode == "analog":
                w = 1.0  # ANN units: the drive scales W·x + b to levels in one step, as the ANN does
            else:
                w = (1.0 / n_apply) / unit[post]
            projections.append(_projection(pre if pre != inp.name else S.INPUT, post, shapes[pre], obj.shape, op, w))
        if drive:
            obj.bias = vals[src_node].reshape(-1).astype(np.float64)
            node = g.node(post)
            obj.drive_scale = node.levels / node.scale  # the expression of ops.quantize_levels
        else:
            obj.bias = vals[src_node].reshape(-1) / (unit[post] * n_apply)

    net = S.Network(tuple(inp.shape), pops, projections, readout, preset, input_mode, L, bits,
                    meta={"source": graph.name, "scales": {k: v for k, v in scale.items() if k != inp.name}})
    for key in ("input_quant", "readout_quant"):  # quantizers on the model's input/logits (ONNX QDQ, QONNX)
        if graph.meta.get(key):
            net.meta[key] = dict(graph.meta[key])
    if graph.meta.get("input_layout"):  # channels-last model input: the data is transposed when checked
        net.meta["input_layout"] = graph.meta["input_layout"]
    if preset == "bitserial":
        net.default_wake = bits * (net.depth() + 1)
    else:
        net.default_wake = L if L else 32
    net.default_sleep = "auto" if preset == "casc" else 0
    net.validate()
    return net
