"""Tests of the ONNX frontend (evsnn.frontends.onnx).

Fixtures (tests/fixtures/onnx/, made by tests/fixtures/make_onnx.py) are real
torch exports; they are checked against onnxruntime. Small hand-built models
(onnx.helper) cover single ops and error paths; they are checked against
``onnx.reference`` so they need only ``onnx``.

Quantizer ties: float32 (onnxruntime) and float64 (ann_forward) may floor a
pre-activation that lies within float error of a level boundary differently,
and a flipped level propagates. So (a) end-to-end outputs are compared on the
samples whose every quantizer input is > 2e-5 (in level units) away from a
boundary (at least half of the 32 samples must qualify;
onnxruntime's float32 error measured on the fixtures is < 5e-6 level units), and (b) layer by layer, each
activation is computed from onnxruntime's own previous activations (substituted
into the AnnGraph evaluation), and every element must match except ones within
2e-5 of a boundary (at most 0.1 % of a layer). Continuous (ReLU) fixtures are
compared everywhere to 1e-5 relative to their magnitude.
"""

from __future__ import annotations

import glob
import os
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from evsnn.errors import ConversionError, FormatError
from evsnn.frontends import onnx as fe
from evsnn.frontends.onnx import ops as onnx_ops
from evsnn.ir import ann as A
from evsnn.reference import ann_forward, eval_node

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = sorted(glob.glob(os.path.join(HERE, "fixtures", "onnx", "*.onnx")))
IDS = [os.path.basename(p)[:-5] for p in FIXTURES]
QUANTIZED = [p for p in FIXTURES if not os.path.basename(p).startswith("relu")]
QIDS = [os.path.basename(p)[:-5] for p in QUANTIZED]
MARGIN = 2e-5  # level units: float32 rounding in onnxruntime stays far below this

# fixture family → (levels, phase, number of QuantAct nodes, node kinds in order)
EXPECT = {
    "vgg": (4, 0.0, 5, "Input Conv QuantAct Conv QuantAct Conv QuantAct AvgPool Conv QuantAct Flatten Dense QuantAct "
                       "Dense"),
    "resnet": (8, 0.0, 5, "Input Conv QuantAct Conv QuantAct Conv Add QuantAct Conv QuantAct Conv Conv Add Conv "
                          "QuantAct AvgPool Flatten Dense"),
    "maxpool": (4, 0.0, 2, "Input Conv QuantAct MaxPool Conv QuantAct MaxPool Flatten Dense"),
    "qcfs": (4, 0.5, 3, "Input Conv QuantAct Conv QuantAct AvgPool Conv QuantAct AvgPool Flatten Dense"),
    "relu": (None, None, 0, "Input Conv Relu AvgPool Conv Relu Flatten Dense Relu Dense"),
    "mlp": (8, 0.0, 2, "Input Dense QuantAct Dense QuantAct Dense"),
    "vgg7": (7, 0.0, 2, "Input Conv QuantAct Conv QuantAct MaxPool Flatten Dense"),
}

_GRAPHS: dict[str, A.AnnGraph] = {}


def graph_of(path: str) -> A.AnnGraph:
    if path not in _GRAPHS:
        _GRAPHS[path] = fe.load(path)
    return _GRAPHS[path]


def family(path: str) -> str:
    return os.path.basename(path).rsplit("_", 1)[0]


def sample(graph: A.AnnGraph, n: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n,) + graph.input.shape).astype(np.float32)


def run_ort(model: onnx.ModelProto, x: np.ndarray, extra: list[str] = ()) -> dict[str, np.ndarray]:
    """onnxruntime outputs (and ``extra`` intermediate tensors) by name; chunks x for a fixed batch size."""
    ort = pytest.importorskip("onnxruntime")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in extra if t not in known)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else len(x)
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(None, {inp.name: x[i:i + fixed]}) for i in range(0, len(x), fixed)]
    return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}


def level_margin(z: np.ndarray, node: A.QuantAct) -> np.ndarray:
    """Distance (level units) of z·L/λ + φ from the nearest boundary 1..L where floor could flip."""
    y = z * (node.levels / node.scale) + node.phase
    return np.abs(y - np.clip(np.round(y), 1, node.levels))


def assert_close(ours, theirs, what=""):
    tol = 1e-5 * max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=tol, err_msg=what)


# ---------------------------------------------------------------- fixtures vs onnxruntime


