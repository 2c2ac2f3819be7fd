"""Calibration: give every plain ReLU a scale λ from data, turning it into a threshold ReLU (ClipAct)."""

from __future__ import annotations

import numpy as np

from evsnn.errors import ConversionError
from evsnn.ir import ann as A
from evsnn.ir.ops import eval_node


def calibrate(graph: A.AnnGraph, x: np.ndarray, percentile: float = 99.99) -> A.AnnGraph:
    """Copy of ``graph`` with each Relu replaced by ClipAct(λ), λ = ``percentile`` of its positive outputs.

    Layers are calibrated in order on the already-clipped network (as in Rueckauer et
    al. 2017), so a later λ accounts for earlier clipping. ``x``: (N, *input_shape).
    A layer that never fires on the data gets λ = 1 (it stays silent either way).
    """
    if not 0 < percentile <= 100:
        raise ConversionError(f"percentile must be in (0, 100], got {percentile}")
    x = A.check_input(graph, x)
    if len(x) == 0:
        raise ConversionError("calibration data is empty")
    vals: dict[str, np.ndarray] = {}
    nodes = []
    for n in graph.nodes:
        if isinstance(n, A.Input):
            vals[n.name] = x
            nodes.append(n)
            continue
        if isinstance(n, A.Relu):
            z = np.maximum(vals[n.inputs[0]], 0.0)
            pos = z[z > 0]
            lam = float(np.percentile(pos, percentile)) if pos.size else 1.0
            n = A.ClipAct(n.name, n.inputs, lam if lam > 0 else 1.0)
        vals[n.name] = eval_node(n, [vals[i] for i in n.inputs])
        nodes.append(n)
    return A.AnnGraph(nodes, graph.output, graph.name, dict(graph.meta))
