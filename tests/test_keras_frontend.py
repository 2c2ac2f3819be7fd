"""Keras frontend: .keras / legacy .h5 → AnnGraph, checked against Keras itself (torch backend).

Float32 vs float64. Keras computes in float32, ``ann_forward`` in float64 with
BatchNorm folded, so pre-activations differ by ~1e-6. Continuous outputs agree
to 1e-5. A quantizer, though, can flip a level when its pre-activation lies
within that error of a level boundary, and the flip then propagates. The
comparisons therefore keep only samples whose every QuantAct pre-activation
(in level units, z·L/λ + φ) is at least ``MARGIN`` = 1e-4 from a boundary
1..L; with these fixtures that keeps most of the 48 random inputs, and the
tests require at least half. On the kept samples the tolerance is 1e-5.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from evsnn import frontends  # noqa: E402
from evsnn.errors import ConversionError, FormatError  # noqa: E402
from evsnn.frontends import keras as kfront  # noqa: E402
from evsnn.frontends.keras.layers import keras_order  # noqa: E402
from evsnn.ir import ann as A  # noqa: E402
from evsnn.reference.ann import ann_forward  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
MAKER = Path(__file__).parent / "fixtures" / "make_keras.py"
NAMES = ("quant_cnn", "clip_cnn", "residual", "maxpool")
SUFFIXES = (".keras", ".h5")
MARGIN = 1e-4
TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras internals


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def keras():
    mod = pytest.importorskip("keras")
    import evsnn.keras  # noqa: F401  registers QuantReLU for keras.models.load_model
    return mod


@functools.lru_cache(maxsize=None)
def maker():
    """tests/fixtures/make_keras.py as a module (imports keras)."""
    spec = importlib.util.spec_from_file_location("make_keras", MAKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fixture_dir(keras, tmp_path_factory):
    """The committed fixtures, or freshly generated ones if any is missing."""
    if all((FIXTURES / f"{n}{s}").is_file() for n in NAMES for s in SUFFIXES):
        return FIXTURES
    out = tmp_path_factory.mktemp("keras_fixtures")
    maker().main(out)
    return out


def inputs_nhwc(n: int = 48, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 12, 12, 3)).astype(np.float32)


def to_graph_layout(v: np.ndarray, hwc=None) -> np.ndarray:
    """A Keras value (N, H, W, C) or (N, F) in the graph's layout (N, C, H, W) / NCHW-flattened order."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 4:
        return v.transpose(0, 3, 1, 2)
    return v[:, keras_order(hwc)] if hwc else v


def safe_samples(graph: A.AnnGraph, vals: dict) -> np.ndarray:
    """Mask of samples with no QuantAct pre-activation within MARGIN (level units) of a boundary 1..L."""
    n = len(next(iter(vals.values())))
    ok = np.ones(n, dtype=bool)
    for node in graph.nodes:
        if isinstance(node, A.QuantAct):
            y = vals[node.inputs[0]].reshape(n, -1) * (node.levels / node.scale) + node.phase
            k = np.clip(np.round(y), 1, node.levels)
            ok &= np.abs(y - k).min(axis=1) > MARGIN
    return ok


@functools.lru_cache(maxsize=None)
def keras_run(path: str):
    """(graph, graph values, keras values by layer name, safe-sample mask) for one fixture file."""
    import keras

    import evsnn.keras  # noqa: F401  registers QuantReLU

    model = keras.models.load_model(path, compile=False)
    graph = kfront.load(path)
    x = inputs_nhwc()
    present = {lay.name for lay in model.layers if not isinstance(lay, keras.layers.InputLayer)}
    names = [n for n in graph.meta["keras_layers"] if n in present]
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    kvals = dict(zip(names, sub.predict(x, verbose=0)))
    kvals["__predict__"] = model.predict(x, verbose=0)
    vals = ann_forward(graph, x.transpose(0, 3, 1, 2), return_all=True)
    return graph, vals, kvals, safe_samples(graph, vals), model


def write_h5(path: Path, config: dict, weights: dict[str, list[tuple[str, np.ndarray]]]) -> Path:
    """A legacy HDF5 model file (Keras 2 layout) from a config and {layer: [(weight name, array)]}."""
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        mw = f.create_group("model_weights")
        for layer, ws in weights.items():
            g = mw.create_group(layer)
            g.attrs["weight_names"] = [n.encode() for n, _ in ws]
            for n, w in ws:
                g.create_dataset(n, data=w)
    return path


