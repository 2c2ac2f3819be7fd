"""The papers' experiments in miniature: a Markdown report of measured accuracies and spikes.

    python bench/paper_tables.py                     # bundled digits model and test split (599 images)
    python bench/paper_tables.py --quick             # tiny run (40 images, 1 training epoch): a smoke test
    python bench/paper_tables.py --dataset mnist:~/data/mnist --limit 1000
    python bench/paper_tables.py --model my.onnx --dataset my_test.npz --no-train

Tables (every number is measured by this run; nothing is copied from the papers):

1. **CASC ablation** (Table 1): the quantized ANN (L levels) against baseline
   IF neurons (``if``) and CIF neurons (``casc``) with a wake phase of
   T = ⌊L/2⌋, L and 2L steps, each without sleep and with ``sleep="auto"``.
   casc at T = L with sleep is exact: its accuracy equals the ANN's and every
   hidden neuron's spike count equals its ANN level, for every sample (the
   ``levels exact`` column counts those samples). casc at T ≠ L runs with
   ``allow_inexact``.
2. **Deng & Gu** (Table 2): the same weights with threshold ReLUs
   (every QuantAct(L, λ) replaced by ClipAct(λ) = clip(z, 0, λ), the source
   model of Deng & Gu), converted to IF neurons without (``if``) and with
   (``deng-gu``) the bias shift δ = θ/(2T), across T.
3. **Bit-serial + popcount** (Table 3): K = 2, 3, 4 bits (models with
   L = 3, 7, 15) trained without and with the ℓ1 popcount regularizer
   (``--beta``), converted with ``bitserial``: accuracy, spikes per sample
   (= total popcount of the hidden levels), and the change the regularizer
   makes. These models are trained here, by ``bench/train_digits.py``'s recipe
   and seed (so the K = 3, β = 0 model is the bundled one, retrained); this
   needs the ``torch`` extra. Without torch, only the given model's row is shown.

Data: the bundled digits (default), or ``--dataset NAME:DIR`` for MNIST,
Fashion-MNIST or CIFAR-10/100 files the user has (``evsnn.datasets``); the
models are then trained on that dataset's train split, the tables use its test
split (``--limit`` samples). ``--model`` replaces the model of tables 1 and 2
(and the bundled one) by a quantized ONNX or Keras file.

Simulator: the Numba engine (``evsnn.engine``, float64) when importable, else
the NumPy reference (``--simulator`` forces one). "spikes/sample" counts every
spike of every hidden population (negative casc spikes included) over the
whole run, averaged over samples; the input is analog (not counted).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_ONNX = ROOT / "evsnn" / "data" / "digits_cnn.onnx"
DEFAULT_BETA = 1.0
BITS = (2, 3, 4)


def _log(*a):
    print(*a, file=sys.stderr, flush=True)


def _train_module():
    """bench/train_digits.py as a module (it is a script, not part of the package)."""
    name = "evsnn_bench_train_digits"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("train_digits.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def have_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


# ---------------------------------------------------------------- simulation helpers

def pick_simulator(which: str):
    """(name, simulate function) for "auto", "engine" or "reference"."""
    if which in ("auto", "engine"):
        try:
            from evsnn.engine import simulate as eng
        except ImportError:
            if which == "engine":
                raise SystemExit("--simulator engine: evsnn.engine cannot be imported")
        else:
            def run(net, x, **kw):
                return eng(net, x, dtype=np.float64, **kw)
            return "evsnn.engine (float64)", run
    from evsnn.reference import simulate as ref

    return "evsnn.reference (NumPy)", ref


def total_spikes(res, net, upto: int | None = None) -> np.ndarray:
    """(N,) spikes (positive + negative) of every hidden population in steps [0, upto)."""
    tot = np.zeros(res.readout.shape[0])
    for p in net.populations:
        tot += res.spikes_pos[p.name][:, :upto].sum(axis=1) + res.spikes_neg[p.name][:, :upto].sum(axis=1)
    return tot


def levels_exact(res, net, levels: dict) -> np.ndarray:
    """(N,) True where every hidden neuron transmitted exactly its ANN level."""
    ok = np.ones(res.readout.shape[0], dtype=bool)
    for p in net.populations:
        if p.name in levels:
            ok &= (np.rint(res.values[p.name]) == levels[p.name]).all(axis=1) & \
                  np.allclose(res.values[p.name], np.rint(res.values[p.name]))
    return ok


def accuracy(pred, y) -> float:
    return float((np.asarray(pred) == np.asarray(y)).mean())


def pct(a: float) -> str:
    return f"{100.0 * a:.2f}"


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- experiments

def casc_ablation(graph, x, y, sim, max_sleep: int = 200):
    """Table 1 rows: quantized ANN, then if / casc at T = L//2, L, 2L without and with sleep."""
    from evsnn.convert import convert
    from evsnn.reference import ann_forward, ann_levels

    levels = ann_levels(graph, x)
    ann_acc = accuracy(ann_forward(graph, x).reshape(len(x), -1).argmax(1), y)
    L = max(int(n.levels) for n in graph.nodes if n.kind == "quant")
    n = len(x)
    level_sum = sum(v.sum() for v in levels.values()) / n
    rows = [["quantized ANN", "—", "—", pct(ann_acc), "0.00", f"{level_sum:.1f} (Σ levels)", "—"]]
    facts = {"ann": ann_acc, "L": L, "rows": {}}
    for preset in ("if", "casc"):
        net = convert(graph, preset)
        for T in (max(1, L // 2), L, 2 * L):
            for sleep in (0, "auto"):
                t0 = time.perf_counter()
                res = sim(net, x, wake=T, sleep=sleep, max_sleep=max_sleep, allow_inexact=True)
                acc = accuracy(res.predictions, y)
                spk = total_spikes(res, net).mean()
                steps = T + (float(res.sleep_steps.mean()) if sleep == "auto" else 0)
                exact = levels_exact(res, net, levels) if T == L else None
                ex = f"{int(exact.sum())}/{n}" if exact is not None else "—"
                label = "CASC (CIF)" if preset == "casc" else "baseline IF"
                rows.append([label, T, f"auto ({steps - T:.1f} steps)" if sleep == "auto" else "none",
                             pct(acc), f"{100 * (acc - ann_acc):+.2f}", f"{spk:.1f}", ex])
                facts["rows"][(preset, T, sleep)] = {"acc": acc, "spikes": spk,
                                                     "exact": None if exact is None else int(exact.sum())}
                _log(f"  {preset:5s} T={T:3d} sleep={sleep!s:4s}: acc {pct(acc)} spikes {spk:.1f} "
                     f"({time.perf_counter() - t0:.1f} s)")
    header = ["neurons", "T (wake)", "sleep", "accuracy %", "Δ vs ANN", "spikes/sample", "levels exact"]
    return md_table(header, rows), facts


def clip_graph(graph):
    """Copy of ``graph`` with every QuantAct(L, λ, φ) replaced by the threshold ReLU ClipAct(λ)."""
    from evsnn.ir import ann as A

    nodes = [A.ClipAct(n.name, n.inputs, float(n.scale)) if isinstance(n, A.QuantAct) else n for n in graph.nodes]
    return A.AnnGraph(nodes, graph.output, graph.name, dict(graph.meta))


def deng_gu(graph, x, y, sim, steps=(1, 2, 4, 8, 16, 32, 64)):
    """Table 2 rows: IF without / with the δ = θ/(2T) shift on the threshold-ReLU model, across T."""
    from evsnn.convert import convert
    from evsnn.reference import ann_forward

    g = clip_graph(graph)
    ann_acc = accuracy(ann_forward(g, x).reshape(len(x), -1).argmax(1), y)
    nets = {p: convert(g, p) for p in ("if", "deng-gu")}
    rows, facts = [], {"ann": ann_acc, "rows": {}}
    for T in steps:
        r = {}
        for p, net in nets.items():
            res = sim(net, x, wake=T, sleep=0)
            r[p] = (accuracy(res.predictions, y), total_spikes(res, net).mean())
        facts["rows"][T] = {p: {"acc": a, "spikes": s} for p, (a, s) in r.items()}
        gain = r["deng-gu"][0] - r["if"][0]
        rows.append([T, pct(r["if"][0]), pct(r["deng-gu"][0]), f"{100 * gain:+.2f}",
                     f"{r['if'][1]:.1f}", f"{r['deng-gu'][1]:.1f}"])
        _log(f"  T={T:3d}: if {pct(r['if'][0])}  deng-gu {pct(r['deng-gu'][0])}")
    header = ["T", "IF accuracy %", "IF + δ shift accuracy %", "shift gain", "IF spikes/sample",
              "IF + δ spikes/sample"]
    return md_table(header, rows), facts


def bitserial_row(graph, x, y, sim):
    """(ANN accuracy, SNN accuracy, exact samples, spikes/sample, steps) of a bitserial conversion."""
    from evsnn.convert import convert
    from evsnn.reference import ann_forward, ann_levels

    net = convert(graph, "bitserial")
    res = sim(net, x, sleep=0)
    ann_acc = accuracy(ann_forward(graph, x).reshape(len(x), -1).argmax(1), y)
    exact = levels_exact(res, net, ann_levels(graph, x))
    return dict(ann=ann_acc, snn=accuracy(res.predictions, y), exact=int(exact.sum()),
                spikes=float(total_spikes(res, net).mean()), steps=int(res.steps), bits=int(net.bits))


def bitserial_table(models: dict, x, y, sim):
    """Table 3 rows from ``models``: {(K, beta): AnnGraph}."""
    rows, facts = [], {}
    n = len(x)
    for (K, beta), graph in sorted(models.items()):
        r = bitserial_row(graph, x, y, sim)
        facts[(K, beta)] = r
        base = facts.get((K, 0.0))
        d_acc = f"{100 * (r['snn'] - base['snn']):+.2f}" if base is not None and beta > 0 else "—"
        d_spk = f"{100 * (r['spikes'] / base['spikes'] - 1):+.1f} %" if base is not None and beta > 0 and \
            base["spikes"] > 0 else "—"
        rows.append([K, 2 ** K - 1, beta, pct(r["ann"]), pct(r["snn"]), f"{r['exact']}/{n}", r["steps"],
                     f"{r['spikes']:.1f}", d_acc, d_spk])
        _log(f"  K={K} β={beta}: ANN {pct(r['ann'])} SNN {pct(r['snn'])} spikes {r['spikes']:.1f}")
    header = ["K bits", "L", "β popcount", "ANN accuracy %", "bit-serial accuracy %", "levels exact", "steps",
              "spikes/sample", "Δ accuracy vs β=0", "Δ spikes vs β=0"]
    return md_table(header, rows), facts


# ---------------------------------------------------------------- data and models

def load_data(spec: str, limit: int | None):
    """(x_train or None, y_train, x_test, y_test) for ``digits`` or a ``NAME:DIR`` dataset spec."""
    from evsnn.datasets import load_dataset, load_digits

    if spec in ("digits", "digits-test"):
        xtr, ytr = load_digits("train")
        xte, yte = load_digits("test")
    else:
        name, sep, folder = spec.partition(":")
        if sep and not name.endswith("-train"):
            xtr, ytr = load_dataset(f"{name}-train:{folder}")
            xte, yte = load_dataset(spec)
        else:
            xtr, ytr = None, None
            xte, yte = load_dataset(spec)
        if yte is None:
            raise SystemExit(f"dataset {spec!r} has no labels; accuracy needs labels")
    if limit is not None:
        xte, yte = xte[:limit], yte[:limit]
    return xtr, ytr, xte, yte


def train_graph(xtr, ytr, levels: int, beta: float, epochs: int, seed: int, max_batches=None, classes=None):
    """Train the bundled recipe's CNN with ``levels`` and popcount weight ``beta``; return its AnnGraph."""
    import torch

    td = _train_module()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    in_shape = tuple(xtr.shape[1:])
    classes = int(classes or (int(ytr.max()) + 1))
    model = td.build_model(levels, in_shape=in_shape, classes=classes, threshold=td.DEFAULTS["threshold"])
    td.train_model(model, xtr, ytr, epochs=epochs, batch_size=td.DEFAULTS["batch_size"], lr=td.DEFAULTS["lr"],
                   seed=seed, beta=beta, max_batches=max_batches)
    return td.graph_of(model, in_shape, name=f"cnn_L{levels}_beta{beta}")


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " See the module docstring for details.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dataset", default="digits",
                   help="digits (bundled, default), or NAME:DIR with NAME in mnist, fashion-mnist, cifar10, "
                        "cifar100 (its train split is used for training), or an .npz test set with --model")
    p.add_argument("--model", default=None, help="quantized ONNX/Keras model for tables 1-2 "
                   "(default: the bundled digits_cnn.onnx for digits, else one trained here)")
    p.add_argument("--limit", type=int, default=None, help="use the first N test samples")
    p.add_argument("--epochs", type=int, default=None, help="training epochs for the models trained here (20)")
    p.add_argument("--max-batches", type=int, default=None, help="cap on optimizer steps per model (tests)")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA, help=f"popcount weight β (default {DEFAULT_BETA})")
    p.add_argument("--bits", type=int, nargs="+", default=None, help="bit-serial K values (default 2 3 4)")
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="wake lengths T of the Deng & Gu table (default 1 2 4 8 16 32 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="train nothing (table 3 shows only the given model)")
    p.add_argument("--simulator", choices=("auto", "engine", "reference"), default="auto")
    p.add_argument("--quick", action="store_true",
                   help="smoke test defaults: 40 samples, 1 epoch, T in 1 2 4 8, K in 2 3 "
                        "(options given explicitly still win)")
    a = p.parse_args(argv)
    quick = dict(limit=40, epochs=1, steps=[1, 2, 4, 8], bits=[2, 3])
    full = dict(limit=None, epochs=20, steps=[1, 2, 4, 8, 16, 32, 64], bits=list(BITS))
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    bad = [b for b in a.bits if not 1 <= b <= 8]
    if bad:
        p.error(f"--bits must be between 1 and 8, got {bad}")
    if min(a.steps) < 1:
        p.error("--steps must be positive")

    sim_name, sim = pick_simulator(a.simulator)
    xtr, ytr, x, y = load_data(a.dataset, a.limit)
    can_train = have_torch() and not a.no_train and xtr is not None
    classes = int(max(y.max(), ytr.max() if ytr is not None else 0)) + 1

    from evsnn.errors import EvsnnError
    from evsnn.frontends import load_model

    trained: dict = {}
    if a.model:
        graph, source = load_model(a.model), a.model
    elif a.dataset in ("digits", "digits-test") and BUNDLED_ONNX.exists():
        graph, source = load_model(BUNDLED_ONNX), "bundled evsnn/data/digits_cnn.onnx"
    elif can_train:
        _log("training the L = 7 model ...")
        graph = trained[(3, 0.0)] = train_graph(xtr, ytr, 7, 0.0, a.epochs, a.seed, a.max_batches, classes)
        source = f"trained here (L = 7, {a.epochs} epochs, seed {a.seed})"
    else:
        raise SystemExit("no model: give --model, or install torch to train one on this dataset")
    quants = [n for n in graph.nodes if n.kind == "quant"]
    if not quants:
        raise SystemExit(f"{source}: the model has no quantized activations (QuantAct); tables 1-2 need one")

    out = [f"# evsnn paper tables in miniature\n",
           f"- data: {a.dataset} test split, {len(x)} samples; model (tables 1-2): {source}, "
           f"L = {quants[0].levels}, φ = {quants[0].phase}",
           f"- simulator: {sim_name}; spikes/sample = all hidden spikes (± counted) over the run",
           ""]
    _log(f"table 1: casc ablation ({len(x)} samples, {sim_name})")
    t1, f1 = casc_ablation(graph, x, y, sim)
    L = f1["L"]
    ex = f1["rows"].get(("casc", L, "auto"), {})
    out += ["## 1. CASC ablation: baseline IF vs CIF, with and without sleep\n", t1, "",
            f"casc at T = L = {L} with sleep: accuracy {pct(ex.get('acc', float('nan')))} % vs quantized ANN "
            f"{pct(f1['ann'])} %; hidden levels exact in {ex.get('exact')}/{len(x)} samples. Baseline IF at T = L: "
            f"{pct(f1['rows'][('if', L, 0)]['acc'])} % without sleep. casc at T ≠ L is run with allow_inexact "
            "(the ablation); 'levels exact' is checked at T = L only.", ""]

    _log("table 2: deng-gu")
    t2, f2 = deng_gu(graph, x, y, sim, a.steps)
    out += ["## 2. Deng & Gu: IF with and without the δ = θ/(2T) shift (threshold-ReLU source)\n",
            f"Source: the model of table 1 with every QuantAct(L, λ) replaced by ClipAct(λ) (same weights); "
            f"its ANN accuracy: {pct(f2['ann'])} %.\n", t2, ""]

    _log("table 3: bit-serial")
    models = {}
    notes = []
    if can_train:
        for K in a.bits:
            for beta in (0.0, a.beta):
                if (K, beta) in trained:
                    models[(K, beta)] = trained[(K, beta)]
                    continue
                _log(f"  training L = {2 ** K - 1}, β = {beta} ...")
                t0 = time.perf_counter()
                models[(K, beta)] = train_graph(xtr, ytr, 2 ** K - 1, beta, a.epochs, a.seed, a.max_batches, classes)
                _log(f"  ... {time.perf_counter() - t0:.1f} s")
        notes.append(f"Models trained here with bench/train_digits.py's recipe ({a.epochs} epoch(s), seed {a.seed}"
                     + (f", at most {a.max_batches} steps" if a.max_batches else "") + "), β = 0 and "
                     f"β = {a.beta}; floor quantizer, L = 2^K − 1.")
    else:
        try:
            from evsnn.convert import bits_for_levels

            models[(bits_for_levels(L), 0.0)] = graph
            notes.append("torch is not installed (or --no-train): only the table-1 model is shown; "
                         "install the torch extra to train the K = 2, 3, 4 models with and without the regularizer.")
        except EvsnnError as e:
            notes.append(f"no bit-serial rows: {e}")
    t3, f3 = bitserial_table(models, x, y, sim) if models else ("(none)", {})
    out += ["## 3. Bit-serial coding with and without the popcount regularizer\n", " ".join(notes) + "\n", t3, ""]
    pairs = [(K, f3[(K, 0.0)], f3[(K, b)]) for (K, b) in sorted(f3) if b > 0 and (K, 0.0) in f3]
    if pairs:
        parts = []
        for K, b0, r in pairs:
            rel = f" ({100 * (r['spikes'] / b0['spikes'] - 1):+.1f} %)" if b0["spikes"] > 0 else ""
            parts.append(f"K = {K}: {b0['spikes']:.1f} → {r['spikes']:.1f} spikes/sample{rel}, accuracy "
                         f"{pct(b0['snn'])} → {pct(r['snn'])} % ({100 * (r['snn'] - b0['snn']):+.2f} points)")
        out += [f"Effect of the popcount regularizer (β = {a.beta}) on the bit-serial SNN: " + "; ".join(parts)
                + ".", ""]
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main()
