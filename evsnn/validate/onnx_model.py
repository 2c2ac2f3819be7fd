"""ONNX model files checked before the frontend converts them.

- :func:`read_model`: a regular file within ``EVSNN_MAX_MODEL_BYTES`` (default 2 GiB, protobuf's
  own limit), parsed from bytes (a damaged file is a FormatError naming it), checked by
  :func:`check_model`, then its external tensor data loaded by :func:`load_external_data`.
- :func:`check_model`: every name is text, an opset is imported, node inputs name a graph input,
  an initializer or an output of an *earlier* node (so no cycles), outputs are produced once,
  and every tensor (initializers, ``Constant`` values, in subgraphs and local functions too)
  has a known data type, declares at most ``EVSNN_MAX_ARRAY_BYTES`` and carries as many bytes
  as its dims say.
- :func:`load_external_data`: external data (``data_location == EXTERNAL``) must be a regular
  file inside the model's folder (:func:`evsnn.validate.files.contained_path`) holding the
  declared offset + length; exactly the tensor's bytes are read (never a FIFO, never
  ``../../etc/passwd``).
- :func:`tensor_array`: ``numpy_helper.to_array`` of a checked tensor, failures → FormatError.
- :func:`check_const_node`: the bytes a node evaluated on constants will allocate
  (``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``, ``Pad``, ``Resize``, ``OneHot``,
  products, gathers, broadcasting elementwise ops) checked against ``EVSNN_MAX_ARRAY_BYTES``
  before the frontend evaluates it.
"""

from __future__ import annotations

import math
import os

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import onnx.shape_inference

from evsnn.errors import FormatError
from evsnn.validate.files import contained_path, existing_file, file_size
from evsnn.validate.limits import _env, check_array_size, fmt_bytes

_T = onnx.TensorProto
DTYPES = frozenset(t for t in onnx.helper.get_all_tensor_dtypes() if t != _T.UNDEFINED)
#: bits per element of the packed sub-byte types (raw_data holds them packed)
_PACKED_BITS = {_T.INT4: 4, _T.UINT4: 4, _T.FLOAT4E2M1: 4}
for _n, _b in (("INT2", 2), ("UINT2", 2), ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6)):
    if hasattr(_T, _n):
        _PACKED_BITS[getattr(_T, _n)] = _b


def max_model_bytes() -> int:
    """Largest ONNX file read (``EVSNN_MAX_MODEL_BYTES``, default 2 GiB: protobuf cannot parse more)."""
    return _env("EVSNN_MAX_MODEL_BYTES", 2 << 30)


def dtype_name(t: int) -> str:
    try:
        return _T.DataType.Name(t)
    except (ValueError, TypeError):
        return f"data type {t!r}"


def itemsize(data_type: int) -> int:
    """Bytes per element NumPy uses for ``data_type`` (1 for packed and string types)."""
    if data_type == _T.STRING or data_type in _PACKED_BITS:
        return 1
    return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize)


def _raw_bytes(data_type: int, n: int) -> int:
    """Bytes ``raw_data`` of ``n`` elements of ``data_type`` holds."""
    bits = _PACKED_BITS.get(data_type)
    return (n * bits + 7) // 8 if bits else n * itemsize(data_type)


