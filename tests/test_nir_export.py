"""NIR export: node types and shapes, metadata, and that NIR's linear nodes deliver what evsnn's projections do."""

import dataclasses
import sys

import numpy as np
import pytest

nir = pytest.importorskip("nir")

import evsnn.frontends as frontends  # noqa: E402
from evsnn.convert import convert  # noqa: E402
from evsnn.errors import ConversionError, EvsnnError  # noqa: E402
from evsnn.ir import ann as A  # noqa: E402
from evsnn.ir import ops  # noqa: E402
from evsnn.nir_export import to_nir, write_nir  # noqa: E402
from evsnn.reference.projections import apply_projection  # noqa: E402
from evsnn.store import save_network  # noqa: E402
from test_cli import TinyFrontend, assert_user_error, invoke, ok  # noqa: E402


def graph(levels=4, maxpool=False, pads=(1, 1, 1, 1)):
    """Conv (symmetric pads), avgpool, residual add, avgpool with pads, flatten into an activation, dense."""
    rng = np.random.default_rng(0)

    def w(*s):
        return rng.integers(-8, 9, s) / 16

    nodes = [A.Input("x", (), (2, 8, 8)),
             A.Conv("c1", ("x",), w(4, 2, 3, 3), w(4), (1, 1), pads, 1),
             A.QuantAct("/b/a1", ("c1",), levels, 1.0, 0.0)]
    if maxpool:
        nodes += [A.MaxPool("p1", ("/b/a1",), (2, 2), (2, 2))]
    else:
        nodes += [A.AvgPool("p1", ("/b/a1",), (2, 2), (2, 2))]
    nodes += [A.Conv("c2", ("p1",), w(4, 4, 3, 3), w(4), (1, 1), (1, 1, 1, 1), 1),
              A.QuantAct("a2", ("c2",), levels, 1.0, 0.0),
              A.Conv("c3", ("a2",), w(4, 4, 3, 3), w(4), (1, 1), (1, 1, 1, 1), 1),
              A.Add("add", ("c3", "p1")),
              A.QuantAct("a3", ("add",), levels, 1.0, 0.0),
              A.AvgPool("p3", ("a3",), (3, 3), (2, 2), (1, 1, 1, 1), False),
              A.QuantAct("a4", ("p3",), levels, 1.0, 0.0),
              A.Flatten("f", ("a4",)),
              A.QuantAct("a5", ("f",), levels, 1.0, 0.0),
              A.Dense("d", ("a5",), w(5, 16), w(5))]
    return A.AnnGraph(nodes, "d", "nirtest")


def dense_into_image_graph(then_conv=False):
    """a1 → avgpool with pads → conv does not compose into one conv: a dense projection feeds a (2, 3, 3) layer."""
    rng = np.random.default_rng(3)
    nodes = [A.Input("x", (), (1, 6, 6)),
             A.Conv("c1", ("x",), rng.integers(-8, 9, (2, 1, 3, 3)) / 16, np.zeros(2), (1, 1), (1, 1, 1, 1), 1),
             A.QuantAct("a1", ("c1",), 4, 1.0, 0.0),
             A.AvgPool("p", ("a1",), (3, 3), (2, 2), (1, 1, 1, 1), False),
             A.Conv("c2", ("p",), rng.integers(-8, 9, (2, 2, 3, 3)) / 16, np.full(2, 0.25), (1, 1), (1, 1, 1, 1), 1),
             A.QuantAct("a2", ("c2",), 4, 1.0, 0.0)]
    last = "a2"
    if then_conv:
        nodes += [A.Conv("c3", ("a2",), rng.integers(-8, 9, (2, 2, 3, 3)) / 16, np.zeros(2), (1, 1), (1, 1, 1, 1), 1),
                  A.QuantAct("a3", ("c3",), 4, 1.0, 0.0)]
        last = "a3"
    nodes += [A.Flatten("f", (last,)), A.Dense("d", ("f",), rng.integers(-8, 9, (3, 18)) / 16, np.zeros(3))]
    return A.AnnGraph(nodes, "d")


