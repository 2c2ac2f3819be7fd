"""``evsnn inspect``: summaries of model, network and results files as text or JSON-ready dicts.

Plain functions (no click): :func:`describe` picks the kind from the file's
``format`` attribute (``evsnn-network``, ``evsnn-results``, an unfinished
``evsnn-results-partial``), and otherwise reads it as a model with the
frontends. Each ``describe_*`` returns ``(dict, text)``.
"""

from __future__ import annotations

import json

import numpy as np



def _range(a) -> str:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return "-"
    lo, hi = float(a.min()), float(a.max())
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"


def _table(headers, rows) -> str:
    from evsnn.report import table
    return table(headers, rows)


def describe(path: str) -> tuple[dict, str]:
    from evsnn.store import existing_file, file_format

    path = existing_file(path)
    fmt = file_format(path)
    if fmt == "evsnn-network":
        return describe_network(path)
    if fmt == "evsnn-results":
        return describe_results(path)
    if fmt == "evsnn-results-partial":
        return describe_partial(path)
    return describe_model(path)


def _quantizers(meta: dict) -> tuple[dict, list[str]]:
    """The model's input and readout quantizers (ONNX QDQ / QONNX on the graph input and the logits)."""
    info, text = {}, []
    for key, what in (("input_quant", "input quantized"), ("readout_quant", "readout quantized")):
        q = meta.get(key)
        if q:
            info[key] = q
            how = ("applied to the data before the first layer" if key == "input_quant" else
                   "simulated analog: the readout accumulates the unquantized logits")
            text.append(f"{what} by {q.get('node', '?')!r}: scale {q['scale']:.6g}, zero point {q['zero_point']:g}, "
                        f"integers [{q['qmin']}, {q['qmax']}], round {q.get('rounding', 'half_even')}; {how}")
    return info, text


def describe_network(path: str) -> tuple[dict, str]:
    from evsnn.ir import snn as S
    from evsnn.store import load_network
    from evsnn.store.network import VERSION

    net = load_network(path)
    pops = [{"name": p.name, "model": p.model, "shape": list(p.shape), "size": p.size,
             "threshold": _range(p.threshold), "v0": p.v0, "levels": p.levels, "bias": _range(p.bias),
             "reset": p.reset, "shift": p.shift, "scale": p.scale, "drive_scale": p.drive_scale}
            for p in net.populations]
    prs = []
    for pr in net.projections:
        d = {"pre": pr.pre, "post": pr.post, "kind": pr.kind, "delay": pr.delay, "synapses": int(S.fanout(pr).sum())}
        if isinstance(pr, S.ConvProjection):
            d.update(kernel=list(pr.kernel.shape), stride=list(pr.stride), pads=list(pr.pads), groups=pr.groups)
        elif isinstance(pr, (S.PoolProjection, S.MaxProjection)):
            d.update(window=list(pr.window), stride=list(pr.stride), pads=list(pr.pads))
        prs.append(d)
    src = net.meta.get("source_file") or {}
    info = {"file": path, "format": "evsnn-network", "format_version": VERSION, "preset": net.preset,
            "input_shape": list(net.input_shape), "input_mode": net.input_mode, "levels": net.levels,
            "bits": net.bits, "default_wake": net.default_wake, "default_sleep": net.schedule_defaults()[1],
            "source_file": src.get("path", ""),
            "source_sha256": src.get("sha256", ""), "populations": pops, "projections": prs,
            "readout": {"name": net.readout.name, "shape": list(net.readout.shape)}}
    text = [f"{path}: evsnn-network, format_version {VERSION}",
            f"preset {net.preset}, input {tuple(net.input_shape)} ({net.input_mode}), L = {net.levels}"
            + (f", K = {net.bits} bits" if net.bits else "") + f", default wake {net.default_wake} steps"
            + f", sleep {net.schedule_defaults()[1]}"]
    if src:
        text.append(f"source {src.get('path', '')} (sha256 {src.get('sha256', '')})")
    text.append("\npopulations")
    text.append(_table(["name", "model", "shape", "size", "threshold", "v0", "L", "bias"],
                       [[p["name"], p["model"], str(tuple(p["shape"])), str(p["size"]), p["threshold"],
                         f"{p['v0']:g}", str(p["levels"] if p["levels"] is not None else "-"), p["bias"]]
                        for p in pops]))
    text.append("\nprojections")
    text.append(_table(["pre → post", "kind", "delay", "synapses", "details"],
                       [[f"{d['pre']} → {d['post']}", d["kind"], str(d["delay"]), f"{d['synapses']:,}",
                         ", ".join(f"{k} {tuple(v) if isinstance(v, list) else v}" for k, v in d.items()
                                   if k in ("kernel", "window", "stride", "pads", "groups"))] for d in prs]))
    text.append(f"\nreadout {net.readout.name} {tuple(net.readout.shape)}")
    qinfo, qtext = _quantizers(net.meta)
    info.update(qinfo)
    text += qtext
    return info, "\n".join(text)


