"""Conversion state of the ONNX frontend: walks the graph and builds the AnnGraph.

:class:`Converter` holds, per ONNX tensor, either a constant (NumPy array) or
a :class:`Value` (an AnnGraph node plus pending elementwise tokens), and is
the API the op converters in :mod:`evsnn.frontends.onnx.ops` use (``ctx``).
See :mod:`evsnn.frontends.onnx` for the rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.helper

from evsnn.errors import ConversionError, EvsnnError
from evsnn.frontends.onnx import layout, ops, qdq, qonnx, quantizers  # noqa: F401 (registers converters)
from evsnn.frontends.onnx.chain import ACTIVATION_HELP, ChainError, Token, is_affine, plan_chain
from evsnn.frontends.onnx.quantizers import QuantError
from evsnn.ir import ann as A
from evsnn.validate import onnx_model
from evsnn.validate.limits import check_array_size

_MOVEMENT = {"Identity", "Cast", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Flatten"}
_RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}
_SHAPE_ONLY = {"Shape", "Size"}
_QOPERATOR = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
              "QLinearAveragePool", "QLinearGlobalAveragePool", "QGemm", "DynamicQuantizeLinear"}


def first_line(e: BaseException) -> str:
    """First line of an exception's message (for one-line user errors)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@dataclass
class Value:
    """A data tensor during conversion: ``node``'s output with ``chain`` still to apply.

    ``shape``: per-sample shape (C, H, W) or (F,). ``foldable``: ``node`` is a
    Conv/Dense no one else reads, so the chain's affine part may be folded
    into it. ``pad``: a pending zero Pad (top, left, bottom, right) only a Conv
    may consume.
    """

    node: A.Node
    shape: tuple
    chain: list[Token] = field(default_factory=list)
    foldable: bool = False
    pad: tuple | None = None
    layout: object = None  # None (NCHW), "NHWC" or a flatten permutation: see .layout


_KEEP = object()