def roundtrip(net, tmp_path):
    path = tmp_path / "model.nir"
    write_nir(net, path)
    return nir.read(path)


# ---------------------------------------------------------------------------------------------- NIR semantics

def apply_node(node, x):
    """What one NIR linear node does to a batch (N, *shape), written from the NIR spec."""
    if isinstance(node, nir.Conv2d):
        ph, pw = (int(p) for p in node.padding)
        return ops.conv2d(x, node.weight, tuple(int(s) for s in node.stride), (ph, pw, ph, pw), int(node.groups),
                          node.bias)
    if isinstance(node, nir.SumPool2d):
        ph, pw = (int(p) for p in node.padding)
        k, s = tuple(int(i) for i in node.kernel_size), tuple(int(i) for i in node.stride)
        return ops.windows(x, k, s, (ph, pw, ph, pw)).sum(axis=(-1, -2))
    if isinstance(node, nir.Affine):
        return x @ node.weight.T + node.bias
    if isinstance(node, nir.Linear):
        return x @ node.weight.T
    if isinstance(node, nir.Scale):
        return x * node.scale
    if isinstance(node, nir.Flatten):
        assert int(node.start_dim) == 0
        return x.reshape(len(x), -1)
    if isinstance(node, nir.Delay):  # a delay shifts in time; the delivered values are unchanged
        return x
    raise AssertionError(f"unexpected node {type(node).__name__} on a projection path")


def delivered(g, target, sources):
    """Sum over the incoming edges of ``target``, each path evaluated back to an Input or IF node."""
    def value(name):
        node = g.nodes[name]
        if isinstance(node, (nir.Input, nir.IF)):
            return sources[name]
        ins = [value(a) for a, b in g.edges if b == name]
        return apply_node(node, sum(ins))
    return sum(value(a) for a, b in g.edges if b == target)


def check_linear_paths(net, g, n=3, seed=0):
    """For every population and the readout: NIR paths on random spikes == Σ apply_projection + bias."""
    rng = np.random.default_rng(seed)
    by_name = {v.metadata["evsnn_name"]: k for k, v in g.nodes.items() if isinstance(v, (nir.IF, nir.I))}
    inp = next(k for k, v in g.nodes.items() if isinstance(v, nir.Input))
    sources = {inp: rng.random((n,) + tuple(net.input_shape))}
    flat = {"input": sources[inp].reshape(n, -1)}
    for p in net.populations:
        key = by_name[p.name]
        s = rng.integers(0, 2, (n, p.size)).astype(np.float64)
        sources[key], flat[p.name] = s.reshape((n,) + tuple(g.nodes[key].output_type["output"])), s
    for target in [p.name for p in net.populations] + [net.readout.name]:
        obj = net.readout if target == net.readout.name else net.population(target)
        want = sum(apply_projection(pr, flat[pr.pre]) for pr in net.incoming(target)) + obj.bias
        got = delivered(g, by_name[target], sources).reshape(n, -1)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=target)