# ---------------------------------------------------------------- reading


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse, check and complete (external data) the ONNX file ``path``; FormatError (one line) if bad."""
    path = existing_file(path, "an ONNX model")
    size, cap = file_size(path), max_model_bytes()
    if size > cap:
        raise FormatError(f"{path}: {fmt_bytes(size)}, more than the {fmt_bytes(cap)} evsnn reads as an ONNX file "
                          "(EVSNN_MAX_MODEL_BYTES; larger models keep their weights as external data)")
    with open(path, "rb") as fh:  # read(n) allocates n bytes up front: ask for what the file holds
        data = fh.read(min(size, cap) + 1)
    model = parse_model(data, path)
    check_model(model, path, external=True)
    load_external_data(model, os.path.dirname(os.path.abspath(path)), path)
    return model


def parse_model(data: bytes, source: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: a damaged file
        raise FormatError(f"{source}: not a readable ONNX file ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:100]})") from None
    if not (model.ir_version > 0 and len(model.graph.node) > 0 and len(model.opset_import) > 0):
        raise FormatError(f"{source}: not an ONNX model (no graph, IR version or opset found)")
    return model


# ---------------------------------------------------------------- structure


def _text(value, what: str, source: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{source}: {what} {value[:40]!r} is not valid UTF-8 text")
    return value


def _graphs(model: onnx.ModelProto):
    """(graph, where) for the main graph and every subgraph of a node attribute."""
    todo = [(model.graph, "graph")]
    while todo:
        g, where = todo.pop()
        yield g, where
        for node in g.node:
            for a in node.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    todo.append((sub, f"subgraph of node {node.name or node.op_type!r}"))


def _nodes(model: onnx.ModelProto):
    for g, where in _graphs(model):
        for node in g.node:
            yield node, where
    for fn in model.functions:
        for node in fn.node:
            yield node, f"function {fn.name!r}"


def tensors(model: onnx.ModelProto):
    """(TensorProto, description) of every dense tensor of the model: initializers and node
    attributes (Constant values, ConstantOfShape fill values) in every graph and function."""
    for g, where in _graphs(model):
        for t in g.initializer:
            yield t, f"initializer {t.name!r}"
    for node, where in _nodes(model):
        for a in node.attribute:
            for t in ([a.t] if a.HasField("t") else []) + list(a.tensors):
                yield t, f"attribute {a.name!r} of node {node.name or node.op_type!r}"
            for s in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                yield s, f"sparse attribute {a.name!r} of node {node.name or node.op_type!r}"


def check_model(model: onnx.ModelProto, source: str, external: bool = False) -> None:
    """The structure and tensor checks above; ``external``: external data may still be unloaded."""
    if not len(model.opset_import):
        raise FormatError(f"{source}: the model imports no opset")
    for imp in model.opset_import:
        _text(imp.domain, "opset domain", source)
    for node, where in _nodes(model):
        for s in (node.name, node.op_type, node.domain, *node.input, *node.output):
            _text(s, f"a name in {where}", source)
        for a in node.attribute:
            _text(a.name, f"an attribute name of node {node.name or node.op_type!r}", source)
            for s in ([a.s] if a.HasField("s") else []) + list(a.strings):
                try:
                    s.decode("utf-8")
                except UnicodeDecodeError:
                    raise FormatError(f"{source}: attribute {a.name!r} of node {node.name or node.op_type!r} "
                                      "is not valid UTF-8 text") from None
    for g, where in _graphs(model):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            _text(vi.name, f"a tensor name in {where}", source)
            for d in vi.type.tensor_type.shape.dim:
                _text(d.dim_param, f"a dimension name of {vi.name!r}", source)
        for t in g.initializer:
            _text(t.name, f"an initializer name in {where}", source)
    _check_order(model.graph, source)
    for t, what in tensors(model):
        if isinstance(t, onnx.SparseTensorProto):
            check_tensor(t.values, f"{what} (values)", source, external)
            check_array_size(t.dims, itemsize(t.values.data_type) if t.values.data_type in DTYPES else 1,
                             f"{source}: {what}")
        else:
            check_tensor(t, what, source, external)


def _check_order(g: onnx.GraphProto, source: str) -> None:
    """Every node input is known before the node (graph input, initializer, earlier output)."""
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    known |= {t.values.name for t in g.sparse_initializer}
    for node in g.node:
        for i in node.input:
            if i not in known:
                later = any(i in n.output for n in g.node)
                why = ("is produced by this or a later node (nodes must be in topological order, without cycles)"
                       if later else "is not a graph input, an initializer or an output of any node")
                raise FormatError(f"{source}: node {node.name or node.op_type!r} (op {node.op_type}) reads "
                                  f"{i!r}, which {why}")
        for o in node.output:
            if o and o in known:
                raise FormatError(f"{source}: node {node.name or node.op_type!r} (op {node.op_type}) writes "
                                  f"{o!r}, which already has a value (each tensor is produced once)")
            known.add(o)
    for o in g.output:
        if o.name not in known:
            raise FormatError(f"{source}: graph output {o.name!r} is not produced by any node")


# ---------------------------------------------------------------- tensors


def check_tensor(t: onnx.TensorProto, what: str, source: str, external: bool = False) -> int:
    """Known data type, declared size within the cap, data of the declared length; returns its bytes."""
    if t.data_type not in DTYPES:
        raise FormatError(f"{source}: {what} has unknown data type {t.data_type} (known: "
                          f"{min(DTYPES)}..{max(DTYPES)}, see onnx.TensorProto.DataType)")
    if t.HasField("segment"):
        raise FormatError(f"{source}: {what} is a segment of a tensor; evsnn does not read segmented tensors")
    check_array_size(t.dims, itemsize(t.data_type), f"{source}: {what}")
    n = math.prod(int(d) for d in t.dims)
    raw = _raw_bytes(t.data_type, n)
    if t.data_location == _T.EXTERNAL:
        if not external:
            raise FormatError(f"{source}: {what} keeps its data in an external file that was not loaded")
        if t.data_type == _T.STRING:
            raise FormatError(f"{source}: {what}: external data of a string tensor is not supported")
        return raw
    if t.data_type == _T.STRING:
        if len(t.string_data) != n:
            raise FormatError(f"{source}: {what} declares {n} strings and holds {len(t.string_data)}")
    elif t.HasField("raw_data") and len(t.raw_data) != raw:
        raise FormatError(f"{source}: {what} of {dtype_name(t.data_type)} and dims {tuple(t.dims)} needs "
                          f"{raw} bytes of data, the file holds {len(t.raw_data)}")
    return raw


def tensor_array(t: onnx.TensorProto, what: str = "", source: str = "<model>") -> np.ndarray:
    """``numpy_helper.to_array(t)`` after :func:`check_tensor`; FormatError when it cannot be decoded."""
    what = what or f"tensor {t.name!r}"
    check_tensor(t, what, source)
    try:
        return onnx.numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - typed-field counts that do not fit the dims, bad strings
        raise FormatError(f"{source}: {what} cannot be decoded ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:100]})") from None


def load_external_data(model: onnx.ModelProto, folder: str, source: str) -> None:
    """Read every tensor's external data into ``raw_data`` (checks in the module docstring)."""
    for t, what in tensors(model):
        if isinstance(t, onnx.SparseTensorProto):
            t = t.values
        if t.data_location != _T.EXTERNAL:
            continue
        info = {}
        for e in t.external_data:
            info[_text(e.key, f"an external-data key of {what}", source)] = _text(e.value, "an external-data value",
                                                                                  source)
        if not info.get("location"):
            raise FormatError(f"{source}: {what} keeps its data externally but names no location")
        need = _raw_bytes(t.data_type, math.prod(int(d) for d in t.dims))
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise FormatError(f"{source}: {what}: external-data offset/length {info.get('offset')!r}/"
                              f"{info.get('length')!r} are not integers") from None
        try:
            path = contained_path(folder, info["location"], f"{source}: {what}")
        except FormatError as e:
            msg = str(e)
            raise FormatError(msg if msg.startswith(source) else f"{source}: {what}: external data: {msg}") from None
        if length is not None and length != need:
            raise FormatError(f"{source}: {what} declares {length} bytes of external data, its dims "
                              f"{tuple(t.dims)} of {dtype_name(t.data_type)} need {need}")
        size = file_size(path)
        if offset < 0 or offset + need > size:
            raise FormatError(f"{source}: {what}: external data {info['location']!r} at offset {offset} needs "
                              f"{need} bytes; the file has {size}")
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(need)
        if len(data) != need:
            raise FormatError(f"{source}: {what}: external data {info['location']!r} ends early")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = _T.DEFAULT


