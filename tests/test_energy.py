"""Energy counts and estimates: SOPs of a small conv network checked against counts made by hand."""

import json
import math

import numpy as np
import pytest

from evsnn import energy as E
from evsnn.convert import convert
from evsnn.errors import FormatError
from evsnn.ir import ann as A
from evsnn.reference import simulate


def conv_net_graph():
    """input (1,4,4) → conv 3×3/1 pad 1 (2 ch) → q1 → conv 3×3/2 pads (1,1,0,0) (3 ch) → q2 → dense (2)."""
    rng = np.random.default_rng(3)
    nodes = [
        A.Input("x", (), (1, 4, 4)),
        A.Conv("c1", ("x",), rng.integers(1, 9, (2, 1, 3, 3)) / 16, np.full(2, 0.125), (1, 1), (1, 1, 1, 1), 1),
        A.QuantAct("q1", ("c1",), 4, 1.0, 0.0),
        A.Conv("c2", ("q1",), rng.integers(-8, 9, (3, 2, 3, 3)) / 16, np.full(3, 0.25), (2, 2), (1, 1, 0, 0), 1),
        A.QuantAct("q2", ("c2",), 4, 1.0, 0.0),
        A.Flatten("f", ("q2",)),
        A.Dense("d", ("f",), rng.choice([-0.5, 0.25, 0.5], (2, 12)), np.zeros(2)),
    ]
    return A.AnnGraph(nodes, "d")


# By hand. conv2 on a 4×4 map, kernel 3, stride 2, pad 1 before / 0 after: output row o reads
# input rows 2o−1 … 2o+1, so o = 0 covers rows {0, 1} and o = 1 covers rows {1, 2, 3}.
# Input row 0 is in 1 window, row 1 in 2, rows 2 and 3 in 1 each; same for columns; 3 output channels.
HAND_Q1 = np.outer([1, 2, 1, 1], [1, 2, 1, 1]) * 3
# conv1 on the 4×4 input, kernel 3, stride 1, pad 1: output rows o−1 … o+1, o = 0..3:
# input row 0 is read by o ∈ {0, 1}, row 1 by {0, 1, 2}, row 2 by {1, 2, 3}, row 3 by {2, 3}; 2 channels.
HAND_INPUT = np.outer([2, 3, 3, 2], [2, 3, 3, 2]) * 2


def test_fanout_matches_hand_count_with_stride_and_padding_edges():
    net = convert(conv_net_graph(), "casc")
    fan = E.layer_fanout(net)
    q1 = fan["q1"].reshape(2, 4, 4)
    for c in range(2):
        np.testing.assert_array_equal(q1[c], HAND_Q1)
    np.testing.assert_array_equal(fan["q2"], np.full(12, 2))  # dense: every weight non-zero, 2 targets
    np.testing.assert_array_equal(fan["input"].reshape(4, 4), HAND_INPUT)
    assert E.input_macs_per_step(net) == HAND_INPUT.sum() == 200


def test_simulated_sops_equal_hand_count_of_the_raster():
    graph = conv_net_graph()
    net = convert(graph, "casc")
    x = np.random.default_rng(0).integers(0, 257, (3, 1, 4, 4)) / 256
    res = simulate(net, x, sleep="auto", record=("counts", "raster"))
    hand = {"q1": np.tile(HAND_Q1.reshape(-1), 2), "q2": np.full(12, 2)}
    for name, fan in hand.items():
        spikes = np.abs(res.raster[name]).astype(np.int64)  # (N, steps, size); negative spikes count too
        np.testing.assert_array_equal(res.sops[name], spikes @ fan)
        assert E.sop_count(net, name, res.raster[name]) == int((spikes @ fan).sum())
        assert res.spikes_pos[name].sum() + res.spikes_neg[name].sum() == spikes.sum()
    # analog input: 200 MACs every wake step, none in sleep
    np.testing.assert_array_equal(res.input_macs[:, :net.levels], 200)
    assert not res.input_macs[:, net.levels:].any()