def write_keras(path: Path, config: dict, weights: dict[str, list[np.ndarray]] | None = None) -> Path:
    """A .keras archive from a config and {layer name: [vars]} (Keras 3 weight layout)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for i, (layer, ws) in enumerate((weights or {}).items()):
            v = f.create_group(f"layers/layer_{i}/vars")
            v.attrs["name"] = layer
            for j, w in enumerate(ws):
                v.create_dataset(str(j), data=w)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("model.weights.h5", buf.getvalue())
    return path


def layer(cls: str, name: str, **cfg) -> dict:
    return {"class_name": cls, "config": {"name": name, **cfg}}


def seq_config(*layers: dict, shape=(4, 4, 2)) -> dict:
    return {"class_name": "Sequential", "config": {"name": "m", "layers": [
        layer("InputLayer", "in", batch_shape=[None, *shape]), *layers]}}


@pytest.fixture
def builtin_frontends(monkeypatch):
    """Keep only built-in frontends that exist in this checkout (the ONNX one may not yet)."""
    for name, mod in list(frontends.BUILTIN.items()):
        if importlib.util.find_spec(mod) is None:
            monkeypatch.delitem(frontends.BUILTIN, name)


# ---------------------------------------------------------------- fixtures vs Keras

@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", NAMES)
def test_fixture_equals_keras_predict(fixture_dir, name, suffix, builtin_frontends):
    path = fixture_dir / f"{name}{suffix}"
    assert kfront.can_open(path)
    assert frontends.find_frontend(path) is kfront
    graph, vals, kvals, ok, _ = keras_run(str(path))
    assert ok.sum() >= len(ok) // 2, f"only {ok.sum()} of {len(ok)} samples clear of quantizer ties"
    out = vals[graph.output]
    np.testing.assert_allclose(out[ok], to_graph_layout(kvals["__predict__"])[ok], rtol=0, atol=TOL)
    again = frontends.load_model(path)
    assert [n.name for n in again.nodes] == [n.name for n in graph.nodes]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", NAMES)
def test_every_surviving_layer_output_matches(fixture_dir, name, suffix):
    """meta['keras_layers'] maps each Keras layer to the node holding its output; values agree."""
    graph, vals, kvals, ok, _ = keras_run(str(fixture_dir / f"{name}{suffix}"))
    hwc = graph.meta["flatten_hwc"]
    for lname, node in graph.meta["keras_layers"].items():
        if lname in kvals:
            got, want = vals[node][ok], to_graph_layout(kvals[lname], hwc.get(lname))[ok]
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL, err_msg=f"layer {lname} → node {node}")


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", ["quant_cnn", "maxpool"])
def test_quantrelu_layers_are_quantact_nodes(fixture_dir, name, suffix):
    graph, vals, kvals, ok, model = keras_run(str(fixture_dir / f"{name}{suffix}"))
    quant = [lay for lay in model.layers if type(lay).__name__ == "QuantReLU"]
    assert quant
    for lay in quant:
        node = graph.node(lay.name)
        assert isinstance(node, A.QuantAct)
        assert (node.levels, node.scale, node.phase) == (lay.levels, lay.threshold, 0.5 if lay.round_half else 0.0)
        want = to_graph_layout(kvals[lay.name], graph.meta["flatten_hwc"].get(lay.name))
        np.testing.assert_allclose(vals[lay.name][ok], want[ok], rtol=0, atol=TOL)
        lv = vals[lay.name] * (node.levels / node.scale)  # outputs sit exactly on the levels
        np.testing.assert_allclose(lv, np.round(lv), atol=1e-9)


def test_graph_structure(fixture_dir):
    """Folding and padding decisions on the fixtures (.keras and .h5 give identical graphs)."""
    g = {n: kfront.load(fixture_dir / f"{n}.keras") for n in NAMES}
    for n in NAMES:
        h = kfront.load(fixture_dir / f"{n}.h5")
        assert [(a.name, a.kind) for a in h.nodes] == [(a.name, a.kind) for a in g[n].nodes]
    q = g["quant_cnn"]
    assert [n.kind for n in q.nodes] == ["input", "conv", "quant", "avgpool", "conv", "quant", "flatten", "dense",
                                         "quant", "dense"]  # Rescaling, BN folded; Dropout gone
    assert q.node("conv1").pads == (1, 1, 1, 1) and q.node("conv2").groups == 2
    assert q.node("q2").phase == 0.5 and q.node("q1").phase == 0.0
    assert q.meta["flatten_hwc"]["flatten"] == [4, 4, 12]
    r = g["residual"]
    assert r.node("stem").pads == (1, 1, 1, 1)  # ZeroPadding2D folded into the valid conv
    assert isinstance(r.node("rescale"), A.Conv)  # offset ≠ 0 before a padded conv: kept, exact
    assert r.node("b1_conv").pads == (0, 0, 1, 1)  # 'same', stride 2, 12 px: pad bottom/right only
    assert r.node("b1_conv").stride == (2, 2)
    assert "add_bn" not in [n.name for n in r.nodes]  # folded through the Add into both branches
    assert r.meta["keras_layers"]["add_bn"] == "add" and "b2_conv" not in r.meta["keras_layers"]
    assert [n.kind for n in r.nodes if n.name.startswith("fc1")] == ["dense", "relu"]
    c = g["clip_cnn"]
    assert [(n.name, n.scale) for n in c.nodes if isinstance(n, A.ClipAct)] == [("act1", 1.0), ("act2", 1.0),
                                                                                ("act3", 6.0)]
    assert c.node("smooth_bn").groups == 8 and c.node("smooth_bn").weight.shape == (8, 1, 1, 1)
    assert c.node("dw2").groups == 8 and c.node("dw2").weight.shape == (16, 1, 3, 3)
    m = g["maxpool"]
    assert m.node("pool2").pads == (0, 0, 1, 1) and isinstance(m.node("conv1"), A.Relu)
    assert m.meta["source"] == "keras" and m.meta["format"] == "keras-v3"
    assert "conv1_preact" not in m.meta["tensors"] and m.meta["tensors"]["conv1"] == "conv1"
    assert q.meta["tensors"]["flatten"] == "flatten" and q.meta["keras_layers"]["drop"] == "flatten"


def test_can_open_by_content_not_suffix(fixture_dir, tmp_path, builtin_frontends):
    for suffix in SUFFIXES:
        renamed = tmp_path / f"model{suffix}.bin"
        shutil.copy(fixture_dir / f"maxpool{suffix}", renamed)
        assert kfront.can_open(renamed)
        assert frontends.find_frontend(renamed) is kfront
        assert len(kfront.load(renamed).nodes) == 11


def test_keras_archive_without_name_attributes(fixture_dir, tmp_path):
    """Older Keras 3 files lack vars/@name: weights are found by the snake_case class path."""
    src = fixture_dir / "residual.keras"
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    wfile = tmp_path / "w.h5"
    wfile.write_bytes(members["model.weights.h5"])
    with h5py.File(wfile, "r+") as f:
        f.visit(lambda p: f[p].attrs.pop("name", None) if isinstance(f[p], h5py.Group) else None)
    members["model.weights.h5"] = wfile.read_bytes()
    dst = tmp_path / "old.keras"
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    a, b = kfront.load(src), kfront.load(dst)
    for x, y in zip(a.nodes, b.nodes):
        for attr in ("weight", "bias"):
            if hasattr(x, attr):
                np.testing.assert_array_equal(getattr(x, attr), getattr(y, attr))


def test_conversion_never_imports_keras(fixture_dir):
    code = ("import sys; from evsnn.frontends import load_model, keras as k; "
            f"g = k.load({str(fixture_dir / 'residual.keras')!r}); k.load({str(fixture_dir / 'quant_cnn.h5')!r}); "
            "bad = [m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules]; "
            "assert not bad, bad; print(len(g.nodes))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]


def test_fixtures_regenerate_identically(fixture_dir, tmp_path):
    """make_keras.py is seeded: regenerating gives the committed weights."""
    maker().main(tmp_path)
    for name in NAMES:
        for suffix in SUFFIXES:
            a, b = kfront.load(fixture_dir / f"{name}{suffix}"), kfront.load(tmp_path / f"{name}{suffix}")
            assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
            for x, y in zip(a.nodes, b.nodes):
                np.testing.assert_array_equal(getattr(x, "weight", 0), getattr(y, "weight", 0))
                np.testing.assert_array_equal(getattr(x, "bias", 0), getattr(y, "bias", 0))


# ---------------------------------------------------------------- layout details against Keras

def test_flatten_order_at_output_and_in_add(keras, tmp_path):
    """A flattened output keeps Keras' (H, W, C) order; Add of differently ordered vectors too."""
    L = keras.layers
    keras.utils.set_random_seed(3)
    x0 = keras.Input((3, 3, 2), name="x")
    f = L.Flatten(name="flat")(L.Conv2D(2, 2, padding="same", name="c")(x0))
    d = L.Dense(18, name="d")(L.Flatten(name="flat2")(x0))
    model = keras.Model(x0, L.Add(name="sum")([f, d]))
    m2 = keras.Model(x0, f)
    x = np.random.default_rng(0).normal(size=(5, 3, 3, 2)).astype(np.float32)
    for mdl, fname in ((model, "add.keras"), (m2, "flat_out.h5")):
        mdl.save(tmp_path / fname)
        g = kfront.load(tmp_path / fname)
        assert any(n.name.endswith("_keras_order") for n in g.nodes)
        got = ann_forward(g, x.transpose(0, 3, 1, 2))
        np.testing.assert_allclose(got, mdl.predict(x, verbose=0), rtol=0, atol=TOL)


