"""Regression tests from a review of the core (convert, ir, reference, store).

Each test failed before its fix: a crash, a spurious refusal, or a silently wrong network.
"""

import h5py
import numpy as np
import pytest

from evsnn import engine
from evsnn.convert import compose, convert
from evsnn.errors import ConversionError
from evsnn.ir import ann as A
from evsnn.ir import snn as S
from evsnn.reference import ann_forward, ann_levels, simulate
from evsnn.store import network as store_network

RNG = np.random.default_rng(7)


def _w(*shape):
    return RNG.integers(-40, 41, size=shape) / 64.0


def _b(n):
    return RNG.integers(-16, 33, size=n) / 128.0


def _q(name, inp, levels=4):
    return A.QuantAct(name, (inp,), levels, levels / 8.0, 0.0)


def _x(shape, n=3):
    return RNG.integers(-256, 257, size=(n,) + shape) / 256.0


def _assert_exact(graph, x, preset="casc"):
    net = convert(graph, preset)
    sleep = "auto" if preset == "casc" else 0
    res = simulate(net, x, sleep=sleep)
    levels = ann_levels(graph, x)
    for p in net.populations:
        if p.name in levels:
            np.testing.assert_array_equal(res.values[p.name], levels[p.name], err_msg=p.name)
    want = net.levels * ann_forward(graph, x).reshape(len(x), -1)
    np.testing.assert_allclose(res.readout[:, -1].reshape(len(x), -1), want, rtol=0, atol=1e-9)
    got = engine.simulate(net, x, sleep=sleep)
    np.testing.assert_array_equal(got.readout, res.readout)
    return net


# --- compose: a conv/pool chain that ends in a Flatten --------------------------------------------------------

@pytest.mark.parametrize("preset", ["casc", "bitserial"])
@pytest.mark.parametrize("into", ["activation", "readout"])
@pytest.mark.parametrize("op", ["conv", "avgpool"])
def test_windowed_chain_into_a_flattened_target(op, into, preset):
    """act → Conv/AvgPool → Flatten → act (or → output): was a ConvProjection/PoolProjection with a
    1-D post shape, so fanout() (reference) and the engine crashed with IndexError."""
    L = 4 if preset == "casc" else 3
    nodes = [A.Input("x", (), (2, 5, 5)), A.Conv("c1", ("x",), _w(3, 2, 3, 3), _b(3)), _q("a", "c1", L)]
    if op == "conv":
        nodes.append(A.Conv("c2", ("a",), _w(2, 3, 3, 3), _b(2)))  # (2, 1, 1)
        flat = 2
    else:
        nodes.append(A.AvgPool("c2", ("a",), (2, 2), (2, 2), (1, 1, 1, 1), False))  # (3, 2, 2)
        flat = 12
    nodes.append(A.Flatten("f", ("c2",)))
    if into == "activation":
        nodes += [_q("b", "f", L), A.Dense("o", ("b",), _w(3, flat), _b(3))]
        out = "o"
    else:
        out = "f"
    net = _assert_exact(A.AnnGraph(nodes, out), _x((2, 5, 5)), preset)
    for pr in net.projections:
        if isinstance(pr, (S.ConvProjection, S.PoolProjection)):
            assert len(pr.post_shape) == 3


# --- compose: Flatten/Identity before a Dense -----------------------------------------------------------------

def test_flatten_before_dense_needs_no_chain_matrix(monkeypatch):
    """act → Flatten → Dense multiplied the weights by an explicit n_in × n_in identity matrix: O(n_in²)
    memory, and a refusal ("too large") for a VGG-size flatten (e.g. 64×12×12 inputs)."""
    monkeypatch.setattr(compose, "MAX_DENSE_ENTRIES", 100)  # stands in for a large feature map
    g = A.AnnGraph([A.Input("x", (), (2, 4, 4)), A.Conv("c", ("x",), _w(2, 2, 1, 1), _b(2)), _q("a", "c"),
                    A.Flatten("f", ("a",)), A.Identity("i", ("f",)), A.Dense("o", ("i",), _w(3, 32), _b(3))], "o")
    _assert_exact(g, _x((2, 4, 4)))


# --- ir.ann validation ---------------------------------------------------------------------------------------

def _dense_graph(act):
    return A.AnnGraph([A.Input("x", (), (4,)), A.Dense("d", ("x",), _w(5, 4), _b(5)), act,
                       A.Dense("o", ("q",), _w(3, 5), _b(3))], "o")


