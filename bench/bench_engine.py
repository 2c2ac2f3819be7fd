"""End-to-end: the event engine against the dense clock-driven baseline, same process, same threads.

Networks: a VGG-like and a ResNet-like CNN on 3×32×32 inputs, random dyadic weights,
activation scales calibrated (powers of two) so that the layers are realistically
active. Presets if (T = 32), casc (the published schedule T_w = L = 8 then 56 fixed
sleep steps) and bitserial (L = 7); the exact presets run in their default float64
(exact drive) and again in float32 (``*_f64_cost`` = time float64 / time float32). Then how the time grows with activity (bias
shift sweep) and with sleep length. Counts of both simulators are checked equal.

    python bench/bench_engine.py [--quick] [--threads 1] [--reps 5] [--paths [--div 4]]

Last section (alone with ``--paths``): the per-projection path choice on a VGG-16-style net (13 conv 3×3
layers, channels divided by ``--div``, He-normal weights): time of ``path="auto"`` against "event" and
"dense"; the rule is auto ≤ 1.1 × the faster of the two.

Times are medians of ``--reps`` runs (default 5) on both sides; the dense baseline is warmed up
once first, as the engine is (compile / cache load). Fixed per-network work is done outside the
timed region on both sides: the dense baseline builds its operators (``DenseSim(net)``), the
engine packs the network (``engine.prepare(net)``); a timed call is one batch of one run.

Last line: ``SUMMARY key=value ...``.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from dense_baseline import DenseSim  # noqa: E402

from evsnn import engine  # noqa: E402
from evsnn.convert import convert  # noqa: E402
from evsnn.ir import ann as A  # noqa: E402
from evsnn.reference import ann_forward  # noqa: E402


def _w(rng, shape, fan_in, gain=1.0):
    hi = max(2, int(gain * 160 / np.sqrt(fan_in)))
    return rng.integers(-hi, hi + 1, size=shape) / 64.0


def vgg(rng, widths=(64, 128, 256), shift=0.0):
    nodes = [A.Input("x", (), (3, 32, 32))]
    cur, c, k = "x", 3, 0
    for i, co in enumerate(widths):
        for _ in range(2 if i < 2 else 1):
            k += 1
            nodes.append(A.Conv(f"conv{k}", (cur,), _w(rng, (co, c, 3, 3), 9 * c), np.full(co, shift), (1, 1),
                                (1, 1, 1, 1), 1))
            nodes.append(A.QuantAct(f"act{k}", (f"conv{k}",), 8, 8.0, 0.0))
            cur, c = f"act{k}", co
        nodes.append(A.MaxPool(f"pool{i}", (cur,), (2, 2), (2, 2)))
        cur = f"pool{i}"
    nodes += [A.Flatten("flat", (cur,)), A.Dense("fc", ("flat",), _w(rng, (10, c * 16), c * 16), np.zeros(10))]
    return A.AnnGraph(nodes, "fc", "vgg")


def resnet(rng, widths=(32, 64, 128), shift=0.0):
    nodes = [A.Input("x", (), (3, 32, 32)),
             A.Conv("stem", ("x",), _w(rng, (widths[0], 3, 3, 3), 27), np.full(widths[0], shift), (1, 1),
                    (1, 1, 1, 1), 1),
             A.QuantAct("a0", ("stem",), 8, 8.0, 0.0)]
    cur, c, k = "a0", widths[0], 0
    for i, co in enumerate(widths):
        k += 1
        s = 1 if i == 0 else 2
        nodes.append(A.Conv(f"c{k}a", (cur,), _w(rng, (co, c, 3, 3), 9 * c), np.full(co, shift), (s, s),
                            (1, 1, 1, 1), 1))
        nodes.append(A.QuantAct(f"a{k}a", (f"c{k}a",), 8, 8.0, 0.0))
        nodes.append(A.Conv(f"c{k}b", (f"a{k}a",), _w(rng, (co, co, 3, 3), 9 * co), np.full(co, shift), (1, 1),
                            (1, 1, 1, 1), 1))
        if s == 1 and co == c:
            short = cur
        else:
            nodes.append(A.Conv(f"sc{k}", (cur,), _w(rng, (co, c, 1, 1), c), np.zeros(co), (s, s), (0, 0, 0, 0), 1))
            short = f"sc{k}"
        nodes.append(A.Add(f"add{k}", (f"c{k}b", short)))
        nodes.append(A.QuantAct(f"a{k}b", (f"add{k}",), 8, 8.0, 0.0))
        cur, c = f"a{k}b", co
    nodes += [A.AvgPool("gap", (cur,), (8, 8), (8, 8)), A.Flatten("flat", ("gap",)),
              A.Dense("fc", ("flat",), _w(rng, (10, c), c), np.zeros(10))]
    return A.AnnGraph(nodes, "fc", "resnet")


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(rng, div=8):
    """VGG-16-style: the 13 conv 3×3 layers and 5 max-pools of VGG-16 on 3×32×32, channels divided by ``div``,
    He-normal float32 weights (not dyadic), small normal biases, a dense classifier."""
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32).astype(np.float64)

    nodes = [A.Input("x", (), (3, 32, 32))]
    cur, c, k, pools = "x", 3, 0, 0
    for v in VGG16_CFG:
        if v == "M":
            pools += 1
            nodes.append(A.MaxPool(f"pool{pools}", (cur,), (2, 2), (2, 2)))
            cur = f"pool{pools}"
            continue
        k += 1
        co = max(4, v // div)
        b = (rng.normal(0, 0.05, co)).astype(np.float32).astype(np.float64)
        nodes.append(A.Conv(f"conv{k}", (cur,), he((co, c, 3, 3), 9 * c), b, (1, 1), (1, 1, 1, 1), 1))
        nodes.append(A.QuantAct(f"act{k}", (f"conv{k}",), 8, 8.0, 0.0))
        cur, c = f"act{k}", co
    nodes += [A.Flatten("flat", (cur,)), A.Dense("fc", ("flat",), he((10, c), c), np.zeros(10))]
    return A.AnnGraph(nodes, "fc", "vgg16")


def calibrate(graph, x, levels):
    """Set each activation's λ to L·2^e ≥ the 99th percentile of its input (exact powers of two)."""
    nodes = list(graph.nodes)
    for i, n in enumerate(nodes):
        if isinstance(n, A.QuantAct):
            g = A.AnnGraph(nodes, graph.output, graph.name)
            z = ann_forward(g, x, return_all=True)[n.inputs[0]]
            p = max(float(np.percentile(z, 99)), 1e-3)
            nodes[i] = A.QuantAct(n.name, n.inputs, levels, float(levels * 2.0 ** np.ceil(np.log2(p / levels))),
                                  0.0)
    return A.AnnGraph(nodes, graph.output, graph.name)