def test_ann_ops_per_node():
    rng = np.random.default_rng(0)
    nodes = [
        A.Input("x", (), (4, 6, 6)),
        A.Conv("dw", ("x",), rng.random((4, 1, 3, 3)), np.zeros(4), (2, 2), (1, 1, 1, 1), 4),  # depthwise
        A.Conv("pw", ("dw",), rng.random((8, 4, 1, 1)), np.zeros(8), (1, 1), (0, 0, 0, 0), 1),
        A.Conv("sc", ("x",), rng.random((8, 4, 1, 1)), np.zeros(8), (2, 2), (0, 0, 0, 0), 1),
        A.Add("add", ("pw", "sc")),
        A.QuantAct("q", ("add",), 3, 1.0, 0.0),
        A.AvgPool("pool", ("q",), (2, 2), (1, 1)),
        A.MaxPool("mp", ("pool",), (2, 2), (2, 2)),
        A.Flatten("f", ("mp",)),
        A.Dense("d", ("f",), rng.random((5, 8)), np.zeros(5)),
    ]
    ops = E.ann_ops(A.AnnGraph(nodes, "d"))
    assert ops["dw"] == {"macs": 4 * 3 * 3 * 1 * 3 * 3, "adds": 0, "outputs": 36}  # Cout·Ho·Wo·(Cin/g)·kh·kw
    assert ops["pw"]["macs"] == 8 * 3 * 3 * 4
    assert ops["sc"]["macs"] == 8 * 3 * 3 * 4
    assert ops["add"] == {"macs": 0, "adds": 72, "outputs": 72}
    assert ops["pool"] == {"macs": 0, "adds": 8 * 2 * 2 * 4, "outputs": 32}  # window sums
    assert ops["mp"] == {"macs": 0, "adds": 8 * 1 * 1 * 3, "outputs": 8}  # comparisons
    assert ops["d"] == {"macs": 40, "adds": 0, "outputs": 5}
    assert set(ops) == {"dw", "pw", "sc", "add", "pool", "mp", "d"}


def test_builtin_profiles_are_horowitz_numbers():
    p = E.PROFILES
    assert (p["45nm-fp32"].mac, p["45nm-fp32"].ac) == (4.6, 0.9)
    assert p["45nm-int32"].mac == pytest.approx(3.2) and p["45nm-int32"].ac == 0.1
    assert p["45nm-int8"].mac == pytest.approx(0.23) and p["45nm-int8"].ac == 0.03
    mem = p["45nm-fp32-sram"]
    assert mem.mem_sop > 0 and mem.mem_mac > 0 and "SRAM" in mem.source
    assert all("ISSCC 2014" in q.source for q in p.values())


def test_estimate_is_the_design_formula_for_arithmetic_profiles():
    ann = {"c1": {"macs": 1000, "adds": 0, "outputs": 10}, "d": {"macs": 500, "adds": 0, "outputs": 2}}
    est = E.estimate(E.PROFILES["45nm-fp32"], {"q1": 300.0, "q2": 20.0}, 200.0, 1234.0, ann)
    assert est["snn_pj"] == pytest.approx(4.6 * 200 + 0.9 * 320)
    assert est["ann_pj"] == pytest.approx(4.6 * 1500)
    assert est["ratio"] == pytest.approx(est["snn_pj"] / est["ann_pj"])
    assert est["snn_layers"]["q1"] == pytest.approx(270) and "neuron updates" not in est["snn_layers"]
    mem = E.estimate(E.PROFILES["45nm-fp32-sram"], {"q1": 300.0, "q2": 20.0}, 200.0, 1234.0, ann)
    assert mem["snn_pj"] == pytest.approx((4.6 + 20) * 200 + (0.9 + 30) * 320 + 20 * 1234)
    assert mem["ann_pj"] == pytest.approx((4.6 + 20) * 1500 + 10 * 12)
    assert math.isnan(E.estimate(E.PROFILES["45nm-int8"], {}, 0, 0, {})["ratio"])  # the ANN costs nothing


def test_user_profiles_json_and_toml(tmp_path):
    j = tmp_path / "chip.json"
    j.write_text(json.dumps({"name": "chip", "mac": 1.5, "ac": 0.25, "mem_sop": 2}))
    p = E.get_profile(str(j))
    assert (p.name, p.mac, p.ac, p.mem_sop, p.mem_mac) == ("chip", 1.5, 0.25, 2.0, 0.0)
    t = tmp_path / "other.toml"
    t.write_text('mac = 2.0\nac = 0.5\nsource = "datasheet"\n')
    q = E.load_profile(t)
    assert (q.name, q.mac, q.ac, q.source) == ("other", 2.0, 0.5, "datasheet")
    assert E.get_profile("45nm-int8") is E.PROFILES["45nm-int8"]


@pytest.mark.parametrize("text, match", [
    ('{"mac": 1}', "needs 'ac'"),
    ('{"mac": 1, "ac": -2}', "≥ 0"),
    ('{"mac": 1, "ac": 2, "speed": 3}', "unknown energy profile keys"),
    ('{"mac": 1, ', "not a readable"),
    ('[1, 2]', "table"),
])
def test_bad_user_profiles(tmp_path, text, match):
    f = tmp_path / "p.json"
    f.write_text(text)
    with pytest.raises(FormatError, match=match):
        E.load_profile(f)


def test_unknown_profile_name():
    with pytest.raises(FormatError, match="45nm-fp32"):
        E.get_profile("7nm-magic")
    with pytest.raises(FormatError, match="not found"):
        E.get_profile("missing.toml")


def test_network_fallback_counts_synapses():
    net = convert(conv_net_graph(), "casc")
    ops = E.network_ann_ops(net)
    assert ops["input→q1"]["macs"] == 200
    assert ops["q1→q2"]["macs"] == int(HAND_Q1.sum()) * 2
    assert ops["q2→d"]["macs"] == 24
