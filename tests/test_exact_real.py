"""Exactness on real (non-dyadic) weights with the defaults a user gets (issue #12).

The definition tested: every hidden count equals the quantized ANN evaluated in float64 on the
model's own float32 weights. Oracles: :func:`evsnn.verify.expected_levels` (the quantized ANN as a
level-unit pass over the converted network: exact where real arithmetic is) and the graph-order
:func:`evsnn.reference.ann_levels` (equal to it up to float64 rounding, and exactly on the first
layer of tie-generating inputs).
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from evsnn import engine
from evsnn.convert import convert
from evsnn.errors import ConversionError, FormatError
from evsnn.ir import ann as A
from evsnn.ir import drive as DR
from evsnn.reference import ann_forward, ann_levels
from evsnn.reference import simulate as ref_simulate
from evsnn.verify import expected_levels, verify
from scripts import bench_script
from strategies import graphs, real_inputs, tie_inputs

EXACT = ("casc", "bitserial")


def _graph_for(preset, draw):
    levels = (1, 3, 7, 15) if preset == "bitserial" else (1, 3, 5, 7, 15, 255)
    return draw(graphs(levels=levels, max_depth=4, real=True, tie_first=True))


def _assert_exact(net, res, want):
    for name, lv in want.items():
        np.testing.assert_array_equal(res.values[name], lv, err_msg=name)
        np.testing.assert_array_equal(res.counts[name] if net.preset == "casc" else res.values[name], lv,
                                      err_msg=name)


@pytest.mark.parametrize("preset", EXACT)
@given(data=st.data())
def test_ties_give_the_ann_level_with_default_arguments(preset, data):
    """Inputs on k·λ/L and (k + ½)·λ/L: the first layer's counts are the graph ANN's levels, every layer's
    the oracle's, in both executors called with no schedule arguments; the engine's counts equal the
    reference's."""
    graph = _graph_for(preset, data.draw)
    x = data.draw(tie_inputs(graph))
    net = convert(graph, preset)
    ref = ref_simulate(net, x)
    got = engine.simulate(net, x)
    want = expected_levels(net, x)
    first = next(n.name for n in graph.nodes if isinstance(n, A.QuantAct))
    np.testing.assert_array_equal(want[first], ann_levels(graph, x)[first])
    for res in (ref, got):
        _assert_exact(net, res, want)
        assert res.quiescent.all() or preset == "bitserial"  # bitserial has no sleep phase to settle in
    for name in ref.counts:
        np.testing.assert_array_equal(got.counts[name], ref.counts[name], err_msg=name)


@pytest.mark.parametrize("preset", EXACT)
@pytest.mark.parametrize("real", [False, True])
@given(data=st.data())
def test_half_even_ties_give_the_file_level_in_every_layer(preset, real, data):
    """Half-even quantizers (ONNX QDQ, QONNX, QKeras) on tie inputs: in both executors with default
    arguments every count is the half-even ANN level (graph and network oracle) in every layer, not the
    floor(x + ½) one; engine == reference spike for spike. Dyadic graphs (``real=False``) put exact ties
    in hidden layers too (k/64 weights of levels, average pools, residual adds); real ones on the first
    layer and after average pools / adds of equal scales."""
    levels = (1, 3, 7, 15) if preset == "bitserial" else (1, 2, 3, 4, 7, 15)
    graph = data.draw(graphs(levels=levels, max_depth=4, real=real, tie_first=True, roundings=("half_even",)))
    x = data.draw(tie_inputs(graph))
    net = convert(graph, preset)
    assert {p.rounding for p in net.populations if p.model != "maxpool"} == {"half_even"}
    want = expected_levels(net, x)
    graph_levels = ann_levels(graph, x)
    for name, lv in (graph_levels if not real else {}).items():  # dyadic: every float sum is exact
        np.testing.assert_array_equal(want[name], lv, err_msg=name)
    first = next(n.name for n in graph.nodes if isinstance(n, A.QuantAct))
    np.testing.assert_array_equal(want[first], graph_levels[first])
    ref = ref_simulate(net, x, record=("counts", "raster"))
    got = engine.simulate(net, x, record=("counts", "raster"), verify=True)
    for res in (ref, got):
        _assert_exact(net, res, want)
    assert got.verify.percent_exact == 100.0
    for name in ref.counts:
        np.testing.assert_array_equal(got.raster[name], ref.raster[name], err_msg=name)
    floor = dataclasses.replace  # the same graph read with floor(x + ½): differs exactly at the ties
    fl_levels = ann_levels(A.AnnGraph([floor(n, rounding="floor") if isinstance(n, A.QuantAct) else n
                                       for n in graph.nodes], graph.output), x)
    event(f"{preset}: neurons where half-even ≠ floor: {'some' if any((fl_levels[k] != v).any() for k, v in graph_levels.items()) else 'none'}")


