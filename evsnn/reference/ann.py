"""NumPy forward pass of an :class:`~evsnn.ir.AnnGraph`: the oracle frontends and the SNN are checked against."""

from __future__ import annotations

import numpy as np

from evsnn.ir import ann as A
from evsnn.ir import ops
from evsnn.ir.ops import eval_node


def ann_forward(graph: A.AnnGraph, x: np.ndarray, return_all: bool = False):
    """Run the graph on ``x`` (N, *input_shape) in float64.

    Returns the output node's value (N, *output_shape), or with ``return_all``
    a dict of every node's value by name.
    """
    x = A.check_input(graph, x)
    vals: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        if isinstance(node, A.Input):
            vals[node.name] = x
        else:
            vals[node.name] = eval_node(node, [vals[i] for i in node.inputs])
    return vals if return_all else vals[graph.output]


def ann_levels(graph: A.AnnGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Integer levels (N, size) of every ``QuantAct`` node and of every ``MaxPool`` fed by one.

    The level of a QuantAct is clip(floor(z·L/λ + φ), 0, L), computed from the
    pre-activation z (not by dividing the output) so it is exact.
    """
    vals = ann_forward(graph, x, return_all=True)
    out: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        if isinstance(node, A.QuantAct):
            z = vals[node.inputs[0]]
            out[node.name] = ops.quantize_levels(z, node.levels, node.scale, node.phase, node.rounding).reshape(len(z), -1)
        elif isinstance(node, A.MaxPool) and node.inputs[0] in out:
            shp = vals[node.inputs[0]].shape
            lv = out[node.inputs[0]].reshape(shp)
            out[node.name] = ops.maxpool2d(lv, node.kernel, node.stride, node.pads).reshape(shp[0], -1)
    return out