@pytest.mark.parametrize("act, match", [
    (A.QuantAct("q", ("d",), 2.5, 1.0), "whole number"),  # ann_forward used 2.5, convert int(2.5) = 2
    (A.QuantAct("q", ("d",), float("inf"), 1.0), "whole number"),
    (A.QuantAct("q", ("d",), 3, float("inf")), "finite"),  # gave inf/nan weights
    (A.QuantAct("q", ("d",), 3, 1.0, float("nan")), "phase"),
    (A.ClipAct("q", ("d",), float("inf")), "finite"),
])
def test_bad_activation_parameters_are_refused(act, match):
    with pytest.raises(ConversionError, match=match):
        convert(_dense_graph(act), "casc" if isinstance(act, A.QuantAct) else "if")


@pytest.mark.parametrize("levels", [0, -1, 2.5, True])
@pytest.mark.parametrize("preset", ["casc", "if"])
def test_bad_levels_argument_is_refused(levels, preset):
    """convert(levels=2.5) silently used L = 2; levels=-1 gave a network with default_wake = -1."""
    with pytest.raises(ConversionError, match="levels must be a whole number"):
        convert(_dense_graph(A.ClipAct("q", ("d",), 1.0)), preset, levels=levels)


@pytest.mark.parametrize("node, match", [
    (A.Conv("c", ("x",), np.ones((2, 2, 3, 3)), np.zeros(2), (0, 1)), "stride"),  # was ZeroDivisionError
    (A.Conv("c", ("x",), np.ones((2, 2, 3, 3)), np.zeros(2), (1, 1), (-1, 0, 0, 0)), "pads"),  # was accepted
    (A.AvgPool("c", ("x",), (0, 2), (1, 2)), "kernel"),  # was accepted
    (A.MaxPool("c", ("x",), (2, 2), (2, 0)), "stride"),
    (A.Conv("c", ("x",), np.ones((2, 2, 3, 3)), None), "bias"),  # was AttributeError
    (A.Conv("c", ("x",), np.ones((2, 2, 3)), np.zeros(2)), "4-D"),  # was a bare unpacking ValueError
])
def test_bad_layer_parameters_name_the_node(node, match):
    g = A.AnnGraph([A.Input("x", (), (2, 6, 6)), node], "c")
    with pytest.raises(ConversionError, match=f"node 'c'.*{match}"):
        g.validate()


def test_dense_weight_must_be_a_matrix():
    g = A.AnnGraph([A.Input("x", (), (6,)), A.Dense("d", ("x",), np.ones(6), np.zeros(1))], "d")
    with pytest.raises(ConversionError, match="node 'd'.*2-D"):  # was IndexError
        g.validate()


# --- convert: exact preset without any activation ------------------------------------------------------------

@pytest.mark.parametrize("preset", ["casc", "bitserial"])
def test_exact_preset_on_a_model_without_activations(preset):
    """A purely linear model: TypeError (float(None)) before; now a ConversionError, or exact with levels."""
    g = A.AnnGraph([A.Input("x", (), (4,)), A.Dense("d", ("x",), _w(3, 4), _b(3))], "d")
    with pytest.raises(ConversionError, match="levels"):
        convert(g, preset)
    net = convert(g, preset, levels=3)
    x = _x((4,))
    np.testing.assert_allclose(simulate(net, x).readout[:, -1], 3 * ann_forward(g, x), rtol=0, atol=1e-12)


# --- store: item order past p9999 ----------------------------------------------------------------------------

def test_network_file_items_are_read_in_numeric_order(tmp_path):
    """Items are stored as p0000, p0001, ...; string order puts p10000 before p1001, which would reorder
    populations (topological order) and projections of a network with more than 10 000 of them."""
    with h5py.File(tmp_path / "g.h5", "w") as f:
        for i in (2, 1001, 9999, 10000, 10001):
            f.create_group(f"items/p{i:04d}")
        assert store_network._in_order(f["items"]) == ["p0002", "p1001", "p9999", "p10000", "p10001"]


# --- input shape messages ------------------------------------------------------------------------------------

def test_unbatched_sample_of_wrong_size_is_named_whole():
    """One 1-D sample of the wrong length was reported as 'shape () per sample'."""
    from evsnn.errors import ShapeError
    g = A.AnnGraph([A.Input("x", (), (4,)), A.Dense("d", ("x",), _w(3, 4), _b(3))], "d")
    with pytest.raises(ShapeError, match=r"shape \(5,\) per sample.*\(4,\)"):
        ann_forward(g, np.ones(5))
    net = convert(g, "if")
    with pytest.raises(ShapeError, match=r"shape \(5,\) per sample.*\(4,\)"):
        simulate(net, np.ones(5))
    assert ann_forward(g, np.ones(4)).shape == (1, 3)  # one unbatched sample of the right shape still works
    assert simulate(net, np.ones(4)).readout.shape[0] == 1