def near_boundary(graph: A.AnnGraph, x: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """(N,) samples with a quantizer input within ``tol`` (relative, level units) of a rounding
    boundary — z·L/λ + φ an integer, for floor and half-even rounding alike — in any layer."""
    vals = ann_forward(graph, x, return_all=True)
    out = np.zeros(len(x), dtype=bool)
    for n in graph.nodes:
        if isinstance(n, A.QuantAct):
            y = vals[n.inputs[0]].reshape(len(x), -1) * (n.levels / n.scale) + n.phase
            out |= (np.abs(y - np.rint(y)) <= tol * np.maximum(1.0, np.abs(y))).any(axis=1)
    return out


@pytest.mark.parametrize("preset", EXACT)
@given(data=st.data())
def test_oracle_equals_graph_ann_on_real_data(preset, data):
    """On real-weight models and real (non-tie) data the network-level oracle equals ann_levels, and
    the engine's default run verifies 100 % exact."""
    levels = (1, 3, 7, 15) if preset == "bitserial" else (1, 3, 7, 15, 255)
    graph = data.draw(graphs(levels=levels, max_depth=4, real=True))
    x = data.draw(real_inputs(graph))
    net = convert(graph, preset)
    want = expected_levels(net, x)
    graph_levels = ann_levels(graph, x)
    # Real weights still make exact ties where an average pool or an add combines levels of equal
    # scales (sum/4 = k + ½): there the float64 graph lands an ulp either side while the oracle,
    # working in level units, is exact. Such samples are compared by the SNN check below only.
    far = ~near_boundary(graph, x)
    event(f"{preset}: samples near a rounding boundary: {'some' if (~far).any() else 'none'}")
    for name, lv in graph_levels.items():
        np.testing.assert_array_equal(want[name][far], lv[far], err_msg=name)
    res = engine.simulate(net, x, verify=True)
    assert res.verify.exact.all(), {k: v for k, v in res.verify.mismatches.items() if v.any()}
    assert res.verify.percent_exact == 100.0


def test_issue_examples_of_exact_ties():
    """L = 7, λ = 1, x = 1/7 (casc) and λ = 3.8245, L = 3, x = λ/3 (bitserial): the ANN's level 1."""
    for preset, L, lam in (("casc", 7, 1.0), ("bitserial", 3, 3.8245), ("casc", 3, 3.8245)):
        g = A.AnnGraph([A.Input("x", (), (1,)), A.Dense("d", ("x",), np.eye(1), np.zeros(1)),
                        A.QuantAct("a", ("d",), L, lam, 0.0), A.Dense("o", ("a",), np.eye(1), np.zeros(1))], "o")
        x = np.array([[lam / L], [2 * lam / L], [0.5 * lam / L], [L / L * lam]])
        want = ann_levels(g, x)["a"]
        if lam == 1.0:
            assert want.ravel().tolist() == [1, 2, 0, 7]  # the issue's example: float64 casc used to give 0
        net = convert(g, preset)
        for sim in (ref_simulate, engine.simulate):
            np.testing.assert_array_equal(sim(net, x).values["a"], want, err_msg=f"{preset} {sim.__module__}")


def test_a_wrong_level_is_reported_per_layer():
    """verify counts the neurons that differ, per layer and sample, and marks the sample inexact."""
    rng = np.random.default_rng(3)
    g = A.AnnGraph([A.Input("x", (), (4,)), A.Dense("d", ("x",), rng.standard_normal((6, 4)), np.zeros(6)),
                    A.QuantAct("a", ("d",), 7, 1.3, 0.5), A.Dense("o", ("a",), rng.standard_normal((2, 6)),
                                                                   np.zeros(2))], "o")
    net = convert(g, "casc")
    x = rng.standard_normal((3, 4))
    res = engine.simulate(net, x)
    rep = verify(net, x, res)
    assert rep.exact.all() and rep.mismatches["a"].tolist() == [0, 0, 0]
    res.values["a"][1, 2] += 1
    res.values["a"][1, 4] -= 1
    rep = verify(net, x, res)
    assert rep.exact.tolist() == [True, False, True]
    assert rep.mismatches["a"].tolist() == [0, 2, 0]
    assert abs(rep.percent_exact - 200 / 3) < 1e-9


def test_rate_presets_report_rate_errors():
    rng = np.random.default_rng(4)
    g = A.AnnGraph([A.Input("x", (), (4,)), A.Dense("d", ("x",), rng.standard_normal((6, 4)), np.zeros(6)),
                    A.ClipAct("a", ("d",), 1.3), A.Dense("o", ("a",), rng.standard_normal((2, 6)), np.zeros(2))], "o")
    net = convert(g, "if")
    x = rng.standard_normal((3, 4))
    errs = []
    for T in (8, 512):
        rep = engine.simulate(net, x, wake=T, verify=True).verify
        assert rep.exact is None and rep.percent_exact is None
        assert (rep.rate_error_max["a"] <= 1.0 / T + 1e-12).all()  # first layer, v0 = 0: floor(T·u)/T
        errs.append(rep.rate_error_mean["a"].mean())
    assert errs[1] < errs[0]


def test_default_schedule_and_sleep_zero_check():
    rng = np.random.default_rng(5)
    g = A.AnnGraph([A.Input("x", (), (4,)), A.Dense("d", ("x",), rng.standard_normal((6, 4)), np.zeros(6)),
                    A.QuantAct("a", ("d",), 15, 1.1, 0.0), A.Dense("o", ("a",), rng.standard_normal((2, 6)),
                                                                    np.zeros(2))], "o")
    net = convert(g, "casc")
    assert net.schedule_defaults() == (15, "auto")
    x = rng.standard_normal((3, 4))
    for sim in (ref_simulate, engine.simulate):
        a, b = sim(net, x), sim(net, x, wake=15, sleep="auto")
        np.testing.assert_array_equal(a.readout, b.readout)
        with pytest.raises(ConversionError, match="settles only with a sleep phase"):
            sim(net, x, sleep=0)
        sim(net, x, sleep=0, allow_inexact=True)
    assert convert(g, "if").schedule_defaults() == (15, 0)  # rate presets: T = L of a quantized model, no sleep


@pytest.mark.parametrize("rounding", ["floor", "half_even"])
@pytest.mark.parametrize("phase", [0.0, 0.5])
@given(ds=st.lists(st.floats(-300, 300, allow_nan=False), min_size=1, max_size=20),
       L=st.sampled_from([1, 3, 7, 255]), T=st.integers(1, 300))
def test_drive_grid_is_exact(ds, L, T, phase, rounding):
    """Q·2^-F keeps floor(D + φ) (floor) or rint(D + φ − ½) and its ties (half_even), and the T increments
    sum exactly to it in any prefix."""
    # within 2^-F of a tie (half_even, φ = ½: k + ½; φ = 0: integers): grid-floored, they would become one
    near = [k + h + e for k in (-1, 0, 1, 2, 7) for h in (0.0, 0.5)
            for e in (2.0 ** -53, -2.0 ** -53, 2.0 ** -52, 2.0 ** -50, -2.0 ** -50)]
    d = np.array(ds + [k + h for k in (-1, 0, 2, L) for h in (0.0, 0.5)] + near
                 + [1 / 7 * 7, 0.9999999999999998, 0.49999999999999994, 2.4999999999999996, 1.5 + 2.0 ** -40])
    q, unit = DR.grid(d, L, phase, rounding)
    tot = q * unit
    if rounding == "floor":
        np.testing.assert_array_equal(np.floor(tot + phase), np.floor(d + phase))  # the ANN's rounded floor
    else:
        y = d + (phase - 0.5)  # what ops.quantize_levels rounds
        g = tot + (phase - 0.5)  # what the neuron rounds (exact: on the grid)
        np.testing.assert_array_equal(np.rint(g), np.rint(y))
        tie = lambda a: a - np.floor(a) == 0.5  # noqa: E731
        np.testing.assert_array_equal(tie(g), tie(y))  # no false ties, none lost
        np.testing.assert_array_equal(np.floor(g), np.floor(y))
    assert np.all(np.abs(tot - d) <= np.maximum(2 * unit, np.spacing(np.abs(d) + 1)))
    split = DR.grid_split(q, unit, T)
    acc = np.full(len(d), phase)
    for t in range(T):
        acc = acc + DR.grid_increment(split, t, T)
    np.testing.assert_array_equal(acc, tot + phase)


@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 7, 255]), st.sampled_from([0.0, 0.5]),
       st.sampled_from(["floor", "half_even"]))
