"""Tie margin for fixed-point quantizers: add 2^−16 to a QAT ``QuantAct``'s phase where that is provably exact.

Fixed-point models put pre-activations on a dyadic grid, so y = z·L/λ + φ is
often an exact integer, which HGQ2 rounds up (TRN and RND are floors). casc
receives y in L wake steps of y/L and sums them in floating point, which may
land just below the integer and lose a level. With phase φ + 2^−16 the sums
have 2^−16 of slack, and the quantizer is unchanged on every y whose
fractional part is a multiple of 2^−16.

:func:`settle` proves that grid for each quantizer from the graph: a value's
grid (fractional bits) is that of the level step λ/L of the quantizer it
comes from, plus the fractional bits of every weight on the way, or a bias's
own (AvgPool with a power-of-two window adds its bits; anything else is no
grid). Every float is dyadic, so unquantized float32 weights simply carry ~24+
bits and fail the bound. When y's grid
has at most 16 fractional bits the margin is added; otherwise it is not (the
graph keeps the tool's exact semantics, and a simulator may lose exact ties).

A quantizer reading the model input directly has no known grid: it gets the
margin (so inputs on a dyadic grid, like image pixels k/2^n, keep their ties);
an input value within 2^−16 of a level *below* a boundary then rounds up.
This is the one place the graph can differ from the tool, and it is stated
here and in the frontend's README recipe.
"""

from __future__ import annotations

import math

import numpy as np

from evsnn.ir import ann as A

TIE_BITS = 16
TIE = 2.0 ** -TIE_BITS
_MAX_BITS = 60


def frac_bits(a) -> int | None:
    """Fewest r with every entry of ``a`` a multiple of 2^−r (None if more than 60, i.e. not dyadic)."""
    a = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    a = a[a != 0]
    for r in range(_MAX_BITS + 1):
        s = a * 2.0 ** r
        if np.all(s == np.floor(s)):
            return r
    return None


def _add(*bits):
    return None if any(b is None for b in bits) else max(bits)


def grids(nodes: list[A.Node]) -> dict[str, int | str | None]:
    """Fractional bits of every node's values; "input" for values that depend on the raw input only linearly."""
    g: dict[str, int | str | None] = {}
    for n in nodes:
        ins = [g[i] for i in n.inputs]
        if isinstance(n, A.Input):
            g[n.name] = "input"
        elif isinstance(n, A.QuantAct):
            g[n.name] = frac_bits(n.scale / n.levels)
        elif "input" in ins:
            g[n.name] = "input" if isinstance(n, A.LINEAR + (A.MaxPool,)) else None
        elif isinstance(n, (A.Flatten, A.Identity, A.MaxPool)):
            g[n.name] = ins[0]
        elif isinstance(n, (A.Conv, A.Dense)):
            w, b = frac_bits(n.weight), frac_bits(n.bias)
            g[n.name] = _add(None if ins[0] is None or w is None else ins[0] + w, b)
        elif isinstance(n, A.AvgPool):
            area = n.kernel[0] * n.kernel[1]
            pow2 = area & (area - 1) == 0 and not any(n.pads)
            g[n.name] = None if ins[0] is None or not pow2 else ins[0] + int(math.log2(area))
        elif isinstance(n, A.Add):
            g[n.name] = _add(*ins)
        else:
            g[n.name] = None
    return g


def settle(nodes: list[A.Node], quantizers: dict[str, dict]) -> None:
    """Add the tie margin to the floor-rounding QAT QuantActs where it is exact (see the module docstring)."""
    qnames = {info["node"] for info in quantizers.values()}
    g = grids(nodes)
    for n in nodes:
        if not (isinstance(n, A.QuantAct) and n.name in qnames and n.rounding == "floor"):
            continue
        src = g[n.inputs[0]]
        if src == "input":
            ok = True
        elif src is None:
            ok = False
        else:
            ok = src - math.log2(n.levels / n.scale) <= TIE_BITS
        if ok:
            n.phase = n.phase + TIE
        for info in quantizers.values():
            if info["node"] == n.name:
                info["tie_margin"] = TIE if ok else 0.0