def test_rescaling_offset_and_padding_cases(keras, tmp_path):
    """Rescaling folds into a valid conv even with an offset, and into a padded one only without."""
    L = keras.layers
    keras.utils.set_random_seed(4)
    x = np.random.default_rng(1).uniform(size=(6, 6, 6, 2)).astype(np.float32)
    cases = {
        "valid_offset": ([L.Rescaling([0.5, 2.0], offset=[0.1, -0.3], name="r"), L.Conv2D(3, 3, name="c")], False),
        "same_offset": ([L.Rescaling(0.5, offset=0.2, name="r"), L.Conv2D(3, 3, padding="same", name="c")], True),
        "same_scale": ([L.Rescaling(1 / 255, name="r"), L.Conv2D(3, 3, padding="same", name="c")], False),
        "dense_offset": ([L.Flatten(name="f"), L.Rescaling(3.0, offset=-1.0, name="r"), L.Dense(4, name="c")], False),
        "pad_avg": ([L.ZeroPadding2D(((1, 0), (2, 1)), name="r"), L.AveragePooling2D(2, name="c")], False),
        "pad_max": ([L.ZeroPadding2D(1, name="r"), L.MaxPooling2D(2, name="c")], True),
        "flat_bn": ([L.Flatten(name="f"), L.BatchNormalization(name="r"), L.Dense(4, name="c")], False),
        "pool_bn": ([L.MaxPooling2D(2, name="p"), L.BatchNormalization(name="r"), L.Flatten(name="f")], True),
    }
    for case, (layers, kept) in cases.items():
        model = keras.Sequential([keras.Input((6, 6, 2))] + layers)
        maker().randomize_bn(model, np.random.default_rng(5))
        model.save(tmp_path / f"{case}.keras")
        g = kfront.load(tmp_path / f"{case}.keras")
        assert ("r" in [n.name for n in g.nodes]) == kept, case
        got = ann_forward(g, x.transpose(0, 3, 1, 2))
        np.testing.assert_allclose(got, to_graph_layout(model.predict(x, verbose=0)), rtol=0, atol=TOL,
                                   err_msg=case)


