"""Measure the cost model's coefficients (:mod:`evsnn.engine.cost`) on this machine.

Times the engine's own kernels (conv and CSR scatter, with and without block tracking; im2col + gemm
and gemv; the CIF/IF neuron updates) on synthetic layers spanning the shapes of small CNNs, one thread
for BLAS where threadpoolctl is installed, best of a few rounds, and fits each linear cost by
non-negative least squares on relative error. A call's Python dispatch overhead is subtracted (the
compiled step loop has none): for the dense steps the time of a 0-event scatter call, for the event
path the time of the same timed call on 0 events (:func:`_event_rows`), so the per-event cost is a
difference in which the call, and the block marks' reset a tracking scatter needs before each call,
cancel; each timed scatter does at least :data:`MIN_SOPS` operations, so that difference is not noise.
Before (only the bare call subtracted, 2 events on the smallest layers) the reset and the noise were
charged to the events, and relative-error fitting let those few rows set the CSR line: 40–77 ns a
event plus 0.9–1.3 per SOP, against 6 + 0.8–0.9 now (this machine, 2026-12-06). That sent the digits
CNN's 512 → 10 readout to the dense gemv above 40 events a step, where the scatter is faster up to
~120 (bench/paths.py, digits casc: auto 1.06–1.09× the event-only run before, 0.99–1.00 after).
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.optimize import nnls

from evsnn.engine import kernels as KN
from evsnn.engine import neurons as NR
from evsnn.engine.cost import best_time, conv_features, csr_features
from evsnn.ir.snn import window_fanout

# (Cin, H = W, Cout, groups) of the synthetic 3×3 convs (stride 1, pad 1); (n_pre, n_post) of the CSR ones
CONV_SHAPES = ((4, 32, 16, 1), (16, 32, 16, 1), (16, 16, 64, 1), (32, 16, 32, 1), (64, 8, 64, 1),
               (128, 4, 128, 1), (128, 2, 256, 1), (256, 2, 256, 1), (64, 16, 64, 1), (32, 16, 32, 32))
CSR_SHAPES = ((64, 64), (256, 256), (512, 512), (1024, 1024), (2048, 256), (256, 16))
ACTS = (0.03, 0.25)


def _blas_one_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _fit(X, y) -> list:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    coef, _ = nnls(X / y[:, None], np.ones(len(y)))
    return [float(c) for c in coef]


def _time(fn, t0=0.0) -> float:
    """Best time per call less the dispatch overhead ``t0`` (the shared machine is noisy: best of 5)."""
    return max(best_time(fn, reps=5, min_time=0.002) - t0, 1e-9)


MIN_SOPS = 4096  # synaptic operations of a timed scatter at least: less work than ~2 µs leaves a
# difference of two call times (the events' cost) mostly noise


def _events(n, act, rng, fan) -> np.ndarray:
    """Sorted indices of a step's events among ``n`` neurons of fan-out ``fan``: each neuron spikes with
    probability ``act``, and at least :data:`MIN_SOPS` ÷ ``fan`` of them (or all ``n``) spike."""
    k = max(int(rng.binomial(n, act)), min(-(-MIN_SOPS // max(int(fan), 1)), n))
    return np.sort(rng.choice(n, k, replace=False)).astype(np.int64)


def _event_rows(scatter, idx, sig, mark, ev, rows) -> None:
    """Append (features ``ev``, seconds per event) of ``scatter(idx, sig, track)`` to ``rows[track]``, both
    ways: the timed call (marks reset, then the scatter) on these events less the same call on none."""
    for track in (False, True):
        def run(i, s):
            mark[:] = 0
            scatter(i, s, track)
        base = _time(lambda: run(idx[:0], sig[:0]))
        rows[track].append((ev, _time(lambda: run(idx, sig), base) / len(idx)))


def _conv(c, h, cout, g, dtype, rng, ev_rows, de_rows):
    k = 3
    cig = c // g
    n = h * h * c
    w = (rng.standard_normal(k * k * cig * cout)).astype(dtype)
    acc = np.zeros(h * h * cout, dtype)
    mark = np.zeros(h * h + 1, np.uint8)
    lst = np.zeros(h * h + 1, np.int64)
    sigbuf = np.zeros(n + 1, dtype)
    scratch = np.empty(h * h * (k * k * cig + cout // g), dtype)
    fan = window_fanout((c, h, h), (cout, h, h), (k, k), (1, 1), (1, 1, 1, 1), cout // g)
    fan = fan.reshape(c, h, h).transpose(1, 2, 0).reshape(-1)
    geo = (k, k, cig, cout, g, h, h, c, h, h, 1, 1, 1, 1)
    none = np.zeros(1, np.int64)
    t0 = min(best_time(lambda: KN.conv_scatter(none, sigbuf, 0, w, *geo, acc, False, mark, lst, 0), reps=9,
                   min_time=0.001), 2e-6)  # the dispatch overhead of a Python call (none in the step loop)
    for act in ACTS:
        idx = _events(n, act, rng, fan.mean())
        sig = np.ones(len(idx), dtype)
        f = float(fan[idx].mean())
        ev, de = conv_features(k, k, c, cout, g, h, h, n, h * h * cout, f)
        _event_rows(lambda i, s, tr: KN.conv_scatter(i, s, len(i), w, *geo, acc, tr, mark, lst, 0), idx, sig,
                    mark, ev, ev_rows)
    de_rows.append((de, _time(lambda: KN.conv_dense(idx, sig, len(idx), w, *geo, sigbuf, acc, scratch), t0)))


def _csr(n_pre, n_post, dtype, rng, ev_rows, de_rows):
    data = rng.standard_normal(n_pre * n_post).astype(dtype)
    indptr = (np.arange(n_pre + 1) * n_post).astype(np.int64)
    indices = np.tile(np.arange(n_post, dtype=np.uint32), n_pre)
    acc = np.zeros(n_post, dtype)
    sigbuf = np.zeros(n_pre + 1, dtype)
    mark, lst = np.zeros(n_post + 1, np.uint8), np.zeros(n_post + 1, np.int64)
    prod = np.empty(n_post, dtype)  # csr_dense's product
    none = np.zeros(1, np.int64)
    t0 = min(best_time(lambda: KN.csr_scatter(none, sigbuf, 0, indptr, indices, data, acc, False, mark, lst, 0, 1),
                   reps=9, min_time=0.001), 2e-6)
    for act in ACTS:
        idx = _events(n_pre, act, rng, n_post)
        sig = np.ones(len(idx), dtype)
        ev, de = csr_features(n_pre, n_post, float(n_post))
        _event_rows(lambda i, s, tr: KN.csr_scatter(i, s, len(i), indptr, indices, data, acc, tr, mark, lst, 0, 1),
                    idx, sig, mark, ev, ev_rows)
    de_rows.append((de, _time(lambda: KN.csr_dense(idx, sig, len(idx), data, n_pre, n_post, sigbuf, acc, prod), t0)))


def _update(dtype, rng) -> float:
    """Seconds per neuron of a full CIF or IF update (the larger)."""
    n = 1 << 16
    v = rng.standard_normal(n).astype(dtype)
    cnt = np.zeros(n, np.int64)
    acc, inp, bias = np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype)
    th = np.ones(n, dtype)
    ei, es = np.zeros(n, np.int64), np.zeros(n, dtype)
    den = np.array([16.0], dtype)
    marks = np.zeros(n + 8, np.uint8)
    t_cif = _time(lambda: NR.update_cif(v, cnt, acc, inp, bias, th, 0, n, False, 8, False, ei, es, 0, marks))
    t_if = _time(lambda: NR.update_if(v, cnt, acc, inp, bias, th, 0, n, False, False, den, False, ei, es, 0))
    return max(t_cif, t_if) / n


def measure(dtype) -> dict:
    """Coefficients for ``dtype`` (see :mod:`evsnn.engine.cost`); a few seconds."""
    import numba
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with _blas_one_thread():
            cev, cde = {False: [], True: []}, []
            for c, h, cout, g in CONV_SHAPES:
                _conv(c, h, cout, g, dtype, rng, cev, cde)
            sev, sde = {False: [], True: []}, []
            for n_pre, n_post in CSR_SHAPES:
                _csr(n_pre, n_post, dtype, rng, sev, sde)
            upd = _update(dtype, rng)
    finally:
        numba.set_num_threads(old)

    def fit(rows):
        return _fit([r[0] for r in rows], [r[1] for r in rows])
    return {"conv_ev": fit(cev[False]), "conv_ev_track": fit(cev[True]), "conv_de": fit(cde),
            "csr_ev": fit(sev[False]), "csr_ev_track": fit(sev[True]), "csr_de": fit(sde), "upd": [upd]}