def test_grid_kernel_equals_numpy_reference(seed, levels, phase, rounding):
    """engine.neurons.grid_row (per value, with the gather into internal order) == ir.drive.grid, on
    random magnitudes, exact level boundaries and ties, their float64 neighbours, ±CLAMP and beyond, NaN (--allow-nonfinite)."""
    from evsnn.engine import neurons as NR
    rng = np.random.default_rng(seed)
    n, size = 3, 40
    d = rng.standard_normal((n, size)) * 10 ** rng.uniform(-3, 3, (n, size))
    k = rng.integers(-3, levels + 3, (n, size)) + rng.choice([0.0, 0.5], (n, size))
    edge = np.nextafter(k, rng.choice([-np.inf, np.inf], (n, size))) if seed % 2 else k
    d = np.where(rng.random((n, size)) < 0.5, edge, d)
    d[0, :5] = [DR.CLAMP, -DR.CLAMP, 3 * DR.CLAMP, -np.inf, np.nan]
    perm = rng.permutation(size)
    q, u = np.zeros((n, size + 5), np.int64), np.zeros((n, size + 5))
    off = phase - 0.5 if rounding == "half_even" else phase
    work = np.zeros((2, size))
    for i in range(n):
        NR.grid_row(d[i], perm, float(levels), off, rounding == "half_even", q[i, 5:], u[i, 5:], work[0], work[1])
    with np.errstate(invalid="ignore"):  # NaN cast to int64 (the kernel casts it the same way)
        want_q, want_u = DR.grid(d, levels, phase, rounding)
    np.testing.assert_array_equal(q[:, 5:], want_q[:, perm])
    np.testing.assert_array_equal(u[:, 5:], want_u[:, perm])
    assert not q[:, :5].any()


