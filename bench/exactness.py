"""Exactness on real weights, measured (issue #12).

For each model and preset: the share of samples whose every hidden neuron equals the quantized ANN
evaluated in float64 (:func:`evsnn.verify.verify`), with the engine's defaults (float64, exact drive)
and with ``dtype=float32``; and, for the bundled ONNX model, the share of samples whose levels all
equal onnxruntime's float32 levels (a measured figure, not a promise: float32 inference itself
differs from float64 near level boundaries).

Models: the bundled trained digits CNN (L = 7) on the 599 digits test samples, and He-normal
float32 CNNs (conv, stride 2, depthwise, residual add, max pool, dense; a real λ per activation) at
L ∈ {1, 3, 7, 15, 255}, floor (φ = 0) and round-half (φ = ½), on standard-normal 3×32×32 inputs
(about 15,000 neurons per sample).

    python bench/exactness.py [--samples 300] [--quick]

Measured 2026-12-03 (300 samples per He row): float64 default 100.00 % in every row; float32
100 % up to L = 7, 99.67 % at L = 15 (φ = ½), 97.00–99.00 % at L = 255; the bundled digits model
100 % in both and 100 % against onnxruntime's float32 levels (599 samples, casc and bitserial).
bench_engine.py (batch 4, one thread): the float64 default costs 0.9–1.1× the float32 engine
time, casc on the published schedule stays 5.2× (VGG) and 6.0× (ResNet) faster than the dense
baseline.

Last line: ``SUMMARY key=value ...``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from evsnn import engine
from evsnn.convert import convert
from evsnn.ir import ann as A
from evsnn.verify import verify


def _f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def he_cnn(levels: int, phase: float, seed: int = 0, size: int = 12) -> A.AnnGraph:
    """He-normal float32 CNN on (3, size, size): conv, stride-2 conv, depthwise conv, 1×1 conv + residual
    add, max pool, dense; each activation its own real λ (pools and adds see non-dyadic weights)."""
    rng = np.random.default_rng(seed)

    def he(*shape):
        return _f32(rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:])))

    def b(n):
        return _f32(rng.normal(0, .1, n))

    def q(name, inp):
        return A.QuantAct(name, (inp,), levels, float(_f32(rng.uniform(0.5, 3.0))), phase)

    flat = 8 * (size // 4) ** 2
    nodes = [A.Input("x", (), (3, size, size)),
             A.Conv("c1", ("x",), he(8, 3, 3, 3), b(8), (1, 1), (1, 1, 1, 1), 1), q("a1", "c1"),
             A.Conv("c2", ("a1",), he(8, 8, 3, 3), b(8), (2, 2), (1, 1, 1, 1), 1), q("a2", "c2"),
             A.Conv("dw", ("a2",), he(8, 1, 3, 3), b(8), (1, 1), (1, 1, 1, 1), 8), q("a3", "dw"),
             A.Conv("pw", ("a3",), he(8, 8, 1, 1), b(8), (1, 1), (0, 0, 0, 0), 1),
             A.Add("res", ("pw", "a2")), q("a4", "res"),
             A.MaxPool("mp", ("a4",), (2, 2), (2, 2)),
             A.Flatten("f", ("mp",)), A.Dense("d1", ("f",), he(16, flat), b(16)), q("a5", "d1"),
             A.Dense("logits", ("a5",), he(4, 16), np.zeros(4))]
    return A.AnnGraph(nodes, "logits", "he")


def exact_share(net, x, dtype=None) -> float:
    """Percent of samples whose every hidden neuron equals the float64 quantized ANN."""
    res = engine.simulate(net, x, dtype=dtype)
    return verify(net, x, res).percent_exact


def ort_share(path: str, graph: A.AnnGraph, net, x) -> float | None:
    """Percent of samples whose every level equals round(onnxruntime's activation · L/λ), or None."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    from evsnn.verify import expected_levels
    tensors = graph.meta.get("tensors", {})
    names = [p.name for p in net.populations if p.name in tensors]
    model = onnx.load(path)
    have = {o.name for o in model.graph.output}
    for n in names:
        if tensors[n] not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensors[n]))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run([tensors[n] for n in names], {sess.get_inputs()[0].name: x.astype(np.float32)})
    want = expected_levels(net, x)
    ok = np.ones(len(x), dtype=bool)
    for n, o in zip(names, outs):
        node = graph.node(n)
        L = node.levels if isinstance(node, A.QuantAct) else graph.node(node.inputs[0]).levels
        lv = np.round(o.reshape(len(x), -1).astype(np.float64) * L / net.meta["scales"][n])
        ok &= (lv == want[n]).all(axis=1)
    return 100.0 * float(ok.mean())


def main():
    quick = "--quick" in sys.argv
    n = int(sys.argv[sys.argv.index("--samples") + 1]) if "--samples" in sys.argv else (60 if quick else 300)
    summary = {}
    print(f"# % of samples exact (every hidden neuron = float64 quantized ANN); {n} samples per He-normal row (3×32×32)")
    print(f"{'model':28s} {'preset':9s} {'float64 (default)':>17s} {'float32':>8s} {'ORT float32':>11s}")
    from evsnn.datasets import load_digits
    from evsnn.demo import bundled_model
    from evsnn.frontends import load_model
    path = bundled_model()
    graph = load_model(path)
    x = load_digits("test")[0]
    for preset in ("casc", "bitserial"):
        net = convert(graph, preset)
        e64, e32 = exact_share(net, x), exact_share(net, x, np.float32)
        o = ort_share(path, graph, net, x)
        print(f"{'digits_cnn (trained, L=7)':28s} {preset:9s} {e64:17.2f} {e32:8.2f} "
              f"{'-' if o is None else f'{o:.2f}':>11s}")
        summary[f"digits_{preset}_f64"], summary[f"digits_{preset}_f32"] = e64, e32
        if o is not None:
            summary[f"digits_{preset}_ort"] = o
    worst64, worst32 = 100.0, 100.0
    for L in ((3, 255) if quick else (1, 3, 7, 15, 255)):
        for phase in (0.0, 0.5):
            g = he_cnn(L, phase, seed=L, size=32)
            xs = _f32(np.random.default_rng(L).normal(size=(n, 3, 32, 32)))
            for preset in ("casc", "bitserial"):
                net = convert(g, preset)
                e64, e32 = exact_share(net, xs), exact_share(net, xs, np.float32)
                worst64, worst32 = min(worst64, e64), min(worst32, e32)
                print(f"{f'he_cnn L={L} phase={phase}':28s} {preset:9s} {e64:17.2f} {e32:8.2f} {'-':>11s}")
    summary["he_worst_f64"], summary["he_worst_f32"] = worst64, worst32
    print("SUMMARY " + " ".join(f"{k}={v:.4g}" for k, v in summary.items()))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()