def test_fixture_set_is_complete():
    assert {family(p) for p in FIXTURES} == set(EXPECT)
    assert len(FIXTURES) == 2 * len(EXPECT)
    assert sum(os.path.getsize(p) for p in FIXTURES) < 2_000_000
    assert all(os.path.getsize(p) < 300_000 for p in FIXTURES)
    ops = {p: [n.op_type for n in onnx.load(p).graph.node] for p in FIXTURES}
    assert any("BatchNormalization" in o for o in ops.values()), "no fixture keeps a BatchNormalization node"
    opsets = {fe._check_versions(onnx.load(p)) for p in FIXTURES}
    assert min(opsets) == onnx_ops.MIN_OPSET and max(opsets) >= 18


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_fixture_structure(path):
    g = graph_of(path)
    levels, phase, nq, kinds = EXPECT[family(path)]
    assert " ".join(type(n).__name__ for n in g.nodes) == kinds
    quants = [n for n in g.nodes if isinstance(n, A.QuantAct)]
    assert len(quants) == nq
    assert all(q.levels == levels and q.phase == phase for q in quants)
    assert g.meta["source"] == "onnx" and g.meta["opset"] >= 11
    g.validate()


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_names_follow_onnx_nodes(path):
    """Each activation is named after the last ONNX node of its pattern, whose output tensor meta records."""
    g = graph_of(path)
    model = onnx.load(path)
    producer = {o: (n.name or n.output[0]) for n in model.graph.node for o in n.output}
    acts = [n for n in g.nodes if isinstance(n, (A.QuantAct, A.ClipAct, A.Relu, A.MaxPool))]
    assert set(g.meta["tensors"]) == {n.name for n in acts}
    for name, tensor in g.meta["tensors"].items():
        assert producer[tensor] == name
    assert g.input.name == g.meta["input_tensor"]


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_forward_matches_onnxruntime(path):
    g = graph_of(path)
    x = sample(g)
    theirs = run_ort(onnx.load(path), x)[g.meta["output_tensor"]]
    vals = ann_forward(g, x, return_all=True)
    ours = vals[g.output]
    clean = np.ones(len(x), dtype=bool)
    for q in (n for n in g.nodes if isinstance(n, A.QuantAct)):
        clean &= level_margin(vals[q.inputs[0]], q).reshape(len(x), -1).min(axis=1) > MARGIN
    assert clean.mean() >= 0.5, f"only {clean.sum()} of {len(x)} samples are away from level boundaries"
    assert_close(ours[clean], theirs[clean])


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_activations_match_onnxruntime_layerwise(path):
    """Every QuantAct/Relu/MaxPool equals onnxruntime's tensor, given onnxruntime's previous activations."""
    g = graph_of(path)
    x = sample(g, seed=1)
    tensors = g.meta["tensors"]
    ort_vals = run_ort(onnx.load(path), x, list(tensors.values()))
    vals = {g.input.name: x.astype(np.float64)}
    for node in g.nodes[1:]:
        ours = eval_node(node, [vals[i] for i in node.inputs])
        if node.name not in tensors:
            vals[node.name] = ours
            continue
        theirs = ort_vals[tensors[node.name]].astype(np.float64)
        if isinstance(node, A.QuantAct):
            lv = theirs * node.levels / node.scale
            np.testing.assert_allclose(lv, np.round(lv), atol=1e-4, err_msg=f"{node.name}: not on the level grid")
            assert len(np.unique(np.round(lv))) >= 3, f"{node.name}: fixture activations are degenerate"
            near = level_margin(vals[node.inputs[0]], node) <= MARGIN
            bad = np.abs(ours - theirs) > 1e-5 * max(1.0, node.scale)
            assert not (bad & ~near).any(), f"{node.name}: {int((bad & ~near).sum())} levels differ"
            assert near.mean() < 1e-3
        else:
            assert_close(ours, theirs, node.name)
        vals[node.name] = theirs
    assert_close(eval_node(g.node(g.output), [vals[i] for i in g.node(g.output).inputs]),
                 ort_vals[g.meta["output_tensor"]])


def test_legacy_and_dynamo_exports_agree():
    for fam in EXPECT:
        a, b = (graph_of(os.path.join(HERE, "fixtures", "onnx", f"{fam}_{k}.onnx")) for k in ("legacy", "dynamo"))
        assert [type(n) for n in a.nodes] == [type(n) for n in b.nodes]
        x = sample(a, n=8, seed=2)
        ya, yb = ann_forward(a, x, return_all=True), ann_forward(b, x, return_all=True)
        qa = [n for n in a.nodes if isinstance(n, A.QuantAct)]
        assert [(q.levels, q.phase) for q in qa] == [(q.levels, q.phase) for q in b.nodes if isinstance(q, A.QuantAct)]
        clean = np.ones(len(x), dtype=bool)
        for q in qa:
            clean &= level_margin(ya[q.inputs[0]], q).reshape(len(x), -1).min(axis=1) > MARGIN
        assert_close(ya[a.output][clean], yb[b.output][clean], fam)


def test_batchnorm_folded_into_conv_and_dense():
    path = os.path.join(HERE, "fixtures", "onnx", "vgg_legacy.onnx")
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 5
    g = graph_of(path)
    bn_names = {n.name for n in model.graph.node if n.op_type == "BatchNormalization"}
    linear = [n for n in g.nodes if isinstance(n, (A.Conv, A.Dense))]
    assert len(linear) == ops.count("Conv") + ops.count("Gemm")
    assert {n.name for n in linear} & bn_names == bn_names  # folded layers carry the BN node's name
    assert next(n for n in g.nodes if isinstance(n, A.Conv) and n.groups == 8).weight.shape == (8, 1, 3, 3)
    asym = [n for n in g.nodes if isinstance(n, A.Conv) and n.stride == (2, 2)]
    assert [n.pads for n in asym] == [(0, 0, 1, 1)]