# ---------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("preset", ["if", "qcfs", "deng-gu"])
def test_export_reads_back_and_delivers_what_the_projections_do(preset, tmp_path):
    net = convert(graph(), preset)
    g = roundtrip(net, tmp_path)
    kinds = [type(v).__name__ for v in g.nodes.values()]
    assert kinds.count("IF") == len(net.populations) == 5
    assert kinds.count("I") == kinds.count("Output") == kinds.count("Input") == 1
    assert kinds.count("Conv2d") == 3 and kinds.count("SumPool2d") == 2 and kinds.count("Affine") == 1
    assert all("/" not in k for k in g.nodes)
    assert list(g.nodes["input"].output_type["output"]) == [2, 8, 8]
    assert list(g.nodes["output"].output_type["output"]) == [5]
    for p in net.populations:
        node = next(v for v in g.nodes.values() if v.metadata.get("evsnn_name") == p.name)
        assert isinstance(node, nir.IF) and tuple(node.v_threshold.shape) == tuple(p.shape)
        np.testing.assert_array_equal(node.v_threshold.reshape(-1), p.threshold)
        np.testing.assert_array_equal(node.r, 1.0)
        np.testing.assert_array_equal(node.v_reset, 0.0)
        assert node.metadata["reset"] == "subtract" and node.metadata["threshold_comparison"] == ">="
        assert node.metadata["v0_fraction"] == p.v0
    assert isinstance(g.nodes["d"], nir.I) and g.nodes["d"].metadata["evsnn_model"] == "readout"
    m = g.metadata
    assert m["evsnn_preset"] == preset and m["time_step"] == 1.0 and m["reset"] == "subtract"
    assert m["threshold_comparison"] == ">=" and m["input_mode"] == "analog" and m["bias_current"] == "per wake step"
    assert m["wake_steps"] == net.default_wake == 4
    assert m["v0_fraction"] == {"if": 0.0, "qcfs": 0.5, "deng-gu": 0.0}[preset]
    assert ("deng_gu_shift" in m) == (preset == "deng-gu")
    # every bias sits in exactly one node, tagged with its population
    carriers = sorted(v.metadata["carries_bias_of"] for v in g.nodes.values() if "carries_bias_of" in v.metadata)
    assert carriers == sorted(["/b/a1", "a2", "a3", "d"])
    check_linear_paths(net, g)


def test_rate_input_and_in_memory_graph():
    net = convert(graph(), "if", input_mode="rate")
    g = to_nir(net)
    assert g.metadata["input_mode"] == "rate" and "Bernoulli" in g.metadata["input_note"]
    check_linear_paths(net, g, seed=1)


def test_dense_into_an_image_layer_makes_its_node_flat(tmp_path):
    net = convert(dense_into_image_graph(), "qcfs")
    assert [pr.kind for pr in net.incoming("a2")] == ["dense"]
    g = roundtrip(net, tmp_path)
    assert list(g.nodes["a2"].output_type["output"]) == [18]
    assert list(g.nodes["a2"].metadata["evsnn_shape"]) == [2, 3, 3]
    check_linear_paths(net, g)
    with pytest.raises(ConversionError, match=r"'a2'.*flat.*reshape"):
        to_nir(convert(dense_into_image_graph(then_conv=True), "qcfs"))


def test_delay_becomes_a_delay_node(tmp_path):
    net = convert(graph(), "qcfs")
    i = next(i for i, pr in enumerate(net.projections) if (pr.pre, pr.post) == ("a3", "a4"))
    net.projections[i] = dataclasses.replace(net.projections[i], delay=2)
    g = roundtrip(net, tmp_path)
    delays = [k for k, v in g.nodes.items() if isinstance(v, nir.Delay)]
    assert delays == ["a3->a4.delay"]
    np.testing.assert_array_equal(g.nodes[delays[0]].delay, np.full((4, 2, 2), 2.0))
    assert ("a3->a4.delay", "a4") in g.edges
    check_linear_paths(net, g)


@pytest.mark.parametrize("preset,levels,model", [("casc", None, "cif"), ("bitserial", 3, "bitserial")])
def test_exact_presets_have_no_nir_equivalent(preset, levels, model):
    net = convert(graph(levels=3), preset, levels)
    with pytest.raises(ConversionError, match=rf"population '/b/a1' \(model '{model}'.*rate presets \(if, qcfs"):
        to_nir(net)


def test_maxpool_has_no_nir_equivalent():
    with pytest.raises(ConversionError, match=r"population 'p1' \(model 'maxpool'.*without max pooling"):
        to_nir(convert(graph(maxpool=True), "if"))


def pad_graph(k, stride, pads):
    rng = np.random.default_rng(4)
    ho = (8 + pads[0] + pads[2] - k) // stride + 1
    return A.AnnGraph([A.Input("x", (), (1, 8, 8)),
                       A.Conv("c", ("x",), rng.integers(-8, 9, (2, 1, k, k)) / 16, np.full(2, 0.5), (stride, stride),
                              pads, 1),
                       A.QuantAct("a", ("c",), 4, 1.0, 0.0), A.Flatten("f", ("a",)),
                       A.Dense("d", ("f",), rng.integers(-8, 9, (3, 2 * ho * ho)) / 16, np.zeros(3))], "d")