# ---------------------------------------------------------------- constant evaluation

_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Where", "And", "Or", "Xor", "Equal", "Greater", "Less",
              "GreaterOrEqual", "LessOrEqual", "Max", "Min", "Sum", "Mean", "BitShift", "PRelu", "BitwiseAnd",
              "BitwiseOr", "BitwiseXor", "QuantizeLinear", "DequantizeLinear", "Quant", "BipolarQuant", "Trunc",
              "Clip"}


def _ints(a, node, what) -> list[int]:
    v = np.asarray(a).reshape(-1)
    if v.dtype.kind not in "iu" or v.size > 64:
        raise FormatError(f"node {node.name or node.op_type!r} (op {node.op_type}): {what} must be at most 64 "
                          f"integers, got {v.size} of type {v.dtype}")
    return [int(x) for x in v]


def _scalar(a, node, what) -> float:
    v = np.asarray(a) if a is not None else np.zeros(0)
    if v.size != 1 or v.dtype.kind not in "iuf":
        raise FormatError(f"node {node.name or node.op_type!r} (op {node.op_type}): {what} must be one number, "
                          f"got {v.size} values of type {v.dtype}")
    return float(v.reshape(()))


def _bcast(*shapes) -> list[int]:
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for s in shapes:
        for i, d in enumerate(s, rank - len(s)):
            out[i] = max(out[i], int(d)) if int(d) >= 0 else int(d)
    return out