def test_batchnorm_after_add_becomes_depthwise_conv():
    g = graph_of(os.path.join(HERE, "fixtures", "onnx", "resnet_legacy.onnx"))
    adds = [n for n in g.nodes if isinstance(n, A.Add)]
    after = g.consumers(adds[-1].name)
    assert len(after) == 1 and isinstance(after[0], A.Conv)
    assert after[0].groups == 16 and after[0].weight.shape == (16, 1, 1, 1)


def test_dynamic_and_fixed_batch():
    g = graph_of(os.path.join(HERE, "fixtures", "onnx", "vgg_dynamo.onnx"))
    assert g.meta["batch"] is None
    for n in (1, 5):
        assert ann_forward(g, sample(g, n=n)).shape == (n, 10)
    assert graph_of(os.path.join(HERE, "fixtures", "onnx", "relu_dynamo.onnx")).meta["batch"] == 2


# ---------------------------------------------------------------- can_open / file errors


def test_can_open(tmp_path):
    assert all(fe.can_open(p) for p in FIXTURES)
    text = tmp_path / "model.onnx"
    text.write_text("this is not a model\n")
    zpath = tmp_path / "model.keras"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("config.json", "{}")
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(open(FIXTURES[0], "rb").read()[:5000])
    for p in (text, zpath, h5, empty, trunc, tmp_path, tmp_path / "missing.onnx"):
        assert fe.can_open(p) is False, p


def test_corrupt_file_is_format_error(tmp_path):
    data = open(FIXTURES[0], "rb").read()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError) as e:
        fe.load(bad)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value) and "trunc.onnx" in str(e.value)


def test_text_file_is_format_error(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, I am a text file\nwith two lines\n")
    with pytest.raises(FormatError, match="notes.txt"):
        fe.load(p)
    with pytest.raises(FormatError, match="no such file"):
        fe.load(tmp_path / "missing.onnx")


# ---------------------------------------------------------------- hand-built models


def make_model(nodes, inits=(), in_shape=("N", 1, 6, 6), out="y", opset=17, extra_outputs=()):
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f"
                                     else np.asarray(v), k) for k, v in dict(inits).items()]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in (out, *extra_outputs)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:  # give the outputs their inferred shapes (onnx.checker wants one)
        inferred = onnx.shape_inference.infer_shapes(model)
        model.graph.ClearField("output")
        model.graph.output.extend(inferred.graph.output)
    except Exception:
        pass
    return model


def check_against_reference(model, n=4, seed=0):
    """Convert ``model`` and compare ann_forward with onnx.reference; returns the graph."""
    g = fe.from_model(model)
    x = np.random.default_rng(seed).normal(size=(n,) + g.input.shape).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert_close(ann_forward(g, x), want)
    return g


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def conv_node(name="conv", inp="x", out="c", **kw):
    return helper.make_node("Conv", [inp, "w", "b"], [out], name=name, **kw)


def quant_nodes(src, lam=0.8, levels=4, out="y", prefix="q", round_half=False):
    """The floor quantizer as torch.onnx emits it: Mul L, Div λ, Clip 0..L, Floor, Mul λ, Div L."""
    c = {f"{prefix}_L": np.float32(levels), f"{prefix}_lam": np.float32(lam), f"{prefix}_0": np.float32(0)}
    n = [helper.make_node("Mul", [src, f"{prefix}_L"], [f"{prefix}1"], name=f"{prefix}/Mul"),
         helper.make_node("Div", [f"{prefix}1", f"{prefix}_lam"], [f"{prefix}2"], name=f"{prefix}/Div")]
    if round_half:
        n.append(helper.make_node("Round", [f"{prefix}2"], [f"{prefix}3"], name=f"{prefix}/Round"))
        n.append(helper.make_node("Clip", [f"{prefix}3", f"{prefix}_0", f"{prefix}_L"], [f"{prefix}4"],
                                  name=f"{prefix}/Clip"))
    else:
        n.append(helper.make_node("Clip", [f"{prefix}2", f"{prefix}_0", f"{prefix}_L"], [f"{prefix}3"],
                                  name=f"{prefix}/Clip"))
        n.append(helper.make_node("Floor", [f"{prefix}3"], [f"{prefix}4"], name=f"{prefix}/Floor"))
    n += [helper.make_node("Mul", [f"{prefix}4", f"{prefix}_lam"], [f"{prefix}5"], name=f"{prefix}/Mul_1"),
          helper.make_node("Div", [f"{prefix}5", f"{prefix}_L"], [out], name=f"{prefix}/Div_1")]
    return n, c


