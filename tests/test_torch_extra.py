"""The optional torch extra (evsnn.torch) and the training script bench/train_digits.py."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from evsnn.errors import ConversionError  # noqa: E402
from evsnn.reference import ann_forward, ann_levels  # noqa: E402
from evsnn.torch import QuantReLU, export_onnx, popcount, popcount_penalty, to_graph  # noqa: E402
from scripts import bench_script, has  # noqa: E402


# ---------------------------------------------------------------- QuantReLU

@pytest.mark.parametrize("round_half", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_quant_relu_values(round_half, training):
    L, lam = 7, 1.5
    m = QuantReLU(L, lam, round_half).train(training)
    x = torch.linspace(-1.0, 2.5, 301)
    y = m(x).detach().numpy().astype(np.float64)
    xs = x.numpy().astype(np.float64)
    if round_half:
        want = np.clip(np.floor(xs * L / lam + 0.5), 0, L) * lam / L
    else:
        want = np.floor(np.clip(xs * L / lam, 0, L)) * lam / L
    np.testing.assert_allclose(y, want, atol=1e-6)
    if training:
        q = m.last_levels.detach().numpy()
        np.testing.assert_array_equal(q, np.round(q))
        assert q.min() == 0 and q.max() == L


def test_quant_relu_straight_through_gradients():
    L, lam = 4, 2.0
    m = QuantReLU(L, lam).train()
    x = torch.tensor([-0.5, 0.3, 0.9, 1.7, 3.0], requires_grad=True)
    m(x).sum().backward()
    # d/dx: 1 inside (0, λ), 0 below and above
    np.testing.assert_allclose(x.grad.numpy(), [0, 1, 1, 1, 0])
    # d/dλ (QCFS): 0 below, q/L − x/λ inside, 1 above the clip
    xs = np.array([0.3, 0.9, 1.7])
    q = np.floor(xs * L / lam)
    want = (q / L - xs / lam).sum() + 1.0
    assert m.threshold.grad.item() == pytest.approx(want, abs=1e-6)


def test_quant_relu_fixed_threshold_and_bad_args():
    m = QuantReLU(3, 1.0, trainable=False)
    assert not m.threshold.requires_grad
    with pytest.raises(ValueError):
        QuantReLU(0)
    with pytest.raises(ValueError):
        QuantReLU(3, -1.0)
    assert "levels=3" in repr(m)


# ---------------------------------------------------------------- popcount regularizer

def test_popcount_values_and_surrogate_gradient():
    q = torch.arange(16, dtype=torch.float32, requires_grad=True)
    pc = popcount(q)
    assert pc.tolist() == [bin(i).count("1") for i in range(16)]
    pc.sum().backward()
    np.testing.assert_allclose(q.grad.numpy(), 1.0 / ((1.0 + np.arange(16)) * math.log(2.0)), rtol=1e-6)


def test_popcount_penalty_is_mean_popcount_and_flows_to_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), QuantReLU(7, 1.0), nn.Linear(5, 4), QuantReLU(7, 1.0))
    with pytest.raises(RuntimeError):
        popcount_penalty(model)
    model.train()
    x = torch.randn(8, 6)
    model(x)
    pen = popcount_penalty(model, beta=2.0)
    levels = [m.last_levels.detach().numpy().astype(int) for m in model if isinstance(m, QuantReLU)]
    bits = sum(np.vectorize(lambda v: bin(v).count("1"))(lv).sum() for lv in levels)
    want = 2.0 * bits / sum(lv.size for lv in levels)
    assert pen.item() == pytest.approx(want)
    pen.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_popcount_regularizer_lowers_popcount():
    """A few steps of pure penalty descent lower the mean popcount of a random network."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 32), QuantReLU(7, 1.0)).train()
    x = torch.rand(64, 10) * 2
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x)
    start = popcount_penalty(model).item()
    for _ in range(20):
        model(x)
        loss = popcount_penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model(x)
    assert popcount_penalty(model).item() < start


# ---------------------------------------------------------------- to_graph and ONNX export

def _small_cnn(round_half=False, L=7):
    torch.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), QuantReLU(L, 2.0, round_half),
                      nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6),
                      QuantReLU(L, 1.5, round_half), nn.Flatten(), nn.Dropout(0.1), nn.Linear(24, 3))
    m.train()
    for _ in range(3):  # non-trivial BN statistics
        m(torch.randn(16, 1, 8, 8))
    return m.eval()


def _inputs(n=32, seed=0):
    return np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("round_half", [False, True])