def const_output_shapes(node: onnx.NodeProto, ins: list) -> list[tuple[list[int], int]] | None:
    """(shape, itemsize) bounds of what evaluating ``node`` on constant inputs ``ins`` (arrays, None
    for absent inputs) allocates, for ops whose output can be larger than their inputs; None for others."""
    op = node.op_type
    at = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    x = ins[0] if ins else None
    if op == "ConstantOfShape":
        v = at.get("value")
        size = itemsize(v.data_type) if isinstance(v, onnx.TensorProto) and v.data_type in DTYPES else 4
        return [(_ints(x, node, "the shape"), size)]
    if x is None:
        return None
    if op == "Expand" and len(ins) > 1:
        return [(_bcast(x.shape, _ints(ins[1], node, "the shape")), x.itemsize)]
    if op == "Tile" and len(ins) > 1:
        reps = _ints(ins[1], node, "repeats")
        return [([a * b for a, b in zip(x.shape, reps, strict=False)], x.itemsize)]
    if op == "Range" and len(ins) > 2:
        start, limit, delta = (_scalar(a, node, w) for a, w in zip(ins[:3], ("start", "limit", "delta"),
                                                                   strict=True))
        if not all(map(math.isfinite, (start, limit, delta))) or delta == 0:
            raise FormatError(f"node {node.name or node.op_type!r} (op Range): start/limit/delta "
                              f"{start}, {limit}, {delta} do not make a finite range")
        return [([max(math.ceil((limit - start) / delta), 0)], x.itemsize)]
    if op == "Pad" and len(ins) > 1 and ins[1] is not None:
        p = _ints(ins[1], node, "pads")
        half = len(p) // 2
        axes = [int(a) % max(x.ndim, 1) for a in _ints(ins[3], node, "axes")] if len(ins) > 3 and ins[3] is not None \
            else list(range(half))
        shape = list(x.shape)
        for k, a in enumerate(axes[:half]):
            if a < len(shape):
                shape[a] += p[k] + p[k + half]
        return [(shape, x.itemsize)]
    if op in ("Resize", "Upsample"):
        sizes = ins[3] if len(ins) > 3 and ins[3] is not None and np.asarray(ins[3]).size else None
        if sizes is not None:
            return [(_ints(sizes, node, "sizes"), x.itemsize)]
        scales = ins[2] if op == "Resize" and len(ins) > 2 else ins[1] if len(ins) > 1 else None
        if scales is None or not np.asarray(scales).size:
            return None
        sc = np.asarray(scales, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(sc)) or sc.size > 64:
            raise FormatError(f"node {node.name or node.op_type!r} (op {op}): scales must be finite")
        return [([math.floor(d * s) for d, s in zip(x.shape, sc, strict=False)], x.itemsize)]
    if op == "OneHot" and len(ins) > 1:
        depth = _scalar(ins[1], node, "depth")
        if not math.isfinite(depth):
            raise FormatError(f"node {node.name or node.op_type!r} (op OneHot): depth {depth} is not finite")
        vals = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros(1)
        return [([*x.shape, int(depth)], np.asarray(vals).itemsize)]
    if op in ("MatMul", "Gemm", "MatMulInteger") and len(ins) > 1 and ins[1] is not None:
        a, b = x.shape, ins[1].shape
        if len(a) < 2 or len(b) < 2:
            return [(_bcast(a, b), max(x.itemsize, ins[1].itemsize, 4))]
        m = a[-1] if op == "Gemm" and at.get("transA") else a[-2]
        n = b[-2] if op == "Gemm" and at.get("transB") else b[-1]
        return [([*_bcast(a[:-2], b[:-2]), m, n], max(x.itemsize, ins[1].itemsize, 4))]
    if op in ("Gather", "GatherElements", "GatherND") and len(ins) > 1 and ins[1] is not None:
        return [([ins[1].size * max(x.size, 1)], x.itemsize)]
    if op in _BROADCAST:
        shapes = [np.shape(a) for a in ins if a is not None]
        size = max((np.asarray(a).itemsize for a in ins if a is not None), default=8)
        return [(_bcast(*shapes), max(size, 4))]
    return None