REPS = 5  # the machine is shared and noisy: every timing is the median of REPS runs (--reps N)


def _time(fn, reps=None):
    ts = []
    for _ in range(reps or REPS):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


def compare(net, x, wake, sleep, threads, label, reps=None, dtype=None):
    kw = dict(wake=wake, sleep=sleep, threads=threads, allow_inexact=True)
    prep = engine.prepare(net, dtype)  # outside the timed region, like DenseSim(net) below
    engine.simulate(prep, x[:1], **kw)  # compile / load
    te, res = _time(lambda: engine.simulate(prep, x, **kw), reps)
    label = f"{label} [{prep.dtype}]"
    steps = wake + (sleep if isinstance(sleep, int) else 0)
    ds = DenseSim(net, threads)
    ds.run(x[:1], 1, wake)  # warm-up (oneDNN primitive creation), like the engine's compile / load
    td, (out, counts) = _time(lambda: ds.run(x, steps, wake), reps)
    for k, v in counts.items():
        if not np.array_equal(v, res.counts[k]):
            print(f"  !! count mismatch in {k} (dense baseline vs engine)")
    spikes = sum(res.spikes_pos[k].sum() + res.spikes_neg[k].sum() for k in res.counts)
    neurons = sum(v.shape[1] for v in res.counts.values())
    act = spikes / (neurons * steps * len(x))
    sops = sum(v.sum() for v in res.sops.values())
    print(f"{label:34s} act={act:7.4f} engine={te * 1e3:8.1f}ms dense={td * 1e3:8.1f}ms "
          f"speedup={td / te:6.2f} engine_SOP/s={sops / te:9.3e}")
    return act, te, td


def path_choice(threads, div=4, n=4):
    """VGG-16-style net (``vgg16(div)``, normal inputs): time of path="auto" vs "event" vs "dense" for
    if (L = 7, T = 32) and casc (L = 15, its own schedule), best CPU time of REPS interleaved runs
    (bench/paths.py's :func:`measure_net`). The rule (issue #14): auto ≤ 1.1 × min(event, dense). Returns
    {case: auto / min(event, dense)}."""
    from paths import measure_net  # here: bench/paths.py imports bench/peers.py, which imports this module

    x = np.random.default_rng(0).normal(size=(n, 3, 32, 32))
    print(f"# path choice: VGG-16-style (13 conv 3x3, channels / {div}, He-normal), batch={n}, threads={threads}")
    out = {}
    for preset, levels, kw in (("if", 7, dict(wake=32, sleep=0)), ("casc", 15, {})):
        net = convert(calibrate(vgg16(np.random.default_rng(1), div), x, levels), preset)
        out[f"vgg16_{preset}_auto_over_best"] = measure_net(f"vgg16 {preset} L={levels}", net, x,
                                                            dict(kw, allow_inexact=True), REPS, threads)
    return out


