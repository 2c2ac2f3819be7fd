"""Elementwise op chains of the ONNX frontend: recognise activations and foldable affines.

Exporters spell an activation as a run of elementwise ONNX nodes (``Mul``,
``Div``, ``Add``, ``Clip``, ``Floor``, ``Max``...). The frontend turns each
such node into a :class:`Token` and keeps the tokens of a run pending on the
tensor they act on; when something non-elementwise reads the run's result,
:func:`plan_chain` rewrites the run into

    z' = scale ⊙ z + shift            (per-channel affine, folded into the
                                       preceding Conv/Dense where possible)
    a  = activation(z')               (None, Relu, ClipAct(λ) or QuantAct(L, λ, φ))

with exact real-number algebra (no approximation beyond the snapping of
float noise described below).

Rewrite rules (``C`` = clip, ``A`` = affine y = p·x + q, ``F`` = floor):

- ``C(lo, hi)`` then ``A(p>0, q)`` equals ``A(p, q)`` then ``C(p·lo+q, p·hi+q)``
  (p < 0 swaps the bounds), so before the floor everything becomes ``A C``.
- ``F`` of ``C(lo, hi)`` equals ``C(⌊lo⌋, ⌊hi⌋)`` of ``F`` (floor is monotone),
  and on integers ``C(lo, hi)`` equals ``C(⌈lo⌉, ⌊hi⌋)``.
- After the floor, ``A(c>0, d)`` then ``C(lo, hi)`` equals ``C((lo−d)/c, (hi−d)/c)``
  then ``A(c, d)``; so after the floor everything becomes ``C A``.

A floor run normalised to ``A(a, b) F C(0, L) A(c, 0)`` with a, c > 0 is the
quantizer  c·clip(⌊a·z + b⌋, 0, L):  QuantAct(L, λ = c·L, φ = b − ⌊b⌋), with
the factor s = a·c and the offset ⌊b⌋·c moved into the affine part. ONNX
``Round`` enters as ``A(1, ½)`` followed by ``F`` (see the frontend docstring
for the tie caveat).

Float noise: bounds within 1e-6 (relative) of an integer are snapped to it
before ⌊·⌋/⌈·⌉, s within 1e-9 of 1 is taken as 1 and an offset b within 1e-9
of an integer as that integer; these arise only from float32 constants such as
λ/L·(L/λ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

INF = math.inf
SNAP_REL = 1e-6
UNIT_TOL = 1e-9

ACTIVATION_HELP = (
    "supported elementwise patterns: Relu / Max(x, 0); Clip(x, 0, λ); "
    "λ/L·clip(floor(x·L/λ + φ), 0, L) spelled with Mul/Div/Add/Sub, Floor or Round, Clip or Max/Min "
    "in any exporter order; per-channel Mul/Add/BatchNormalization right after Conv/Gemm/MatMul"
)


class ChainError(Exception):
    """A pending chain cannot be expressed; the frontend adds node names and raises ConversionError."""


@dataclass
class Token:
    """One elementwise op waiting to be applied, in ONNX order.

    ``kind`` is ``"affine"`` (y = a·x + b; a, b scalars or (C,) per-channel
    arrays), ``"clip"`` (y = clip(x, lo, hi), scalar bounds, ±inf allowed) or
    ``"floor"``. ``per_channel`` marks affines that came from per-channel
    constants or BatchNormalization: they belong to the linear layer, never to
    the activation. ``node``/``tensor`` name the ONNX node and its output.
    """

    kind: str
    node: str
    tensor: str
    a: float | np.ndarray = 1.0
    b: float | np.ndarray = 0.0
    lo: float = -INF
    hi: float = INF
    per_channel: bool = False
    rounding: str = "floor"  # of a "floor" token: "floor", or "half_even" after an A(1, ½) (QDQ, QONNX ROUND)
    quant: dict | None = None  # QDQ/QONNX group: {"node", "role": "q"|"dq", ...} (see .quantizers)


@dataclass
class Plan:
    """What a pending chain becomes: a per-channel affine then (optionally) one activation.

    ``scale``/``shift``: float or (C,) arrays of z' = scale·z + shift
    (``is_identity`` when nothing is left to apply). ``act`` is None,
    ``("relu",)``, ``("clip", λ)`` or ``("quant", L, λ, φ, rounding)``. ``linear_token``
    is the token naming the affine (the last per-channel token, or the last
    token when the chain is purely affine); ``act_token`` is the chain's last
    token, which names the activation.
    """

    scale: float | np.ndarray = 1.0
    shift: float | np.ndarray = 0.0
    act: tuple | None = None
    linear_token: Token | None = None
    act_token: Token | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_identity(self) -> bool:
        return bool(np.all(np.asarray(self.scale) == 1.0) and np.all(np.asarray(self.shift) == 0.0))


def is_affine(tok: Token) -> bool:
    return tok.kind == "affine"


def _snap(x: float) -> float:
    """``x`` rounded to the nearest integer when within float noise of it."""
    if not math.isfinite(x):
        return x
    r = round(x)
    return float(r) if abs(x - r) <= SNAP_REL * max(1.0, abs(x)) else x


def _affine_then_clip(a, b, lo, hi, p, q):
    """Compose clip(a·z+b, lo, hi) with y ↦ p·y + q; returns the new (a, b, lo, hi)."""
    if p == 0:
        raise ChainError("multiplies by 0")
    nlo, nhi = p * lo + q, p * hi + q
    if p < 0:
        nlo, nhi = nhi, nlo
    return a * p, b * p + q, nlo, nhi


def _intersect(lo, hi, l2, h2):
    nlo, nhi = max(lo, l2), min(hi, h2)
    if nlo > nhi:
        raise ChainError(f"clips [{lo}, {hi}] and [{l2}, {h2}] do not overlap (constant output)")
    return nlo, nhi


def _left(tokens: list[Token]):
    """Normalise floor-free scalar tokens to clip(a·z + b, lo, hi): returns (a, b, lo, hi)."""
    a, b, lo, hi = 1.0, 0.0, -INF, INF
    for t in tokens:
        if t.kind == "affine":
            a, b, lo, hi = _affine_then_clip(a, b, lo, hi, float(t.a), float(t.b))
        else:
            lo, hi = _intersect(lo, hi, t.lo, t.hi)
    return a, b, lo, hi


def _right(tokens: list[Token]):
    """Normalise tokens after the floor to c·clip(k, lo, hi) + d: returns (c, d, lo, hi)."""
    c, d, lo, hi = 1.0, 0.0, -INF, INF
    for t in tokens:
        if t.kind == "affine":
            if float(t.a) == 0:
                raise ChainError("multiplies by 0")
            c, d = c * float(t.a), d * float(t.a) + float(t.b)
        else:
            l2, h2 = (t.lo - d) / c, (t.hi - d) / c
            if c < 0:
                l2, h2 = h2, l2
            lo, hi = _intersect(lo, hi, l2, h2)
    return c, d, lo, hi


def _merge_affine(tokens: list[Token]):
    """Compose affine tokens in order: returns (scale, shift) (floats or (C,) arrays)."""
    s, t = 1.0, 0.0
    for tok in tokens:
        s, t = s * tok.a, t * tok.a + tok.b
    return s, t


def _clip_act(lo: float, hi: float):
    """Activation for clip(z', lo, hi) with the affine already removed."""
    if lo == -INF and hi == INF:
        return None
    if lo != 0.0:
        raise ChainError(f"clips to [{lo}, {hi}]; an activation must clip at 0 from below")
    return ("relu",) if hi == INF else ("clip", float(hi))


def _quant(a, b, lo1, hi1, c, d, lo2, hi2, rounding="floor"):
    """(act, s, offset) for c·clip(⌊clip(a·z+b, lo1, hi1)⌋, lo2, hi2) + d; see module docstring."""
    lo_l = max(math.floor(_snap(lo1)) if lo1 > -INF else -INF, math.ceil(_snap(lo2)) if lo2 > -INF else -INF)
    hi_l = min(math.floor(_snap(hi1)) if hi1 < INF else INF, math.floor(_snap(hi2)) if hi2 < INF else INF)
    if lo_l != 0 or not math.isfinite(hi_l) or hi_l < 1:
        raise ChainError(f"quantizer levels are clipped to [{lo_l}, {hi_l}]; need [0, L] with an integer L ≥ 1")
    if a <= 0 or c <= 0:
        raise ChainError(f"quantizer input scale {a} and output scale {c} must both be > 0")
    if abs(d) > 1e-12 * c * hi_l:
        raise ChainError(f"quantizer output has an offset {d}; only λ/L·level is supported")
    levels = int(hi_l)
    s = a * c
    if abs(s - 1.0) <= UNIT_TOL:
        s = 1.0
    if abs(b - round(b)) <= UNIT_TOL:
        b = float(round(b))
    k = math.floor(b)
    phase = b - k
    # The integer offset k is moved into the affine part (the preceding layer's bias), i.e. still
    # *inside* the rounding: the QuantAct computes rint(z'·L/λ + φ − ½) with z'·L/λ = a·z + k, which is
    # the file's rint(a·z + b − ½) for every k, odd or even, ties included.
    return ("quant", levels, c * levels, phase, rounding), s, k * c


def plan_chain(tokens: list[Token]) -> Plan:
    """Rewrite pending tokens into an affine plus at most one activation (raises ChainError)."""
    if not tokens:
        return Plan()
    last_pc = max((i for i, t in enumerate(tokens) if t.per_channel), default=-1)
    prefix, core = tokens[: last_pc + 1], tokens[last_pc + 1:]
    if not all(is_affine(t) for t in prefix):
        raise ChainError("per-channel affine after an activation was not split off")
    ps, pt = _merge_affine(prefix)
    floors = [i for i, t in enumerate(core) if t.kind == "floor"]
    if not any(t.kind != "affine" for t in core):
        s, t = _merge_affine(core)
        return Plan(ps * s, pt * s + t, None, tokens[-1], None)
    if len(floors) > 1:
        raise ChainError("rounds twice")
    if not floors:
        a, b, lo, hi = _left(core)
        act = _clip_act(lo, hi)
        lin = prefix[-1] if prefix else None
        return Plan(ps * a, pt * a + b, act, lin, tokens[-1])
    f = floors[0]
    a, b, lo1, hi1 = _left(core[:f])
    c, d, lo2, hi2 = _right(core[f + 1:])
    act, s, off = _quant(a, b, lo1, hi1, c, d, lo2, hi2, core[f].rounding)
    lin = prefix[-1] if prefix else None
    return Plan(ps * s, pt * s + off, act, lin, tokens[-1])
