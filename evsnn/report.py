"""Summaries of results files: a terminal table, JSON, and PNG plots (matplotlib, optional ``plot`` extra).

- :func:`summarize` reads one results file (without loading the large arrays)
  into a JSON-ready dict: accuracy at chosen time steps T (after step T; a run
  shorter than T is read at its end, where the readout no longer changes),
  final accuracy, spikes and SOPs per sample per layer, energy per profile.
- :func:`format_table` renders several summaries as plain text.
- :func:`write_plots` draws accuracy vs time step (one line per results file,
  labelled by preset), spikes per layer per step, and energy per layer.

Accuracy is the fraction of samples whose readout argmax equals the label
(ties go to the lowest class, as ``numpy.argmax``); files without labels have
no accuracy (``None``). Per-sample figures divide the file's totals by N.
"""

from __future__ import annotations

import math
import os

import numpy as np

from evsnn import energy as E
from evsnn.store.results import read_summary

DEFAULT_AT = (1, 2, 4, 8, 16)


def _num(v):
    """JSON-safe float (NaN/inf → None)."""
    v = float(v)
    return v if math.isfinite(v) else None


def summarize(path: str | os.PathLike, at=DEFAULT_AT, trusted: bool = False) -> dict:
    """JSON-ready summary of one results file (see the module docstring). ``trusted``: a file this process
    has just written, read without the untrusted-file checks (:func:`evsnn.store.results.open_results`)."""
    s = read_summary(path, trusted)
    n, steps, cfg = s["samples"], s["steps"], s["config"]
    acc = s["accuracy"]
    out = {"file": os.fspath(path), "format_version": s["format_version"], "preset": cfg.get("preset", ""),
           "wake": cfg.get("wake"), "sleep": cfg.get("sleep"), "engine": cfg.get("engine", ""), "samples": n,
           "steps": steps, "classes": s["classes"], "source_sha256": cfg.get("source_sha256", ""),
           "accuracy_at": None, "final_accuracy": None, "accuracy_curve": None, "layers": [], "energy": {}}
    if acc is not None and steps:
        out["accuracy_at"] = {str(t): _num(acc[min(int(t), steps) - 1]) for t in at}
        out["final_accuracy"] = _num(acc[-1])
        out["accuracy_curve"] = [_num(a) for a in acc]
    sops = {}
    for name, d in s["layers"].items():
        spikes = d.get("spikes", np.zeros(steps))
        sops[name] = float(d.get("sops", np.zeros(1)).sum()) / n
        out["layers"].append({"name": name, "size": d["size"], "model": d["model"],
                              "spikes_per_sample": float(spikes.sum()) / n,
                              "negative_spikes_per_sample": float(d.get("spikes_neg", np.zeros(1)).sum()) / n,
                              "sops_per_sample": sops[name],
                              "spikes_per_step": [float(v) / n for v in spikes]})
    out["spikes_per_sample"] = sum(ly["spikes_per_sample"] for ly in out["layers"])
    out["sops_per_sample"] = sum(sops.values())
    in_macs = float(s["input_macs"].sum()) / n if s["input_macs"] is not None else 0.0
    out["input_macs_per_sample"] = in_macs
    counts = s.get("energy_counts", {})
    ann = s.get("ann", {})
    for name, d in s["energy"].items():
        prof = E.Profile(name, **{k: float(d[k]) for k in ("mac", "ac", "mem_mac", "mem_sop", "mem_add",
                                                           "mem_update", "mem_output") if k in d})
        est = E.estimate(prof, sops, in_macs, float(counts.get("snn_updates_per_sample", 0)), ann)
        out["energy"][name] = {"snn_pj": _num(est["snn_pj"]), "ann_pj": _num(est["ann_pj"]),
                               "ratio": _num(est["ratio"]),
                               "snn_layers": {k: _num(v) for k, v in est["snn_layers"].items()},
                               "ann_layers": {k: _num(v) for k, v in est["ann_layers"].items()}}
    out["ann_ops_source"] = counts.get("ann_ops_source", "")
    out["verify"] = s.get("verify")
    return out