@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.sampled_from([np.float32, np.float64]))
def test_drive_kernels_equal_numpy_reference(seed, T, dtype):
    """engine.neurons.drive_init/drive_add (Bresenham carry) == ir.drive.grid_split/grid_increment."""
    from evsnn.engine import neurons as NR
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(50) * 10 ** rng.uniform(-3, 3, 50)
    q, unit = DR.grid(d, 255, 0.5)
    split = DR.grid_split(q, unit, T)
    base, un = np.zeros(50, dtype), np.zeros(50, dtype)
    rem, mod = np.zeros(50, np.int64), np.zeros(50, np.int64)
    NR.drive_init(q, unit, T, base, un, rem, mod)
    np.testing.assert_array_equal(rem, split[2])
    np.testing.assert_array_equal(base, split[0].astype(dtype))
    acc = np.zeros(50, dtype)
    for t in range(T):
        NR.drive_add(acc, base, un, rem, mod, T, 50, np.full(50, np.nan, dtype))
        # float32 (an explicit choice on exact presets) rounds base and unit before adding them
        extra = ((t + 1) * split[2]) // T - (t * split[2]) // T
        b, u = split[0].astype(dtype), split[1].astype(dtype)
        want = np.where(extra > 0, b + u, b)
        if dtype == np.float64:
            np.testing.assert_array_equal(want, DR.grid_increment(split, t, T))
        np.testing.assert_array_equal(acc, want)
        acc[:] = 0


