"""The demo: every preset on a small digits model, one table, results files and a plot."""

import os
import pickle
import re

import numpy as np
import pytest
from click.testing import CliRunner

import evsnn.frontends as frontends
from evsnn import demo
from evsnn.cli import cli
from evsnn.datasets import load_digits
from evsnn.errors import FormatError
from evsnn.ir import ann as A
from evsnn.reference import ann_forward


def digits_graph(levels=7, act="quant"):
    """Random 3×3/2 conv features (quantized to ``levels``) and a dense readout fitted by least squares."""
    x, y = load_digits("train")
    rng = np.random.default_rng(0)
    conv = A.Conv("conv", ("x",), rng.normal(0, 0.6, (8, 1, 3, 3)), np.zeros(8), (2, 2), (1, 1, 1, 1), 1)
    z = ann_forward(A.AnnGraph([A.Input("x", (), (1, 8, 8)), conv], "conv"), x)
    lam = float(np.percentile(z[z > 0], 99))
    a = (A.QuantAct("/act/q", ("conv",), levels, lam, 0.0) if act == "quant" else A.ClipAct("/act/q", ("conv",), lam))
    nodes = [A.Input("x", (), (1, 8, 8)), conv, a, A.Flatten("flat", ("/act/q",))]
    feats = ann_forward(A.AnnGraph(nodes, "flat"), x)
    design = np.hstack([feats, np.ones((len(feats), 1))])
    w = np.linalg.lstsq(design, np.eye(10)[y], rcond=None)[0]
    nodes.append(A.Dense("logits", ("flat",), w[:-1].T.copy(), w[-1].copy()))
    return A.AnnGraph(nodes, "logits", "digits-test-model")


@pytest.fixture(scope="module")
def test_data():
    x, y = load_digits("test")
    return x[:60], y[:60]


def test_run_demo_every_preset(tmp_path, test_data):
    x, y = test_data
    lines = []
    out = demo.run_demo(digits_graph(7), x, y, str(tmp_path), engine="reference", rate_steps=16, echo=lines.append)
    assert out["engine"] == "reference" and lines[0].startswith("engine: reference")
    assert [r["preset"] for r in out["rows"]] == list(demo.PRESETS)
    for preset in demo.PRESETS:
        assert os.path.exists(tmp_path / f"{preset}.h5")
    rows = {r["preset"]: r for r in out["rows"]}
    assert out["ann_accuracy"] > 0.6
    for exact in ("casc", "bitserial"):
        assert rows[exact]["exact_samples"] == 1.0 and rows[exact]["exact_neurons"] == 1.0
        assert rows[exact]["final_accuracy"] == pytest.approx(out["ann_accuracy"])
    for rate in demo.RATE_PRESETS:
        assert rows[rate]["exact_samples"] is None and rows[rate]["wake"] == 16
        assert set(rows[rate]["accuracy_at"]) == {"1", "2", "4", "8", "16"}
    assert all(r["energy_ratio"] > 0 and r["sops_per_sample"] > 0 for r in out["rows"])
    table = out["table"]
    assert "quantized ANN accuracy (L = 7)" in table and "acc@16" in table and "E/E_ANN fp32" in table
    assert "100.00" in table  # the exact presets
    if out["plot"]:
        assert os.path.getsize(out["plot"]) > 1000


def test_bitserial_skipped_when_levels_are_not_two_power_minus_one(tmp_path, test_data):
    x, y = test_data
    out = demo.run_demo(digits_graph(4), x[:20], y[:20], str(tmp_path), presets=("casc", "bitserial"),
                        engine="reference", echo=lambda s: None)
    assert [r["preset"] for r in out["rows"]] == ["casc"]
    assert "bitserial skipped" in out["notes"][0] and "bitserial skipped" in out["table"]
    assert not (tmp_path / "bitserial.h5").exists()


def test_threshold_relu_model_reports_float_accuracy(tmp_path, test_data):
    x, y = test_data
    out = demo.run_demo(digits_graph(act="clip"), x[:30], y[:30], str(tmp_path), presets=("deng-gu", "casc"),
                        engine="reference", rate_steps=8, echo=lambda s: None)
    assert out["float_accuracy"] is not None and out["levels"] == 7
    assert "float (threshold-ReLU) ANN accuracy" in out["table"]
    assert out["rows"][1]["exact_samples"] == 1.0


def test_demo_command_with_model_and_data_overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(frontends, "available", lambda: {"tiny": type("T", (), {
        "can_open": staticmethod(lambda p: str(p).endswith(".tiny")),
        "load": staticmethod(lambda p: pickle.load(open(p, "rb")))})})
    model = tmp_path / "m.tiny"
    model.write_bytes(pickle.dumps(digits_graph(3)))
    r = CliRunner().invoke(cli, ["demo", "--model", str(model), "--data", "digits", "--limit", "24",
                                 "--engine", "reference", "--rate-steps", "8", "--out", str(tmp_path / "d"),
                                 "--presets", "if,casc,bitserial"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "engine: reference" in r.output and "casc" in r.output and "bitserial" in r.output
    assert {"bitserial.h5", "casc.h5", "if.h5"} <= set(os.listdir(tmp_path / "d"))


def test_missing_bundled_model_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(demo, "BUNDLED_MODEL", "no_such_model.onnx")
    with pytest.raises(FormatError, match="--model"):
        demo.bundled_model()


def test_bundled_demo(tmp_path, monkeypatch):
    try:
        demo.bundled_model()
    except FormatError:
        pytest.skip("evsnn/data/digits_cnn.onnx is not bundled yet")
    pytest.importorskip("evsnn.frontends.onnx")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["demo"])  # no arguments: bundled model and data, ./evsnn-demo
    assert r.exit_code == 0, (r.output, r.exception)
    assert "engine: " in r.output and "quantized ANN accuracy" in r.output
    for preset in demo.PRESETS:
        assert re.search(rf"^{preset}\s", r.output, re.M)
        assert (tmp_path / "evsnn-demo" / f"{preset}.h5").exists()
    casc = next(line for line in r.output.splitlines() if line.startswith("casc"))
    assert "100.00" in casc  # every hidden count equals the quantized ANN level