def test_keras2_style_files(keras, tmp_path):
    """Keras 2 configs (batch_input_shape, list inbound_nodes, 'name:0' weights) read as Keras 3 ones."""
    L = keras.layers
    keras.utils.set_random_seed(5)
    ref = keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(3, 3, padding="same", strides=2, name="conv"),
                            L.BatchNormalization(name="bn"), L.ReLU(max_value=1.5, name="act"),
                            L.Flatten(name="flat"), L.Dense(4, name="fc")])
    rng = np.random.default_rng(2)
    ref.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 3), rng.normal(size=3), rng.normal(size=3),
                                     rng.uniform(0.5, 2, 3)])
    w = {lay.name: lay.get_weights() for lay in ref.layers}
    names = {"conv": ["kernel", "bias"], "bn": ["gamma", "beta", "moving_mean", "moving_variance"],
             "fc": ["kernel", "bias"]}
    weights = {k: [(f"{k}/{n}:0", a) for n, a in zip(names[k], w[k])] for k in names}
    conv = layer("Conv2D", "conv", filters=3, kernel_size=[3, 3], strides=[2, 2], padding="same",
                 data_format="channels_last", dilation_rate=[1, 1], activation="linear", use_bias=True)
    rest = [layer("BatchNormalization", "bn", axis=[3], epsilon=1e-3, center=True, scale=True),
            layer("ReLU", "act", max_value=1.5, negative_slope=0.0, threshold=0.0),
            layer("Flatten", "flat", data_format="channels_last"),
            layer("Dense", "fc", units=4, activation="linear", use_bias=True)]
    seq = {"class_name": "Sequential", "config": {"name": "k2", "layers": [
        {**conv, "config": {**conv["config"], "batch_input_shape": [None, 5, 5, 2]}}, *rest]}}
    chain = [layer("InputLayer", "inp", batch_input_shape=[None, 5, 5, 2]), conv, *rest]
    func_layers = [{**e, "name": e["config"]["name"], "inbound_nodes": [[[prev["config"]["name"], 0, 0, {}]]]
                    if prev else []} for prev, e in zip([None] + chain[:-1], chain)]
    func = {"class_name": "Model", "config": {"name": "k2f", "layers": func_layers,
                                              "input_layers": [["inp", 0, 0]], "output_layers": [["fc", 0, 0]]}}
    x = rng.uniform(size=(4, 5, 5, 2)).astype(np.float32)
    want = ref.predict(x, verbose=0)
    for cfg, fname in ((seq, "seq.h5"), (func, "func.h5")):
        g = kfront.load(write_h5(tmp_path / fname, cfg, weights))
        np.testing.assert_allclose(ann_forward(g, x.transpose(0, 3, 1, 2)), want, rtol=0, atol=TOL)


