"""HGQ2 models read from .keras alone: graph == HGQ2 outputs, casc/bitserial counts == HGQ2's quantized activations.

Fixtures: ``tests/fixtures/keras/hgq_*.keras`` made by ``tests/fixtures/make_hgq.py``
with hgq2 itself. Data: the bundled digits test split (599 images). The tool's
activation levels are HGQ2's own quantizer applied to Keras sub-model outputs
(``layer.iq(sub_model(x))``), divided by the quantizer's own step 2^−f.
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from evsnn.convert import convert  # noqa: E402
from evsnn.datasets import load_digits  # noqa: E402
from evsnn.engine import simulate as engine_simulate  # noqa: E402
from evsnn.errors import ConversionError  # noqa: E402
from evsnn.frontends import keras as kfront  # noqa: E402
from evsnn.frontends.keras import fixed_point as FP  # noqa: E402
from evsnn.frontends.keras.layers import keras_order  # noqa: E402
from evsnn.reference import simulate as ref_simulate  # noqa: E402
from evsnn.reference.ann import ann_forward, ann_levels  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
NAMES = ("hgq_digits", "hgq_mixed", "hgq_groups", "hgq_pool")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@functools.lru_cache(maxsize=None)
def tool(name: str):
    """(graph, x NCHW, Keras predictions, {quantizer key: tool levels in the node's layout})."""
    pytest.importorskip("hgq")
    import keras
    from keras import ops

    path = FIXTURES / f"{name}.keras"
    graph = kfront.load(path)
    model = keras.models.load_model(path, compile=False)
    x, _ = load_digits("test")
    xk = x.transpose(0, 2, 3, 1)
    levels = {}
    for key, info in graph.meta["quantizers"].items():
        lname, what = key.split("/")
        lay = model.get_layer(lname)
        if what.startswith("iq") and what != "iq":  # QAdd: input n's own quantizer
            n = int(what[2:])
            q, inp = lay.iq.quantizers[n], lay.input[n]
        else:
            q, inp = (lay if what == "q" else getattr(lay, what)), lay.input
        if what == "oq":
            v = keras.Model(model.inputs, lay.output).predict(xk, verbose=0)  # oq is the layer's last step
        else:
            v = ops.convert_to_numpy(q(keras.Model(model.inputs, inp).predict(xk, verbose=0), training=False))
        f = ops.convert_to_numpy(ops.broadcast_to(q.quantizer.f, (1,) + v.shape[1:]))
        lv = v * 2.0 ** f
        if lv.ndim == 4:
            lv = lv.transpose(0, 3, 1, 2)
        levels[key] = lv.reshape(len(lv), -1)
    return graph, x, model.predict(xk, verbose=0), levels


def node_levels(graph, info: dict, counts: dict, want: np.ndarray) -> np.ndarray:
    """Counts of the population holding a quantizer's value, in the order of ``want`` (tool layout)."""
    if info["output"] in counts and counts[info["output"]].shape == want.shape:
        got = counts[info["output"]]  # a max-pool gate above the quantizer
    else:
        got = counts[info["node"]]
        shape = graph.shapes()[info["node"]]
        if len(shape) == 3 and got.shape == want.shape:  # node (C, H, W), tool vector in (H, W, C) order
            c, h, w = shape
            return got.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(len(got), -1), want
    if info["hwc"]:
        want = want[:, keras_order(info["hwc"])]
    return got, want


def check(graph, counts, preds, kpred, levels, report: str) -> None:
    same = total = 0
    for key, info in graph.meta["quantizers"].items():
        got, want = node_levels(graph, info, counts, levels[key])
        assert got.shape == want.shape, key
        same += int((got == want).sum())
        total += got.size
    frac = same / total
    print(f"{report}: {same}/{total} neurons = {100 * frac:.4f} %, predictions "
          f"{100 * (preds == kpred.argmax(1)).mean():.2f} %")
    assert frac == 1.0  # every neuron, with the exact float64 default and no tie margin
    np.testing.assert_array_equal(preds, kpred.argmax(axis=1))


@pytest.mark.parametrize("name", NAMES)
def test_graph_equals_hgq_outputs(name):
    graph, x, kpred, levels = tool(name)
    out = ann_forward(graph, x)
    np.testing.assert_allclose(out, kpred, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.argmax(1), kpred.argmax(1))
    assert graph.meta["quantizers"], "no quantizer became a QuantAct"
    lv = ann_levels(graph, x)  # the oracle's levels equal the tool's, every neuron
    for key, info in graph.meta["quantizers"].items():
        got, want = node_levels(graph, info, lv, levels[key])
        np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("preset", ["casc", "bitserial"])
@pytest.mark.parametrize("name", NAMES)
def test_snn_counts_equal_hgq_levels(name, preset):
    graph, x, kpred, levels = tool(name)
    net = convert(graph, preset)
    if preset == "casc":
        res = engine_simulate(net, x, sleep="auto")
        counts = res.counts
    else:
        res = engine_simulate(net, x)
        counts = res.values
    check(graph, counts, res.predictions, kpred, levels, f"{name} {preset} (engine)")


@pytest.mark.parametrize("name", NAMES)
def test_reference_casc_counts_equal_hgq_levels(name):
    graph, x, kpred, levels = tool(name)
    n = 40
    res = ref_simulate(convert(graph, "casc"), x[:n], sleep="auto")
    check(graph, res.counts, res.predictions, kpred[:n], {k: v[:n] for k, v in levels.items()},
          f"{name} casc (reference, {n} samples)")


def test_per_channel_and_pruned_widths_are_used():
    """hgq_digits has per-channel steps before conv2 and pruned (i+f = 0) Dense inputs; both survive."""
    graph, x, _, levels = tool("hgq_digits")
    assert levels["logits/iq"].max(axis=0).min() == 0  # some inputs always 0 (pruned)
    q = {n.name: n for n in graph.nodes}
    assert q["conv2_iq"].levels == q["logits_iq"].levels == 7
    assert "logits_iq_scale" in q  # per-neuron steps after a flatten: an exact diagonal scale
    assert np.count_nonzero(np.diag(q["logits_iq_scale"].weight) == 0) > 0


def test_grouped_and_depthwise_qconv2d_keep_groups_and_per_channel_steps():
    """hgq_groups: depthwise (groups = 8) and grouped (groups = 4) QConv2D, both reading per-channel steps that
    differ between channels (folded per group into the kernel); the exactness tests above cover their values."""
    import keras
    from keras import ops

    graph, *_ = tool("hgq_groups")
    assert graph.node("dw_preact").groups == 8 and graph.node("dw_preact").weight.shape == (8, 1, 3, 3)
    assert graph.node("gconv_preact").groups == 4 and graph.node("gconv_preact").weight.shape == (8, 2, 3, 3)
    model = keras.models.load_model(FIXTURES / "hgq_groups.keras", compile=False)
    for lname in ("dw", "gconv"):
        f = ops.convert_to_numpy(model.get_layer(lname).iq.quantizer.f)
        assert f.shape == (1, 1, 1, 8) and len(np.unique(f)) > 1, lname


def test_convergent_rounding_is_half_even_and_ties_occur():
    """RND_CONV (HGQ2: ops.round, ties to even) → QuantAct rounding="half_even" with φ = ½; RND stays a floor.
    The fixture's inputs to these quantizers hit ties, where round-half-up would give other levels."""
    import keras
    from keras import ops

    graph, x, _, levels = tool("hgq_groups")
    assert {graph.node(f"{n}_iq").rounding for n in ("conv1", "dw", "logits")} == {"half_even"}
    assert graph.node("gconv_iq").rounding == "floor"
    assert all(graph.node(f"{n}_iq").phase == 0.5 for n in ("conv1", "dw", "gconv", "logits"))
    model = keras.models.load_model(FIXTURES / "hgq_groups.keras", compile=False)
    xk = x.transpose(0, 2, 3, 1)
    ties = 0
    for lname in ("conv1", "dw", "logits"):
        lay = model.get_layer(lname)
        v = keras.Model(model.inputs, lay.input).predict(xk, verbose=0) if lname != "conv1" else xk
        f = ops.convert_to_numpy(ops.broadcast_to(lay.iq.quantizer.f, (1,) + v.shape[1:]))
        y = v.astype(np.float64) * 2.0 ** f
        hi = ops.convert_to_numpy(ops.broadcast_to(lay.iq.quantizer.i, (1,) + v.shape[1:])) + f
        tie = (y - np.floor(y) == 0.5) & (np.floor(y) % 2 == 0) & (y < 2.0 ** hi - 1)  # half-up would differ
        ties += int(tie.sum())
    print(f"hgq_groups: {ties} half-even ties below the top level")
    assert ties > 0


def test_pools_and_residual_qadd_structure():
    """hgq_pool: QAveragePooling2D (per-channel steps: an exact unscale before the AvgPool), a residual QAdd with
    one quantizer per input, QGlobalAveragePooling2D; exactness is checked by the parametrized tests above."""
    graph, *_ = tool("hgq_pool")
    assert graph.node("add").kind == "add" and set(graph.node("add").inputs) == {"add_iq0", "add_iq1"}
    assert graph.node("add_iq0").rounding == "floor" and graph.node("add_iq1").rounding == "half_even"
    assert graph.node("pool1").kind == "avgpool" and graph.node("gap_pool").kind == "avgpool"
    unscale = graph.node("pool1_iq_unscale").weight.reshape(-1)
    assert len(np.unique(unscale)) == 3  # steps 2^-4, 2^-3, 2^-2 on one L = 15
    assert {k.split("/")[1] for k in graph.meta["quantizers"] if k.startswith("add/")} == {"iq0", "iq1"}


def test_qbatchnorm_folds_hgq2_quantized_scale_and_offset_into_the_conv():
    """bn2's kq/bq-quantized scale and offset (hgq2's own ``qscaler_and_qoffset``) are folded into conv2 exactly."""
    import keras
    from keras import ops

    graph, *_ = tool("hgq_pool")
    assert "bn2" not in {n.name for n in graph.nodes} and graph.meta["keras_layers"]["bn2"] == "conv2"
    model = keras.models.load_model(FIXTURES / "hgq_pool.keras", compile=False)
    qs, qo = (ops.convert_to_numpy(a).astype(np.float64) for a in model.get_layer("bn2").qscaler_and_qoffset)
    conv = model.get_layer("conv2")
    k, bias = (ops.convert_to_numpy(a).astype(np.float64) for a in (conv.qkernel, conv.qbias))
    assert len(np.unique(qs)) > 1 and np.any(qo != 0)
    node = graph.node("conv2")
    np.testing.assert_array_equal(node.weight, (k * qs).transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(node.bias, bias * qs + qo)
    # bn1 sits between an average pool and a quantizer: nothing to fold into, it stays an exact per-channel node
    qs1, qo1 = (ops.convert_to_numpy(a).astype(np.float64) for a in model.get_layer("bn1").qscaler_and_qoffset)
    bn1 = graph.node("bn1")
    assert bn1.kind == "conv" and bn1.groups == 8 and bn1.inputs == ("pool1",)
    np.testing.assert_array_equal(bn1.weight.reshape(-1), qs1)
    np.testing.assert_array_equal(bn1.bias, qo1)


def test_qbatchnorm_on_another_axis_is_refused(tmp_path):
    path = rewrite("hgq_pool", tmp_path, config=lambda cfg: layer_cfg(cfg, "bn2").update(axis=1))
    with pytest.raises(ConversionError, match=r"^layer 'bn2' \(QBatchNormalization\): axis=1 is not supported"):
        kfront.load(path)


def test_qadd_with_wrong_number_of_quantizers_is_refused(tmp_path):
    def one_conf(cfg):
        c = layer_cfg(cfg, "add")
        c["iq_confs"] = c["iq_confs"][:1]
    path = rewrite("hgq_pool", tmp_path, config=one_conf)
    with pytest.raises(ConversionError, match=r"^layer 'add' \(QAdd\): iq_confs holds 1 configs for 2 inputs"):
        kfront.load(path)


def test_different_level_counts_per_channel_of_a_grouped_conv_are_refused(tmp_path):
    def widths(h):
        g = h["layers/q_conv2d_2/iq/quantizer/vars"]  # gconv's iq: i, f, k of shape (1, 1, 1, 8)
        i = g["0"][()]
        i[..., 3] += 1  # channel 3 gets i+f = 4 (L = 15) instead of 3
        g["0"][...] = i
    path = rewrite("hgq_groups", tmp_path, weights=widths)
    with pytest.raises(ConversionError, match=r"^layer 'gconv' \(QConv2D\): iq quantizer: neurons have different "
                                              r"bit widths i\+f = \[3, 4\].*per-neuron L is not supported"):
        kfront.load(path)


# ---------------------------------------------------------------- quantizer math vs hgq2's own

@pytest.mark.parametrize("overflow", ["SAT", "SAT_SYM", "WRAP"])
@pytest.mark.parametrize("rnd", ["TRN", "RND", "RND_CONV", "TRN_ZERO", "RND_ZERO", "RND_MIN_INF", "RND_INF"])
def test_fixed_point_quantize_equals_hgq2(rnd, overflow):
    pytest.importorskip("hgq")
    from keras import ops
    from quantizers.fixed_point._fixed_point_ops import _get_fixed_quantizer

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 3, 4000), rng.integers(-64, 64, 1000) / 8.0]).astype(np.float32)
    k = rng.integers(0, 2, x.shape).astype(np.float32)
    i = rng.integers(-3, 4, x.shape).astype(np.float32)
    f = rng.integers(-1, 5, x.shape).astype(np.float32)
    t = [ops.convert_to_tensor(a) for a in (x, k, i, f)]
    want = ops.convert_to_numpy(_get_fixed_quantizer(rnd, overflow)(*t, False, None))
    want = np.where(k + i + f > 0, want, 0.0)
    np.testing.assert_array_equal(FP.quantize(x, k, i, f, rnd, overflow), want)