def main():
    global REPS
    quick = "--quick" in sys.argv
    REPS = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else (3 if quick else 5)
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
    div = int(sys.argv[sys.argv.index("--div") + 1]) if "--div" in sys.argv else 4
    if "--paths" in sys.argv:  # only the path-choice section
        s = path_choice(threads, div)
        print("SUMMARY " + " ".join(f"{k}={v:.3g}" for k, v in s.items()))
        return
    rng = np.random.default_rng(0)
    n = 2 if quick else 4
    x = rng.integers(0, 257, (n, 3, 32, 32)) / 256.0
    print(f"# threads={threads}, batch={n}, 3x32x32 inputs; medians of {REPS} runs")
    print("# untimed on both sides: engine.prepare(net) (packing) and DenseSim(net) (building the operators)")
    summary = {}
    for name, make in (("vgg", vgg), ("resnet", resnet)):
        g = make(np.random.default_rng(1))
        g8 = calibrate(g, x, 8)
        g7 = calibrate(g, x, 7)
        _, te, td = compare(convert(g8, "if"), x, 32, 0, threads, f"{name} if T=32")
        summary[f"{name}_if_speedup"] = td / te
        # exact presets: the default (float64, exact drive) and float32 (the engine before #12) for its cost
        _, te, td = compare(convert(g8, "casc"), x, 8, 56, threads, f"{name} casc T_w=8 + 56 sleep")
        summary[f"{name}_casc_speedup"] = td / te
        _, te32, _ = compare(convert(g8, "casc"), x, 8, 56, threads, f"{name} casc T_w=8 + 56 sleep",
                             dtype=np.float32)
        summary[f"{name}_casc_f64_cost"] = te / te32
        net = convert(g7, "bitserial")
        _, te, td = compare(net, x, net.default_wake, 0, threads, f"{name} bitserial L=7")
        summary[f"{name}_bitserial_speedup"] = td / te
        _, te32, _ = compare(net, x, net.default_wake, 0, threads, f"{name} bitserial L=7", dtype=np.float32)
        summary[f"{name}_bitserial_f64_cost"] = te / te32
    # activity sweep: shift every conv bias (in ANN units) to move activity from ~0.1 % to ~50 %
    print("# activity sweep (vgg, if, T=16)")
    worst, low = np.inf, np.inf
    for shift in ((-2.0, -0.5, 0.0, 0.5) if quick else (-4.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)):
        g = calibrate(vgg(np.random.default_rng(1)), x, 8)
        g = A.AnnGraph([A.Conv(n_.name, n_.inputs, n_.weight, n_.bias + shift, n_.stride, n_.pads, n_.groups)
                        if isinstance(n_, A.Conv) else n_ for n_ in g.nodes], g.output, g.name)
        act, te, td = compare(convert(g, "if"), x, 16, 0, threads, f"vgg if shift={shift:+.2f}")
        worst = min(worst, td / te)
        if act <= 0.01:
            low = min(low, td / te)
    summary["worst_speedup"] = worst
    summary["speedup_at_act_le_1pct"] = low if np.isfinite(low) else float("nan")
    # sleep length: casc with growing fixed sleep; the engine stops each sample once it is quiet
    print("# sleep length (vgg casc)")
    net = engine.prepare(convert(calibrate(vgg(np.random.default_rng(1)), x, 8), "casc"))
    base = None
    for sl in (0, 8, 56, 200):
        te, res = _time(lambda: engine.simulate(net, x, wake=8, sleep=sl, threads=threads, allow_inexact=sl == 0))
        base = te if sl == 56 else base
        print(f"sleep={sl:4d} engine={te * 1e3:8.1f}ms sleep_steps_active={int(res.sleep_steps.max())} "
              f"quiet={bool(res.quiescent.all())}")
    layers = len(net.net.populations)
    te_long, _ = _time(lambda: engine.simulate(net, x, wake=8, sleep=200, threads=threads))
    summary["silent_step_us_per_layer_sample"] = max(0.0, (te_long - base) / (144 * layers * n) * 1e6)
    summary.update(path_choice(threads, div, n))
    print("SUMMARY " + " ".join(f"{k}={v:.3g}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