def test_network_file_keeps_the_schedule_and_drive_and_reads_older_files(tmp_path):
    import h5py
    from evsnn.store import load_network, save_network
    rng = np.random.default_rng(6)
    g = A.AnnGraph([A.Input("x", (), (4,)), A.Dense("d", ("x",), rng.standard_normal((6, 4)), rng.standard_normal(6)),
                    A.QuantAct("a", ("d",), 7, 1.7, 0.5), A.Dense("o", ("a",), rng.standard_normal((2, 6)),
                                                                   np.zeros(2))], "o")
    net = convert(g, "casc")
    path = tmp_path / "n.h5"
    save_network(net, path)
    back = load_network(path)
    assert back.default_sleep == "auto" and back.populations[0].drive_scale == 7 / 1.7
    x = rng.standard_normal((4, 4))
    np.testing.assert_array_equal(engine.simulate(back, x).readout, engine.simulate(net, x).readout)
    # a file written before drives: no default_sleep, no drive_scale → per-step bias semantics, preset defaults
    old = convert(g, "casc")
    old.populations[0].drive_scale = None
    save_network(old, path)
    with h5py.File(path, "r+") as f:
        del f.attrs["default_sleep"]
        for k in f["populations"]:
            if "drive_scale" in f["populations"][k].attrs:
                del f["populations"][k].attrs["drive_scale"]
    back = load_network(path)
    assert back.default_sleep is None and back.schedule_defaults() == (7, "auto")
    assert back.populations[0].drive_scale is None


def test_network_file_keeps_the_rounding_and_older_files_read_as_floor(tmp_path):
    import h5py
    from evsnn.store import load_network, save_network
    g = A.AnnGraph([A.Input("x", (), (1,)), A.Dense("d", ("x",), np.eye(1), np.zeros(1)),
                    A.QuantAct("a", ("d",), 7, 7.0, 0.5, "half_even"),
                    A.Dense("o", ("a",), np.eye(1), np.zeros(1))], "o")
    x = np.arange(-2, 20)[:, None] / 2.0  # every tie k + ½ of L = 7, λ = 7
    net = convert(g, "casc")
    assert net.populations[0].rounding == "half_even"
    path = tmp_path / "n.h5"
    save_network(net, path)
    back = load_network(path)
    assert back.populations[0].rounding == "half_even"
    want = np.clip(np.rint(x), 0, 7)
    np.testing.assert_array_equal(engine.simulate(back, x).counts["a"], want)
    with h5py.File(path, "r+") as f:  # a file written before rounding existed: floor(x + ½)
        for k in f["populations"]:
            del f["populations"][k].attrs["rounding"]
    back = load_network(path)
    assert back.populations[0].rounding == "floor"
    np.testing.assert_array_equal(engine.simulate(back, x).counts["a"], np.clip(np.floor(x + 0.5), 0, 7))
    with h5py.File(path, "r+") as f:
        f["populations"][sorted(f["populations"])[0]].attrs["rounding"] = "half_up"
    with pytest.raises(FormatError, match="unknown rounding 'half_up'"):
        load_network(path)


# ---------------------------------------------------------------------------------------------- real models

