"""evsnn.validate.onnx_model: ONNX files checked at the edge (the CLI corpus is in tests/bad_inputs.py)."""

from __future__ import annotations

import os
import resource

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from evsnn.errors import ConversionError, FormatError
from evsnn.frontends import onnx as fe
from evsnn.validate import onnx_model as VO


def dense_model(in_f=4, out_f=3, seed=0, extra_nodes=(), extra_inits=(), bias="b"):
    """x (N, in_f) → Gemm(w, bias) → y (N, out_f); ``extra_nodes`` may compute ``bias`` from constants."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(out_f, in_f)).astype(np.float32), "w"), *extra_inits]
    if bias == "b":
        inits.append(numpy_helper.from_array(rng.normal(size=(out_f,)).astype(np.float32), "b"))
    graph = helper.make_graph(
        [*extra_nodes, helper.make_node("Gemm", ["x", "w", bias], ["y"], name="fc", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_f])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save(model, path) -> str:
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return str(path)


def external(tmp_path, location="w.bin", data=None, length=None, offset=None):
    """The dense model with initializer w stored externally at ``location`` (relative to tmp_path)."""
    model = dense_model()
    w = model.graph.initializer[0]
    raw = numpy_helper.to_array(w).tobytes()
    if data is not None and location and not os.path.isabs(location) and "/" not in location:
        with open(tmp_path / location, "wb") as fh:
            fh.write(data if data != b"same" else raw)
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("length", length), ("offset", offset)):
        if v is not None:
            e = w.external_data.add()
            e.key, e.value = k, str(v)
    return save(model, tmp_path / "m.onnx")


def test_external_data_in_the_folder_loads_like_inline(tmp_path):
    inline = fe.from_model(dense_model())
    g = fe.load(external(tmp_path, data=b"same", length=48))
    np.testing.assert_array_equal(g.nodes[-1].weight, inline.nodes[-1].weight)
    g = fe.load(external(tmp_path, data=b"xxxx" + numpy_helper.to_array(dense_model().graph.initializer[0]).tobytes(),
                         location="w2.bin", offset=4))
    np.testing.assert_array_equal(g.nodes[-1].weight, inline.nodes[-1].weight)


@pytest.mark.parametrize("location, match", [
    ("../../etc/passwd", "outside its folder"),
    ("/etc/passwd", "outside its folder"),
    ("missing.bin", "file not found"),
])
def test_external_data_outside_or_missing_is_refused(tmp_path, location, match):
    with pytest.raises(FormatError, match=match):
        fe.load(external(tmp_path, location=location))


def test_external_data_symlink_out_fifo_and_sizes(tmp_path):
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.write_bytes(bytes(4096))
    os.symlink(secret, tmp_path / "link.bin")
    with pytest.raises(FormatError, match="outside its folder"):
        fe.load(external(tmp_path, location="link.bin"))
    os.mkfifo(tmp_path / "fifo.bin")
    with pytest.raises(FormatError, match="FIFO"):
        fe.load(external(tmp_path, location="fifo.bin"))
    with pytest.raises(FormatError, match="declares 4096 bytes"):
        fe.load(external(tmp_path, location="w.bin", data=b"same", length=4096))
    with pytest.raises(FormatError, match="the file has 48"):
        fe.load(external(tmp_path, location="w.bin", data=b"same", offset=8))
    with pytest.raises(FormatError, match="the file has 10"):
        fe.load(external(tmp_path, location="short.bin", data=bytes(10)))
    with pytest.raises(FormatError, match="not integers"):
        fe.load(external(tmp_path, location="w.bin", data=b"same", offset="ten"))
    model = onnx.load(external(tmp_path, location="w.bin", data=b"same"), load_external_data=False)
    with pytest.raises(FormatError, match="external file that was not loaded"):
        fe.from_model(model)


def _tensor(name, dims, data_type=TensorProto.FLOAT, raw=b""):
    t = TensorProto(name=name, data_type=data_type, dims=dims)
    t.raw_data = raw
    return t


def test_declared_sizes_and_data_types(tmp_path):
    model = dense_model()
    model.graph.initializer[1].CopyFrom(_tensor("b", [40000, 40000, 4], raw=bytes(12)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FormatError, match=r"initializer 'b': shape \(40000, 40000, 4\) needs 23.8 GiB"):
        fe.load(save(model, tmp_path / "huge.onnx"))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KiB: nothing allocated
    model.graph.initializer[1].CopyFrom(_tensor("b", [3], raw=bytes(11)))
    with pytest.raises(FormatError, match="needs 12 bytes of data, the file holds 11"):
        fe.load(save(model, tmp_path / "short.onnx"))
    model.graph.initializer[1].CopyFrom(_tensor("b", [3], data_type=99, raw=bytes(12)))
    with pytest.raises(FormatError, match="unknown data type 99"):
        fe.load(save(model, tmp_path / "dtype.onnx"))
    model.graph.initializer[1].CopyFrom(_tensor("b", [3], data_type=TensorProto.UNDEFINED, raw=bytes(12)))
    with pytest.raises(FormatError, match="unknown data type 0"):
        fe.from_model(model)
    t = TensorProto(name="b", data_type=TensorProto.FLOAT, dims=[3], float_data=[1.0, 2.0])  # one value short
    model.graph.initializer[1].CopyFrom(t)
    with pytest.raises(FormatError, match="name: b.*too small"):  # onnx.checker sees it first
        fe.from_model(model)
    with pytest.raises(FormatError, match="m.onnx: tensor 'b' cannot be decoded"):
        VO.tensor_array(t, source="m.onnx")
    model.graph.initializer[1].CopyFrom(_tensor("b", [3, -2], raw=b""))
    with pytest.raises(FormatError, match="negative dimension"):
        fe.from_model(model)


def test_constant_of_shape_is_capped_before_allocating(tmp_path):
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="filler",
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("ReduceSum", ["big"], ["cb"], keepdims=0)]
    model = dense_model(extra_nodes=nodes, bias="cb",
                        extra_inits=[numpy_helper.from_array(np.array([40000, 40000], np.int64), "shape")])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FormatError, match=r"node 'filler' \(op ConstantOfShape\): shape \(40000, 40000\) needs "):
        fe.load(save(model, tmp_path / "cos.onnx"))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000


def _bound_bytes(node, ins):
    return sum(int(np.prod(s, dtype=object)) * size for s, size in VO.const_output_shapes(node, ins))


I64 = np.int64
CASES = [
    (helper.make_node("ConstantOfShape", ["a"], ["y"], value=numpy_helper.from_array(np.array([7], I64))),
     [np.array([3, 5], I64)]),
    (helper.make_node("ConstantOfShape", ["a"], ["y"]), [np.array([2, 2, 2], I64)]),
    (helper.make_node("Expand", ["a", "s"], ["y"]), [np.ones((3, 1), np.float32), np.array([2, 3, 4], I64)]),
    (helper.make_node("Tile", ["a", "r"], ["y"]), [np.ones((2, 3), np.float64), np.array([4, 5], I64)]),
    (helper.make_node("Range", ["a", "b", "c"], ["y"]), [np.float32(1), np.float32(10), np.float32(0.5)]),
    (helper.make_node("Range", ["a", "b", "c"], ["y"]), [I64(10), I64(1), I64(-3)]),
    (helper.make_node("Pad", ["a", "p"], ["y"]), [np.ones((2, 3), np.float32), np.array([1, 2, 3, 4], I64)]),
    (helper.make_node("Resize", ["a", "", "s"], ["y"]), [np.ones((1, 1, 2, 3), np.float32),
                                                          np.array([1, 1, 2.5, 3], np.float32)]),
    (helper.make_node("OneHot", ["a", "d", "v"], ["y"]), [np.array([0, 2], I64), I64(6),
                                                           np.array([0, 1], np.float32)]),
    (helper.make_node("MatMul", ["a", "b"], ["y"]), [np.ones((5, 1), np.float32), np.ones((1, 7), np.float32)]),
    (helper.make_node("Gemm", ["a", "b"], ["y"], transB=1), [np.ones((5, 2), np.float32),
                                                              np.ones((6, 2), np.float32)]),
    (helper.make_node("Add", ["a", "b"], ["y"]), [np.ones((30, 1), np.float32), np.ones((1, 40), np.float32)]),
    (helper.make_node("Where", ["c", "a", "b"], ["y"]), [np.ones((1, 4), bool), np.ones((3, 1), np.float32),
                                                          np.float32(0)]),
]


@pytest.mark.parametrize("k", range(len(CASES)))
def test_constant_size_bound_agrees_with_the_reference(k):
    """The bound checked before evaluation is the size onnx.reference actually allocates (≥ its nbytes,
    the same number of elements)."""
    node, ins = CASES[k]
    names = [n for n in node.input if n]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None)
                                            for n in names], [helper.make_tensor_value_info("y", 0, None)])
    got = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).run(
        None, {n: np.asarray(v) for n, v in zip(names, [v for v in ins if v is not None], strict=True)})[0]
    full = [np.asarray(v) if v is not None else None for v in (ins if "" not in node.input else
                                                                 [ins[0], None, *ins[1:]])]
    [(shape, size)] = VO.const_output_shapes(node, full)
    assert int(np.prod(shape, dtype=object)) == got.size
    assert _bound_bytes(node, full) >= got.nbytes


def test_constant_bounds_refuse_what_would_not_fit(monkeypatch):
    monkeypatch.setenv("EVSNN_MAX_ARRAY_BYTES", "1M")
    big = [
        (helper.make_node("Expand", ["a", "s"], ["y"], name="e"), [np.ones(1, np.float32), np.array([600, 600], I64)]),
        (helper.make_node("Tile", ["a", "r"], ["y"], name="t"), [np.ones(4, np.float32), np.array([10 ** 6], I64)]),
        (helper.make_node("Range", ["a", "b", "c"], ["y"], name="r"), [I64(0), I64(10 ** 9), I64(1)]),
        (helper.make_node("MatMul", ["a", "b"], ["y"], name="m"), [np.ones((800, 1)), np.ones((1, 800))]),
        (helper.make_node("Add", ["a", "b"], ["y"], name="a"), [np.ones((800, 1)), np.ones((1, 800))]),
    ]
    for node, ins in big:
        with pytest.raises(FormatError, match=f"node '{node.name}' \\(op {node.op_type}\\).*EVSNN_MAX_ARRAY_BYTES"):
            VO.check_const_node(node, ins, "m.onnx")
    with pytest.raises(FormatError, match="^m: node .*start must be one number, got 0 values"):  # a fuzz find
        VO.check_const_node(helper.make_node("Range", ["a", "b", "c"], ["y"]), [np.zeros(0), I64(5), I64(1)], "m")
    with pytest.raises(FormatError, match="the shape must be at most 64 integers"):
        VO.check_const_node(helper.make_node("ConstantOfShape", ["a"], ["y"]), [np.ones(2, np.float32)])
    with pytest.raises(FormatError, match="finite range"):
        VO.check_const_node(helper.make_node("Range", ["a", "b", "c"], ["y"]), [I64(0), I64(5), I64(0)])
    VO.check_const_node(helper.make_node("Relu", ["a"], ["y"]), [np.ones((2000, 2000))])  # no bound: not amplifying


def test_graph_structure(tmp_path):
    model = dense_model()
    model.graph.node[0].input[0] = "nowhere"
    with pytest.raises(FormatError, match="node 'fc' \\(op Gemm\\) reads 'nowhere', which is not a graph input"):
        fe.from_model(model)
    cyc = dense_model(extra_nodes=[helper.make_node("Neg", ["y"], ["nb"], name="loop")], bias="nb")
    with pytest.raises(FormatError, match="node 'loop' .* later node .* without cycles"):
        fe.from_model(cyc)
    dup = dense_model(extra_nodes=[helper.make_node("Identity", ["w"], ["b"], name="again")])
    with pytest.raises(FormatError, match="node 'again' .* writes 'b', which already has a value"):
        fe.from_model(dup)
    noout = dense_model()
    noout.graph.output[0].name = "z"
    with pytest.raises(FormatError, match="graph output 'z' is not produced"):
        fe.from_model(noout)
    none = dense_model()
    none.ClearField("opset_import")
    with pytest.raises(FormatError, match="imports no opset"):
        fe.from_model(none)


def test_damaged_files_name_the_file(tmp_path, monkeypatch):
    raw = dense_model().SerializeToString()
    bad_utf8 = raw.replace(b"fc", b"\xff\xfe")
    for name, data, match in [("trunc.onnx", raw[: len(raw) // 2], "not a readable ONNX file"),
                              ("utf8.onnx", bad_utf8, "is not valid UTF-8 text"),
                              ("empty.onnx", b"", "not an ONNX model")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(FormatError, match=f"{name}: .*{match}"):
            fe.load(path)
    monkeypatch.setenv("EVSNN_MAX_MODEL_BYTES", "100")
    (tmp_path / "ok.onnx").write_bytes(raw)
    with pytest.raises(FormatError, match="EVSNN_MAX_MODEL_BYTES"):
        fe.load(tmp_path / "ok.onnx")
    assert not fe.can_open(tmp_path / "ok.onnx")
    monkeypatch.delenv("EVSNN_MAX_MODEL_BYTES")
    assert fe.can_open(tmp_path / "ok.onnx") and not fe.can_open(tmp_path / "trunc.onnx")
    fifo = tmp_path / "f.onnx"
    os.mkfifo(fifo)
    assert not fe.can_open(fifo)
    with pytest.raises(FormatError, match="FIFO"):
        fe.load(fifo)


def test_valid_models_are_unchanged_by_the_checks():
    model = dense_model()
    before = model.SerializeToString()
    VO.check_model(model, "m")
    assert model.SerializeToString() == before
    g = fe.from_model(model)
    assert isinstance(g.nodes[-1].weight, np.ndarray)
    sig = dense_model(extra_nodes=[helper.make_node("Sigmoid", ["x"], ["s"], name="sig")])
    sig.graph.node[1].input[0] = "s"
    with pytest.raises(ConversionError, match="'sig'"):  # conversion errors stay conversion errors
        fe.from_model(sig)


F32 = np.float32
INFERRED = [
    (helper.make_node("Conv", ["a", "w"], ["y"], pads=[1, 2, 0, 3]),
     [np.ones((1, 2, 5, 4), F32), np.ones((3, 2, 2, 2), F32)]),
    (helper.make_node("ConvTranspose", ["a", "w"], ["y"], strides=[3, 2]), [np.ones((1, 2, 3, 4), F32),
                                                                            np.ones((2, 5, 2, 2), F32)]),
    (helper.make_node("AveragePool", ["a"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
     [np.ones((1, 1, 3, 3), F32)]),
    (helper.make_node("HannWindow", ["s"], ["y"]), [np.array(7, np.int64)]),
    (helper.make_node("Einsum", ["a", "b"], ["y"], equation="i,j->ij"), [np.ones(6, F32), np.ones(5, F32)]),
]


@pytest.mark.parametrize("k", range(len(INFERRED)))
def test_inferred_bounds_agree_with_the_reference(k):
    """Ops without an exact bound are bounded by onnx.shape_inference: the shape it gives is the one
    onnx.reference computes."""
    node, ins = INFERRED[k]
    names = list(node.input)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None)
                                            for n in names], [helper.make_tensor_value_info("y", 0, None)])
    got = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).run(
        None, dict(zip(names, ins, strict=True)))[0]
    assert VO.const_output_shapes(node, ins) is None
    [(shape, size)] = VO.inferred_output_shapes(node, ins, 17)
    assert tuple(shape) == got.shape and size == got.itemsize


def test_inferred_bounds_refuse_growing_ops():
    conv = helper.make_node("Conv", ["a", "w"], ["y"], name="c", pads=[2 ** 30] * 4)
    ins = [np.ones((1, 1, 3, 3), F32), np.ones((1, 1, 1, 1), F32)]
    with pytest.raises(FormatError, match=r"node 'c' \(op Conv\): shape \(1, 1, 2147483651, 2147483651\)"):
        VO.check_const_node(conv, ins, "m.onnx", 17)
    with pytest.raises(FormatError, match="cannot bound the size"):  # without an opset: no inference, refused
        VO.check_const_node(conv, ins, "m.onnx")
    with pytest.raises(FormatError, match=r"node 'n' \(op NoSuchOp\): evsnn cannot bound"):
        VO.check_const_node(helper.make_node("NoSuchOp", ["a"], ["y"], name="n"), [np.ones(3)], "m.onnx", 17)
    win = helper.make_node("HannWindow", ["s"], ["y"], name="h")
    with pytest.raises(FormatError, match="node 'h' \\(op HannWindow\\): shape \\(2000000000,\\)"):
        VO.check_const_node(win, [np.array(2 * 10 ** 9, np.int64)], "m.onnx", 17)
    with pytest.raises(FormatError, match="does not evaluate this op on constants"):
        VO.check_const_node(helper.make_node("ImageDecoder", ["a"], ["y"]), [np.zeros(10, np.uint8)], "m", 20)
    assert VO.inferred_output_shapes(helper.make_node("NoSuchOp", ["a"], ["y"]), [np.ones(3)], 17) is None
