"""evsnn against other simulators on the networks of issue #14, one process per side, interleaved.

    python bench/peers.py [--cases digits-if,digits-casc,...] [--samples N] [--reps 5]
                          [--sides evsnn,dense,spikingjelly,sinabs] [--peer-python PATH]

Sides: ``evsnn`` (the event engine, 1 thread), ``dense`` (bench/dense_baseline.py: clock-driven,
layer by layer with torch, float32), ``spikingjelly`` and ``sinabs`` (their integrate-and-fire
neurons with torch layers, multi-step; see bench/peers_side.py for exactly what each runs).
SpikingJelly and sinabs run under ``--peer-python`` (default: ``$EVSNN_PEER_PYTHON``, else
``.venv-peers/bin/python`` if present), a venv made for them::

    python3 -m venv .venv-peers
    .venv-peers/bin/pip install torch==2.13.0 spikingjelly sinabs numpy    # the `peers` extra's packages

(or ``pip install -e '.[peers]'`` in one venv when the peers' requirements fit evsnn's). A side
whose interpreter or library is missing is skipped with a note.

Each case is built here with evsnn (random dyadic weights calibrated as in bench/bench_engine.py,
or the bundled digits CNN), written once to a folder (``net.h5`` for evsnn/dense, ``spec.npz`` for the
peers: the same weights, inputs and step count as plain arrays), then every side's worker loads it
and runs it once untimed (compilation, cache loads, primitive creation). Timed runs alternate
between the sides (``--reps`` rounds); each run is all samples, and the medians are printed with the
ratio side / evsnn. Every side runs one thread (``torch.set_num_threads(1)``, BLAS at 1 thread,
engine ``threads=1``). The peers run the number of steps the engine's run took (casc: wake plus the
longest sample's sleep; evsnn stops each sample when it is quiet, the others cannot).

Agreement: the share of (sample, neuron) spike counts equal to evsnn's, over all populations.

Cases (default samples as in the issue; ``--samples`` caps them all):
  digits-if       bundled digits CNN, preset if, T = 32, 599 samples
  digits-casc     bundled digits CNN, casc, wake 7 + sleep auto, 599 samples
  vgg6-casc       VGG-like, 6 conv (64-128-256), 3×32×32, casc auto, 32 samples
  resnet18-casc   ResNet-18-style (4 stages × 2 basic blocks), casc auto, 64 samples
  vgg16-casc      VGG-16-style (13 conv + 3 fc), casc auto, 64 samples
  vgg16-if        VGG-16-style, preset if, T = 32, 64 samples
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zlib

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_engine import _w, calibrate  # noqa: E402

from evsnn import engine  # noqa: E402
from evsnn.convert import convert  # noqa: E402
from evsnn.ir import ann as A  # noqa: E402
from evsnn.ir import drive as DR  # noqa: E402
from evsnn.ir import snn as S  # noqa: E402
from evsnn.store import save_network  # noqa: E402

SIDES = ("evsnn", "dense", "spikingjelly", "sinabs")
EXTRA_SIDES = ("torch-if",)  # the peers' layer-wise runner with a plain torch IF loop (no SNN library)
PEERS = ("spikingjelly", "sinabs")
LEVELS = 7


# ---------------------------------------------------------------------------------------------- networks

def _conv(nodes, cur, name, c, co, stride=1, k=3):
    pad = k // 2
    nodes.append(A.Conv(name, (cur,), _w(_RNG, (co, c, k, k), k * k * c), np.zeros(co), (stride, stride),
                        (pad, pad, pad, pad), 1))
    return name


def _act(nodes, cur, name):
    nodes.append(A.QuantAct(name, (cur,), LEVELS, float(LEVELS), 0.0))
    return name


def vgg(cfg, fcs=(), name="vgg"):
    nodes = [A.Input("x", (), (3, 32, 32))]
    cur, c, k, hw = "x", 3, 0, 32
    for v in cfg:
        if v == "M":
            nodes.append(A.MaxPool(f"pool{k}", (cur,), (2, 2), (2, 2)))
            cur, hw = f"pool{k}", hw // 2
            continue
        k += 1
        cur = _act(nodes, _conv(nodes, cur, f"conv{k}", c, v), f"act{k}")
        c = v
    nodes.append(A.Flatten("flat", (cur,)))
    cur, n = "flat", c * hw * hw
    for i, f in enumerate(fcs):
        nodes.append(A.Dense(f"fc{i}", (cur,), _w(_RNG, (f, n), n), np.zeros(f)))
        cur, n = _act(nodes, f"fc{i}", f"fa{i}"), f
    nodes.append(A.Dense("out", (cur,), _w(_RNG, (10, n), n), np.zeros(10)))
    return A.AnnGraph(nodes, "out", name)


def resnet18():
    nodes = [A.Input("x", (), (3, 32, 32))]
    cur = _act(nodes, _conv(nodes, "x", "stem", 3, 64), "a0")
    c, k = 64, 0
    for stage, co in enumerate((64, 128, 256, 512)):
        for block in range(2):
            k += 1
            s = 2 if stage > 0 and block == 0 else 1
            a = _act(nodes, _conv(nodes, cur, f"c{k}a", c, co, s), f"a{k}a")
            b = _conv(nodes, a, f"c{k}b", co, co)
            short = cur if s == 1 and c == co else _conv(nodes, cur, f"sc{k}", c, co, s, k=1)
            nodes.append(A.Add(f"add{k}", (b, short)))
            cur, c = _act(nodes, f"add{k}", f"a{k}b"), co
    nodes += [A.AvgPool("gap", (cur,), (4, 4), (4, 4)), A.Flatten("flat", ("gap",)),
              A.Dense("out", ("flat",), _w(_RNG, (10, c), c), np.zeros(10))]
    return A.AnnGraph(nodes, "out", "resnet18")


VGG6 = (64, 64, "M", 128, 128, "M", 256, 256, "M")
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_RNG = np.random.default_rng(1)


def digits_graph():
    from evsnn.frontends import load_model

    return load_model(os.path.join(ROOT, "evsnn", "data", "digits_cnn.onnx"))


CASES = {  # name → (graph builder, preset, wake, sleep, samples, data)
    "digits-if": (digits_graph, "if", 32, 0, 599, "digits"),
    "digits-casc": (digits_graph, "casc", None, "auto", 599, "digits"),
    "vgg6-casc": (lambda: vgg(VGG6, name="vgg6"), "casc", None, "auto", 32, "random"),
    "resnet18-casc": (resnet18, "casc", None, "auto", 64, "random"),
    "vgg16-casc": (lambda: vgg(VGG16, (512, 512), "vgg16"), "casc", None, "auto", 64, "random"),
    "vgg16-if": (lambda: vgg(VGG16, (512, 512), "vgg16"), "if", 32, 0, 64, "random"),
}


def levels_of(preset: str) -> int:
    """L of a random case. The if rows take L = 8, so that every λ (L·2^e, bench_engine.calibrate) is a power
    of two and every converted weight (w·λ_in/λ_out; 1/λ on the input) a dyadic number of few bits: each
    side's sums are then exact, whatever its order of additions. With L = 7 the 1/7 in the weights left
    currents whose exact value crosses the threshold exactly (t·I = θ), each side's rounding broke those
    ties its own way, and a flipped spike spread downstream: VGG-16 if agreed on 94 % of the counts."""
    return 8 if preset == "if" else LEVELS


def build_case(name: str, samples: int | None):
    """(network, inputs, wake, sleep) of case ``name``; its random weights depend on the name alone, not on
    which cases were built before it in this process."""
    global _RNG
    _RNG = np.random.default_rng(zlib.crc32(name.encode()))
    make, preset, wake, sleep, n, data = CASES[name]
    n = min(n, samples) if samples else n
    if data == "digits":
        from evsnn.runner import load_data

        x = load_data("digits", n)[0]
        graph = make()
        if isinstance(graph, tuple):
            graph = graph[0]
    else:
        x = np.random.default_rng(0).integers(0, 257, (n, 3, 32, 32)) / 256.0
        graph = calibrate(make(), x[:8], levels_of(preset))
    net = convert(graph, preset, levels=None if data == "digits" else levels_of(preset))
    return net, np.asarray(x, dtype=np.float64), wake, sleep


# ---------------------------------------------------------------------------------------------- hand-off

def export(net: S.Network, x: np.ndarray, wake: int, steps: int, folder: str, sleep) -> None:
    """``net.h5`` (evsnn, dense) and ``spec.npz`` (the peers: plain arrays and a JSON description)."""
    save_network(net, os.path.join(folder, "net.h5"))
    n = len(x)
    dsteps = DR.delivery_steps(net, wake)
    arrays, pops = {"x": x}, []
    for p in net.populations:
        incoming = []
        for k, pr in enumerate(net.incoming(p.name)):
            if pr.delay:
                raise SystemExit("delayed projections are not supported by the peers' runner")
            key = f"{p.name}/{k}"
            # an input projection folded into the drive: the peer computes it from x in its timed run
            d = {"id": key, "pre": pr.pre, "pre_shape": list(pr.pre_shape),
                 "drive": bool(pr.pre == S.INPUT and DR.input_in_drive(net, pr))}
            if isinstance(pr, S.DenseProjection):
                d["kind"] = "dense"
                arrays[f"w/{key}"] = DR.dense_matrix(pr).toarray()
            elif isinstance(pr, S.ConvProjection):
                d.update(kind="conv", stride=list(pr.stride), pads=list(pr.pads), groups=int(pr.groups))
                arrays[f"w/{key}"] = np.ascontiguousarray(pr.kernel.transpose(3, 2, 0, 1))
            elif isinstance(pr, S.PoolProjection):
                d.update(kind="pool", window=list(pr.window), stride=list(pr.stride), pads=list(pr.pads))
                arrays[f"w/{key}"] = np.asarray(pr.weight)
            elif isinstance(pr, S.IdentityProjection):
                d.update(kind="identity", weight=float(pr.weight))
            elif isinstance(pr, S.MaxProjection):
                d.update(kind="maxpool", window=list(pr.window), stride=list(pr.stride), pads=list(pr.pads))
            else:
                raise SystemExit(f"projection {type(pr).__name__} is not supported by the peers' runner")
            incoming.append(d)
        if DR.depends_on_input(net, p):  # D = (Σ input projections(x) + bias)·scale, computed by the peer
            arrays[f"dbias/{p.name}"] = np.asarray(p.bias, dtype=np.float64).reshape(-1)
            arrays[f"dscale/{p.name}"] = np.asarray(p.drive_scale / dsteps, dtype=np.float64)
        elif DR.has_drive(p):
            arrays[f"drive/{p.name}"] = DR.drive_total(net, p, None) / dsteps
        elif p.model != "maxpool":
            arrays[f"bias/{p.name}"] = np.asarray(p.bias, dtype=np.float64).reshape(-1)
        arrays[f"th/{p.name}"] = np.asarray(p.threshold, dtype=np.float64).reshape(-1)
        arrays[f"v0/{p.name}"] = np.broadcast_to(np.asarray(p.v0, dtype=np.float64), (p.size,)).copy()
        pops.append({"name": p.name, "model": p.model, "size": int(p.size), "incoming": incoming})
    meta = {"preset": net.preset, "steps": int(steps), "wake": int(wake), "dsteps": int(dsteps),
            "sleep": sleep, "input": S.INPUT, "populations": pops}
    np.savez(os.path.join(folder, "spec.npz"), meta=json.dumps(meta), **arrays)


# ---------------------------------------------------------------------------------------------- workers

class Worker:
    def __init__(self, side: str, python: str):
        env = dict(os.environ, PYTHONPATH=ROOT if side in ("evsnn", "dense") else "")
        self.side = side
        self.p = subprocess.Popen([python, os.path.join(HERE, "peers_side.py"), side], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **msg) -> dict:
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            return {"error": "the worker exited"}
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def peer_python(arg: str | None) -> str | None:
    cand = arg or os.environ.get("EVSNN_PEER_PYTHON") or os.path.join(ROOT, ".venv-peers", "bin", "python")
    return cand if os.path.exists(cand) else None


def agreement(a: dict, b: dict) -> float:
    eq = tot = 0
    for k, v in a.items():
        if k in b:
            eq += int((np.asarray(b[k]) == v).sum())
            tot += v.size
    return eq / tot if tot else float("nan")


def run_case(name: str, args, pythons: dict) -> None:
    net, x, wake, sleep = build_case(name, args.samples)
    wake = wake or net.default_wake
    full = engine.simulate(engine.prepare(net), x, wake=wake, sleep=sleep, threads=1, allow_inexact=True)
    steps = full.readout.shape[1]
    neurons = sum(p.size for p in net.populations)
    print(f"\n## {name}: {net.preset}, {len(x)} samples, {neurons} neurons, wake {wake}, steps {steps} "
          f"(evsnn stops each sample when quiet; the others run all {steps})")
    with tempfile.TemporaryDirectory() as folder:
        export(net, x, wake, steps, folder, sleep)
        workers = {}
        for side in args.sides:
            if side in PEERS and pythons.get(side) is None:
                print(f"  {side}: skipped (no peer interpreter; see --peer-python)")
                continue
            w = Worker(side, pythons.get(side, sys.executable))
            r = w.ask(case=folder)
            if "error" in r:
                print(f"  {side}: skipped ({r['error']})")
                w.close()
                continue
            workers[side] = w
        times = {s: [] for s in workers}
        for _ in range(args.reps):
            for side, w in workers.items():
                r = w.ask(run=True)
                if "error" in r:
                    raise SystemExit(f"{side}: {r['error']}")
                times[side].append(r["time"])
        counts = {}
        for side, w in workers.items():
            path = os.path.join(folder, f"counts-{side}.npz")
            w.ask(counts=path)
            with np.load(path) as z:
                counts[side] = {k: z[k] for k in z.files}
            w.close()
    base = statistics.median(times["evsnn"]) if "evsnn" in times else None
    for side, ts in times.items():
        med = statistics.median(ts)
        ratio = f"{med / base:8.2f}× evsnn's time" if base else ""
        agree = f"  counts equal to evsnn: {100 * agreement(counts['evsnn'], counts[side]):6.2f} %" \
            if "evsnn" in counts and side != "evsnn" else ""
        print(f"  {side:13s} {med * 1e3:10.1f} ms  {ratio}{agree}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    ap.add_argument("--samples", type=int, default=None, help="at most this many samples per case")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per side (median)")
    ap.add_argument("--sides", default=",".join(SIDES),
                    help="comma-separated, from: " + ", ".join(SIDES + EXTRA_SIDES))
    ap.add_argument("--peer-python", default=None,
                    help="interpreter with torch and the peers (default: $EVSNN_PEER_PYTHON or .venv-peers/bin/python)")
    args = ap.parse_args(argv)
    args.sides = [s for s in args.sides.split(",") if s]
    bad = [s for s in args.sides if s not in SIDES + EXTRA_SIDES] + [c for c in args.cases.split(",") if c not in CASES]
    if bad:
        raise SystemExit(f"unknown side or case: {', '.join(bad)}")
    py = peer_python(args.peer_python)
    pythons = {s: py for s in PEERS}
    print(f"# 1 thread per side, medians of {args.reps} interleaved runs; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs; peers' interpreter: {py or 'none'}")
    for name in args.cases.split(","):
        run_case(name, args, pythons)


if __name__ == "__main__":
    main()