def verify_line(s: dict) -> str:
    """"exact: 100.00 % of samples (N of N)" for a verified exact run, the rate error for a rate run, or ""."""
    v = s.get("verify")
    if not v:
        return ""
    if v["kind"] == "exact":
        bad = {k: d["mismatches"] for k, d in v["layers"].items() if d["mismatches"]}
        line = f"exact: {v['percent_exact']:.2f} % of samples ({v['exact_samples']} of {v['samples']})"
        if bad:
            line += "; neurons off the ANN level: " + ", ".join(f"{k} {n}" for k, n in bad.items())
        return line
    worst = max((d["rate_error_max"] for d in v["layers"].values()), default=0.0)
    mean = np.mean([d["rate_error_mean"] for d in v["layers"].values()]) if v["layers"] else 0.0
    return f"rate error |count/T − a|: mean {mean:.4f}, max {worst:.4f} (rate presets are not exact)"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1e6:
        return f"{v:.3g}"
    return f"{v:,.1f}" if v != int(v) else f"{int(v):,}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain fixed-width table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def labels_for(summaries: list[dict]) -> list[str]:
    """One label per summary: the preset, plus the file name where presets repeat."""
    presets = [s["preset"] or "?" for s in summaries]
    return [p if presets.count(p) == 1 else f"{p} ({os.path.basename(s['file'])})"
            for p, s in zip(presets, summaries)]


def format_table(summaries: list[dict], at=DEFAULT_AT) -> str:
    """The terminal report: one row per results file, then each file's layers."""
    profiles = []
    for s in summaries:
        profiles += [p for p in s["energy"] if p not in profiles]
    headers = ["run", "N", "T_w", "steps"] + [f"acc@{t}" for t in at] + ["final", "spikes/smp", "SOPs/smp"] + \
        [p.removeprefix("45nm-") for p in profiles]
    rows = []
    for lab, s in zip(labels_for(summaries), summaries):
        acc = s["accuracy_at"] or {}
        rows.append([lab, str(s["samples"]), str(s["wake"]), str(s["steps"])]
                    + [_pct(acc.get(str(t))) for t in at] + [_pct(s["final_accuracy"]),
                                                              _fmt(s["spikes_per_sample"]), _fmt(s["sops_per_sample"])]
                    + [("-" if s["energy"].get(p, {}).get("ratio") is None else f"{s['energy'][p]['ratio']:.3f}")
                       for p in profiles])
    parts = ["accuracy in %; spikes and synaptic operations per sample; E_SNN/E_ANN per energy profile"
             + (" (45 nm, Horowitz 2014)" if any(p.startswith("45nm-") for p in profiles) else ""),
             table(headers, rows)]
    for lab, s in zip(labels_for(summaries), summaries):
        prof = next(iter(s["energy"]), None)
        hdr = ["layer", "size", "spikes/smp", "neg/smp", "SOPs/smp"] + ([f"pJ/smp {prof}"] if prof else [])
        rows = []
        for ly in s["layers"]:
            e = s["energy"][prof]["snn_layers"].get(ly["name"]) if prof else None
            rows.append([ly["name"], str(ly["size"]), _fmt(ly["spikes_per_sample"]),
                         _fmt(ly["negative_spikes_per_sample"]), _fmt(ly["sops_per_sample"])]
                        + ([_fmt(e)] if prof else []))
        if s["input_macs_per_sample"]:
            e = s["energy"][prof]["snn_layers"].get("input (MAC)") if prof else None
            rows.append(["input (analog MACs)", "", "", "", _fmt(s["input_macs_per_sample"])]
                        + ([_fmt(e)] if prof else []))
        extra = ""
        if prof:
            en = s["energy"][prof]
            extra = f"\nE_SNN {_fmt(en['snn_pj'])} pJ, E_ANN {_fmt(en['ann_pj'])} pJ per sample ({prof})"
        if verify_line(s):
            extra += "\n" + verify_line(s)
        parts.append(f"\n{lab}: {s['file']}\n" + table(hdr, rows) + extra)
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- plots

