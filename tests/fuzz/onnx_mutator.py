"""Structure-aware mutations of ONNX models for the fuzz loop.

Byte mutations of a protobuf mostly make undecodable files, which the reader refuses at once;
these mutate a decoded seed instead (op types, inputs, attributes, tensor dims, data types and
data, external-data entries, graph input dims, opset and IR versions, node order) and serialize
it again, so inputs reach the checks, constant evaluation and conversion.
"""

from __future__ import annotations

import random

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import AttributeProto, TensorProto

from tests.fuzz.engine import INTERESTING

OPS = ["ConstantOfShape", "Expand", "Tile", "Range", "Reshape", "Gather", "Concat", "Slice", "Resize", "Pad",
       "Squeeze", "Unsqueeze", "Transpose", "MatMul", "Gemm", "Conv", "Add", "Mul", "Div", "Relu", "Clip",
       "Floor", "Round", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Shape", "Cast", "Identity",
       "BatchNormalization", "QuantizeLinear", "DequantizeLinear", "OneHot", "Where", "ReduceMean", "Constant",
       "Dropout", "Max", "Min", "Sum", "Neg", "Split", "If", "Loop", "Einsum", "Quant", "NoSuchOp"]
INTS = [0, 1, 2, 3, -1, -2, 7, 40000, 2 ** 31 - 1, 2 ** 31, 2 ** 40, -(2 ** 63), 2 ** 63 - 1]
NAMES = ["", "x", "y", "../../etc/passwd", "/etc/passwd", "w.bin", "\u00e9", "a" * 300]


def _int(rng: random.Random) -> int:
    v = rng.choice(INTS) if rng.random() < 0.7 else rng.choice(INTERESTING) * rng.choice((1, -1))
    return max(min(v, 2 ** 63 - 1), -(2 ** 63))  # protobuf int64 fields


def _names(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    return ([i.name for i in g.input] + [t.name for t in g.initializer] + [o for n in g.node for o in n.output]
            + NAMES)


def _tensor(rng: random.Random, t: TensorProto) -> None:
    k = rng.randrange(8)
    if k == 0:
        t.dims[:] = [_int(rng) if rng.random() < 0.3 else d for d in t.dims] or [_int(rng)]
    elif k == 1:
        t.data_type = rng.choice((rng.randrange(0, 40), TensorProto.INT64, TensorProto.STRING, TensorProto.INT4,
                                  TensorProto.FLOAT16, TensorProto.BOOL))
    elif k == 2:
        t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data) + 1)] + bytes(rng.randrange(3))
    elif k == 3:
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for key, val in (("location", rng.choice(NAMES)), ("offset", str(_int(rng))), ("length", str(_int(rng)))):
            if rng.random() < 0.8:
                e = t.external_data.add()
                e.key, e.value = key, val
    elif k == 4:
        t.ClearField("raw_data")
        t.float_data[:] = [rng.uniform(-3, 3) for _ in range(rng.randrange(5))]
    elif k == 5:
        t.int64_data[:] = [_int(rng) for _ in range(rng.randrange(4))]
        t.ClearField("raw_data")
        t.data_type = TensorProto.INT64
        t.dims[:] = [len(t.int64_data)]
    elif k == 6:
        t.name = rng.choice(NAMES)
    else:
        t.segment.begin, t.segment.end = 0, _int(rng)


def _attribute(rng: random.Random, node: onnx.NodeProto) -> None:
    if node.attribute and rng.random() < 0.7:
        a = rng.choice(node.attribute)
    else:
        a = node.attribute.add()
        a.name = rng.choice(["axis", "axes", "perm", "kernel_shape", "pads", "strides", "value", "to", "group",
                             "alpha", "transB", "allowzero", "mode", "value_ints", "auto_pad", "dilations"])
    k = rng.randrange(5)
    for f in ("i", "f", "s", "t"):
        a.ClearField(f)
    del a.ints[:]
    if k == 0:
        a.type, a.i = AttributeProto.INT, _int(rng)
    elif k == 1:
        a.type = AttributeProto.INTS
        a.ints.extend(_int(rng) for _ in range(rng.randrange(6)))
    elif k == 2:
        a.type, a.f = AttributeProto.FLOAT, rng.choice((0.0, -1.0, 1e30, float("nan"), float("inf")))
    elif k == 3:
        a.type, a.s = AttributeProto.STRING, rng.choice((b"SAME_UPPER", b"VALID", b"reflect", b"\xff\xfe", b""))
    else:
        a.type = AttributeProto.TENSOR
        a.t.CopyFrom(onnx.numpy_helper.from_array(np.array([_int(rng) % 2 ** 63], dtype=np.int64)))
        if rng.random() < 0.5:
            _tensor(rng, a.t)


def _node(rng: random.Random, model: onnx.ModelProto) -> None:
    g = model.graph
    if not g.node:
        return
    node = rng.choice(g.node)
    k = rng.randrange(7)
    if k == 0:
        node.op_type = rng.choice(OPS)
    elif k == 1 and node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(_names(model))
    elif k == 2:
        node.input.append(rng.choice(_names(model)))
    elif k == 3:
        _attribute(rng, node)
    elif k == 4:
        node.domain = rng.choice(("", "ai.onnx", "com.microsoft", "qonnx.custom_op.general", "onnx.brevitas"))
    elif k == 5:
        i, j = rng.randrange(len(g.node)), rng.randrange(len(g.node))
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(g.node[i])
        b.CopyFrom(g.node[j])
        g.node[i].CopyFrom(b)
        g.node[j].CopyFrom(a)
    else:
        new = g.node.add()
        new.CopyFrom(onnx.helper.make_node(rng.choice(OPS), [rng.choice(_names(model)) for _ in range(
            rng.randrange(4))], [rng.choice(_names(model)) if rng.random() < 0.3 else f"fz{rng.randrange(99)}"]))
        if rng.random() < 0.7:
            _attribute(rng, new)


def mutate_model(rng: random.Random, data: bytes) -> bytes | None:
    """A structured mutation of the ONNX seed ``data`` (None when it does not decode)."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # noqa: BLE001
        return None
    try:
        _mutate(rng, model)
        return model.SerializeToString()
    except (ValueError, TypeError, IndexError):  # a mutation protobuf itself refuses: skip it
        return None


def _mutate(rng: random.Random, model: onnx.ModelProto) -> None:
    g = model.graph
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        k = rng.randrange(10)
        if k < 4:
            _node(rng, model)
        elif k < 6 and g.initializer:
            _tensor(rng, rng.choice(g.initializer))
        elif k == 6 and g.input:
            dims = g.input[0].type.tensor_type.shape.dim
            if dims:
                d = rng.choice(dims)
                if rng.random() < 0.5:
                    d.dim_value = _int(rng) % (2 ** 63)
                else:
                    d.dim_param = rng.choice(("N", "H", ""))
        elif k == 7 and model.opset_import:
            model.opset_import[0].version = rng.choice((1, 10, 11, 13, 17, 18, 21, 23, 99, _int(rng) % 2 ** 62))
        elif k == 8:
            model.ir_version = rng.choice((0, 3, 7, 8, 10, 11, 99))
        elif g.node:
            del g.node[rng.randrange(len(g.node))]