def test_asymmetric_pads_are_refused_unless_unused(tmp_path):
    with pytest.raises(ConversionError, match=r"projection 'input'→'a' \(conv\).*asymmetric"):
        to_nir(convert(pad_graph(3, 1, (0, 0, 1, 1)), "if"))
    # 8 rows, kernel 2, stride 2: the extra bottom/right pad is never read, so padding 0 is exact
    net = convert(pad_graph(2, 2, (0, 0, 1, 1)), "if")
    g = roundtrip(net, tmp_path)
    assert [int(p) for p in g.nodes["input->a"].padding] == [0, 0]
    check_linear_paths(net, g)


def test_grouped_conv_is_expanded_so_nir_read_type_checks(tmp_path):
    rng = np.random.default_rng(5)
    g = A.AnnGraph([A.Input("x", (), (2, 6, 6)),
                    A.Conv("c1", ("x",), rng.integers(-8, 9, (4, 2, 3, 3)) / 16, np.zeros(4), (1, 1), (1, 1, 1, 1), 1),
                    A.QuantAct("a1", ("c1",), 4, 1.0, 0.0),
                    A.Conv("dw", ("a1",), rng.integers(-8, 9, (4, 1, 3, 3)) / 16, rng.integers(-4, 5, 4) / 16,
                           (2, 2), (1, 1, 1, 1), 4),
                    A.QuantAct("a2", ("dw",), 4, 1.0, 0.0), A.Flatten("f", ("a2",)),
                    A.Dense("d", ("f",), rng.integers(-8, 9, (3, 36)) / 16, np.zeros(3))], "d")
    net = convert(g, "qcfs")
    assert net.projections[1].groups == 4
    out = roundtrip(net, tmp_path)
    conv = out.nodes["a1->a2"]
    assert int(conv.groups) == 1 and conv.weight.shape == (4, 4, 3, 3)
    check_linear_paths(net, out)


def test_missing_nir_package_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    with pytest.raises(EvsnnError, match=r"pip install 'evsnn\[nir\]'"):
        to_nir(convert(graph(), "if"))


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_help():
    r = ok(invoke("export-nir", "--help"))
    assert "Usage:" in r.output and "NIR" in r.output


def test_cli_writes_a_nir_file(tmp_path, monkeypatch):
    net_path, out = tmp_path / "net.h5", tmp_path / "model.nir"
    save_network(convert(graph(), "qcfs"), net_path)
    r = ok(invoke("export-nir", net_path, "-o", out))
    assert "wrote" in r.output and "qcfs" in r.output
    g = nir.read(out)
    assert g.metadata["evsnn_preset"] == "qcfs" and g.metadata["reset"] == "subtract"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # a model file converted on the fly
    monkeypatch.setattr(frontends, "available", lambda: {"tiny": TinyFrontend})
    import pickle
    model = tmp_path / "m.tiny"
    model.write_bytes(pickle.dumps(graph()))
    ok(invoke("export-nir", model, "-o", tmp_path / "m.nir", "--preset", "deng-gu"))
    assert nir.read(tmp_path / "m.nir").metadata["evsnn_preset"] == "deng-gu"


def test_cli_errors_are_one_line(tmp_path):
    net_path = tmp_path / "casc.h5"
    save_network(convert(graph(levels=3), "casc"), net_path)
    r = invoke("export-nir", net_path, "-o", tmp_path / "x.nir")
    assert_user_error(r, r"model 'cif'.*no NIR equivalent")
    assert not (tmp_path / "x.nir").exists()
    assert_user_error(invoke("export-nir", tmp_path / "nope.h5", "-o", tmp_path / "x.nir"), "not found")
    assert_user_error(invoke("export-nir", net_path, "-o", tmp_path / "no" / "x.nir"), "does not exist")
