"""QKeras-style configs (QActivation, QConv2D, QDense) read without QKeras, against QKeras' semantics in NumPy.

QKeras needs TensorFlow and cannot be installed here; the fixtures
(``tests/fixtures/make_qkeras.py``) carry QKeras' ``get_config`` output, and
this file re-implements the quantizers from QKeras' source
(``qkeras/quantizers.py``: ``quantized_bits.__call__`` and
``quantized_relu.__call__`` with use_sigmoid=0, negative_slope=0; ``tf.round``
rounds half to even) and the model forward pass in float32 (torch), as
TensorFlow would compute it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from evsnn.convert import convert
from evsnn.datasets import load_digits
from evsnn.errors import ConversionError
from evsnn.frontends import keras as kfront
from evsnn.frontends.keras import qkeras as QK
from evsnn.reference.ann import ann_forward, ann_levels

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
SUFFIXES = (".h5", ".keras")


def np_quantized_bits(x, bits, integer, symmetric, keep_negative, alpha):
    """quantized_bits.__call__ (alpha fixed, unsigned_bits > 0), float32, with the x + (−x + xq) STE form."""
    x = np.asarray(x, np.float32)
    m = np.float32(2.0 ** (bits - keep_negative))
    m_i = np.float32(2.0 ** integer)
    xq = m_i * np.clip(np.round(x * m / m_i), keep_negative * (-m + symmetric), m - 1) / m
    xq = np.float32(alpha) * xq
    return x + (-x + xq)


def np_quantized_relu(x, bits, integer):
    """quantized_relu.__call__ (use_sigmoid=0, negative_slope=0, is_quantized_clip=True), float32."""
    x = np.asarray(x, np.float32)
    m, m_i = np.float32(2.0 ** bits), np.float32(2.0 ** integer)
    m_f = np.float32(2.0 ** (integer - bits))
    x_u = np.where(x <= m_i - m_f, np.maximum(x, 0), m_i - m_f).astype(np.float32)
    xq = m_i * np.clip(np.round(x * m / m_i) / m, 0.0, 1.0 - 1.0 / m)
    return x_u + (-x_u + xq.astype(np.float32))


def qkeras_forward(path: Path, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """The fixture model as QKeras computes it (float32): activations by layer name, Keras layout."""
    torch = pytest.importorskip("torch")
    import h5py

    with h5py.File(path) as f:
        w = {n: [np.asarray(f["model_weights"][n][f"{n}/{k}:0"]) for k in ("kernel", "bias")]
             for n in ("conv1", "conv2", "logits")}
    q = {n: [np_quantized_bits(a, 6, 0, 1, 1, 1) for a in ws] for n, ws in w.items()}

    def conv(x, kernel, bias, stride):
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        k = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        pad = (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1)  # TensorFlow 'same' for 3×3 on 8×8
        y = torch.nn.functional.conv2d(torch.nn.functional.pad(t, pad), k, torch.from_numpy(bias), stride=stride)
        return y.numpy().transpose(0, 2, 3, 1)

    out = {}
    out["act1"] = np_quantized_relu(conv(x_nhwc, *q["conv1"], 1), 3, 1)
    out["act2"] = np_quantized_relu(conv(out["act1"], *q["conv2"], 2), 3, 1)
    flat = out["act2"].reshape(len(x_nhwc), -1)
    out["logits"] = (torch.from_numpy(flat) @ torch.from_numpy(q["logits"][0])).numpy() + q["logits"][1]
    return out


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_qkeras_levels_equal_numpy_qkeras(suffix):
    path = FIXTURES / f"qkeras_digits{suffix}"
    graph = kfront.load(path)
    x, y = load_digits("test")
    ref = qkeras_forward(FIXTURES / "qkeras_digits.h5", x.transpose(0, 2, 3, 1))
    lv = ann_levels(graph, x)
    same = total = 0
    for name in ("act1", "act2"):
        assert graph.node(name).rounding == "half_even" and graph.node(name).levels == 7
        want = (ref[name] * 4.0).transpose(0, 3, 1, 2).reshape(len(x), -1)  # step 2^(1-3)
        same += int((lv[name] == want).sum())
        total += want.size
    print(f"qkeras_digits{suffix}: {same}/{total} levels = {100 * same / total:.4f} %")
    assert same / total >= 0.9999
    out = ann_forward(graph, x)
    np.testing.assert_allclose(out, ref["logits"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.argmax(1), ref["logits"].argmax(1))
    assert (out.argmax(1) == y).mean() > 0.9


@pytest.mark.parametrize("given, want", [
    ("quantized_relu(3,1)", ("quantized_relu", 3, 1)),
    ("quantized_relu(bits=4, integer=2)", ("quantized_relu", 4, 2)),
    ({"class_name": "quantized_relu", "config": {"bits": 2, "integer": 0, "use_sigmoid": 0}},
     ("quantized_relu", 2, 0)),
    ("quantized_bits(6,0,1,alpha=1)", ("quantized_bits", 6, 0)),
])
def test_quantizer_forms_parse(given, want):
    spec = QK.LayerSpec("l", "QActivation", {})
    name, cfg = QK.parse(spec, "activation", given)
    assert (name, cfg["bits"], cfg["integer"]) == want


def test_quantized_bits_matches_numpy_source_and_sign_case():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1.5, 3000), rng.integers(-80, 80, 500) / 32]).astype(np.float32)
    for bits, integer, sym, neg, alpha in ((6, 0, 1, 1, 1), (4, 1, 0, 1, 0.5), (5, 2, 0, 0, 1), (8, 0, 1, 1, None)):
        got = QK.quantized_bits(x, bits=bits, integer=integer, symmetric=sym, keep_negative=bool(neg), alpha=alpha)
        want = np_quantized_bits(x, bits, integer, sym, neg, 1 if alpha is None else alpha)
        np.testing.assert_array_equal(got, want.astype(np.float64))
    sign = QK.quantized_bits(np.array([-0.3, 0.0, 2.0], np.float32), bits=1, integer=0, keep_negative=True)
    np.testing.assert_array_equal(sign, [-1.0, 1.0, 1.0])  # bits = keep_negative: sign, 0 → +1 (QKeras)


def frac_bits(a) -> int:
    """Fewest r with every entry of ``a`` a multiple of 2^−r."""
    a = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    return next(r for r in range(61) if np.all(a * 2.0 ** r == np.floor(a * 2.0 ** r)))


def edited(tmp_path: Path, edit, fixture: str = "qkeras_digits.keras") -> Path:
    """``fixture`` (a .keras file of tests/fixtures) with ``edit({layer name: config})`` applied to its config."""
    with zipfile.ZipFile(FIXTURES / fixture) as z:
        files = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(files["config.json"])
    edit({e["config"]["name"]: e["config"] for e in cfg["config"]["layers"]})
    files["config.json"] = json.dumps(cfg).encode()
    out = tmp_path / f"edited_{fixture}"
    with zipfile.ZipFile(out, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return out


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["conv2"]["kernel_quantizer"]["config"].update(alpha="auto_po3"),
     r"layer 'conv2' \(QConv2D\): kernel_quantizer quantized_bits.*alpha='auto_po3' is unknown"),
    (lambda c: c["conv2"]["kernel_quantizer"]["config"].update(alpha="auto", scale_axis=0),
     r"layer 'conv2' \(QConv2D\): kernel_quantizer .*scale_axis / elements_per_scale are not supported"),
    (lambda c: c["act1"].update(activation="quantized_relu(3,1,0,0.25)"),
     r"layer 'act1' \(QActivation\): activation quantized_relu negative_slope=0.25 is not supported"),
    (lambda c: c["act2"].update(activation="quantized_po2(4)"),
     r"layer 'act2' \(QActivation\): activation quantizer 'quantized_po2' is not supported; supported: "
     r"quantized_bits, quantized_relu"),
    (lambda c: c["act2"].update(activation="quantized_bits(4,0,0)"),
     r"layer 'act2' \(QActivation\): activation 'quantized_bits' is not supported as an activation"),
    (lambda c: c["logits"]["bias_quantizer"].update(class_name="ternary"),
     r"layer 'logits' \(QDense\): bias_quantizer quantizer 'ternary' is not supported"),
])
def test_unsupported_qkeras_quantizers_name_layer(tmp_path, edit, match):
    with pytest.raises(ConversionError, match=match):
        kfront.load(edited(tmp_path, edit))


def test_fused_quantized_activation_in_qdense(tmp_path):
    """QDense(activation=quantized_relu) → <name>_preact Dense + QuantAct named after the layer."""
    def fuse(c):
        c["logits"]["activation"] = {"class_name": "quantized_relu", "config": {"bits": 4, "integer": 2}}
    graph = kfront.load(edited(tmp_path, fuse))
    q = graph.node("logits")
    assert q.kind == "quant" and q.levels == 15 and q.scale == 15 * 2.0 ** -2 and q.inputs == ("logits_preact",)
    assert graph.meta["quantizers"]["logits/activation"]["node"] == "logits"


def test_inspect_shows_half_even_rounding():
    from click.testing import CliRunner

    from evsnn.cli import cli

    r = CliRunner().invoke(cli, ["inspect", str(FIXTURES / "qkeras_digits.keras")])
    assert r.exit_code == 0, r.output
    act1 = next(line for line in r.output.splitlines() if line.startswith("act1 "))
    assert "L = 7" in act1 and "round half to even" in act1


def np_auto_quantized_bits(x, bits, integer, alpha):
    """quantized_bits.__call__, alpha "auto"/"auto_po2" branch (symmetric, scale_axis None, channels last),
    transcribed op by op from qkeras/quantizers.py with _get_least_squares_scale / _get_scale_mean."""
    f32 = np.float32
    x = np.asarray(x, f32)
    m, m_i = f32(2.0 ** (bits - 1)), f32(2.0 ** integer)
    axis = tuple(range(x.ndim - 1))
    x = x / m_i
    levels = f32((2 ** (bits - 1) - 1) * 2)
    scale = (np.max(np.abs(x), axis=axis, keepdims=True) * 2) / levels
    if "po2" in alpha:
        scale = f32(2.0) ** np.round(np.log(scale + f32(1e-7)) / f32(np.log(2.0)))
        for _ in range(5):
            v = np.floor(np.abs(x) / scale + f32(0.5))
            z = np.sign(x) * np.where(v < levels / 2, v, np.ones_like(v) * levels / 2)
            qx = np.mean(x * z, axis=axis, keepdims=True, dtype=f32)
            qq = np.mean(z * z, axis=axis, keepdims=True, dtype=f32)
            scale = f32(2.0) ** np.round(np.log(qx / (qq + f32(1e-7)) + f32(1e-7)) / f32(np.log(2.0)))
    v = np.floor(np.abs(x) / scale + f32(0.5))
    z = np.sign(x) * np.where(v < levels / 2, v, np.ones_like(v) * levels / 2)
    scale = scale * m
    x = m_i * x
    xq = scale * (m_i * z / m)
    return x + (-x + xq)


@pytest.mark.parametrize("alpha", ["auto", "auto_po2"])
@pytest.mark.parametrize("bits, integer", [(4, 0), (6, 1)])
def test_auto_alpha_matches_numpy_source(alpha, bits, integer):
    w = np.random.default_rng(bits).normal(0, 0.4, (3, 3, 4, 6)).astype(np.float32)
    got = QK.quantized_bits(w, bits=bits, integer=integer, symmetric=True, alpha=alpha)
    np.testing.assert_array_equal(got, np_auto_quantized_bits(w, bits, integer, alpha).astype(np.float64))
    if alpha == "auto_po2":  # per output channel: a power-of-two step times integers |z| <= 2^(bits-1) - 1
        for c in range(w.shape[-1]):
            vals = np.abs(got[..., c][got[..., c] != 0])
            step = 2.0 ** -frac_bits(vals)  # the largest power of two all values are multiples of
            assert vals.max() / step <= 2 ** (bits - 1) - 1


def test_auto_po2_kernel_model_loads_with_power_of_two_steps(tmp_path):
    """QDense/QConv2D turn alpha=None into "auto_po2"; such a file loads, each Dense row on a power-of-two step."""
    def auto(c):
        for name in ("conv1", "conv2", "logits"):
            c[name]["kernel_quantizer"]["config"].update(alpha="auto_po2", symmetric=True)
    graph = kfront.load(edited(tmp_path, auto))
    x, _ = load_digits("test")
    w = graph.node("logits").weight  # (10, 256), columns in the graph's order
    steps = np.array([np.abs(r[r != 0]).min() for r in w])
    assert np.all(np.log2(steps) == np.round(np.log2(steps)))
    assert np.isfinite(ann_forward(graph, x)).all()


@pytest.mark.parametrize("preset", ["casc", "bitserial"])
def test_qkeras_casc_and_bitserial_counts_equal_half_even_levels(preset):
    """QKeras' tf.round ties to even; the SNN's counts equal the half-even ANN levels on every neuron (100 %),
    ties included, and differ from floor(x + ½) where the model has ties."""
    from evsnn.engine import simulate
    from evsnn.verify import expected_levels
    graph = kfront.load(FIXTURES / "qkeras_digits.keras")
    x, _ = load_digits("test")
    net = convert(graph, preset)
    assert {p.rounding for p in net.populations} == {"half_even"}
    res = simulate(net, x)
    lv = ann_levels(graph, x)
    want = expected_levels(net, x)
    for name in ("act1", "act2"):
        np.testing.assert_array_equal(res.values[name], lv[name], err_msg=name)
        np.testing.assert_array_equal(res.values[name], want[name], err_msg=name)
    np.testing.assert_array_equal(res.predictions, ann_forward(graph, x).argmax(1))


# ---------------------------------------------------------------- QDepthwiseConv2D (qkeras_dw) against Keras itself

def keras_dw_levels(x_nhwc: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """qkeras_dw as QKeras computes it: Keras' own Conv2D / DepthwiseConv2D / Dense layers carrying the
    quantized_bits weights (from the .h5 file), np_quantized_relu between them; levels (N, C·H·W) in NCHW
    order by QActivation name, and the logits."""
    keras = pytest.importorskip("keras")
    import h5py
    from keras import layers as L

    with h5py.File(FIXTURES / "qkeras_dw.h5") as f:
        g = f["model_weights"]
        w = {n: [np_quantized_bits(g[n][f"{n}/{k}:0"][()], 6, 0, 1, 1, 1) for k in ks]
             for n, ks in (("conv1", ("kernel", "bias")), ("dw", ("depthwise_kernel", "bias")),
                           ("logits", ("kernel", "bias")))}

    def run(layer, x, weights):
        layer.build(x.shape)
        layer.set_weights(weights)
        return keras.ops.convert_to_numpy(layer(x))

    a1 = np_quantized_relu(run(L.Conv2D(8, 3, padding="same"), x_nhwc, w["conv1"]), 3, 1)
    a2 = np_quantized_relu(run(L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2), a1, w["dw"]),
                           3, 1)
    logits = run(L.Dense(10), a2.reshape(len(a2), -1), w["logits"])
    levels = {k: (a * 4.0).transpose(0, 3, 1, 2).reshape(len(a), -1) for k, a in (("act1", a1), ("act2", a2))}
    return levels, logits  # step 2^(integer - bits) = 1/4


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_qdepthwise_graph_equals_keras(suffix):
    """QDepthwiseConv2D(depth_multiplier=2): a grouped Conv (groups = C, out channel c·2 + j) whose quantized_relu
    levels equal Keras' on every neuron; logits equal Keras' Dense output."""
    graph = kfront.load(FIXTURES / f"qkeras_dw{suffix}")
    conv = graph.node("dw")
    assert conv.groups == 8 and conv.weight.shape == (16, 1, 3, 3) and conv.stride == (2, 2)
    assert graph.node("act2").rounding == "half_even" and graph.node("act2").inputs == ("dw",)
    x, _ = load_digits("test")
    levels, logits = keras_dw_levels(x.transpose(0, 2, 3, 1))
    lv = ann_levels(graph, x)
    for name in ("act1", "act2"):
        np.testing.assert_array_equal(lv[name], levels[name], err_msg=name)
    out = ann_forward(graph, x)
    np.testing.assert_allclose(out, logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.argmax(1), logits.argmax(1))


@pytest.mark.parametrize("preset", ["casc", "bitserial"])
def test_qdepthwise_snn_counts_equal_keras_levels(preset):
    from evsnn.engine import simulate
    graph = kfront.load(FIXTURES / "qkeras_dw.keras")
    x, _ = load_digits("test")
    levels, logits = keras_dw_levels(x.transpose(0, 2, 3, 1))
    res = simulate(convert(graph, preset), x)
    same = sum(int((res.values[n] == levels[n]).sum()) for n in levels)
    total = sum(v.size for v in levels.values())
    pred = 100 * (res.predictions == logits.argmax(1)).mean()
    print(f"qkeras_dw {preset}: {same}/{total} neurons = {100 * same / total:.4f} %, predictions {pred:.2f} %")
    assert same == total
    np.testing.assert_array_equal(res.predictions, logits.argmax(1))


def test_qdepthwise_fused_quantized_activation_equals_keras(tmp_path):
    """QDepthwiseConv2D(activation=quantized_relu) → ``dw_preact`` grouped Conv + QuantAct ``dw``, same levels."""
    def fuse(c):
        c["dw"]["activation"] = {"class_name": "quantized_relu", "config": {"bits": 3, "integer": 1}}
        c["act2"]["activation"] = "linear"
    graph = kfront.load(edited(tmp_path, fuse, "qkeras_dw.keras"))
    assert graph.node("dw").kind == "quant" and graph.node("dw").inputs == ("dw_preact",)
    assert graph.node("dw_preact").groups == 8
    x, _ = load_digits("test")
    levels, _ = keras_dw_levels(x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ann_levels(graph, x)["dw"], levels["act2"])


def test_qdepthwise_unsupported_quantizer_names_layer(tmp_path):
    out = edited(tmp_path, lambda c: c["dw"]["depthwise_quantizer"].update(class_name="ternary"),
                 "qkeras_dw.keras")
    with pytest.raises(ConversionError, match=r"^layer 'dw' \(QDepthwiseConv2D\): depthwise_quantizer quantizer "
                                              r"'ternary' is not supported"):
        kfront.load(out)
