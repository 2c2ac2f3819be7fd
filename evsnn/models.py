"""Neuron rules as small functions on arrays (the equations of design.md, one step each).

All functions take float arrays of equal shape and return new arrays; θ is the
threshold, S the net spike count so far. The reference simulator calls these;
the engine's Numba kernels are tested against them.
"""

from __future__ import annotations

import numpy as np


def if_step(v: np.ndarray, current: np.ndarray, theta: np.ndarray, reset: str = "subtract"):
    """IF: v += I; s = [v ≥ θ]; v -= θ·s (reset "subtract") or v = 0 where s (reset "zero"). Returns (v, s)."""
    v = v + current
    s = (v >= theta).astype(np.int8)
    if reset == "zero":
        v = np.where(s > 0, 0.0, v)
    else:
        v = v - theta * s
    return v, s


def cif_step(v: np.ndarray, count: np.ndarray, current: np.ndarray, theta: np.ndarray, cap: int,
             half_even: bool = False):
    """CIF (CASC): v += I; s = clip(floor(v/θ), −1, 1); −1 only if S > 0; +1 only if S < cap.

    ``cap`` is min(t_w, L). ``half_even``: at equality (v/θ = 1 or v/θ = 0, an exact tie of the
    quantizer) spike only when S is odd, so the count settles on the even level (proof in
    :mod:`evsnn.ir.snn`). Returns (v, S, s).
    """
    v = v + current
    q = v / theta
    s = np.clip(np.floor(q), -1, 1)
    if half_even:
        odd = (count % 2) == 1
        s = np.where(((q == 1) | (q == 0)) & ~odd, 0, np.where((q == 0) & odd, -1, s))
    s = np.where((s < 0) & (count <= 0), 0, s)
    s = np.where((s > 0) & (count >= cap), 0, s).astype(np.int8)
    return v - theta * s, count + s, s


def bitserial_emit(v: np.ndarray, theta: np.ndarray, k: int, bits: int, half_even: bool = False):
    """Emit bit k (0 = MSB) of K: θ_k = θ·2^(K−1−k); s = [v ≥ θ_k]; v -= θ_k·s. Returns (v, s).

    ``half_even``: the last bit (k = K−1) is s = [v > θ]: v = θ there means an odd tie, whose even
    neighbour is one below (proof in :mod:`evsnn.ir.snn`)."""
    tk = theta * float(2 ** (bits - 1 - k))
    s = ((v > tk) if half_even and k == bits - 1 else (v >= tk)).astype(np.int8)
    return v - tk * s, s


def maxpool_gate(window_max: np.ndarray, count: np.ndarray):
    """Max-pool unit: s = clip(max_i c_i − S, −1, 1) so S follows the window maximum. Returns (S, s)."""
    s = np.clip(window_max - count, -1, 1).astype(np.int8)
    return count + s, s