def conv_inits(cout=3, cin=1, k=3, groups=1, seed=0):
    return {"w": rnd(cout, cin // groups, k, k, seed=seed), "b": rnd(cout, seed=seed + 1)}


@pytest.mark.parametrize("kw, pads", [
    ({"pads": [0, 0, 1, 1], "strides": [2, 2]}, (0, 0, 1, 1)),
    ({"pads": [1, 2, 0, 1]}, (1, 2, 0, 1)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (0, 0, 1, 1)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (1, 1, 0, 0)),
    ({"auto_pad": "VALID"}, (0, 0, 0, 0)),
])
def test_conv_pads(kw, pads):
    g = check_against_reference(make_model([conv_node(out="y", **kw)], conv_inits()))
    assert g.node("conv").pads == pads


def test_depthwise_conv_and_pad_folding():
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="constant"),
             helper.make_node("Conv", ["p", "w", "b"], ["y"], name="dw", group=2, strides=[2, 2])]
    inits = {**conv_inits(cout=4, cin=2, groups=2), "pads": np.array([0, 0, 0, 1, 0, 0, 1, 0], dtype=np.int64)}
    g = check_against_reference(make_model(nodes, inits, in_shape=(2, 2, 7, 7)))
    assert g.node("dw").groups == 2 and g.node("dw").pads == (0, 1, 1, 0)
    assert g.meta["batch"] == 2


def test_quantizer_pattern_to_quantact():
    qn, qc = quant_nodes("c", lam=0.8, levels=4)
    g = check_against_reference(make_model([conv_node(), *qn], {**conv_inits(), **qc}))
    q = g.node("q/Div_1")
    assert isinstance(q, A.QuantAct) and (q.levels, q.phase) == (4, 0.0)
    assert q.scale == pytest.approx(np.float32(0.8), rel=1e-7)
    assert g.meta["tensors"] == {"q/Div_1": "y"}


