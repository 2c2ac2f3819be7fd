"""``evsnn demo``: every preset on the bundled digits model and data, in one table.

:func:`run_demo` converts a graph with each preset, runs it on the data with
the event engine (the NumPy reference only when :mod:`evsnn.engine` cannot be
imported), writes one results file per preset into the output folder, prints
one table and, with matplotlib, ``accuracy_vs_T.png``.

Table columns: accuracy (%) after T = 1, 2, 4, 8, 16 steps and at the end of
the run; ``exact``: for casc and bitserial, the percentage of samples whose
every hidden neuron transmitted exactly its quantized-ANN level (the run's
``--verify`` report, :func:`evsnn.verify.verify`); spikes and
SOPs per sample; E_SNN/E_ANN under ``45nm-fp32``. Rate presets (if, deng-gu,
qcfs) run ``rate_steps`` wake steps; casc runs T_w = L then sleeps until quiet;
bitserial needs L = 2^K − 1 and is skipped with a note otherwise.

The header gives the quantized ANN's accuracy and the float ANN's: for a
threshold-ReLU model (ClipAct, then quantized to ``levels``) the model itself;
for a quantized model the same weights with each quantizer replaced by
clip(z, 0, λ) (its activations unquantized, not a separately trained ANN).
"""

from __future__ import annotations

import contextlib
import os
from importlib import resources

import numpy as np

from evsnn import energy as E
from evsnn import report, runner
from evsnn.errors import FormatError
from evsnn.ir import ann as A

PRESETS = ("if", "deng-gu", "qcfs", "casc", "bitserial")
RATE_PRESETS = ("if", "deng-gu", "qcfs")
AT = (1, 2, 4, 8, 16)
BUNDLED_MODEL = "digits_cnn.onnx"


def bundled_model() -> str:
    """Path of ``evsnn/data/digits_cnn.onnx``; FormatError if this installation lacks it."""
    ref = resources.files("evsnn").joinpath("data", BUNDLED_MODEL)
    if not ref.is_file():
        raise FormatError(f"the bundled model evsnn/data/{BUNDLED_MODEL} is missing from this installation; "
                          "pass --model MODEL_FILE")
    return os.fspath(ref)


def _accuracy(logits: np.ndarray, y) -> float | None:
    return None if y is None else float((logits.reshape(len(logits), -1).argmax(axis=1) == y).mean())


def _is_two_power_minus_one(L) -> bool:
    return L is not None and L >= 1 and ((L + 1) & L) == 0