he_cnn = bench_script("exactness").he_cnn  # He-normal CNN: stride 2, depthwise, residual, max pool


def _f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def _check_model(graph, x, presets=EXACT):
    """The engine with its defaults verifies 100 % exact, and the oracle equals the graph's ann_levels."""
    graph_levels = ann_levels(graph, x)
    for preset in presets:
        net = convert(graph, preset)
        res = engine.simulate(net, x, verify=True)
        assert res.verify.percent_exact == 100.0, (preset, {k: int(v.sum()) for k, v in res.verify.mismatches.items()})
        want = expected_levels(net, x)
        for name, lv in graph_levels.items():
            np.testing.assert_array_equal(want[name], lv, err_msg=f"{preset} {name}")


@pytest.mark.parametrize("levels", [1, 3, 15, 255])
@pytest.mark.parametrize("phase", [0.0, 0.5])
def test_he_normal_cnn_is_exact_with_defaults(levels, phase):
    graph = he_cnn(levels, phase, seed=levels)
    x = _f32(np.random.default_rng(1).normal(size=(12, 3, 12, 12)))
    _check_model(graph, x)
    # the reference, called as the README shows, gives the same counts as the engine
    net = convert(graph, "casc")
    ref, got = ref_simulate(net, x[:3]), engine.simulate(net, x[:3])
    for name in ref.counts:
        np.testing.assert_array_equal(got.counts[name], ref.counts[name], err_msg=name)


def test_onnx_fixtures_and_bundled_model_are_exact_with_defaults():
    """Trained (bundled digits CNN, L = 7) and exported fixture models (VGG, ResNet, max pool, MLP, QCFS
    round-half): every hidden count of every sample equals the float64 quantized ANN."""
    pytest.importorskip("onnx")
    from evsnn.datasets import load_digits
    from evsnn.demo import bundled_model
    from evsnn.frontends import onnx as fe
    from test_onnx_frontend import QUANTIZED
    graph = fe.load(bundled_model())
    x = load_digits("test")[0][:200]
    _check_model(graph, x)
    for path in QUANTIZED:
        graph = fe.load(path)
        x = _f32(np.random.default_rng(2).normal(size=(16,) + graph.input.shape))
        Ls = {n.levels for n in graph.nodes if isinstance(n, A.QuantAct)}
        ok = len(Ls) == 1 and ((min(Ls) + 1) & min(Ls)) == 0
        _check_model(graph, x, EXACT if ok else ("casc",))


def test_cli_verify_writes_and_reports_exactness(tmp_path, monkeypatch):
    import pickle
    import h5py
    from click.testing import CliRunner
    import evsnn.frontends as frontends
    from evsnn.cli import cli
    from test_cli import TinyFrontend
    monkeypatch.setattr(frontends, "available", lambda: {"tiny": TinyFrontend})
    model = tmp_path / "m.tiny"
    model.write_bytes(pickle.dumps(he_cnn(15, 0.5)))
    x = _f32(np.random.default_rng(3).normal(size=(9, 3, 12, 12)))
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=np.arange(9) % 4)
    runner = CliRunner()
    for preset in ("casc", "bitserial", "if"):
        out = tmp_path / f"{preset}.h5"
        r = runner.invoke(cli, ["run", str(model), "--preset", preset, "--data", str(tmp_path / "d.npz"),
                                "-o", str(out), "--verify", "--batch-size", "4"])
        assert r.exit_code == 0, (r.output, r.exception)
        with h5py.File(out, "r") as f:
            assert f["config"].attrs["dtype"] == ("float32" if preset == "if" else "float64")
            if preset == "if":
                assert f["verify"].attrs["kind"] == "rate" and "exact" not in f["verify"]
                assert f["verify/rate_error_mean/a1"].shape == (9,)
                continue
            assert f["verify/exact"].dtype == bool and f["verify/exact"][()].all()
            assert f["verify/mismatches/a4"].shape == (9,) and not f["verify/mismatches/a4"][()].any()
        assert "exact: 100.00 % of samples (9 of 9)" in r.output
        for cmd in (["report", str(out)], ["inspect", str(out)]):
            r = runner.invoke(cli, cmd)
            assert r.exit_code == 0 and "exact: 100.00 % of samples" in r.output, r.output
    # a wrong count shows in the report
    with h5py.File(tmp_path / "casc.h5", "r+") as f:
        f["verify/exact"][2] = False
        f["verify/mismatches/a2"][2] = 3
    r = runner.invoke(cli, ["report", str(tmp_path / "casc.h5")])
    assert "exact: 88.89 % of samples (8 of 9); neurons off the ANN level: a2 3" in r.output


