"""Every user-facing error of the core is a ValueError subclass naming the problem."""

import dataclasses

import h5py
import numpy as np
import pytest

from evsnn.convert import calibrate, convert
from evsnn.errors import ConversionError, EvsnnError, FormatError, ShapeError
from evsnn.ir import ann as A
from evsnn.reference import ann_forward, simulate
from evsnn.store import load_network, save_network


def small_graph(act="quant", levels=4):
    rng = np.random.default_rng(1)
    nodes = [A.Input("x", (), (1, 6, 6)),
             A.Conv("c1", ("x",), rng.integers(-8, 9, (3, 1, 3, 3)) / 16, np.zeros(3), (1, 1), (1, 1, 1, 1), 1)]
    if act == "quant":
        nodes.append(A.QuantAct("a1", ("c1",), levels, 1.0, 0.0))
    elif act == "clip":
        nodes.append(A.ClipAct("a1", ("c1",), 1.0))
    else:
        nodes.append(A.Relu("a1", ("c1",)))
    nodes += [A.Flatten("f", ("a1",)), A.Dense("d", ("f",), rng.integers(-8, 9, (4, 108)) / 16, np.zeros(4))]
    return A.AnnGraph(nodes, "d")


def test_errors_are_value_errors():
    for cls in (ConversionError, FormatError, ShapeError):
        assert issubclass(cls, EvsnnError) and issubclass(cls, ValueError)


def test_unknown_preset():
    with pytest.raises(ConversionError, match="unknown preset 'foo'.*casc"):
        convert(small_graph(), "foo")


def test_casc_needs_wake_equal_levels():
    net = convert(small_graph(levels=4), "casc")
    with pytest.raises(ConversionError, match="T_w = L = 4"):
        simulate(net, np.zeros((1, 1, 6, 6)), wake=3)
    simulate(net, np.zeros((1, 1, 6, 6)), wake=3, allow_inexact=True)  # explicit opt-in for ablations


def test_bitserial_needs_two_power_minus_one_levels():
    with pytest.raises(ConversionError, match="2\\^K − 1"):
        convert(small_graph(levels=4), "bitserial")


def test_relu_needs_calibration_and_calibration_fixes_it():
    g = small_graph("relu")
    with pytest.raises(ConversionError, match="calibrate"):
        convert(g, "if")
    cal = calibrate(g, np.random.default_rng(0).random((8, 1, 6, 6)), percentile=100)
    lam = cal.node("a1").scale
    z = ann_forward(g, np.random.default_rng(0).random((8, 1, 6, 6)), return_all=True)["c1"]
    assert lam == pytest.approx(z.max())
    convert(cal, "if")


def test_threshold_relu_needs_levels_for_exact_presets():
    g = small_graph("clip")
    with pytest.raises(ConversionError, match="--levels"):
        convert(g, "casc")
    assert convert(g, "casc", levels=4).levels == 4


def test_levels_mismatch_with_quantized_model():
    with pytest.raises(ConversionError, match="L = \\[4\\].*levels = 8"):
        convert(small_graph(levels=4), "casc", levels=8)


def test_bad_input_shape():
    net = convert(small_graph(), "casc")
    with pytest.raises(ShapeError, match=r"\(1, 5, 5\).*\(1, 6, 6\)"):
        simulate(net, np.zeros((2, 1, 5, 5)))
    with pytest.raises(ShapeError):
        ann_forward(small_graph(), np.zeros((2, 3)))


def test_bad_sleep_and_wake_options():
    net = convert(small_graph(), "if")
    with pytest.raises(ConversionError, match="sleep"):
        simulate(net, np.zeros((1, 1, 6, 6)), sleep="forever")
    with pytest.raises(ConversionError, match="wake"):
        simulate(net, np.zeros((1, 1, 6, 6)), wake=0)


def test_unsupported_graph_structure_is_named():
    g = small_graph()
    bad = A.AnnGraph(g.nodes[:2] + [A.MaxPool("m", ("c1",), (2, 2), (2, 2)),
                                    A.Flatten("f", ("m",)), A.Dense("d", ("f",), np.ones((2, 27)), np.zeros(2))], "d")
    with pytest.raises(ConversionError, match="'m' \\(maxpool\\)"):
        convert(bad, "casc")
    dup = A.AnnGraph(g.nodes + [A.Identity("d", ("d",))], "d")
    with pytest.raises(ConversionError, match="duplicate"):
        convert(dup, "casc")
    wrong = A.AnnGraph([g.nodes[0], dataclasses.replace(g.nodes[1], weight=np.ones((3, 2, 3, 3)))] + g.nodes[2:], "d")
    with pytest.raises(ConversionError, match="'c1' \\(conv\\).*input channels"):
        convert(wrong, "casc")


def test_network_file_round_trip_and_version_check(tmp_path):
    net = convert(small_graph(), "casc")
    path = tmp_path / "net.h5"
    save_network(net, path)
    back = load_network(path)
    x = np.random.default_rng(2).integers(0, 256, (3, 1, 6, 6)) / 256
    np.testing.assert_array_equal(simulate(net, x, sleep="auto").readout, simulate(back, x, sleep="auto").readout)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(FormatError, match="format_version 99.*reads versions 1"):
        load_network(path)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(FormatError, match="not an HDF5 file"):
        load_network(tmp_path / "junk.h5")
    with pytest.raises(FormatError, match="not found"):
        load_network(tmp_path / "missing.h5")


def test_failed_write_leaves_no_file(tmp_path):
    net = convert(small_graph(), "casc")
    net.populations[0].threshold = object()  # cannot be stored
    path = tmp_path / "net.h5"
    with pytest.raises(Exception):
        save_network(net, path)
    assert list(tmp_path.iterdir()) == []


def test_reserved_population_names_are_refused():
    g = small_graph()
    renamed = A.AnnGraph([dataclasses.replace(n, name="input") if n.name == "a1" else
                          dataclasses.replace(n, inputs=("input",)) if n.inputs == ("a1",) else n
                          for n in g.nodes], "d")
    with pytest.raises(ConversionError, match="'input' is reserved"):
        convert(renamed, "casc")
