"""Path choice (issue #14): mixing the event scatter and the dense BLAS step per projection and step is
exact, and the cost model that picks between them (evsnn.engine.cost) is what its docstring says."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evsnn import engine
from evsnn.convert import convert
from evsnn.engine import calibrate as CAL
from evsnn.engine import cost
from evsnn.engine.pack import (
    CV_CIN, CV_COUT, CV_GROUPS, CV_HO, CV_KH, CV_KW, CV_WO, J_FAN, J_KIND, J_NPOST, J_NPRE, K_CONV, K_DENSE,
)
from evsnn.errors import ConversionError
from evsnn.ir import ann as A
from strategies import graphs, inputs, real_inputs
from test_engine import assert_same, dyadic

EXACT = ("casc", "bitserial")


def _schedule(net, data):
    """A random (K, M) per-step, per-projection path choice (True: dense)."""
    k = data.draw(st.integers(1, 5), label="K")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="schedule seed"))
    return rng.random((k, len(net.projections))) < data.draw(st.sampled_from([0.2, 0.5, 0.8]), label="p dense")


def _assert_same_events(ref, got):
    """Counts, values, spikes, SOPs, raster identical; the readout to float64 accuracy."""
    for f in ("counts", "values", "spikes_pos", "spikes_neg", "sops", "raster"):
        a, b = getattr(ref, f), getattr(got, f)
        assert a.keys() == b.keys(), f
        for k in a:
            np.testing.assert_array_equal(b[k], a[k], err_msg=f"{f}[{k}]")
    scale = max(1.0, float(np.abs(ref.readout).max(initial=0.0)))
    np.testing.assert_allclose(got.readout, ref.readout, rtol=0, atol=1e-12 * scale)
    np.testing.assert_array_equal(got.quiescent, ref.quiescent)


@pytest.mark.parametrize("preset", EXACT)
@settings(max_examples=15)
@given(data=st.data())
def test_random_path_schedule_is_bit_identical_on_dyadic_weights(preset, data):
    levels = (1, 3, 7) if preset == "bitserial" else (1, 2, 4, 8)
    graph = data.draw(graphs(levels=levels, max_depth=4), label="graph")
    x = data.draw(inputs(graph), label="x")
    net = convert(graph, preset)
    if not dyadic(net):
        return  # 3×3 average pools (×1/9): the reference's order matters there, not the path's
    kw = dict(record=("counts", "raster"), threads=data.draw(st.sampled_from([1, 2]), label="threads"))
    ref = engine.simulate(net, x, path="event", **kw)  # default dtype: float64
    assert_same(ref, engine.simulate(net, x, path=_schedule(net, data), **kw))
    assert_same(ref, engine.simulate(net, x, path="dense", **kw))


@pytest.mark.parametrize("preset", EXACT)
@settings(max_examples=15)
@given(data=st.data())
def test_random_path_schedule_equals_event_only_on_he_normal_weights(preset, data):
    levels = (1, 3, 7, 15) if preset == "bitserial" else (1, 3, 7, 15, 255)
    graph = data.draw(graphs(levels=levels, max_depth=4, real=True), label="graph")
    x = data.draw(real_inputs(graph), label="x")
    net = convert(graph, preset)
    kw = dict(record=("counts", "raster"))
    ref = engine.simulate(net, x, path="event", **kw)
    _assert_same_events(ref, engine.simulate(net, x, path=_schedule(net, data), **kw))
    _assert_same_events(ref, engine.simulate(net, x, path="dense", **kw))


def _conv_net():
    """Input 2×8×8 → conv 3×3 (4 channels) → act → grouped conv 3×3 stride 2 → act → dense readout (casc)."""
    rng = np.random.default_rng(3)
    nodes = [A.Input("x", (), (2, 8, 8)),
             A.Conv("c1", ("x",), rng.integers(-64, 65, (4, 2, 3, 3)) / 64, np.zeros(4), (1, 1), (1, 1, 1, 1), 1),
             A.QuantAct("a1", ("c1",), 7, 7 / 8, 0.0),
             A.Conv("c2", ("a1",), rng.integers(-64, 65, (4, 2, 3, 3)) / 64, np.zeros(4), (2, 2), (1, 1, 1, 1), 2),
             A.QuantAct("a2", ("c2",), 7, 7 / 8, 0.0),
             A.Flatten("f", ("a2",)), A.Dense("fc", ("f",), rng.integers(-64, 65, (3, 64)) / 64, np.zeros(3))]
    net = convert(A.AnnGraph(nodes, "fc", "conv"), "casc")
    x = rng.integers(-256, 257, size=(2, 2, 8, 8)) / 256.0
    return net, x


def test_path_schedule_is_checked():
    net, x = _conv_net()
    m = len(net.projections)
    for bad in (np.zeros((2, m + 1), bool), np.zeros((0, m), bool), np.zeros(m, bool), np.zeros((1, m)) + 0.5):
        with pytest.raises(ConversionError, match="schedule"):
            engine.simulate(net, x, path=bad)
    with pytest.raises(ConversionError, match="unknown path"):
        engine.simulate(net, x, path="fast")


def test_thresholds_balance_the_two_costs():
    """At the threshold the event cost equals the dense cost (plus the forced update when tracking);
    kinds without a dense path never switch."""
    net, _ = _conv_net()
    prep = engine.prepare(net)
    ji = prep.packed.ji
    co = cost.BUILTIN["float64"]
    thr = cost.thresholds(ji, co)
    assert thr.shape == (len(ji), 2)
    seen = 0
    for m, j in enumerate(ji):
        npre = j[J_NPRE]
        fan = j[J_FAN] / npre
        if j[J_KIND] == K_CONV:
            ev, de = cost.conv_features(j[CV_KH], j[CV_KW], j[CV_CIN], j[CV_COUT], j[CV_GROUPS], j[CV_HO],
                                        j[CV_WO], npre, j[J_NPOST], fan)
            macs = j[CV_HO] * j[CV_WO] * j[CV_KH] * j[CV_KW] * (j[CV_CIN] // j[CV_GROUPS]) * j[CV_COUT]
            assert ev[2] == pytest.approx(fan) and de[2] == macs
            np.testing.assert_allclose(thr[m, 0] * (ev @ co["conv_ev"]), de @ co["conv_de"], rtol=1e-12)
            np.testing.assert_allclose(thr[m, 1] * (ev @ co["conv_ev_track"]),
                                       de @ co["conv_de"] + co["upd"][0] * j[J_NPOST], rtol=1e-12)
            seen += 1
        elif j[J_KIND] != K_DENSE:
            assert np.isinf(thr[m]).all()
    assert seen == 1  # c2 (c1 is fed by the input: its current is in the drive, K_NOOP)
    # a dearer dense step moves the threshold up, a dearer event moves it down
    dear = dict(co, conv_de=[c * 2 for c in co["conv_de"]])
    cheap = dict(co, conv_ev=[c * 2 for c in co["conv_ev"]])
    conv = ji[:, J_KIND] == K_CONV
    np.testing.assert_allclose(cost.thresholds(ji, dear)[conv, 0], 2 * thr[conv, 0])
    np.testing.assert_allclose(cost.thresholds(ji, cheap)[conv, 0], thr[conv, 0] / 2)


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 100, (12, 3))
    want = np.array([2e-8, 0.0, 3e-10])
    got = CAL._fit(X, X @ want)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-15)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / cost.FILE
    monkeypatch.setattr(cost, "cache_paths", lambda: [str(path)])
    monkeypatch.setattr(cost, "_MODEL", {})
    monkeypatch.delenv("EVSNN_RECALIBRATE", raising=False)
    monkeypatch.delenv("EVSNN_COST_MODEL", raising=False)
    calls = []

    def fake(dtype):
        calls.append(np.dtype(dtype).name)
        return {k: [c * (1 + len(calls)) for c in v] for k, v in cost.BUILTIN[np.dtype(dtype).name].items()}
    monkeypatch.setattr(CAL, "measure", fake)
    return path, calls


def test_model_is_measured_once_then_read_from_the_cache(cache_dir, monkeypatch):
    path, calls = cache_dir
    a = cost.model(np.float64)
    assert sorted(calls) == ["float32", "float64"]
    assert json.loads(path.read_text())["float64"] == a
    monkeypatch.setattr(cost, "_MODEL", {})  # a new process
    assert cost.model(np.float64) == a and len(calls) == 2
    monkeypatch.setattr(cost, "_MODEL", {})
    monkeypatch.setenv("EVSNN_RECALIBRATE", "1")
    b = cost.model(np.float64)
    assert len(calls) == 4 and b != a
    monkeypatch.setenv("EVSNN_COST_MODEL", "builtin")
    assert cost.model(np.float32) == cost.BUILTIN["float32"]


@pytest.mark.parametrize("damage", ["not json", '{"key": 1}', "stale"])
def test_damaged_or_stale_cache_is_measured_again(cache_dir, damage):
    path, calls = cache_dir
    if damage == "stale":
        d = {"key": dict(cost.cache_key(), sources="0" * 64), **cost.BUILTIN}
        path.write_text(json.dumps(d))
    else:
        path.write_text(damage)
    cost.model(np.float32)
    assert len(calls) == 2
    assert json.loads(path.read_text())["key"] == cost.cache_key()


def test_measured_coefficients_are_valid(monkeypatch):
    """The real micro-benchmark (on fewer shapes, to stay fast) gives a usable model: valid, and the gemm
    and the event path cost something."""
    monkeypatch.setattr(CAL, "CONV_SHAPES", CAL.CONV_SHAPES[:3] + CAL.CONV_SHAPES[-1:])
    monkeypatch.setattr(CAL, "CSR_SHAPES", CAL.CSR_SHAPES[:2])
    co = CAL.measure(np.float32)
    assert cost._valid(co)
    assert sum(co["conv_de"][1:]) > 0 and sum(co["conv_ev"]) > 0 and sum(co["csr_ev"]) > 0
    net, _ = _conv_net()
    thr = cost.thresholds(engine.prepare(net, np.float32).packed.ji, co)
    assert np.isfinite(thr).any() and (thr[np.isfinite(thr)] > 0).all()


def test_cache_goes_to_the_first_writable_place(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    good = tmp_path / "user" / cost.FILE
    monkeypatch.setattr(cost, "cache_paths", lambda: [str(blocker / "sub" / cost.FILE), str(good)])
    monkeypatch.setattr(cost, "_MODEL", {})
    monkeypatch.delenv("EVSNN_RECALIBRATE", raising=False)
    monkeypatch.delenv("EVSNN_COST_MODEL", raising=False)
    monkeypatch.setattr(CAL, "measure", lambda dt: cost.BUILTIN[np.dtype(dt).name])
    assert cost.model(np.float32) == cost.BUILTIN["float32"]
    assert json.loads(good.read_text())["float64"] == cost.BUILTIN["float64"]
    monkeypatch.undo()  # the real cache_paths
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cost.cache_paths()[-1] == str(tmp_path / "xdg" / "evsnn" / cost.FILE)


def test_calibration_events_do_enough_work_to_be_timed():
    rng = np.random.default_rng(0)
    for n, act, fan in ((64, 0.03, 64), (256, 0.03, 16), (16, 0.01, 4), (4096, 0.25, 576)):
        idx = CAL._events(n, act, rng, fan)
        assert (np.diff(idx) > 0).all() and idx[0] >= 0 and idx[-1] < n  # sorted, distinct, in range
        assert len(idx) >= min(-(-CAL.MIN_SOPS // fan), n)
    assert len(CAL._events(16, 0.01, rng, 4)) == 16  # a layer too small for MIN_SOPS: all of it
    assert abs(len(CAL._events(4096, 0.25, rng, 576)) - 1024) < 150  # enough work already: the activity


def test_calibration_charges_the_events_only_their_own_cost(monkeypatch):
    """The per-event cost is the timed call on the events less the same call on none: a fixed cost per
    call (dispatch, the marks' reset) is not charged to the events, however few they are."""
    cost_of = {}

    def scatter(i, s, track):
        cost_of["last"] = 3e-6 + (2e-8 if track else 1e-8) * len(i)  # per call + per event

    def fake_time(fn, t0=0.0):
        fn()
        return max(cost_of["last"] - t0, 1e-9)
    monkeypatch.setattr(CAL, "_time", fake_time)
    mark = np.ones(5, np.uint8)
    rows = {False: [], True: []}
    ev = np.array([1.0, 64.0])
    CAL._event_rows(scatter, np.arange(2, dtype=np.int64), np.ones(2), mark, ev, rows)
    assert (mark == 0).all()  # the marks are reset before each call
    (f0, t0), = rows[False]
    (f1, t1), = rows[True]
    assert f0 is ev and f1 is ev
    assert np.isclose(t0, 1e-8) and np.isclose(t1, 2e-8)