def test_two_input_fed_populations_take_their_own_drive_grids():
    """Two populations fed by the analog input (two branches of x): the engine puts each sample's drive
    totals on the grid population by population (engine.pack.input_drive, PI_DOFF, pk.dperm); its counts
    equal the reference simulator's, on 1 and 2 threads, for real (non-dyadic) weights."""
    from evsnn.engine.pack import D_INPUT, PI_DRIVE

    rng = np.random.default_rng(11)
    g = A.AnnGraph([
        A.Input("x", (), (12,)),
        A.Dense("d1", ("x",), rng.standard_normal((16, 12)) * 0.4, rng.standard_normal(16) * 0.1),
        A.QuantAct("a1", ("d1",), 15, 1.0, 0.0),
        A.Dense("d2", ("x",), rng.standard_normal((16, 12)) * 0.4, rng.standard_normal(16) * 0.1),
        A.QuantAct("a2", ("d2",), 7, 1.0, 0.0),
        A.Add("s", ("a1", "a2")),
        A.Dense("out", ("s",), rng.standard_normal((3, 16)) * 0.3, np.zeros(3)),
    ], "out", "dense")
    net = convert(g, "casc")
    x = rng.random((6, 12))
    prep = engine.prepare(net)
    assert (prep.packed.pi[:len(net.populations), PI_DRIVE] == D_INPUT).sum() == 2
    want = ref_simulate(net, x)
    for th in (1, 2):
        got = engine.simulate(prep, x, threads=th)
        for name in want.counts:
            np.testing.assert_array_equal(got.counts[name], want.counts[name])


@pytest.mark.parametrize("way", ["accumulate", "rows"])
@pytest.mark.parametrize("duplicates", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_projection_sums_in_scipys_order_bit_for_bit(dtype, duplicates, way, monkeypatch):
    # the reference's dense projection (evsnn.ir.drive.dense_project) replaced SciPy's csr.T.dot to keep
    # SciPy out of a short run; same order of additions, so the same bits on He-normal (non-dyadic)
    # weights, with empty rows, duplicate indices in a row, zero columns and negative signals
    import scipy.sparse as sp

    from evsnn.ir import snn as S

    rng = np.random.default_rng(11)
    n_pre, n_post = 40, 23
    lens = rng.integers(0, 9, n_pre)
    lens[[3, 17]] = 0
    indptr = np.concatenate([[0], np.cumsum(lens)])
    indices = (rng.integers(0, n_post, indptr[-1]) if duplicates else
               np.concatenate([rng.permutation(n_post)[:k] for k in lens]).astype(np.int64))
    data = (rng.normal(0, np.sqrt(2 / n_pre), indptr[-1])).astype(dtype)
    pr = S.DenseProjection("a", "b", (n_pre,), (n_post,), indptr=indptr, indices=indices, data=data)
    s = rng.normal(0, 1, (5, n_pre)) * (rng.random((5, n_pre)) < 0.5)
    s[:, 7] = 0.0
    if way == "rows":
        monkeypatch.setattr(DR, "ACCUMULATE_SAMPLES", 0)
    want = np.asarray(sp.csr_matrix((data, indices, indptr), shape=(n_pre, n_post)).T.dot(s.T).T)
    got = DR.project(pr, s)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