#: ops whose output is never larger than their inputs together (no bound needed)
_BOUNDED = {"Identity", "Cast", "CastLike", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice",
            "Concat", "Shape", "Size", "Neg", "Relu", "Floor", "Ceil", "Round", "Abs", "Sign", "Sqrt", "Exp",
            "Log", "Reciprocal", "Not", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Split", "ReduceMean",
            "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin", "Constant", "Dropout",
            "LeakyRelu", "Elu", "Selu", "HardSigmoid", "Softplus", "IsNaN", "IsInf", "Erf", "NonZero", "TopK",
            "CumSum", "Compress", "ScatterND", "ScatterElements", "Trilu", "EyeLike", "BatchNormalization"}
#: ops never evaluated on constants: their output size is not known from shapes
_UNBOUNDED = {"ImageDecoder", "StringSplit"}


def inferred_output_shapes(node: onnx.NodeProto, ins: list, opset: int) -> list[tuple[list[int], int]] | None:
    """(shape, itemsize) of ``node``'s outputs by onnx.shape_inference on a one-node model whose small
    integer inputs (≤ 64 values: shapes, sizes, repeats) are given as values; None where it cannot tell."""
    vis, inits = [], []
    try:
        for name, a in zip(node.input, ins, strict=False):
            if not name or a is None:
                continue
            a = np.asarray(a)
            elem = onnx.helper.np_dtype_to_tensor_dtype(a.dtype)
            if a.dtype.kind in "iu" and a.size <= 64:
                inits.append(onnx.numpy_helper.from_array(a, name))
            vis.append(onnx.helper.make_tensor_value_info(name, elem, list(a.shape)))
        outs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
        graph = onnx.helper.make_graph([node], "const", vis, outs, inits)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(node.domain, opset)])
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception:  # noqa: BLE001 - inference cannot tell (unknown op, invalid node): no bound
        return None
    found = []
    for o in inferred.graph.output:
        tt = o.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if o.type.HasField("tensor_type") and tt.HasField("shape") and None not in dims:
            found.append((dims, itemsize(tt.elem_type) if tt.elem_type in DTYPES else 8))
    return found or None


def check_const_node(node: onnx.NodeProto, ins: list, source: str = "", opset: int | None = None) -> None:
    """FormatError naming ``node`` when evaluating it on ``ins`` would allocate more than the array cap.

    The ops above have exact bounds; others that may grow (Conv/ConvTranspose with large pads or
    strides, windows, DFT, Einsum …) are bounded by onnx.shape_inference when ``opset`` is given."""
    where = f"{source + ': ' if source else ''}node {node.name or node.op_type!r} (op {node.op_type})"
    if node.op_type in _UNBOUNDED:
        raise FormatError(f"{where}: evsnn does not evaluate this op on constants (its output size is not "
                          "known in advance)")
    try:
        bounds = const_output_shapes(node, ins)
    except FormatError as e:
        raise FormatError(f"{source}: {e}" if source else str(e)) from None
    if bounds is None and opset is not None and node.op_type not in _BOUNDED:
        bounds = inferred_output_shapes(node, ins, opset)
    if bounds is None and node.op_type not in _BOUNDED:
        # neither a written bound nor shape inference can say how much it allocates: not evaluated
        raise FormatError(f"{where}: evsnn cannot bound the size of this op's output on constant inputs, "
                          "so it does not evaluate it (fold the constant subgraph before export, e.g. with "
                          "onnxsim or onnxoptimizer)")
    for shape, size in bounds or ():
        check_array_size(shape, size, where)
