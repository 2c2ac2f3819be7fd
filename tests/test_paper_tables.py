"""The bundled model files (exact casc and bitserial on the whole digits test split) and bench/paper_tables.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from evsnn.convert import convert
from evsnn.datasets import load_digits
from evsnn.reference import ann_forward, ann_levels, simulate
from scripts import ROOT, bench_script, has  # noqa: E402

DATA = ROOT / "evsnn" / "data"


def _bundled_graph(suffix: str):
    mod = {"onnx": "evsnn.frontends.onnx", "keras": "evsnn.frontends.keras"}[suffix]
    if not has(mod):
        pytest.skip(f"{mod} is not available")
    from evsnn.frontends import load_model

    return load_model(DATA / f"digits_cnn.{suffix}")


@pytest.fixture(scope="module")
def meta():
    return json.loads((DATA / "digits_cnn.json").read_text())


def test_bundled_files_are_small_and_described(meta):
    for suffix in ("onnx", "keras", "json"):
        f = DATA / f"digits_cnn.{suffix}"
        assert f.exists(), f
        assert f.stat().st_size < 200_000
    assert meta["levels"] == 7 and meta["quantizer"] == "floor"
    assert {"seed", "epochs", "thresholds", "accuracy"} <= set(meta)
    assert meta["accuracy"]["test_ann"] >= 0.90


@pytest.mark.parametrize("suffix", ["onnx", "keras"])
def test_bundled_model_reads_back(suffix, meta):
    g = _bundled_graph(suffix)
    quants = [n for n in g.nodes if n.kind == "quant"]
    assert [n.levels for n in quants] == [7, 7] and [n.phase for n in quants] == [0.0, 0.0]
    np.testing.assert_allclose([n.scale for n in quants], meta["thresholds"], rtol=1e-6)
    x, y = load_digits("test")
    acc = float((ann_forward(g, x).argmax(1) == y).mean())
    assert acc == pytest.approx(meta["accuracy"]["test_ann"], abs=1e-12)


@pytest.mark.parametrize("preset", ["casc", "bitserial"])
def test_bundled_model_exact_on_whole_test_split(preset):
    """casc (T = L, sleep auto) and bitserial reach the quantized ANN's accuracy and levels on all 599 images."""
    g = _bundled_graph("onnx")
    x, y = load_digits("test")
    logits = ann_forward(g, x)
    levels = ann_levels(g, x)
    net = convert(g, preset)
    res = simulate(net, x, sleep="auto" if preset == "casc" else 0)
    assert (res.predictions == logits.argmax(1)).all()
    assert float((res.predictions == y).mean()) == float((logits.argmax(1) == y).mean())
    assert set(levels) == {p.name for p in net.populations}
    for name, lv in levels.items():
        np.testing.assert_array_equal(res.values[name], lv)
        if preset == "casc":
            np.testing.assert_array_equal(res.counts[name], lv)
    if preset == "casc":
        assert res.quiescent.all()
        np.testing.assert_allclose(res.readout[:, -1], 7 * logits, atol=1e-9)


def test_paper_tables_help():
    pt = bench_script("paper_tables")
    with pytest.raises(SystemExit) as e:
        pt.main(["--help"])
    assert e.value.code == 0


def _rows(text: str, heading: str) -> list[list[str]]:
    part = text.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in part.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, part  # header, rule, at least one row
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


_NUM = re.compile(r"^[+-]?\d+(\.\d+)?")


def test_paper_tables_quick(capsys):
    if not has("evsnn.frontends.onnx"):
        pytest.skip("the ONNX frontend is not available")
    pt = bench_script("paper_tables")
    n = 16
    text = pt.main(["--quick", "--simulator", "reference", "--limit", str(n), "--max-batches", "2",
                    "--steps", "1", "2", "--bits", "2"])
    assert text in capsys.readouterr().out
    assert text.count("\n## ") == 3

    t1 = _rows(text, "## 1.")
    assert t1[0][0] == "quantized ANN"
    assert len(t1) == 1 + 2 * 3 * 2  # ANN + {if, casc} × {L/2, L, 2L} × {no sleep, sleep}
    for r in t1:
        assert _NUM.match(r[3]) and 0 <= float(r[3]) <= 100
    exact = [r for r in t1 if r[0].startswith("CASC") and r[1] == "7" and r[2].startswith("auto")]
    assert exact and exact[0][6] == f"{n}/{n}" and exact[0][4] == "+0.00"

    t2 = _rows(text, "## 2.")
    assert [r[0] for r in t2] == ["1", "2"]
    assert all(_NUM.match(c) for r in t2 for c in r)

    t3 = _rows(text, "## 3.")
    if has("torch"):
        assert [(r[0], r[2]) for r in t3] == [("2", "0.0"), ("2", "1.0")]
        assert "Effect of the popcount regularizer (β = 1.0)" in text
    else:
        assert [r[0] for r in t3] == ["3"]
    for r in t3:
        assert r[5] == f"{n}/{n}"  # bit-serial is exact
        assert r[3] == r[4]  # so its accuracy is the ANN's
        assert _NUM.match(r[7])


def test_paper_tables_without_training():
    """--no-train (as without torch): table 3 shows the bundled model's K = 3 row only."""
    if not has("evsnn.frontends.onnx"):
        pytest.skip("the ONNX frontend is not available")
    text = bench_script("paper_tables").main(["--no-train", "--simulator", "reference", "--limit", "8", "--steps", "2"])
    t3 = _rows(text, "## 3.")
    assert len(t3) == 1 and t3[0][:3] == ["3", "7", "0.0"] and t3[0][5] == "8/8"


def test_train_digits_help():
    with pytest.raises(SystemExit) as e:
        bench_script("train_digits").main(["--help"])
    assert e.value.code == 0