# ---------------------------------------------------------------- errors name the layer, class and what is supported

def rewrite(name: str, tmp_path: Path, config=None, weights=None) -> Path:
    """Copy fixture ``name`` with its config.json edited by ``config(cfg)`` and weights by ``weights(h5)``."""
    src = FIXTURES / f"{name}.keras"
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(files["config.json"])
    if config:
        config(cfg)
    files["config.json"] = json.dumps(cfg).encode()
    if weights:
        buf = io.BytesIO(files["model.weights.h5"])
        with h5py.File(buf, "r+") as h:
            weights(h)
        files["model.weights.h5"] = buf.getvalue()
    out = tmp_path / f"{name}_edited.keras"
    with zipfile.ZipFile(out, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return out


def layer_cfg(cfg: dict, name: str) -> dict:
    return next(e["config"] for e in cfg["config"]["layers"] if e["config"].get("name") == name)


def set_iq(name: str, **kw):
    def edit(cfg):
        layer_cfg(cfg, name)["iq_conf"]["config"].update(kw)
    return edit


@pytest.mark.parametrize("edit, match", [
    (set_iq("conv2", round_mode="RND_MIN_INF"), r"round_mode 'RND_MIN_INF' is not supported on activations \(it "
                                                r"rounds ties down.*supported: TRN \(floor\), RND \(round half up\), "
                                                r"RND_CONV \(half to even\)"),
    (set_iq("conv2", round_mode="S_RND_ZERO"), r"round_mode 'S_RND_ZERO' is not supported on activations"),
    (set_iq("conv2", overflow_mode="WRAP_SM"), r"overflow_mode 'WRAP_SM' is not supported; supported: SAT, SAT_SYM"),
    (set_iq("conv2", q_type="float"), r"q_type='float' is not supported; supported: fixed-point 'kif', 'kbi'"),
    (set_iq("conv2", scaler=2.0), r"scaler=2.0 is not supported"),
    (lambda cfg: layer_cfg(cfg, "conv2").update(activation="tanh"), r"activation 'tanh' is not supported"),
])
def test_unsupported_quantizer_config_names_layer(tmp_path, edit, match):
    path = rewrite("hgq_digits", tmp_path, config=edit)
    with pytest.raises(ConversionError, match=r"layer 'conv2' \(QConv2D\): .*" + match):
        kfront.load(path)


def test_wrap_activation_is_refused(tmp_path):
    def wrap(cfg):
        layer_cfg(cfg, "conv2")["iq_conf"]["config"]["overflow_mode"] = "WRAP"

    def reorder(h):  # WRAP keeps i untrained: Keras saves f, k, i, i_decay_speed
        g = h["layers/q_conv2d_1/iq/quantizer/vars"]
        i, f, k = (g[n][()] for n in "012")
        for n in "012":
            del g[n]
        for n, a in zip("0123", (f, k, i, np.float32(0.01))):
            g[n] = a
    path = rewrite("hgq_digits", tmp_path, config=wrap, weights=reorder)
    with pytest.raises(ConversionError, match=r"layer 'conv2' \(QConv2D\): iq quantizer: overflow_mode 'WRAP' wraps"):
        kfront.load(path)


def test_signed_input_quantizer_is_refused(tmp_path):
    def signed(h):
        g = h["layers/q_conv2d/iq/quantizer/vars"]
        g["2"][...] = np.ones_like(g["2"][()])  # k = 1 on the raw input
    path = rewrite("hgq_digits", tmp_path, weights=signed)
    with pytest.raises(ConversionError, match=r"layer 'conv1' \(QConv2D\): iq quantizer: a signed \(k=1\) quantizer"):
        kfront.load(path)


def test_signed_quantizer_after_relu_is_accepted():
    graph, *_ = tool("hgq_mixed")  # pool1's iq is a signed KBI SAT_SYM quantizer reading conv1's ReLU
    assert graph.meta["quantizers"]["pool1/iq"]["node"] == "pool1_iq"
    assert not any(n.kind == "relu" for n in graph.nodes)


def test_different_level_counts_in_one_layer_are_refused(tmp_path):
    def widths(h):
        g = h["layers/q_dense/iq/quantizer/vars"]  # i, f, k
        i, f = g["0"][()], g["1"][()]
        live = np.flatnonzero((i + f).reshape(-1) > 0)
        i.reshape(-1)[live[0]] += 1  # one neuron gets i+f = 4 (L = 15) instead of 3
        g["0"][...] = i
    path = rewrite("hgq_digits", tmp_path, weights=widths)
    with pytest.raises(ConversionError, match=r"layer 'logits' \(QDense\): iq quantizer: neurons have different "
                                              r"bit widths i\+f = \[3, 4\].*per-neuron L is not supported"):
        kfront.load(path)


def test_per_position_steps_on_a_map_are_refused(tmp_path):
    def per_position(cfg):
        layer_cfg(cfg, "conv2")["iq_conf"]["config"]["homogeneous_axis"] = [0]

    def widths(h):
        g = h["layers/q_conv2d_1/iq/quantizer/vars"]  # (1, 1, 1, 8) → (1, 8, 8, 8), one position differs
        i, f, k = (np.broadcast_to(g[n][()], (1, 8, 8, 8)).copy() for n in "012")
        i[0, 0, 0, 0] -= 1
        f[0, 0, 0, 0] += 1
        for n, a in zip("012", (i, f, k)):
            del g[n]
            g[n] = a
    path = rewrite("hgq_digits", tmp_path, config=per_position, weights=widths)
    with pytest.raises(ConversionError, match=r"layer 'conv2' \(QConv2D\): the iq quantizer's step 2\^-f varies "
                                              r"over the positions of a feature map"):
        kfront.load(path)


def test_missing_quantizer_variables_are_reported(tmp_path):
    path = rewrite("hgq_digits", tmp_path, weights=lambda h: h.__delitem__("layers/q_dense/iq"))
    with pytest.raises(ConversionError, match=r"layer 'logits' \(QDense\): the file holds no variables for the iq"):
        kfront.load(path)


def test_cli_reports_unsupported_quantizer_in_one_line(tmp_path):
    from click.testing import CliRunner

    from evsnn.cli import cli

    path = rewrite("hgq_digits", tmp_path, config=set_iq("conv2", round_mode="RND_ZERO"))
    r = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "net.h5")])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output
    assert "layer 'conv2' (QConv2D)" in lines[0] and "supported: TRN" in lines[0]


