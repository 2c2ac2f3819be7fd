"""Fixed-point quantizers of Keras QAT libraries in NumPy, and their translation to ``QuantAct``.

A fixed-point number has a sign bit k (0 or 1), i integer bits (sign
excluded) and f fractional bits: step 2^−f, largest value 2^i − 2^−f. The
inference semantics below are HGQ2's (``quantizers.fixed_point`` as called by
``hgq.quantizer.internal.fixed_point_quantizer``, hgq2 0.2.0), which QKeras'
``quantized_bits``/``quantized_relu`` are mapped onto by :mod:`.qkeras`:

1. i ← max(i, −f);
2. overflow modes other than WRAP saturate first: SAT clips to
   [−k·2^i, 2^i − 2^−f], SAT_SYM to [−k·(2^i − 2^−f), 2^i − 2^−f];
3. round x·2^f with the round mode (TRN floor, RND floor(y + ½), RND_CONV half
   to even, TRN_ZERO, RND_ZERO, RND_MIN_INF, RND_INF; an ``S_`` prefix is
   stochastic in training only) and divide by 2^f;
4. WRAP wraps after rounding: (x + k·2^i) mod 2^(i+k) − k·2^i;
5. a value whose k + i + f ≤ 0 (i before step 1) is 0.

An activation quantizer becomes ``QuantAct(L, λ, φ, rounding)`` (design.md:
levels 2^(i+f) − 1 unsigned, step 2^−f) when its input is non-negative or it
is unsigned, it saturates, and its rounding is one a neuron realises: a floor
with a phase, TRN (and TRN_ZERO, equal on x ≥ 0) → φ = 0, RND (and RND_INF)
→ φ = ½; or RND_CONV (HGQ2: ``ops.round``, ties to even) → φ = ½ with
``rounding="half_even"`` (level rint(y + φ − ½) = rint(y)). RND_ZERO and
RND_MIN_INF round ties down on x ≥ 0 (ceil(y − ½)), which no floor with a
phase equals, and are refused. Clipping before rounding (HGQ2) or after (the
neuron) gives the same level, every rounding being monotone. Neurons whose
i + f ≤ 0 always output 0 (pruned by HGQ): they are kept, with a zero input
scale. The other neurons must share one L; their steps 2^−f may differ, which
:func:`activation` expresses as a per-neuron power-of-two scale on the
pre-activation (folded into the layer before) and its inverse on the output
(folded into the layer after), both exact in floating point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUND = {
    "TRN": np.floor,
    "RND": lambda y: np.floor(y + 0.5),
    "RND_CONV": np.round,
    "TRN_ZERO": lambda y: np.floor(np.abs(y)) * np.sign(y),
    "RND_ZERO": lambda y: -np.floor(-np.abs(y) + 0.5) * np.sign(y),
    "RND_MIN_INF": lambda y: -np.floor(-y + 0.5),
    "RND_INF": lambda y: np.floor(np.abs(y) + 0.5) * np.sign(y),
}
OVERFLOW = ("SAT", "SAT_SYM", "WRAP")
# round modes a neuron realises on y ≥ 0: (φ, QuantAct rounding); floor(y + φ), or rint(y + φ − ½) for RND_CONV
ACT_ROUNDING = {"TRN": (0.0, "floor"), "TRN_ZERO": (0.0, "floor"), "RND": (0.5, "floor"),
                "RND_INF": (0.5, "floor"), "RND_CONV": (0.5, "half_even")}
ACT_OVERFLOW = ("SAT", "SAT_SYM")


def _round_mode(mode: str) -> str:
    mode = str(mode).upper()
    return mode[2:] if mode.startswith("S_") else mode  # stochastic rounding only while training


def check_modes(round_mode: str, overflow_mode: str) -> str | None:
    """None if the modes are known, else what is wrong."""
    if _round_mode(round_mode) not in ROUND:
        return f"round_mode {round_mode!r} is unknown; known: {', '.join(ROUND)}"
    if str(overflow_mode).upper() not in OVERFLOW:
        return f"overflow_mode {overflow_mode!r} is not supported; supported: {', '.join(OVERFLOW)}"
    return None


def quantize(x, k, i, f, round_mode: str, overflow_mode: str, round_only: bool = False) -> np.ndarray:
    """HGQ2's fixed-point quantizer at inference (float64; k, i, f broadcast to x).

    ``round_only``: only step 3, as HGQ2 does for a trainable WRAP weight quantizer.
    """
    x = np.asarray(x, dtype=np.float64)
    k, i, f = (np.broadcast_to(np.asarray(v, dtype=np.float64), x.shape) for v in (k, i, f))
    rnd = ROUND[_round_mode(round_mode)]
    scale = 2.0 ** f
    if round_only:
        return rnd(x * scale) / scale
    ov = str(overflow_mode).upper()
    ie = np.maximum(i, -f)
    hi = 2.0 ** ie - 2.0 ** -f
    if ov == "SAT":
        x = np.clip(x, -k * 2.0 ** ie, hi)
    elif ov == "SAT_SYM":
        x = np.clip(x, -k * hi, hi)
    x = rnd(x * scale) / scale
    if ov == "WRAP":
        bias = k * 2.0 ** ie
        x = np.mod(x + bias, 2.0 ** (ie + k)) - bias
    return np.where(k + i + f > 0, x, 0.0)


@dataclass
class ActQuant:
    """An activation quantizer as ``QuantAct(levels, scale, phase)`` plus per-neuron power-of-two scales.

    ``pre``: multiplies the pre-activation (0 for a neuron that always outputs 0);
    ``post``: multiplies the QuantAct output to give the tool's value (0 for such a neuron).
    """

    levels: int
    scale: float
    phase: float
    pre: np.ndarray
    post: np.ndarray
    rounding: str = "floor"

    @property
    def uniform(self) -> bool:
        return bool(np.all(self.pre == 1.0) and np.all(self.post == 1.0))


def activation(k, i, f, round_mode: str, overflow_mode: str, nonneg: bool) -> ActQuant:
    """The :class:`ActQuant` of a quantizer with (broadcast) bit widths k, i, f; ValueError says why not.

    ``nonneg``: the quantizer's input is known to be ≥ 0 (it reads a ReLU or another quantizer).
    """
    k, i, f = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (k, i, f)))
    rm, ov = _round_mode(round_mode), str(overflow_mode).upper()
    if rm not in ACT_ROUNDING:
        raise ValueError(f"round_mode {round_mode!r} is not supported on activations (it rounds ties down, a "
                         "spiking neuron rounds by a floor with a phase or half to even); supported: TRN (floor), "
                         "RND (round half up), RND_CONV (half to even), TRN_ZERO, RND_INF, and their S_ forms")
    if ov not in ACT_OVERFLOW:
        raise ValueError(f"overflow_mode {overflow_mode!r} wraps around, a spiking neuron saturates; supported on "
                         f"activations: {', '.join(ACT_OVERFLOW)}")
    alive = (i + f >= 1) & (k + i + f > 0)
    if not nonneg and np.any(alive & (k > 0)):
        raise ValueError("a signed (k=1) quantizer reads a value that may be negative, and spike counts cannot be "
                         "negative; supported: unsigned quantizers (k0=False / keep_negative=False), or signed ones "
                         "right after a ReLU")
    widths = np.unique((i + f)[alive])
    if len(widths) > 1:
        raise ValueError(f"neurons have different bit widths i+f = {[int(w) for w in widths]}, i.e. different level "
                         "counts L = 2^(i+f) - 1; a population has one L (per-neuron L is not supported); "
                         "supported: one i+f per layer (f may differ per neuron), or i+f <= 0 (always 0)")
    bits = int(widths[0]) if len(widths) else 1
    if bits > 30:
        raise ValueError(f"i+f = {bits} bits is more than the 30 supported")
    fa = f[alive]
    vals, counts = np.unique(fa, return_counts=True) if fa.size else (np.zeros(1), np.ones(1))
    f_ref = float(vals[np.argmax(counts)])
    levels = 2 ** bits - 1
    pre = np.where(alive, 2.0 ** (f - f_ref), 0.0)
    post = np.where(alive, 2.0 ** (f_ref - f), 0.0)
    phase, rounding = ACT_ROUNDING[rm]
    return ActQuant(levels, levels * 2.0 ** -f_ref, phase, pre, post, rounding)