def test_to_graph_matches_torch(round_half):
    m = _small_cnn(round_half)
    g = to_graph(m, (1, 8, 8))
    quants = [n for n in g.nodes if n.kind == "quant"]
    assert [n.phase for n in quants] == [0.5 if round_half else 0.0] * 2
    assert [n.levels for n in quants] == [7, 7]
    x = _inputs()
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ann_forward(g, x), want, atol=1e-4)


def test_to_graph_refuses_unsupported_module():
    with pytest.raises(ConversionError, match="Sigmoid"):
        to_graph(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()), (4,))
    with pytest.raises(ConversionError, match="Sequential"):
        to_graph(nn.Linear(4, 4), (4,))
    with pytest.raises(ConversionError, match="BatchNorm"):
        to_graph(nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4)), (4,))


@pytest.mark.parametrize("round_half", [False, True])
def test_onnx_export_is_the_plain_pattern(tmp_path, round_half):
    onnx = pytest.importorskip("onnx")
    m = _small_cnn(round_half)
    path = tmp_path / "m.onnx"
    export_onnx(m, path, (1, 8, 8))
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    allowed = {"Conv", "Mul", "Div", "Add", "Clip", "Floor", "Flatten", "Gemm", "Constant", "AveragePool",
               "BatchNormalization", "Identity", "Reshape"}
    assert ops <= allowed, ops - allowed
    assert "Floor" in ops and "Sub" not in ops  # no straight-through leftovers (x + (floor(x) − x))
    assert [i.name for i in model.graph.input] == ["input"]  # λ is a constant, not an input
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    x = _inputs()
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    if has("onnxruntime"):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], want, atol=1e-5)
    if has("evsnn.frontends.onnx"):
        from evsnn.frontends import load_model

        g = load_model(path)
        quants = [n for n in g.nodes if n.kind == "quant"]
        assert [n.levels for n in quants] == [7, 7]
        assert [n.phase for n in quants] == [0.5 if round_half else 0.0] * 2
        lams = [float(q.threshold.detach()) for q in m if isinstance(q, QuantReLU)]
        np.testing.assert_allclose([n.scale for n in quants], lams, rtol=1e-6)
        np.testing.assert_allclose(ann_forward(g, x), want, atol=1e-4)


# ---------------------------------------------------------------- the training script

def test_train_digits_script_on_a_few_batches(tmp_path):
    pytest.importorskip("onnx")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    td = bench_script("train_digits")
    want_keras = has("keras") and has("evsnn.keras") and os.environ.get("KERAS_BACKEND") == "torch"
    args = ["--out-dir", str(tmp_path), "--epochs", "1", "--max-batches", "3", "--quiet"]
    if not want_keras:
        args.append("--no-keras")
    meta = td.main(args)
    assert meta["steps"] == 3 and meta["levels"] == 7 and meta["seed"] == 0
    saved = json.loads((tmp_path / "digits_cnn.json").read_text())
    assert saved["accuracy"]["test_torch"] == meta["accuracy"]["test_torch"]
    assert 0.0 <= saved["accuracy"]["test_ann"] <= 1.0
    assert (tmp_path / "digits_cnn.onnx").stat().st_size < 200_000
    if "test_onnxruntime" in saved["accuracy"]:
        assert saved["onnx_max_abs_diff"] < 1e-4
    if want_keras:
        assert (tmp_path / "digits_cnn.keras").exists()
        assert saved["keras_argmax_agree"] == 1.0 and saved["keras_max_abs_diff"] < 1e-4

    from evsnn.datasets import load_digits

    x, _ = load_digits("test")
    x = x[:64]
    for suffix, mod in (("onnx", "evsnn.frontends.onnx"), ("keras", "evsnn.frontends.keras")):
        f = tmp_path / f"digits_cnn.{suffix}"
        if f.exists() and has(mod):
            from evsnn.frontends import load_model

            g = load_model(f)
            assert [n.levels for n in g.nodes if n.kind == "quant"] == [7, 7]
            lv = ann_levels(g, x)
            assert all(v.min() >= 0 and v.max() <= 7 for v in lv.values())


def test_train_digits_is_deterministic():
    td = bench_script("train_digits")
    from evsnn.datasets import load_digits

    x, y = load_digits("train")
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        m = td.build_model(3)
        td.train_model(m, x[:256], y[:256], epochs=1, seed=5, max_batches=2, beta=0.5)
        outs.append(td.predict(m, x[:32]))
    np.testing.assert_array_equal(outs[0], outs[1])