def test_cli_converts_hgq_model(tmp_path):
    from click.testing import CliRunner

    from evsnn.cli import cli

    r = CliRunner().invoke(cli, ["convert", str(FIXTURES / "hgq_digits.keras"), "--preset", "casc",
                                 "-o", str(tmp_path / "net.h5")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "net.h5").is_file()


# ---------------------------------------------------------------- no tie margin: the file's own quantizers

def test_quantizers_keep_the_files_phase():
    """The graph holds HGQ2's quantizers as they are (TRN: φ = 0, RND: φ = ½), ties included: no margin is
    added (the exact presets' float64 sums and exact drive need none; an input-fed quantizer with a margin
    would round a value just below a boundary up, unlike the tool)."""
    graph, *_ = tool("hgq_digits")
    assert "tie_margin" not in {k for v in graph.meta["quantizers"].values() for k in v}
    assert graph.node("conv2_iq").phase == 0.5
    for info in graph.meta["quantizers"].values():
        assert graph.node(info["node"]).phase in (0.0, 0.5)


@pytest.mark.parametrize("q_type, rnd", [("kif", "TRN"), ("kbi", "RND"), ("kbi", "TRN")])
def test_wrap_weight_quantizers_match_hgq2(tmp_path, q_type, rnd):
    """Trainable WRAP weight quantizers: HGQ2 only rounds (kif always, kbi for RND); the graph does the same."""
    pytest.importorskip("hgq")
    import keras
    from hgq.config import QuantizerConfig
    from hgq.layers import QDense

    bits = dict(k0=True, i0=0, f0=3) if q_type == "kif" else dict(k0=True, b0=4, i0=0)
    kq = QuantizerConfig(q_type, "weight", round_mode=rnd, overflow_mode="WRAP", **bits)
    iq = QuantizerConfig("kif", "datalane", k0=False, i0=1, f0=3, round_mode="TRN", overflow_mode="SAT",
                         homogeneous_axis=(0, 1))
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((12,)), QDense(6, kq_conf=kq, iq_conf=iq, name="d")])
    w = model.get_layer("d").get_weights()
    w[0] = np.random.default_rng(0).normal(0, 1.5, w[0].shape).astype(np.float32)  # many weights beyond ±1
    model.get_layer("d").set_weights(w)
    path = tmp_path / "wrap.keras"
    model.save(path)
    x = np.random.default_rng(1).integers(0, 16, (64, 12)).astype(np.float32) / 8
    np.testing.assert_allclose(ann_forward(kfront.load(path), x), model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_qbatchnorm_with_wrong_statistics_shape_is_refused(tmp_path):
    def short(h):
        g = h["layers/q_batch_normalization/vars"]
        mean = g["2"][()]
        del g["2"]
        g["2"] = mean[:5]
    path = rewrite("hgq_pool", tmp_path, weights=short)
    with pytest.raises(ConversionError, match=r"^layer 'bn1' \(QBatchNormalization\): weights of shapes .* for 8 "
                                              r"channels"):
        kfront.load(path)


@pytest.mark.parametrize("center, scale", [(False, False), (True, False), (False, True)])
def test_qbatchnorm_without_center_or_scale_matches_hgq2(tmp_path, center, scale):
    """hgq2 0.2.0 uses γ = 1 without ``scale`` and β = 1 (not 0) without ``center``; the graph does the same."""
    pytest.importorskip("hgq")
    import keras
    from hgq.config import QuantizerConfig
    from hgq.layers import QBatchNormalization, QDense

    iq = QuantizerConfig("kif", "datalane", k0=False, i0=1, f0=3, round_mode="TRN", overflow_mode="SAT",
                         homogeneous_axis=(0, 1))
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((12,)), QDense(6, iq_conf=iq, name="d"),
                              QBatchNormalization(center=center, scale=scale, enable_iq=False, name="bn")])
    bn, rng = model.get_layer("bn"), np.random.default_rng(4)
    bn.moving_mean.assign(rng.normal(0, 0.5, 6).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.3, 2.0, 6).astype(np.float32))
    path = tmp_path / "bn.keras"
    model.save(path)
    graph = kfront.load(path)
    assert "bn" not in {n.name for n in graph.nodes}  # folded into the Dense
    x = rng.integers(0, 16, (64, 12)).astype(np.float32) / 8
    np.testing.assert_allclose(ann_forward(graph, x), model.predict(x, verbose=0), rtol=0, atol=1e-5)