class Converter:
    """Conversion state of one model; the API converters in :mod:`.ops` use."""

    def __init__(self, model: onnx.ModelProto, opset: int, inferred: dict, source: str = "<model>"):
        self.g = model.graph
        self.file = source
        self.opset = opset
        self.producer = f"{model.producer_name} {model.producer_version}".strip()
        self._inferred = inferred
        self.consts: dict[str, np.ndarray] = {
            t.name: onnx_model.tensor_array(t, f"initializer {t.name!r}", source) for t in self.g.initializer}
        self.batchy: set[str] = set()
        self.values: dict[str, Value] = {}
        self._cache: dict[str, A.Node] = {}
        self.nodes: list[A.Node] = []
        self._shapes: dict[str, tuple] = {}
        self._used: set[str] = set()
        self.tensors: dict[str, str] = {}
        self.notes: list[str] = []
        self.fixed_batch: int | None = None
        self.levels: dict[str, dict] = {}  # activation name → the file's integer-level tensor and zero point
        self.input_quant: dict | None = None
        self.readout_quant: dict | None = None

    # -- errors, names -------------------------------------------------

    @staticmethod
    def onnx_name(node: onnx.NodeProto) -> str:
        return node.name or (node.output[0] if node.output else node.op_type)

    def fail(self, node: onnx.NodeProto, msg: str) -> ConversionError:
        dom = ops.DOMAIN_ALIASES.get(node.domain, node.domain) or "ai.onnx"
        return ConversionError(f"node {self.onnx_name(node)!r} (op {node.op_type}, domain {dom}): {msg}")

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def name_for(self, node: onnx.NodeProto) -> str:
        return self.unique(self.onnx_name(node))

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    # -- tensors ---------------------------------------------------------

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def set_const(self, name: str, value: np.ndarray) -> None:
        """Record a constant; one holding the batch marker (from ``Shape``) is tracked in ``batchy``."""
        self.consts[name] = value = np.asarray(value)
        if value.dtype.kind in "iu" and np.any(value == ops.BATCH):
            self.batchy.add(name)

    def weight(self, node, idx: int, what: str, optional: bool = False, reason: str = "") -> np.ndarray | None:
        """Constant input ``idx`` as a float64 copy (None if absent and ``optional``)."""
        name = node.input[idx] if idx < len(node.input) else ""
        if not name:
            if optional:
                return None
            raise self.fail(node, f"missing input {what}")
        if name not in self.consts:
            raise self.fail(node, f"{what} ({name!r}) must be a constant initializer {reason}".strip())
        return np.array(self.consts[name], dtype=np.float64)

    def data(self, node, idx: int) -> Value:
        name = node.input[idx] if idx < len(node.input) else ""
        if name in self.values:
            return self.values[name]
        raise self.fail(node, f"input {idx} ({name!r}) must be a tensor computed from the model input")

    def channel_param(self, node, c: np.ndarray, shape: tuple, v: Value | None = None):
        """(value, per_channel) for a constant broadcast against (N, *shape): a float or a (C,) array.

        On a channels-last tensor ``v`` the channel is the last axis (see :mod:`.layout`)."""
        c = np.asarray(c, dtype=np.float64)
        if c.size == 1:
            return float(c.reshape(())), False
        if v is not None and v.layout is not None:
            val = layout.channel_axis_value(c, v)
            if val is None:
                raise self.fail(node, f"constant of shape {c.shape} is neither a scalar nor per-channel for a "
                                      f"channels-last tensor of per-sample shape {layout.onnx_shape(v)}")
            return val, True
        rank = len(shape) + 1
        full = (1,) * (rank - c.ndim) + c.shape if c.ndim <= rank else None
        if full is None or full[0] != 1 or full[1] != shape[0] or any(d != 1 for d in full[2:]):
            raise self.fail(node, f"constant of shape {c.shape} is neither a scalar nor per-channel for a tensor of "
                                  f"per-sample shape {shape}")
        return c.reshape(-1), True

    def inferred(self, name: str) -> list | None:
        return self._inferred.get(name)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        return [n for n in self._needed if name in n.input]

    def is_used(self, name: str) -> bool:
        return bool(name) and (any(name in n.input for n in self._needed) or name == self._out)

    def token(self, node, kind: str, **kw) -> Token:
        return Token(kind, self.onnx_name(node), node.output[0], **kw)

    # -- building --------------------------------------------------------

    def emit(self, anode: A.Node, out: str, foldable: bool = False, activation: bool = False) -> None:
        """Append ``anode`` (inputs already emitted); its value becomes ONNX tensor ``out`` (if any)."""
        self._shapes[anode.name] = A._infer_shape(anode, [self._shapes[i] for i in anode.inputs])
        # one sample's activations in float64: a file's pads/strides cannot make evsnn allocate more
        check_array_size(self._shapes[anode.name], 8, f"{self.file}: node {anode.name!r} (per-sample output)")
        self.nodes.append(anode)
        if out:
            self.values[out] = Value(anode, self._shapes[anode.name], [], foldable and self._uses[out] == 1)
            if activation:
                self.tensors[anode.name] = out

    def extend(self, node, src: str, tokens: list[Token], layout=_KEEP) -> None:
        """Output of ``node`` = tensor ``src`` followed by elementwise ``tokens`` (``layout``: its new tag)."""
        v = self.data(node, list(node.input).index(src))
        if v.pad:
            raise self.fail(node, "reads a Pad output; Pad is supported only directly before Conv")
        split = any(t.per_channel for t in tokens) and not all(is_affine(t) for t in v.chain)
        if self._uses[src] > 1 or split:
            v = Value(self.materialize(src), v.shape, layout=v.layout)
        self.values[node.output[0]] = Value(v.node, v.shape, v.chain + tokens, v.foldable,
                                            layout=v.layout if layout is _KEEP else layout)

    def source(self, node, idx: int) -> tuple[A.Node, Value]:
        """(AnnGraph node, Value) of input ``idx``; a pending Pad is left on the Value for the caller."""
        v = self.data(node, idx)
        return (v.node, v) if v.pad else (self.materialize(node.input[idx]), v)

    def set_padded(self, node, pads: tuple) -> None:
        v = self.data(node, 0)
        self.values[node.output[0]] = Value(self.materialize(node.input[0]), v.shape, pad=pads)

    def materialize(self, name: str) -> A.Node:
        """The AnnGraph node computing ONNX tensor ``name``, emitting its pending chain once."""
        if name in self._cache:
            return self._cache[name]
        v = self.values[name]
        if v.pad:
            raise ConversionError(f"tensor {name!r} is a Pad output read by a non-Conv node; unsupported")
        if isinstance(v.node, A.Input) and v.chain:
            v = self._lift_input_quant(v)
        node = self._apply_chain(v) if v.chain else v.node
        self._cache[name] = node
        return node

    def _lift_input_quant(self, v: Value) -> Value:
        """A Q…DQ group right on the graph input quantizes the data (``meta["input_quant"]``), not a layer."""
        try:
            spec, rest = quantizers.split_input(v.chain)
        except QuantError as e:
            raise ConversionError(str(e)) from None
        if spec is None:
            return v
        if self.input_quant is not None and self.input_quant != spec:
            raise ConversionError(f"the graph input is quantized twice, by {self.input_quant['node']!r} and "
                                  f"{spec['node']!r} with different parameters; one input quantizer is supported")
        self.input_quant = spec
        return Value(v.node, v.shape, rest, v.foldable, layout=v.layout)

    def _chain_error(self, chain: list[Token], e: ChainError) -> ConversionError:
        names = list(dict.fromkeys(t.node for t in chain))
        span = repr(names[0]) if len(names) == 1 else f"{names[0]!r} … {names[-1]!r}"
        if any(t.quant for t in chain):
            return ConversionError(
                f"nodes {span}: {e}; a quantized hidden activation needs an integer range [0, L] "
                "reachable after its ReLU/clip (a zero point ≠ 0 or a signed range is supported only after a "
                "ReLU, on the graph input or on the logits) and matching Q/DQ parameters; "
                f"{quantizers.SUPPORTED_HELP}")
        return ConversionError(f"nodes {span}: elementwise ops {e}; {ACTIVATION_HELP}")

    def _apply_chain(self, v: Value) -> A.Node:
        """Emit the affine/activation nodes a Value's pending chain stands for; returns the last."""
        try:
            plan = plan_chain(v.chain)
        except ChainError as e:
            raise self._chain_error(v.chain, e) from None
        node = v.node
        if not plan.is_identity:
            if v.foldable and isinstance(node, (A.Conv, A.Dense)):
                _fold(node, plan.scale, plan.shift)
                if plan.linear_token is not None:
                    self._rename(node, plan.linear_token.node)
            else:
                node = self._affine_node(node, v.shape, plan)
        if plan.act is None:
            return node
        same = self._requantizes_same(node, plan)
        if same is not None:
            lv = quantizers.levels_tensor(v.chain)
            if lv is not None and isinstance(node, A.MaxPool):
                self.levels[node.name] = {"tensor": lv[0], "zero_point": lv[1]}
            return node
        kind, *p = plan.act
        name = self.unique(plan.act_token.node)
        if kind == "relu":
            act = A.Relu(name, (node.name,))
        elif kind == "clip":
            act = A.ClipAct(name, (node.name,), scale=p[0])
        else:
            act = A.QuantAct(name, (node.name,), levels=p[0], scale=p[1], phase=p[2], rounding=p[3])
            lv = quantizers.levels_tensor(v.chain)
            if lv is not None:
                self.levels[name] = {"tensor": lv[0], "zero_point": lv[1]}
        self.emit(act, "")
        self.tensors[name] = plan.act_token.tensor
        return act

    def _requantizes_same(self, node: A.Node, plan) -> A.QuantAct | None:
        """The QuantAct that ``node`` (a MaxPool/Flatten of its output) already carries when ``plan``
        re-applies the identical quantizer (onnxruntime writes a QDQ pair after every MaxPool and
        Flatten): on values already on that grid it changes nothing, so no layer is emitted."""
        if plan.act[0] != "quant" or not plan.is_identity:
            return None
        src = node
        while isinstance(src, (A.MaxPool, A.Flatten, A.Identity)):
            src = next(n for n in self.nodes if n.name == src.inputs[0])
        if src is node or not isinstance(src, A.QuantAct):
            return None
        _, levels, scale, phase, rounding = plan.act
        ok = (src.levels == levels and phase == src.phase == 0.5 and rounding == src.rounding
              and np.float32(src.scale / src.levels) == np.float32(scale / levels))
        return src if ok else None

    def _rename(self, node: A.Node, base: str) -> None:
        self._used.discard(node.name)
        shape = self._shapes.pop(node.name)
        node.name = self.unique(base)
        self._shapes[node.name] = shape

    def _affine_node(self, src: A.Node, shape: tuple, plan) -> A.Node:
        """Per-channel z' = scale·z + shift as a depthwise 1×1 Conv (images) or a diagonal Dense."""
        c = shape[0]
        scale = np.broadcast_to(np.asarray(plan.scale, dtype=np.float64), (c,)).copy()
        shift = np.broadcast_to(np.asarray(plan.shift, dtype=np.float64), (c,)).copy()
        tok = plan.linear_token
        name = self.unique(tok.node if tok is not None else plan.act_token.node + "/affine")
        if len(shape) == 3:
            n = A.Conv(name, (src.name,), weight=scale.reshape(c, 1, 1, 1), bias=shift, groups=c)
        else:
            n = A.Dense(name, (src.name,), weight=np.diag(scale), bias=shift)
        self.emit(n, "")
        return n

    # -- driver ----------------------------------------------------------

    def _input(self) -> None:
        inits = {t.name for t in self.g.initializer}
        real = [i for i in self.g.input if i.name not in inits]
        if len(real) != 1:
            raise ConversionError(f"model has {len(real)} inputs {[i.name for i in real]}; evsnn supports exactly one")
        inp = real[0]
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type") or not tt.HasField("shape"):
            raise ConversionError(f"input {inp.name!r} has no tensor shape")
        if tt.elem_type not in ops._FLOAT_TYPES:
            raise ConversionError(f"input {inp.name!r} has element type "
                                  f"{onnx_model.dtype_name(tt.elem_type)}; a float input is required")
        dims = list(tt.shape.dim)
        readers = self._readers_through_casts(inp.name)
        nhwc = len(dims) == 4 and bool(readers) and all(
            n.op_type == "Transpose" and list(ops.attrs(n).get("perm", [])) == layout.TO_NCHW for n in readers)
        if nhwc:
            dims = [dims[0], dims[3], dims[1], dims[2]]
        if len(dims) not in (2, 4):
            raise ConversionError(f"input {inp.name!r} has rank {len(dims)}; supported: (N, C, H, W) or (N, F)")
        for i, d in enumerate(dims[1:], 1):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise ConversionError(f"input {inp.name!r} has a dynamic axis {i} ({d.dim_param or '?'}); only the "
                                      "batch axis (0) may be dynamic, C/H/W or F must be fixed")
        self.fixed_batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
        check_array_size([d.dim_value for d in dims[1:]], 8, f"{self.file}: input {inp.name!r} (per sample)")
        node = A.Input(self.unique(inp.name), shape=tuple(d.dim_value for d in dims[1:]))
        self._shapes[node.name] = node.shape
        self.nodes.append(node)
        self.values[inp.name] = Value(node, node.shape, layout="NHWC" if nhwc else None)
        self._input_name = inp.name
        self.input_layout = "NHWC" if nhwc else None

    def _readers_through_casts(self, name: str) -> list[onnx.NodeProto]:
        """Nodes reading ``name``, looking through Cast/Identity chains (exporters insert them)."""
        out, todo = [], [name]
        while todo:
            t = todo.pop()
            for n in self._needed:
                if t in n.input:
                    if n.op_type in ("Cast", "Identity"):
                        todo.append(n.output[0])
                    else:
                        out.append(n)
        return out

    def _select(self) -> None:
        """Nodes the output needs (in file order) and how often each tensor's value is read."""
        if len(self.g.output) != 1:
            raise ConversionError(f"model has {len(self.g.output)} outputs {[o.name for o in self.g.output]}; "
                                  "evsnn supports exactly one")
        self._out = self.g.output[0].name
        nodes = list(self.g.node)
        producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
        need, stack, seen = set(), [self._out], set()
        while stack:
            t = stack.pop()
            if t in seen or t not in producer:
                continue
            seen.add(t)
            need.add(producer[t])
            stack.extend(i for i in nodes[producer[t]].input if i)
        self._needed = [n for k, n in enumerate(nodes) if k in need]
        self._uses = Counter(i for n in self._needed if n.op_type not in _SHAPE_ONLY for i in n.input if i)
        self._uses[self._out] += 1

    def _fold_const(self, node) -> None:
        """Evaluate an all-constant node with onnx.reference; outputs become constants.

        Shape values holding the batch marker may only be moved around (Gather,
        Concat, Unsqueeze...), never computed with.
        """
        from onnx.reference import ReferenceEvaluator

        ins = [i for i in node.input if i]
        if any(i in self.batchy for i in ins) and node.op_type not in _MOVEMENT:
            raise self.fail(node, "computes with the batch size; dynamic shape arithmetic is not supported")
        onnx_model.check_const_node(node, [self.consts[i] if i else None for i in node.input], self.file,
                                    self.opset)
        own = ops.lookup_const(node.op_type, node.domain)
        if own is not None:
            try:
                outs = own(self, node)
            except EvsnnError:
                raise
            except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as e:
                raise self.fail(node, f"cannot be evaluated as a constant ({first_line(e)})") from None
            for name, val in zip(node.output, outs, strict=False):
                if name:
                    self.set_const(name, val)
            return
        if node.domain not in ("", "ai.onnx"):
            raise self.fail(node, f"operators of domain {node.domain!r} cannot be evaluated; "
                                  f"{quantizers.SUPPORTED_HELP}")
        try:
            outs = ReferenceEvaluator(_node_model(node, self.opset)).run(None, {i: self.consts[i] for i in ins})
        except Exception as e:
            raise self.fail(node, f"cannot be evaluated as a constant ({first_line(e)})") from None
        for name, val in zip(node.output, outs, strict=False):
            if name:
                self.set_const(name, val)

    def _convert(self, node) -> None:
        dom = ops.DOMAIN_ALIASES.get(node.domain, node.domain)
        if dom not in ops.known_domains():
            raise self.fail(node, f"operators of domain {node.domain!r} are not supported (domains: "
                                  f"{', '.join(repr(d or 'ai.onnx') for d in ops.known_domains())}); "
                                  f"{quantizers.SUPPORTED_HELP}")
        ins = [i for i in node.input if i]
        if all(i in self.consts for i in ins) and node.op_type not in _RANDOM:
            return self._fold_const(node)
        tagged = [i for i in ins if i in self.values and self.values[i].layout is not None]
        if tagged and node.op_type not in layout.LAYOUT_AWARE:
            raise self.fail(node, f"reads the channels-last (NHWC) tensor {tagged[0]!r}; evsnn folds NHWC "
                                  "Transpose pairs only around Conv/pooling; supported on NHWC tensors: "
                                  + ", ".join(sorted(layout.LAYOUT_AWARE)))
        fn = ops.lookup(node.op_type, self.opset, dom)
        if fn is None and node.op_type in _QOPERATOR:
            raise self.fail(node, "integer-operator (QOperator) models are not supported; quantize in QDQ format "
                                  "(onnxruntime: quantize_static(..., quant_format=QuantFormat.QDQ)); "
                                  + quantizers.SUPPORTED_HELP)
        if fn is None:
            known = ops.supported_ops(dom)
            raise self.fail(node, f"unsupported operator; supported in domain {dom or 'ai.onnx'}: " + ", ".join(known)
                            + (" (and any op on constants only)" if not dom else f"; {quantizers.SUPPORTED_HELP}"))
        fn(self, node)
        for o in node.output:
            if self.is_used(o) and o not in self.values and o not in self.consts:
                raise self.fail(node, f"output {o!r} is not supported")

    def run(self, name: str) -> A.AnnGraph:
        self._select()
        self._input()
        for node in self._needed:
            self._convert(node)
        if self._out not in self.values:
            raise ConversionError(f"output {self._out!r} does not depend on the model input")
        self._lift_readout_quant()
        if self.values[self._out].layout is not None:
            raise ConversionError(f"output {self._out!r} is channels-last (NHWC) or flattened from NHWC; evsnn "
                                  "supports NHWC transposes only inside the network (the logits must be NCHW or a "
                                  "vector computed by a Gemm/MatMul)")
        out = self.materialize(self._out)
        if isinstance(out, A.Input):
            raise ConversionError("the model has no layers (its output is its input)")
        graph = A.AnnGraph(nodes=_prune(self.nodes, out.name), output=out.name, name=name, meta={
            "source": "onnx", "opset": self.opset, "producer": self.producer, "input_tensor": self._input_name,
            "output_tensor": self._out, "batch": self.fixed_batch, "tensors": dict(self.tensors),
            "notes": list(self.notes), "levels": dict(self.levels),
        })
        if self.input_quant:
            graph.meta["input_quant"] = self.input_quant
        if self.input_layout:
            graph.meta["input_layout"] = self.input_layout
        nhwc = {k for k, t in graph.meta["tensors"].items()
                if t in self.values and isinstance(self.values[t].layout, str)}
        if nhwc:  # these activations' ONNX tensors are channels-last (N, H, W, C)
            graph.meta["tensor_layouts"] = {k: "NHWC" for k in sorted(nhwc)}
        if self.readout_quant:
            graph.meta["readout_quant"] = self.readout_quant
        graph.meta["levels"] = {k: v for k, v in self.levels.items() if k in graph.meta["tensors"]}
        graph.meta["tensors"] = {k: v for k, v in self.tensors.items() if k in {n.name for n in graph.nodes}}
        graph.validate()
        self._cross_check(graph)
        return graph

    def _lift_readout_quant(self) -> None:
        """A Q…DQ group on the logits is a readout quantization: recorded in ``meta["readout_quant"]``,
        simulated analog (the readout accumulates the unquantized logits; quantizing is monotone, so
        the predicted class agrees except where quantized logits tie)."""
        v = self.values[self._out]
        try:
            spec, rest = quantizers.split_readout(v.chain)
        except QuantError as e:
            raise ConversionError(str(e)) from None
        if spec is not None:
            self.readout_quant = spec
            self.values[self._out] = Value(v.node, v.shape, rest, v.foldable, v.pad)
            self.note(f"the logits are quantized by {spec['node']!r} (scale {spec['scale']:.6g}, zero point "
                      f"{spec['zero_point']:g}, range [{spec['qmin']}, {spec['qmax']}]); evsnn simulates the readout "
                      "analog (unquantized logits)")

    def _cross_check(self, graph: A.AnnGraph) -> None:
        """Compare derived shapes with onnx.shape_inference wherever it knows all dims."""
        shapes = graph.shapes()
        pairs = list(graph.meta["tensors"].items()) + [(graph.output, self._out)]
        for node_name, tensor in pairs:
            dims = self._inferred.get(tensor)
            v = self.values.get(tensor)
            if v is not None and isinstance(v.layout, str) and len(shapes[node_name]) == 3:
                dims = [dims[0], dims[3], dims[1], dims[2]] if dims and len(dims) == 4 else dims
            if dims and all(d is not None for d in dims[1:]) and tuple(dims[1:]) != shapes[node_name]:
                raise ConversionError(f"tensor {tensor!r}: evsnn derived per-sample shape {shapes[node_name]}, "
                                      f"onnx shape inference says {tuple(dims[1:])}")


def _node_model(node: onnx.NodeProto, opset: int) -> onnx.ModelProto:
    """A one-node model at ``opset`` (so onnx.reference picks that opset's version of the op)."""
    ins = [onnx.ValueInfoProto(name=i) for i in dict.fromkeys(i for i in node.input if i)]
    outs = [onnx.ValueInfoProto(name=o) for o in node.output if o]
    graph = onnx.helper.make_graph([node], "const", ins, outs)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


def _fold(node: A.Node, scale, shift) -> None:
    """Fold z' = scale·z + shift (per output channel) into a Conv/Dense in place."""
    co = node.weight.shape[0]
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (co,))
    t = np.broadcast_to(np.asarray(shift, dtype=np.float64), (co,))
    node.weight = node.weight * s.reshape((co,) + (1,) * (node.weight.ndim - 1))
    node.bias = node.bias * s + t


def _prune(nodes: list[A.Node], output: str) -> list[A.Node]:
    """Drop nodes the output does not depend on (e.g. ones only read by Shape)."""
    keep = A.ancestors(nodes, output)
    return [n for n in nodes if n.name in keep or isinstance(n, A.Input)]