def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str) -> None:
    """Write a PNG atomically (temporary file renamed at the end): a failed write (disk full)
    leaves nothing under ``path``, never a 0-byte or truncated image."""
    from evsnn.store.files import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_accuracy(summaries: list[dict], path: str) -> str | None:
    """accuracy (%) vs time step, one line per summary; None when no summary has labels.

    A run shorter than the longest one continues as a dashed line at its final accuracy.
    """
    have = [(lab, s) for lab, s in zip(labels_for(summaries), summaries) if s["accuracy_curve"]]
    if not have:
        return None
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    longest = max(s["steps"] for _, s in have)
    for lab, s in have:
        acc = [100 * (a or 0) for a in s["accuracy_curve"]]
        line, = ax.plot(np.arange(1, s["steps"] + 1), acc, label=lab, marker="." if s["steps"] <= 40 else None)
        if s["steps"] < longest:  # the run ended: its readout no longer changes
            ax.plot([s["steps"], longest], [acc[-1], acc[-1]], ls="--", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("time step T")
    ax.set_ylabel("accuracy (%)")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("accuracy vs time step")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_spikes(summaries: list[dict], path: str) -> str:
    """Spikes per sample per step, one panel per summary, one line per layer."""
    fig = _figure(6.4, 2.6 * len(summaries) + 0.6)
    for i, (lab, s) in enumerate(zip(labels_for(summaries), summaries)):
        ax = fig.add_subplot(len(summaries), 1, i + 1)
        for ly in s["layers"]:
            ax.plot(np.arange(1, s["steps"] + 1), ly["spikes_per_step"], label=ly["name"])
        ax.set_title(lab, fontsize=9)
        ax.set_ylabel("spikes / sample")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax.set_xlabel("time step")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_energy(summaries: list[dict], path: str, profile: str | None = None) -> str | None:
    """Energy per layer (pJ per sample) of the SNN, and of the ANN per node, one panel per summary."""
    have = [(lab, s) for lab, s in zip(labels_for(summaries), summaries) if s["energy"]]
    if not have:
        return None
    fig = _figure(7.0, 3.0 * len(have) + 0.6)
    for i, (lab, s) in enumerate(have):
        prof = profile if profile in s["energy"] else next(iter(s["energy"]))
        en = s["energy"][prof]
        names = [f"SNN {k}" for k in en["snn_layers"]] + [f"ANN {k}" for k in en["ann_layers"]]
        vals = list(en["snn_layers"].values()) + list(en["ann_layers"].values())
        colors = ["tab:blue"] * len(en["snn_layers"]) + ["tab:gray"] * len(en["ann_layers"])
        ax = fig.add_subplot(len(have), 1, i + 1)
        ax.barh(np.arange(len(names)), [v or 0 for v in vals], color=colors)
        ax.set_yticks(np.arange(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ratio = en["ratio"]
        ax.set_title(f"{lab}: {prof}, E_SNN/E_ANN = {ratio:.3f}" if ratio is not None else lab, fontsize=9)
        ax.set_xlabel("pJ per sample")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def write_plots(summaries: list[dict], folder: str, stem: str, profile: str | None = None) -> list[str]:
    """``<stem>_accuracy_vs_T.png``, ``<stem>_spikes_per_step.png``, ``<stem>_energy_per_layer.png`` in ``folder``."""
    out = [plot_accuracy(summaries, os.path.join(folder, f"{stem}_accuracy_vs_T.png")),
           plot_spikes(summaries, os.path.join(folder, f"{stem}_spikes_per_step.png")),
           plot_energy(summaries, os.path.join(folder, f"{stem}_energy_per_layer.png"), profile)]
    return [p for p in out if p]