def describe_results(path: str) -> tuple[dict, str]:
    from evsnn.report import format_table, summarize
    from evsnn.store.results import attrs_dict, layer_groups, open_results

    s = summarize(path)
    with open_results(path) as f:
        cfg = attrs_dict(f["config"]) if "config" in f else {}
        recorded = {name: sorted(k for k in ("count", "value", "events") if k in g) for name, g in layer_groups(f)}
    info = {"file": path, "format": "evsnn-results", "format_version": s["format_version"], "config": cfg,
            "samples": s["samples"], "steps": s["steps"], "classes": s["classes"], "recorded": recorded,
            "summary": s}
    text = [f"{path}: evsnn-results, format_version {s['format_version']}",
            f"{s['samples']} samples × {s['steps']} steps × {s['classes']} classes",
            "config: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if v != "")]
    rec = sorted({k for v in recorded.values() for k in v})
    text.append(f"recorded per neuron: {', '.join(rec) if rec else 'nothing (run with --record counts)'}")
    text.append("")
    text.append(format_table([s]))
    return info, "\n".join(text)


def describe_partial(path: str) -> tuple[dict, str]:
    from evsnn.errors import FormatError
    from evsnn.store.results import attrs_dict
    from evsnn.validate.hdf5 import open_untrusted

    with open_untrusted(path, "an unfinished results file", check_sizes=False) as f:
        try:
            done, n = int(f.attrs.get("samples_done", 0)), int(f["readout"].shape[0])
            cfg = attrs_dict(f["config"])
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as e:
            raise FormatError(f"{path}: damaged unfinished results file ({type(e).__name__})") from None
    info = {"file": path, "format": "evsnn-results-partial", "samples_done": done, "samples": n, "config": cfg}
    return info, (f"{path}: unfinished evsnn run, {done} of {n} samples done; "
                  "`evsnn run ... --resume` with the same options completes it")


def _node_details(n) -> str:
    from evsnn.ir import ann as A

    if isinstance(n, A.Conv):
        return (f"weight {tuple(n.weight.shape)}, stride {tuple(n.stride)}, pads {tuple(n.pads)}"
                + (f", groups {n.groups}" if n.groups != 1 else ""))
    if isinstance(n, A.Dense):
        return f"weight {tuple(n.weight.shape)}"
    if isinstance(n, (A.AvgPool, A.MaxPool)):
        return f"kernel {tuple(n.kernel)}, stride {tuple(n.stride)}, pads {tuple(n.pads)}"
    if isinstance(n, A.QuantAct):
        return f"L = {n.levels}, λ = {n.scale:.4g}, φ = {n.phase:g}" + (
            ", round half to even" if n.rounding == "half_even" else "")
    if isinstance(n, A.ClipAct):
        return f"λ = {n.scale:.4g}"
    if isinstance(n, A.Relu):
        return "needs calibration (--calibrate)"
    return ""


def describe_model(path: str) -> tuple[dict, str]:
    from evsnn.energy import ann_ops
    from evsnn.frontends import available, find_frontend
    from evsnn.ir import ann as A

    fe = find_frontend(path)
    graph = fe.load(path)
    shapes = graph.shapes()
    ops = ann_ops(graph)
    nodes = [{"name": n.name, "kind": n.kind, "inputs": list(n.inputs), "shape": list(shapes[n.name]),
              "details": _node_details(n), **({"levels": n.levels, "scale": n.scale, "phase": n.phase}
                                              if isinstance(n, A.QuantAct) else {})} for n in graph.nodes]
    levels = sorted({int(n.levels) for n in graph.nodes if isinstance(n, A.QuantAct)})
    fe_name = next((k for k, v in available().items() if v is fe), getattr(fe, "__name__", type(fe).__name__))
    info = {"file": path, "format": f"model ({fe_name})", "name": graph.name, "input_shape": list(graph.input.shape),
            "output": graph.output, "levels": levels, "nodes": nodes,
            "macs_per_sample": sum(o["macs"] for o in ops.values())}
    act = ("quantized, L = " + ", ".join(map(str, levels))) if levels else (
        "threshold ReLU (ClipAct)" if any(isinstance(n, A.ClipAct) for n in graph.nodes) else "plain ReLU / none")
    text = [f"{path}: model read by the {fe_name} frontend, {len(graph.nodes)} nodes",
            f"input {tuple(graph.input.shape)}, output {graph.output!r} {tuple(shapes[graph.output])}; "
            f"activations: {act}",
            f"ANN MACs per sample: {info['macs_per_sample']:,}", "",
            _table(["node", "kind", "shape", "details"],
                   [[d["name"], d["kind"], str(tuple(d["shape"])), d["details"]] for d in nodes])]
    qinfo, qtext = _quantizers(graph.meta)
    info.update(qinfo)
    text += qtext
    return info, "\n".join(text)


def to_json(info: dict) -> str:
    return json.dumps(info, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
