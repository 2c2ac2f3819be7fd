"""Layer specs → :class:`~evsnn.ir.AnnGraph`: run the layer converters, then the folding passes.

See :mod:`evsnn.frontends.keras.layers` for the layout, naming and folding rules.
"""

from __future__ import annotations

import numpy as np

from evsnn.frontends.keras import hgq
from evsnn.frontends.keras import layers as KL
from evsnn.frontends.keras import qkeras
from evsnn.ir import ann as A

SUPPORTED = (KL.SUPPORTED + tuple(f"{c} (HGQ2)" for c in sorted(hgq.CONVERTERS))
             + tuple(f"{c} (QKeras)" for c in sorted(qkeras.CONVERTERS)))


def converter(spec: KL.LayerSpec):
    """The function converting ``spec``: a QAT library's layer (told apart by its config) or a Keras one."""
    cls = hgq.ALIASES.get(spec.cls, spec.cls)
    if cls in hgq.CONVERTERS and hgq.is_hgq(spec):
        return hgq.CONVERTERS[cls]
    if spec.cls in qkeras.CONVERTERS and qkeras.is_qkeras(spec):
        return qkeras.CONVERTERS[spec.cls]
    return KL.CONVERTERS.get(spec.cls)

# ---------------------------------------------------------------- layer specs → graph

def _input(b: KL.Builder, spec: KL.LayerSpec) -> KL.Tensor:
    """InputLayer (batch, H, W, C) → Input (C, H, W); (batch, F) → (F,)."""
    shape = spec.config.get("batch_shape") or spec.config.get("batch_input_shape")
    dims = list(shape or [])[1:]
    if not dims or any(d is None for d in dims) or len(dims) not in (1, 3):
        KL.fail(spec, f"input shape {shape} is not supported; supported: a fixed (H, W, C) image or (F,) vector")
    dims = [int(d) for d in dims]
    shape = (dims[2], dims[0], dims[1]) if len(dims) == 3 else (dims[0],)
    return KL.Tensor(b.add(A.Input(spec.name, shape=shape)), shape)


def check_classes(specs: list[KL.LayerSpec]) -> None:
    """Refuse the first unsupported layer before reading any weights."""
    for spec in specs:
        if spec.cls == "Lambda":
            KL.fail(spec, "a Lambda layer holds Python bytecode, which cannot be read safely (or converted); "
                          "rebuild the model with supported layers: " + ", ".join(SUPPORTED))
        if spec.cls != "InputLayer" and converter(spec) is None:
            KL.fail(spec, "unsupported layer class; supported: " + ", ".join(SUPPORTED))


