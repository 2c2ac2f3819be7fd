"""Property tests of the exactness statements of design.md, on the NumPy reference simulator."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evsnn.convert import convert
from evsnn.reference import ann_forward, ann_levels, simulate
from strategies import graph_and_input, graphs, inputs


def _hidden(net):
    return [p.name for p in net.populations if not p.name.endswith("/prepool")]


@given(graph_and_input())
def test_casc_counts_equal_quantized_ann_levels(gx):
    """casc, T_w = L, sleep until quiet: every hidden count is the ANN level, readout = L × logits."""
    graph, x = gx
    net = convert(graph, "casc")
    res = simulate(net, x, sleep="auto")
    assert res.quiescent.all()
    levels = ann_levels(graph, x)
    for name in _hidden(net):
        np.testing.assert_array_equal(res.counts[name], levels[name], err_msg=name)
        np.testing.assert_array_equal(res.values[name], levels[name], err_msg=name)
    np.testing.assert_allclose(res.readout[:, -1], net.levels * ann_forward(graph, x), rtol=0, atol=1e-9)


@settings(max_examples=15)
@given(graph_and_input(mixed_levels=True))
def test_casc_is_exact_with_a_different_L_per_layer(gx):
    """Layers quantized with different L: casc runs T_w = max L and stays exact (readout = T_w × logits)."""
    graph, x = gx
    net = convert(graph, "casc")
    res = simulate(net, x, sleep="auto")
    levels = ann_levels(graph, x)
    for name in _hidden(net):
        np.testing.assert_array_equal(res.counts[name], levels[name], err_msg=name)
    np.testing.assert_allclose(res.readout[:, -1], net.levels * ann_forward(graph, x), rtol=0, atol=1e-9)


@given(graph_and_input(levels=(1, 3, 7, 15)))
def test_bitserial_bits_are_binary_digits_of_levels(gx):
    graph, x = gx
    net = convert(graph, "bitserial")
    res = simulate(net, x, record=("counts", "raster"))
    levels = ann_levels(graph, x)
    slots = net.stages()
    K = net.bits
    for name in _hidden(net):
        q = levels[name].astype(np.int64)
        emitted = res.raster[name][:, slots[name] * K:(slots[name] + 1) * K]  # (N, K, size), MSB first
        digits = np.stack([(q >> (K - 1 - k)) & 1 for k in range(K)], axis=1)
        np.testing.assert_array_equal(emitted, digits, err_msg=name)
        assert np.abs(res.raster[name]).sum() == emitted.sum()  # no spike outside the emit window
        np.testing.assert_array_equal(res.values[name], q)
    np.testing.assert_allclose(res.readout[:, -1], net.levels * ann_forward(graph, x), rtol=0, atol=1e-9)


@settings(max_examples=10)
@given(graph_and_input(levels=(4, 8), phases=(0.0,), max_depth=3, residual=False))
def test_rate_presets_error_shrinks_with_T(gx):
    """if / qcfs / deng-gu: the readout rate approaches the clip-ANN logits as T grows.

    Bound tested: mean |readout_T/T − logits| at T = 64·L is at most the value at T = L
    (plus 1/T slack), and for the first layer |S_T/T − clip(u,0,1)| ≤ 1/T exactly, u = z/λ
    (IF with v0 = 0: S_T = clip(floor(T·u), 0, T); qcfs and deng-gu round instead: ≤ 1/(2T)).
    """
    graph, x = gx
    from evsnn.ir import ann as A
    clip = A.AnnGraph([A.ClipAct(n.name, n.inputs, n.scale) if isinstance(n, A.QuantAct) else n
                       for n in graph.nodes], graph.output)
    logits = ann_forward(clip, x)
    vals = ann_forward(clip, x, return_all=True)
    first = next(n for n in clip.nodes if isinstance(n, A.ClipAct))
    u = np.clip(vals[first.inputs[0]].reshape(len(x), -1) / first.scale, 0, 1)
    for preset, bound in (("if", 1.0), ("qcfs", 0.5), ("deng-gu", 0.5)):
        net = convert(clip, preset)
        errs = []
        for T in (8, 512):
            res = simulate(net, x, wake=T)
            errs.append(np.abs(res.readout[:, -1] / T - logits).mean())
            np.testing.assert_array_less(np.abs(res.counts[first.name] / T - u), bound / T + 1e-12)
        assert errs[1] <= errs[0] + 1 / 8 + 1e-12, (preset, errs)


@settings(max_examples=15)
@given(graph_and_input(), st.integers(1, 6), st.sampled_from(["if", "casc", "bitserial"]))
def test_running_longer_reproduces_first_steps(gx, extra, preset):
    graph, x = gx
    if preset == "bitserial":
        from evsnn.ir import ann as A
        graph = A.AnnGraph([A.QuantAct(n.name, n.inputs, 3, 3 * n.scale / n.levels, n.phase)
                            if isinstance(n, A.QuantAct) else n for n in graph.nodes], graph.output)
    net = convert(graph, preset)
    T = net.default_wake
    if preset == "casc":
        a = simulate(net, x, sleep=2)
        b = simulate(net, x, sleep=2 + extra)
    else:
        a = simulate(net, x, wake=T)
        b = simulate(net, x, wake=T + extra, allow_inexact=True)
    n = a.steps
    np.testing.assert_array_equal(a.readout, b.readout[:, :n])
    for name in a.spikes_pos:
        np.testing.assert_array_equal(a.spikes_pos[name], b.spikes_pos[name][:, :n])
        np.testing.assert_array_equal(a.spikes_neg[name], b.spikes_neg[name][:, :n])
        np.testing.assert_array_equal(a.sops[name], b.sops[name][:, :n])


@settings(max_examples=10)
@given(graphs(max_depth=3), st.data())
def test_auto_sleep_stops_at_a_fixed_point(graph, data):
    x = data.draw(inputs(graph))
    net = convert(graph, "casc")
    auto = simulate(net, x, sleep="auto")
    longer = simulate(net, x, sleep=auto.steps - auto.wake + 5)
    np.testing.assert_array_equal(longer.readout[:, auto.steps - 1], longer.readout[:, -1])
    for name in auto.counts:
        np.testing.assert_array_equal(auto.counts[name], longer.counts[name])
        assert longer.spikes_pos[name][:, auto.steps:].sum() == 0
        assert longer.spikes_neg[name][:, auto.steps:].sum() == 0


@settings(max_examples=15)
@given(graph_and_input(), st.data())
def test_casc_stays_exact_with_synaptic_delays(gx, data):
    """Delays only move spikes in time; the CIF fixed point (design.md) does not depend on timing."""
    graph, x = gx
    net = convert(graph, "casc")
    for pr in net.projections:
        if pr.pre != "input":
            pr.delay = data.draw(st.integers(0, 3))
    net.validate()
    res = simulate(net, x, sleep="auto")
    assert res.quiescent.all()
    levels = ann_levels(graph, x)
    for name in _hidden(net):
        np.testing.assert_array_equal(res.counts[name], levels[name], err_msg=name)
    np.testing.assert_allclose(res.readout[:, -1], net.levels * ann_forward(graph, x), rtol=0, atol=1e-9)


@settings(max_examples=10)
@given(graphs(max_depth=3), st.data())
def test_rate_input_of_binary_images_equals_analog_input(graph, data):
    """Bernoulli spikes with p ∈ {0, 1} are deterministic, so rate mode must equal analog mode."""
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    x = rng.integers(0, 2, size=(2,) + tuple(graph.input.shape)).astype(float)
    a = simulate(convert(graph, "casc"), x, sleep=3)
    r = simulate(convert(graph, "casc", input_mode="rate"), x, sleep=3, seed=7)
    np.testing.assert_array_equal(a.readout, r.readout)
    assert r.spikes_pos["input"][:, :a.wake].sum() == x.sum() * a.wake


def test_recurrent_projection_needs_a_delay():
    from evsnn.errors import ConversionError
    from evsnn.ir import snn as S
    from test_core_errors import small_graph
    net = convert(small_graph(), "casc")
    p = net.populations[0]
    loop = S.IdentityProjection(p.name, p.name, p.shape, p.shape, delay=0, weight=-0.5)
    net.projections.append(loop)
    with pytest.raises(ConversionError, match="delay ≥ 1"):
        net.validate()
    loop.delay = 1
    net.validate()
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 6, 6)) / 256
    res = simulate(net, x, sleep="auto", max_sleep=200)
    assert res.readout.shape[1] == res.wake + res.sleep_steps.max()


@settings(max_examples=10)
@given(graphs(max_depth=3, image=True), st.data())
def test_event_input_is_exact_against_the_ann_on_the_mean_frame(graph, data):
    """Binned events (N, T_w, C, H, W): a spike of value 1 per event, so casc is exact on x = Σ_t counts / T_w."""
    net = convert(graph, "casc", input_mode="events")
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    bins = data.draw(st.integers(1, net.levels))
    ev = rng.integers(0, 3, size=(2, bins) + tuple(graph.input.shape)).astype(float)
    res = simulate(net, ev, sleep="auto")
    x = ev.sum(axis=1) / net.levels
    levels = ann_levels(graph, x)
    for name in _hidden(net):
        np.testing.assert_array_equal(res.counts[name], levels[name], err_msg=name)
    assert (res.spikes_pos["input"].sum(axis=1) == ev.reshape(2, -1).sum(axis=1)).all()


def test_event_input_shape_and_count_errors():
    from evsnn.errors import ShapeError
    from test_core_errors import small_graph
    net = convert(small_graph(), "casc", input_mode="events")
    with pytest.raises(ShapeError, match="time bins"):
        simulate(net, np.zeros((2, 1, 6, 6)))
    with pytest.raises(ShapeError, match="integer event counts"):
        simulate(net, np.full((1, 2, 1, 6, 6), 0.5))
    with pytest.raises(ShapeError, match="5 time bins.*4 wake steps"):
        simulate(net, np.zeros((1, 5, 1, 6, 6)))