def test_round_is_half_even_without_warning():
    import warnings
    qn, qc = quant_nodes("c", round_half=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = check_against_reference(make_model([conv_node(), *qn], {**conv_inits(), **qc}))
    q = g.node("q/Div_1")
    assert (q.phase, q.rounding) == (0.5, "half_even") and not g.meta.get("notes")


@pytest.mark.parametrize("offset", [0.0, 1.0, 2.0, -1.0, 3.0])
def test_round_with_an_integer_offset_keeps_the_ties_of_the_file(offset):
    """clip(Round(z·L/λ + k), 0, L): the offset k moves into the bias *inside* the rounding, so every tie
    (z·L/λ + k = m + ½) goes to the even m as onnx.reference's Round does, for odd k too; the casc SNN
    gives the same counts."""
    from evsnn.convert import convert
    from evsnn.engine import simulate

    mk = helper.make_node
    c = {"w": np.eye(4, dtype=np.float32), "b": np.zeros(4, np.float32), "L": np.float32(4),
         "lam": np.float32(4), "k": np.float32(offset), "zero": np.float32(0)}
    nodes = [mk("Gemm", ["x", "w", "b"], ["g"], name="fc", transB=1), mk("Mul", ["g", "L"], ["m"]),
             mk("Div", ["m", "lam"], ["d"]), mk("Add", ["d", "k"], ["a"]), mk("Round", ["a"], ["r"]),
             mk("Clip", ["r", "zero", "L"], ["cl"]), mk("Mul", ["cl", "lam"], ["m2"]),
             mk("Div", ["m2", "L"], ["q"], name="act"), mk("Gemm", ["q", "w", "b"], ["y"], name="fc2", transB=1)]
    model = make_model(nodes, c, in_shape=("N", 4))
    x = np.array([[0.5, 1.5, 2.5, -0.5], [1.0, 0.25, 3.5, -1.5], [-2.5, 0.0, 1.25, 4.5]], np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    g = fe.from_model(model)
    np.testing.assert_array_equal(ann_forward(g, x), want)
    net = convert(g, "casc")
    res = simulate(net, x.astype(np.float64))
    np.testing.assert_array_equal(res.values["act"], want)
    assert (np.abs(x + offset - np.floor(x + offset) - 0.5) < 1e-12).sum() >= 6  # ties really are tested


@pytest.mark.parametrize("variant", ["unit_clip", "relu_minmax", "sub_half"])
def test_other_quantizer_spellings(variant):
    """floor(clip(x/λ,0,1)·L)/L·λ; Relu→Mul→Floor→Min; and a +0.5 spelled as Sub(−0.5) with Max/Min."""
    mk = helper.make_node
    c = {"lam": np.float32(0.7), "L": np.float32(4), "one": np.float32(1), "zero": np.float32(0),
         "mhalf": np.float32(-0.5)}
    if variant == "unit_clip":
        n = [mk("Div", ["c", "lam"], ["t_a"]), mk("Clip", ["t_a", "zero", "one"], ["t_b"]),
             mk("Mul", ["t_b", "L"], ["t_d"]), mk("Floor", ["t_d"], ["t_e"]), mk("Div", ["t_e", "L"], ["t_f"]),
             mk("Mul", ["t_f", "lam"], ["y"], name="last")]
        phase = 0.0
    elif variant == "relu_minmax":
        n = [mk("Relu", ["c"], ["t_a"]), mk("Mul", ["t_a", "L"], ["t_b"]), mk("Div", ["t_b", "lam"], ["t_d"]),
             mk("Floor", ["t_d"], ["t_e"]), mk("Min", ["t_e", "L"], ["t_f"]), mk("Mul", ["t_f", "lam"], ["t_h"]),
             mk("Div", ["t_h", "L"], ["y"], name="last")]
        phase = 0.0
    else:
        n = [mk("Mul", ["c", "L"], ["t_a"]), mk("Div", ["t_a", "lam"], ["t_b"]), mk("Sub", ["t_b", "mhalf"], ["t_d"]),
             mk("Floor", ["t_d"], ["t_e"]), mk("Max", ["zero", "t_e"], ["t_f"]), mk("Min", ["t_f", "L"], ["t_h"]),
             mk("Mul", ["t_h", "lam"], ["t_k"]), mk("Div", ["t_k", "L"], ["y"], name="last")]
        phase = 0.5
    g = check_against_reference(make_model([conv_node(), *n], {**conv_inits(), **c}), n=8)
    q = g.node("last")
    assert isinstance(q, A.QuantAct) and (q.levels, q.phase) == (4, phase)
    assert q.scale == pytest.approx(0.7, rel=1e-6)
    assert [type(n).__name__ for n in g.nodes] == ["Input", "Conv", "QuantAct"]


def test_clip_relu_and_batchnorm_after_pool():
    mk = helper.make_node
    n = [conv_node(), mk("Clip", ["c", "zero", "six"], ["r"], name="clip"),
         mk("MaxPool", ["r"], ["m"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
         mk("BatchNormalization", ["m", "s", "bb", "mu", "var"], ["n"], name="bn"),
         mk("Relu", ["n"], ["y"], name="relu")]
    c = {**conv_inits(), "zero": np.float32(0), "six": np.float32(0.5), "s": rnd(3, seed=4), "bb": rnd(3, seed=5),
         "mu": rnd(3, seed=6), "var": np.abs(rnd(3, seed=7)) + 0.5}
    g = check_against_reference(make_model(n, c))
    assert isinstance(g.node("clip"), A.ClipAct) and g.node("clip").scale == 0.5
    assert g.node("bn").groups == 3 and g.node("bn").weight.shape == (3, 1, 1, 1)
    assert isinstance(g.node("relu"), A.Relu)
    assert g.meta["tensors"] == {"clip": "r", "pool": "m", "relu": "y"}


def test_matmul_add_dropout_and_vector_batchnorm():
    mk = helper.make_node
    n = [mk("Flatten", ["x"], ["f"], name="flat"), mk("MatMul", ["f", "w"], ["mm"], name="mm"),
         mk("Add", ["bias", "mm"], ["a"], name="add"), mk("Dropout", ["a"], ["d"], name="drop"),
         mk("Relu", ["d"], ["r"], name="relu"), mk("Identity", ["r"], ["i"], name="id"),
         mk("BatchNormalization", ["i", "s", "bb", "mu", "var"], ["y"], name="bn")]
    c = {"w": rnd(36, 5), "bias": rnd(5, seed=1), "s": rnd(5, seed=4), "bb": rnd(5, seed=5), "mu": rnd(5, seed=6),
         "var": np.abs(rnd(5, seed=7)) + 0.5}
    g = check_against_reference(make_model(n, c))
    assert [type(x).__name__ for x in g.nodes] == ["Input", "Flatten", "Dense", "Relu", "Dense"]
    assert g.nodes[2].name == "add" and g.nodes[4].name == "bn"
    assert np.allclose(g.nodes[4].weight, np.diag(np.diag(g.nodes[4].weight)))


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_reduce_mean_squeeze_and_versioned_converters(opset):
    mk = helper.make_node
    if opset >= 18:
        rm = mk("ReduceMean", ["c", "axes"], ["m"], name="mean", keepdims=1)
    else:
        rm = mk("ReduceMean", ["c"], ["m"], name="mean", axes=[2, 3], keepdims=1)
    sq = mk("Squeeze", ["m", "axes"], ["y"], name="sq") if opset >= 13 else mk("Squeeze", ["m"], ["y"], name="sq",
                                                                                axes=[2, 3])
    c = {**conv_inits(), "axes": np.array([2, 3], dtype=np.int64)}
    g = check_against_reference(make_model([conv_node(), rm, sq], c, opset=opset))
    assert [type(x).__name__ for x in g.nodes] == ["Input", "Conv", "AvgPool", "Flatten"]
    assert onnx_ops.lookup("ReduceMean", 17) is onnx_ops.reduce_mean_11
    assert onnx_ops.lookup("ReduceMean", 18) is onnx_ops.reduce_mean_18
    assert onnx_ops.lookup("Sigmoid", 18) is None


def test_residual_add_and_reshape_from_shape():
    mk = helper.make_node
    n = [conv_node(name="c1", out="a", pads=[1, 1, 1, 1]), mk("Relu", ["a"], ["r"], name="r1"),
         mk("Add", ["r", "x3"], ["s"], name="add"),
         mk("Shape", ["s"], ["sh"]), mk("Gather", ["sh", "zero_i"], ["n"], axis=0),
         mk("Unsqueeze", ["n", "zero_i1"], ["n1"]), mk("Concat", ["n1", "minus1"], ["tgt"], axis=0),
         mk("Reshape", ["s", "tgt"], ["y"], name="reshape"), mk("Expand", ["x", "shape3"], ["x3"], name="exp")]
    n = n[-1:] + n[:-1]
    c = {**conv_inits(), "zero_i": np.array(0, dtype=np.int64), "zero_i1": np.array([0], dtype=np.int64),
         "minus1": np.array([-1], dtype=np.int64), "shape3": np.array([1, 3, 1, 1], dtype=np.int64)}
    with pytest.raises(ConversionError, match="'exp' \\(op Expand, domain ai.onnx\\)"):
        fe.from_model(make_model(n, c))
    n = [x for x in n if x.name != "exp"]
    n[2] = mk("Add", ["r", "a"], ["s"], name="add")
    g = check_against_reference(make_model(n, c))
    assert [type(x).__name__ for x in g.nodes] == ["Input", "Conv", "Relu", "Add", "Flatten"]


def test_input_normalisation_and_shared_conv_output():
    """(x − μ)/σ on the input and a BN on a Conv output that is also read elsewhere: depthwise 1×1 Convs."""
    mk = helper.make_node
    n = [mk("Sub", ["x", "mu"], ["s"], name="sub"), mk("Div", ["s", "sd"], ["nx"], name="norm"),
         conv_node(inp="nx", pads=[1, 1, 1, 1]),
         mk("BatchNormalization", ["c", "g", "bb", "m", "v"], ["bn"], name="bn"),
         mk("Add", ["bn", "c"], ["y"], name="add")]
    c = {**conv_inits(cin=2), "mu": rnd(1, 2, 1, 1, seed=3), "sd": np.abs(rnd(2, 1, 1, seed=4)) + 0.5,
         "g": rnd(3, seed=5), "bb": rnd(3, seed=6), "m": rnd(3, seed=7), "v": np.abs(rnd(3, seed=8)) + 0.5}
    g = check_against_reference(make_model(n, c, in_shape=("N", 2, 5, 5)))
    assert [type(x).__name__ for x in g.nodes] == ["Input", "Conv", "Conv", "Conv", "Add"]
    assert g.node("norm").groups == 2 and g.node("bn").groups == 3 and g.node("conv").groups == 1


# ---------------------------------------------------------------- conversion errors


def test_unsupported_op_names_node_and_supported_ops():
    n = [conv_node(), helper.make_node("Sigmoid", ["c"], ["y"], name="my_sigmoid")]
    with pytest.raises(ConversionError) as e:
        fe.from_model(make_model(n, conv_inits()))
    msg = str(e.value)
    assert "'my_sigmoid'" in msg and "Sigmoid" in msg and "supported" in msg and "Conv" in msg


def test_concat_and_tensor_product_are_errors():
    mk = helper.make_node
    n = [conv_node(), mk("Concat", ["c", "c"], ["y"], name="cat", axis=1)]
    with pytest.raises(ConversionError, match="'cat' \\(op Concat, domain ai.onnx\\)"):
        fe.from_model(make_model(n, conv_inits()))
    n = [conv_node(), mk("Mul", ["c", "c"], ["y"], name="sq")]
    with pytest.raises(ConversionError, match="'sq' \\(op Mul, domain ai.onnx\\).*two tensors"):
        fe.from_model(make_model(n, conv_inits()))


def test_dilation_is_error():
    with pytest.raises(ConversionError, match="'conv' \\(op Conv, domain ai.onnx\\).*dilation"):
        fe.from_model(make_model([conv_node(out="y", dilations=[2, 2])], conv_inits()))


def test_dynamic_spatial_axis_is_error():
    with pytest.raises(ConversionError, match="dynamic axis 2 \\(H\\)"):
        fe.from_model(make_model([conv_node(out="y")], conv_inits(), in_shape=("N", 1, "H", 6)))


def test_batchnorm_in_training_mode_is_error():
    n = [conv_node(), helper.make_node("BatchNormalization", ["c", "s", "b2", "m", "v"], ["y"], name="bn",
                                       training_mode=1)]
    c = {**conv_inits(), "s": rnd(3), "b2": rnd(3), "m": rnd(3), "v": np.ones(3, np.float32)}
    with pytest.raises(ConversionError, match="'bn'.*training mode"):
        fe.from_model(make_model(n, c, opset=15))


def test_broken_quantizer_is_error():
    mk = helper.make_node
    n = [conv_node(), mk("Mul", ["c", "L"], ["a"], name="m"), mk("Floor", ["a"], ["y"], name="fl")]
    with pytest.raises(ConversionError, match="'m' … 'fl'.*clipped"):
        fe.from_model(make_model(n, {**conv_inits(), "L": np.float32(4)}))


def test_other_domain_and_multiple_outputs_are_errors():
    n = [conv_node(out="y"), helper.make_node("Relu", ["y"], ["z"], name="r")]
    with pytest.raises(ConversionError, match="2 outputs"):
        fe.from_model(make_model(n, conv_inits(), extra_outputs=("z",)))
    m = make_model([conv_node(), helper.make_node("Gelu", ["c"], ["y"], name="g", domain="com.microsoft")],
                   conv_inits())
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(ConversionError, match="'g'.*com.microsoft"):
        fe.from_model(m)


def test_newer_and_older_opset_errors(tmp_path):
    top = fe.max_opset()
    m = make_model([conv_node(out="y")], conv_inits(), opset=top + 1)
    p = tmp_path / "future.onnx"
    onnx.save(m, p)
    with pytest.raises(ConversionError) as e:
        fe.load(p)
    assert f"opset {top + 1}" in str(e.value) and f"11 to {top}" in str(e.value)
    with pytest.raises(ConversionError, match=f"opset 9; .*11 to {top}"):
        fe.from_model(make_model([conv_node(out="y")], conv_inits(), opset=9))


def test_gemm_attributes_and_flatten_from_shape_arithmetic():
    """Gemm with transB=0, α, β and a (1, F) bias; a Reshape target computed as C·H·W from Shape."""
    mk = helper.make_node
    n = [mk("Shape", ["x"], ["sh"]), mk("Gather", ["sh", "i0"], ["nb"], axis=0),
         mk("Gather", ["sh", "i1"], ["c"], axis=0), mk("Gather", ["sh", "i2"], ["h"], axis=0),
         mk("Gather", ["sh", "i3"], ["w_"], axis=0), mk("Mul", ["c", "h"], ["ch"]), mk("Mul", ["ch", "w_"], ["chw"]),
         mk("Unsqueeze", ["nb", "ax0"], ["nb1"]), mk("Unsqueeze", ["chw", "ax0"], ["chw1"]),
         mk("Concat", ["nb1", "chw1"], ["tgt"], axis=0), mk("Reshape", ["x", "tgt"], ["f"], name="flat"),
         mk("Gemm", ["f", "B", "C"], ["y"], name="fc", alpha=0.5, beta=2.0)]
    c = {"B": rnd(36, 5), "C": rnd(1, 5, seed=1), "ax0": np.array([0], dtype=np.int64),
         **{f"i{k}": np.array(k, dtype=np.int64) for k in range(4)}}
    g = check_against_reference(make_model(n, c, opset=13))
    assert [type(x).__name__ for x in g.nodes] == ["Input", "Flatten", "Dense"]
    n[5] = mk("Mul", ["nb", "h"], ["ch"], name="bad")
    with pytest.raises(ConversionError, match="'bad'.*batch size"):
        fe.from_model(make_model(n, c, opset=13))


def test_pad_before_non_conv_and_maxpool_indices_are_errors():
    mk = helper.make_node
    n = [mk("Pad", ["x", "pads"], ["p"], name="pad"), mk("Relu", ["p"], ["y"], name="r")]
    with pytest.raises(ConversionError, match="'pad' \\(op Pad, domain ai.onnx\\).*Conv"):
        fe.from_model(make_model(n, {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)}))
    n = [mk("MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[2, 2]),
         mk("Cast", ["idx"], ["idxf"], to=TensorProto.FLOAT), mk("Add", ["y", "idxf"], ["z"], name="sum")]
    with pytest.raises(ConversionError, match="'mp'.*Indices"):
        fe.from_model(make_model(n, out="z"))


def test_torch_export_of_other_spellings():
    """A live torch export: ClipAct via clamp(0, λ), the unit-clip quantizer, and view(N, C·H·W)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import io
    import warnings

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c1, self.c2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, stride=2)
            self.fc = torch.nn.Linear(4 * 3 * 3, 3)

        def forward(self, x):
            x = torch.clamp(self.c1(x), 0, 0.6)
            x = torch.floor(torch.clamp(self.c2(x) / 0.3, 0, 1) * 8) / 8 * 0.3
            return self.fc(x.view(x.size(0), x.size(1) * x.size(2) * x.size(3)))

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (torch.randn(2, 1, 8, 8),), buf, dynamo=False, opset_version=11,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    model = onnx.load_from_string(buf.getvalue())
    g = fe.from_model(model)
    assert [type(n).__name__ for n in g.nodes] == ["Input", "Conv", "ClipAct", "Conv", "QuantAct", "Flatten", "Dense"]
    q = next(n for n in g.nodes if isinstance(n, A.QuantAct))
    assert (q.levels, q.phase) == (8, 0.0) and q.scale == pytest.approx(0.3, rel=1e-6)
    x = np.random.default_rng(3).normal(size=(16, 1, 8, 8)).astype(np.float32)
    out = run_ort(model, x, list(g.meta["tensors"].values()))
    vals = ann_forward(g, x, return_all=True)
    for name, tensor in g.meta["tensors"].items():
        assert_close(vals[name], out[tensor], name)
    assert_close(vals[g.output], out[g.meta["output_tensor"]])


# ---------------------------------------------------------------- chain algebra (no ONNX involved)


def _tok(kind, **kw):
    from evsnn.frontends.onnx.chain import Token

    return Token(kind, node=kw.pop("node", kind), tensor=kind, **kw)


def test_plan_chain_normal_forms():
    from evsnn.frontends.onnx.chain import plan_chain

    inf = float("inf")
    aff = lambda a, b=0.0, **kw: _tok("affine", a=a, b=b, **kw)  # noqa: E731
    clip = lambda lo, hi: _tok("clip", lo=lo, hi=hi)  # noqa: E731
    bn = aff(np.array([2.0, 0.5]), np.array([0.1, -0.2]), per_channel=True, node="bn")
    # BN, then floor quantizer with λ = 0.8, L = 4, written with the clip before the floor
    p = plan_chain([bn, aff(4.0), aff(1 / 0.8), clip(0, 4), _tok("floor"), aff(0.8), aff(0.25, node="last")])
    assert p.act == ("quant", 4, pytest.approx(0.8), 0.0, "floor") and p.linear_token.node == "bn"
    np.testing.assert_allclose(p.scale, [2.0, 0.5])
    np.testing.assert_allclose(p.shift, [0.1, -0.2])
    assert p.act_token.node == "last"
    # relu before the scaling, +0.5 phase, Min after the floor
    p = plan_chain([clip(0, inf), aff(5.0), aff(1.0, 0.5), _tok("floor"), clip(-inf, 4), aff(0.1)])
    assert p.act[0] == "quant" and p.act[1] == 4 and p.act[2] == pytest.approx(0.4) and p.act[3] == 0.5
    assert p.scale == pytest.approx(0.5) and p.shift == 0.0  # the extra factor a·c = 5·0.1 moves into the layer
    # clip to [0, 1] then ×λ: a threshold ReLU with λ = 0.6; Relu then ×2 becomes ×2 then Relu
    p = plan_chain([aff(1 / 0.6), clip(0, 1), aff(0.6)])
    assert p.act == ("clip", pytest.approx(0.6)) and p.scale == pytest.approx(1.0)
    p = plan_chain([clip(0, inf), aff(2.0)])
    assert p.act == ("relu",) and p.scale == 2.0
    # a half-even round (QDQ): the rounding survives any integer offset (it moves into the bias, inside rint)
    half_even = _tok("floor", rounding="half_even")
    p = plan_chain([aff(1 / 0.1), aff(1.0, 0.5), half_even, clip(0, 7), aff(0.1)])
    assert p.act[1:3] == (7, pytest.approx(0.7)) and p.act[3:] == (0.5, "half_even")
    p = plan_chain([aff(1.0, 2.0), aff(1.0, 0.5), half_even, clip(0, 7)])
    assert p.act[3:] == (0.5, "half_even") and p.shift == pytest.approx(2.0)
    p = plan_chain([aff(1.0, 1.0), aff(1.0, 0.5), half_even, clip(0, 7)])
    assert p.act[3:] == (0.5, "half_even") and p.shift == pytest.approx(1.0)
    # pure affine: everything folds, named after the last token
    p = plan_chain([bn, aff(3.0, node="mul")])
    assert p.act is None and p.linear_token.node == "mul"


@pytest.mark.parametrize("chain, match", [
    (["floor"], "need \\[0, L\\]"),
    (["relu", "floor"], "need \\[0, L\\]"),
    (["neg", "floor", "clip04"], "scale"),
    (["floor", "clip04", "add1"], "offset"),
    (["clip_neg"], "clip at 0"),
    (["floor", "floor", "clip04"], "rounds twice"),
])
def test_plan_chain_rejects(chain, match):
    from evsnn.frontends.onnx.chain import ChainError, plan_chain

    inf = float("inf")
    toks = {"floor": _tok("floor"), "relu": _tok("clip", lo=0.0, hi=inf), "neg": _tok("affine", a=-1.0, b=0.0),
            "clip04": _tok("clip", lo=0.0, hi=4.0), "add1": _tok("affine", a=1.0, b=1.0),
            "clip_neg": _tok("clip", lo=-1.0, hi=1.0)}
    with pytest.raises(ChainError, match=match):
        plan_chain([toks[t] for t in chain])