def _users(nodes: list[A.Node]) -> dict[str, list[A.Node]]:
    users = {n.name: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            users[i].append(n)
    return users


def _remove(b: KL.Builder, node: A.Node, layers: dict, moved_to: str | None) -> None:
    """Drop ``node``; its readers read ``moved_to``; Keras layers it held now live there (or nowhere)."""
    b.nodes = [n for n in b.nodes if n is not node]
    for n in b.nodes:
        n.inputs = tuple(moved_to if i == node.name else i for i in n.inputs)
    for k, v in list(layers.items()):
        if v == node.name:
            if moved_to is None:
                del layers[k]
            else:
                layers[k] = moved_to


def _drop_unread(b: KL.Builder, layers: dict, output: str) -> None:
    """Remove nodes nothing reads (a ReLU or Flatten a QAT quantizer was moved past, see :mod:`.qat`)."""
    while True:
        users = _users(b.nodes)
        dead = [n for n in b.nodes if not users[n.name] and n.name != output and not isinstance(n, A.Input)]
        if not dead:
            return
        for n in dead:
            b.affine.pop(n.name, None)
            _remove(b, n, layers, None)


def _scale_rows(b: KL.Builder, p: A.Node, s: np.ndarray, t) -> None:
    """P ← s·P + t on P's outputs (Conv/Dense weights and bias, and P's own affine record)."""
    p.weight = p.weight * (s[:, None, None, None] if isinstance(p, A.Conv) else s[:, None])
    p.bias = p.bias * s + t
    if p.name in b.affine:
        ps, pt = b.affine[p.name]
        b.affine[p.name] = (ps * s, pt * s + t)


def _forget(layers: dict, names) -> None:
    """Keras layers whose values were held by ``names`` no longer exist in the graph."""
    for k, v in list(layers.items()):
        if v in names:
            del layers[k]


def _fold_back(b: KL.Builder, srcs: list[A.Node], p: A.Node, a: A.Node, layers: dict) -> None:
    """affine(P(x)) → P'(x), or affine(Add(P1, P2, …)) → Add(P1', P2', …): scale rows, shift one bias."""
    s, t = b.affine.pop(a.name)
    for k, q in enumerate(srcs):
        _scale_rows(b, q, s, t if k == 0 else 0.0)
    _forget(layers, {q.name for q in srcs} | {p.name})
    _remove(b, a, layers, p.name)


def _foldable_sources(b: KL.Builder, p: A.Node, nodes: dict, users: dict, output: str) -> list[A.Node] | None:
    """The Conv/Dense nodes an affine after ``p`` can be folded into (p itself, or an Add's inputs)."""
    if p is None or p.name == output or len(users[p.name]) != 1:
        return None
    srcs = [nodes[i] for i in p.inputs] if isinstance(p, A.Add) else [p]
    if isinstance(p, A.Add) and len(set(p.inputs)) != len(p.inputs):
        return None
    for q in srcs:
        if (not isinstance(q, (A.Conv, A.Dense)) or q.name in b.pad_only or q.name == output
                or len(users[q.name]) != 1):
            return None
    return srcs


def _in_channel(c: A.Conv) -> np.ndarray:
    """(Cout, Cin/groups) index of the input channel each weight slice reads."""
    co, cig = c.weight.shape[:2]
    group = np.arange(co) // (co // c.groups)
    return group[:, None] * cig + np.arange(cig)[None, :]


def _fold_forward(b: KL.Builder, a: A.Node, c: A.Node, layers: dict) -> None:
    """C(affine(x)) → C'(x): scale C's input columns, bias += W·shift."""
    s, t = b.affine.pop(a.name)
    if isinstance(c, A.Dense):
        c.bias = c.bias + c.weight @ t
        c.weight = c.weight * s[None, :]
    else:
        idx = _in_channel(c)
        c.bias = c.bias + (c.weight * t[idx][:, :, None, None]).sum(axis=(1, 2, 3))
        c.weight = c.weight * s[idx][:, :, None, None]
    c.inputs = a.inputs
    _remove(b, a, layers, None)


def _fold_pad(b: KL.Builder, a: A.Conv, c: A.Node, layers: dict) -> bool:
    """pad → Conv: add pads; pad → valid AvgPool: pads with zeros counted. False if not foldable."""
    if isinstance(c, A.Conv) and c.name not in b.affine:
        c.pads = tuple(int(x + y) for x, y in zip(c.pads, a.pads))
    elif isinstance(c, A.AvgPool) and not any(c.pads):
        c.pads, c.count_include_pad = a.pads, True
    else:
        return False
    c.inputs = a.inputs
    _remove(b, a, layers, None)
    return True


def _fold_step(b: KL.Builder, layers: dict, output: str) -> str | None:
    """Apply one fold; return the (possibly renamed) output node, or None when nothing folds."""
    nodes = {n.name: n for n in b.nodes}
    users = _users(b.nodes)
    for a in b.nodes:
        only = users[a.name][0] if len(users[a.name]) == 1 and a.name != output else None
        if a.name in b.affine:
            p = nodes.get(a.inputs[0])
            srcs = _foldable_sources(b, p, nodes, users, output)
            if srcs is not None:
                _fold_back(b, srcs, p, a, layers)
                return p.name if output == a.name else output
            shift_ok = isinstance(only, A.Dense) or (isinstance(only, A.Conv) and not any(only.pads))
            if (isinstance(only, (A.Conv, A.Dense)) and only.name not in b.pad_only | set(b.affine)
                    and (shift_ok or not np.any(b.affine[a.name][1]))):
                _fold_forward(b, a, only, layers)
                return output
        elif a.name in b.pad_only and only is not None and _fold_pad(b, a, only, layers):
            return output
    return None


def build_graph(specs: list[KL.LayerSpec], inp: str, out: str, name: str, meta: dict) -> A.AnnGraph:
    """Translate layer specs (topological order, weights filled) into a validated AnnGraph."""
    b = KL.Builder(s.name for s in specs)
    tensors: dict[str, KL.Tensor] = {}
    for spec in specs:
        if spec.cls == "InputLayer":
            if spec.name != inp:
                KL.fail(spec, "a second model input; evsnn supports exactly one")
            tensors[spec.name] = _input(b, spec)
        else:
            tensors[spec.name] = converter(spec)(b, spec, [tensors[i] for i in spec.inputs])
    if tensors[out].hwc is not None:
        tensors[out] = KL.reorder(b, tensors[out])
    layers = {k: t.node for k, t in tensors.items()}
    output = tensors[out].node
    _drop_unread(b, layers, output)
    while (step := _fold_step(b, layers, output)) is not None:
        output = step
    hwc = {k: list(t.hwc) for k, t in tensors.items() if t.hwc is not None and k in layers}
    tensors: dict[str, str] = {}
    for lname, node in layers.items():  # topological order: the producing layer comes first
        tensors.setdefault(node, lname)
    meta = dict(meta, source="keras", keras_layers=layers, tensors=tensors, flatten_hwc=hwc,
                quantizers=dict(b.quantizers))
    graph = A.AnnGraph(nodes=b.nodes, output=output, name=name, meta=meta)
    graph.validate()
    return graph