def test_quantrelu_layer(keras):
    from evsnn.keras import QuantReLU

    x = np.linspace(-1, 3, 81, dtype=np.float32)[None]
    for rh in (False, True):
        lay = QuantReLU(4, 2.0, round_half=rh)
        want = np.clip(np.floor(x * 2.0 + (0.5 if rh else 0.0)), 0, 4) / 2.0
        np.testing.assert_allclose(keras.ops.convert_to_numpy(lay(x)), want, atol=1e-7)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(lay(x, training=True)), want, atol=1e-6)
        again = QuantReLU.from_config(lay.get_config())
        assert (again.levels, again.threshold, again.round_half) == (4, 2.0, rh)
    assert keras.saving.get_registered_name(QuantReLU) == "evsnn>QuantReLU"
    for bad in ({"levels": 0}, {"levels": 2.5}, {"threshold": 0.0}):
        with pytest.raises(ValueError):
            QuantReLU(**bad)


# ---------------------------------------------------------------- errors

def _conversion_error(path, *parts):
    with pytest.raises(ConversionError) as e:
        kfront.load(path)
    msg = str(e.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, msg
    return msg


@pytest.mark.parametrize("writer", [write_keras, write_h5])
def test_unsupported_layers_name_layer_class_and_list(tmp_path, writer):
    cases = {
        "unknown": (layer("Conv3D", "vol", filters=2), ["'vol'", "Conv3D", "supported:", "Conv2D", "QuantReLU"]),
        "lambda": (layer("Lambda", "lam", function={"class_name": "__lambda__"}), ["'lam'", "Lambda", "safely",
                                                                                  "supported"]),
        "custom": ({"class_name": "MyLayer", "config": {}}, ["MyLayer", "no config", "supported"]),
        "quant_nocfg": (layer("QuantReLU", "q"), ["'q'", "QuantReLU", "levels"]),
        "leaky": (layer("ReLU", "r", negative_slope=0.1), ["'r'", "ReLU", "negative_slope", "supported"]),
        "thresh": (layer("ReLU", "r", threshold=0.5), ["threshold", "supported"]),
        "softmax": (layer("Activation", "sm", activation="softmax"), ["'sm'", "softmax", "supported"]),
        "dense4d": (layer("Dense", "d", units=3, use_bias=False), ["'d'", "Dense", "4-D", "Flatten"]),
        "dilated": (layer("Conv2D", "c", filters=1, kernel_size=[1, 1], dilation_rate=[2, 2]), ["dilation"]),
        "chfirst": (layer("MaxPooling2D", "p", data_format="channels_first"), ["channels_first", "supported"]),
        "avg_uneven": (layer("AveragePooling2D", "p", pool_size=[2, 2], strides=[2, 2], padding="same"),
                       ["'p'", "unevenly", "supported"]),
        "fused_tanh": (layer("Conv2D", "c", filters=1, kernel_size=[1, 1], activation="tanh"), ["tanh"]),
    }
    for case, (entry, parts) in cases.items():
        shape = (5, 5, 2) if case == "avg_uneven" else (4, 4, 2)
        w = {"d": [np.zeros((2, 3))], "c": [np.zeros((1, 1, 2, 1)), np.zeros(1)]}
        if writer is write_h5:
            w = {k: [(f"{k}/w{i}", a) for i, a in enumerate(v)] for k, v in w.items()}
        path = writer(tmp_path / f"{case}{writer.__name__}", seq_config(entry, shape=shape), w)
        _conversion_error(path, *parts)


def test_subclassed_and_multi_io_models(tmp_path):
    sub = {"class_name": "MyModel", "registered_name": "MyModel", "config": {"trainable": True}}
    _conversion_error(write_keras(tmp_path / "sub.keras", sub), "MyModel", "subclassed", "Sequential", "Functional")
    two = {"class_name": "Functional", "config": {"name": "f", "layers": [
        {**layer("InputLayer", "a", batch_shape=[None, 3]), "name": "a", "inbound_nodes": []},
        {**layer("InputLayer", "b", batch_shape=[None, 3]), "name": "b", "inbound_nodes": []}],
        "input_layers": [["a", 0, 0], ["b", 0, 0]], "output_layers": [["a", 0, 0]]}}
    _conversion_error(write_keras(tmp_path / "two.keras", two), "2 inputs")
    nested = seq_config(seq_config())
    _conversion_error(write_keras(tmp_path / "nested.keras", nested), "nested")


def test_non_keras_files_are_refused(tmp_path, builtin_frontends):
    text = tmp_path / "model.keras"
    text.write_text("not a model")
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hi")
    weights_only = tmp_path / "w.h5"
    with h5py.File(weights_only, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros(3))
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    for path in (text, other_zip, weights_only, empty):
        assert not kfront.can_open(path)
        with pytest.raises(FormatError) as e:
            kfront.load(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)
        with pytest.raises(FormatError):
            frontends.load_model(path)
    assert not kfront.can_open(tmp_path / "missing.keras")
    assert not kfront.can_open(tmp_path)
    with pytest.raises(FormatError):
        kfront.load(tmp_path / "missing.keras")
    no_weights = tmp_path / "noweights.keras"
    with zipfile.ZipFile(no_weights, "w") as z:
        z.writestr("config.json", json.dumps(seq_config()))
    assert kfront.can_open(no_weights)
    with pytest.raises(FormatError, match="model.weights.h5"):
        kfront.load(no_weights)


# ---------------------------------------------------------------- plugin frontends

PLUGIN = '''
from evsnn.ir.ann import AnnGraph, Input, Relu

def can_open(path):
    with open(path, "rb") as f:
        return f.read(5) == b"TOYNN"

def load(path):
    return AnnGraph(nodes=[Input("x", shape=(3,)), Relu("y", ("x",))], name="toy")
'''


def test_entry_point_plugin_is_found(tmp_path, monkeypatch, builtin_frontends):
    """A third-party frontend installed as a dist-info with an evsnn.frontends entry point is used."""
    site = tmp_path / "site"
    (site / "toy_evsnn_frontend-0.1.dist-info").mkdir(parents=True)
    (site / "toy_evsnn_frontend.py").write_text(PLUGIN)
    info = site / "toy_evsnn_frontend-0.1.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-evsnn-frontend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[evsnn.frontends]\ntoynn = toy_evsnn_frontend\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "toy_evsnn_frontend", raising=False)
    found = frontends.available()
    assert "toynn" in found and found["keras"] is kfront
    model = tmp_path / "net.toy"
    model.write_bytes(b"TOYNN v1")
    assert not kfront.can_open(model)
    assert frontends.find_frontend(model) is found["toynn"]
    graph = frontends.load_model(model)
    assert graph.name == "toy" and [n.kind for n in graph.nodes] == ["input", "relu"]