def run_demo(graph: A.AnnGraph, x: np.ndarray, y: np.ndarray | None, out_dir: str, presets=PRESETS,
             engine: str = "auto", rate_steps: int = 32, levels: int | None = None, batch_size: int = 128,
             threads: int | None = None, seed: int = 0, max_sleep: int | None = 256, echo=print,
             progress=None, source: dict | None = None, data_info: dict | None = None) -> dict:
    """Run the demo on ``graph`` and ``x`` (N, *input_shape), labels ``y``; returns the table as a dict.

    ``progress(label, n)`` is a context manager yielding a callable that takes sample increments.
    ``source``: {path, sha256} of the model file and ``data_info`` (see :func:`evsnn.runner.load_data`)
    go into the results' config.
    """
    from evsnn.convert import convert, quantize_graph
    from evsnn.reference import ann_forward

    _, engine_name = runner.get_simulator(engine)
    os.makedirs(out_dir, exist_ok=True)
    quant = [n for n in graph.nodes if isinstance(n, A.QuantAct)]
    clip = any(isinstance(n, A.ClipAct) for n in graph.nodes)
    out = {"engine": engine_name, "samples": int(len(x)), "float_accuracy": None, "rows": [], "files": [],
           "notes": [], "plot": None}
    if clip:
        L = int(levels or 7)
        qgraph = quantize_graph(graph, L)
        out["float_accuracy"] = _accuracy(ann_forward(graph, x), y)
        all_levels = [L]
    else:
        all_levels = sorted({int(n.levels) for n in quant})
        L = all_levels[-1] if all_levels else None  # casc runs T_w = the largest L
        qgraph = graph
        if quant:  # the same weights with every quantizer replaced by clip(z, 0, λ): the unquantized ANN
            fgraph = A.AnnGraph([A.ClipAct(n.name, n.inputs, n.scale) if isinstance(n, A.QuantAct) else n
                                 for n in graph.nodes], graph.output, graph.name)
            out["float_accuracy"] = _accuracy(ann_forward(fgraph, x), y)
    out["levels"] = L
    out["ann_accuracy"] = _accuracy(ann_forward(qgraph, x), y)
    ops = E.ann_ops(graph)
    out["all_levels"] = all_levels
    shown = ", ".join(map(str, all_levels)) if all_levels else "none"
    echo(f"engine: {engine_name}; {len(x)} samples; L = {shown}")
    for preset in presets:
        if preset == "bitserial" and (len(all_levels) != 1 or not _is_two_power_minus_one(L)):
            note = f"bitserial skipped: it needs one L = 2^K − 1 for all layers, the model has L = {shown}"
            out["notes"].append(note)
            echo(note)
            continue
        net = convert(graph, preset, levels=L if (clip and preset in ("casc", "bitserial")) else None)
        net.meta["ann_ops"] = ops
        if source:
            net.meta["source_file"] = dict(source)
        exact = preset in ("casc", "bitserial")
        opts = runner.RunOptions(wake=rate_steps if preset in RATE_PRESETS else None,
                                 max_sleep=max_sleep if preset == "casc" else None, record=("counts",), seed=seed,
                                 batch_size=batch_size, engine=engine_name, threads=threads, verify=exact)
        path = os.path.join(out_dir, f"{preset}.h5")
        info = {**(data_info or {"data": "demo"}), "source_file": (source or {}).get("path", ""),
                "source_sha256": (source or {}).get("sha256", "")}
        with progress(preset, len(x)) if progress else contextlib.nullcontext() as bar:
            runner.run_to_file(net, x, y, path, opts, info, progress=bar)
        s = report.summarize(path, AT)
        ver = s.get("verify") or {}
        neurons = len(x) * sum(p.size for p in net.populations)
        bad = sum(d["mismatches"] for d in ver.get("layers", {}).values())
        row = {"preset": preset, "wake": s["wake"], "steps": s["steps"], "accuracy_at": s["accuracy_at"],
               "final_accuracy": s["final_accuracy"], "spikes_per_sample": s["spikes_per_sample"],
               "sops_per_sample": s["sops_per_sample"],
               "energy_ratio": (s["energy"].get("45nm-fp32") or {}).get("ratio"),
               "exact_samples": ver["exact_samples"] / len(x) if exact else None,
               "exact_neurons": (neurons - bad) / neurons if exact and neurons else None,
               "file": path, "summary": s}
        out["rows"].append(row)
        out["files"].append(path)
    out["table"] = format_demo(out)
    echo(out["table"])
    if report.have_matplotlib() and out["rows"]:
        out["plot"] = report.plot_accuracy([r["summary"] for r in out["rows"]],
                                           os.path.join(out_dir, "accuracy_vs_T.png"))
    echo(f"results: {out_dir}" + (f"; plot: {out['plot']}" if out["plot"] else " (install matplotlib for plots)"))
    return out


def format_demo(out: dict) -> str:
    pct = report._pct
    shown = ", ".join(map(str, out.get("all_levels") or [out["levels"]]))
    head = [f"quantized ANN accuracy (L = {shown}): {pct(out['ann_accuracy'])}%"]
    if out["float_accuracy"] is not None:
        head.append(f"float (threshold-ReLU) ANN accuracy: {pct(out['float_accuracy'])}%")
    headers = ["preset", "T_w", "steps"] + [f"acc@{t}" for t in AT] + ["final", "exact %", "spikes/smp",
                                                                        "SOPs/smp", "E/E_ANN fp32"]
    rows = []
    for r in out["rows"]:
        acc = r["accuracy_at"] or {}
        rows.append([r["preset"], str(r["wake"]), str(r["steps"])] + [pct(acc.get(str(t))) for t in AT]
                    + [pct(r["final_accuracy"]), pct(r["exact_samples"]), report._fmt(r["spikes_per_sample"]),
                       report._fmt(r["sops_per_sample"]),
                       "-" if r["energy_ratio"] is None else f"{r['energy_ratio']:.3f}"])
    return "\n".join(head + ["", report.table(headers, rows)] + out["notes"])
