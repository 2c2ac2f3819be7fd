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


def cif_step(v: np.ndarray, count: np.ndarray, current: np.ndarray, theta: np.ndarray, cap: int):
    """CIF (CASC): v += I; s = clip(floor(v/θ), −1, 1); −1 only if S > 0; +1 only if S < cap.

    ``cap`` is min(t_w, L). Returns (v, S, s).
    """
    v = v + current
    s = np.clip(np.floor(v / theta), -1, 1)
    s = np.where((s < 0) & (count <= 0), 0, s)
    s = np.where((s > 0) & (count >= cap), 0, s).astype(np.int8)
    return v - theta * s, count + s, s


def bitserial_emit(v: np.ndarray, theta: np.ndarray, k: int, bits: int):
    """Emit bit k (0 = MSB) of K: θ_k = θ·2^(K−1−k); s = [v ≥ θ_k]; v -= θ_k·s. Returns (v, s)."""
    tk = theta * float(2 ** (bits - 1 - k))
    s = (v >= tk).astype(np.int8)
    return v - tk * s, s


def maxpool_gate(window_max: np.ndarray, count: np.ndarray):
    """Max-pool unit: s = clip(max_i c_i − S, −1, 1) so S follows the window maximum. Returns (S, s)."""
    s = np.clip(window_max - count, -1, 1).astype(np.int8)
    return count + s, s
