"""Cost model of the path choice: per projection and step, the event scatter or a dense BLAS step.

Costs are seconds on one thread, per engine dtype, linear in counts a projection's geometry gives
(``n`` events this step; ``fan`` = SOPs per event of the projection, ``J_FAN / n_pre``):

- conv, event:  ``n · (ev + pos·fan/cog + sop·fan)`` (per event, per covered output position, per SOP);
- conv, dense:  ``call + col·(Ho·Wo·kh·kw·Cin + n_pre) + mac·MACs + w·(kh·kw·cig·cout) + out·n_post
  + run·runs`` (im2col writes and the signal reset, the gemm, its weight read and packing, the accumulation
  into the target, and the im2col copies: Ho·Wo·kh of them, ·kw·groups for a grouped conv);
- CSR, event:   ``n · (ev + sop·fan)``;
- CSR, dense:   ``call + sig·n_pre + mac·n_pre·n_post`` (gemv on the dense copy);
- neuron update: ``upd · n_post``: a dense step in the sleep phase forces a full update of the target
  (the event path updates only the blocks it touched), so that step's dense cost counts it.

The event path's coefficients come in two sets, ``*_track`` for the sleep phase (the scatter also lists
the touched blocks). Per projection this gives a threshold (:func:`thresholds`): dense iff
``n > (dense + track·update) / per_event``, a comparison of one count per step in the compiled loop.

The coefficients are measured on this machine by :func:`calibrate` (a micro-benchmark of the engine's
own kernels on synthetic layers, ~2 s per dtype, one thread for Numba and BLAS), fitted by non-negative
least squares on relative error, and cached as JSON beside the engine's Numba cache; the cache is
keyed on the engine sources, the Numba/NumPy versions and the machine. ``EVSNN_RECALIBRATE=1``
measures again; ``EVSNN_COST_MODEL=builtin`` uses :data:`BUILTIN` (no measurement, deterministic).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time

import numpy as np

from evsnn.engine.pack import (
    CV_CIN, CV_COUT, CV_GROUPS, CV_HO, CV_KH, CV_KW, CV_WO, DN_DENSE, J_FAN, J_KIND, J_NPOST, J_NPRE, K_CONV,
    K_DENSE,
)

FILE = "evsnn-cost-model.json"
CONV_EV = ("ev", "pos", "sop")
CONV_DE = ("call", "col", "mac", "w", "out", "run")
CSR_EV = ("ev", "sop")
CSR_DE = ("call", "sig", "mac")

# fallback coefficients (seconds), measured once on the development machine (2 shared cores)
BUILTIN = {
    "float32": {"conv_ev": [6.0e-8, 0.0, 1.5e-10], "conv_ev_track": [1.0e-7, 4.0e-9, 1.0e-10],
                "conv_de": [0.0, 1.5e-9, 1.5e-11, 8.0e-10, 2.0e-9, 2.0e-9], "csr_ev": [3.0e-8, 5.0e-10],
                "csr_ev_track": [1.8e-7, 1.1e-8], "csr_de": [0.0, 6.0e-10, 7.0e-11], "upd": [1.5e-9]},
    "float64": {"conv_ev": [7.0e-8, 0.0, 2.0e-10], "conv_ev_track": [0.0, 1.5e-8, 2.3e-10],
                "conv_de": [0.0, 1.7e-9, 1.5e-11, 8.0e-10, 2.0e-9, 2.0e-9], "csr_ev": [3.5e-8, 7.0e-10],
                "csr_ev_track": [1.8e-7, 1.1e-8], "csr_de": [0.0, 6.0e-10, 1.3e-10], "upd": [2.0e-9]},
}
_MODEL: dict = {}


def cache_key() -> dict:
    """What the measured coefficients depend on: engine sources, library versions, the machine."""
    import numba

    from evsnn.engine._cache import sources_digest
    return {"sources": sources_digest(), "numba": numba.__version__, "numpy": np.__version__,
            "machine": platform.machine(), "node": platform.node(), "cpus": os.cpu_count()}


def cache_paths() -> list[str]:
    """Where the JSON may live, first writable wins: the engine's __pycache__ (beside its Numba cache), then
    Numba's CACHE_DIR if set, then the user's cache folder (a read-only install)."""
    import numba
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    paths = [os.path.join(here, FILE)]
    if numba.config.CACHE_DIR:
        paths.append(os.path.join(numba.config.CACHE_DIR, FILE))
    user = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    paths.append(os.path.join(user, "evsnn", FILE))
    return paths


def _load(key) -> dict | None:
    for path in cache_paths():
        with contextlib.suppress(OSError, ValueError, TypeError):
            with open(path) as fh:
                d = json.load(fh)
            if d.get("key") == key and all(_valid(d.get(k)) for k in BUILTIN):
                return d
    return None


def _valid(coefs) -> bool:
    if not isinstance(coefs, dict) or coefs.keys() != BUILTIN["float32"].keys():
        return False
    return all(len(coefs[k]) == len(v) and all(isinstance(c, (int, float)) and 0 <= c < 1 for c in coefs[k])
               for k, v in BUILTIN["float32"].items())


def _save(d: dict) -> None:
    for path in cache_paths():
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(d, fh, indent=1)
                os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
                return
            finally:
                with contextlib.suppress(OSError):
                    os.remove(tmp)


def model(dtype) -> dict:
    """The coefficients for ``dtype`` (float32/float64): cached in this process, else from the JSON cache,
    else measured now (and cached); :data:`BUILTIN` under ``EVSNN_COST_MODEL=builtin``."""
    name = np.dtype(dtype).name
    if os.environ.get("EVSNN_COST_MODEL", "") == "builtin":
        return BUILTIN[name]
    if not _MODEL:
        key = cache_key()
        d = None if os.environ.get("EVSNN_RECALIBRATE", "") not in ("", "0") else _load(key)
        if d is None:
            from evsnn.engine.calibrate import measure
            d = {"key": key, **{dt: measure(dt) for dt in BUILTIN}}
            _save(d)
        _MODEL.update({k: d[k] for k in BUILTIN})
    return _MODEL[name]


def conv_features(kh, kw, cin, cout, groups, ho, wo, npre, npost, fan):
    """(per-event features, dense features) of one conv projection; see the module docstring."""
    cog = cout // groups
    k = kh * kw * (cin // groups)
    ev = np.array([1.0, fan / cog, fan])
    runs = ho * wo * kh * (1 if groups == 1 else kw * groups)
    de = np.array([1.0, ho * wo * k * groups + npre, ho * wo * k * cout, k * cout, npost, runs], dtype=np.float64)
    return ev, de


def csr_features(npre, npost, fan):
    return np.array([1.0, fan]), np.array([1.0, npre, npre * npost], dtype=np.float64)


def thresholds(ji: np.ndarray, coefs: dict) -> np.ndarray:
    """(M, 2) float64: the event count above which projection m's step runs dense, [:, 0] in wake (no
    block tracking), [:, 1] when tracking (sleep); inf where there is no dense path."""
    thr = np.full((len(ji), 2), np.inf)
    upd = coefs["upd"][0]
    for m, j in enumerate(ji):
        npre, npost = max(int(j[J_NPRE]), 1), int(j[J_NPOST])
        fan = j[J_FAN] / npre
        if j[J_KIND] == K_CONV:
            ev, de = conv_features(j[CV_KH], j[CV_KW], j[CV_CIN], j[CV_COUT], j[CV_GROUPS], j[CV_HO], j[CV_WO],
                                   npre, npost, fan)
            ce, cet, cd = coefs["conv_ev"], coefs["conv_ev_track"], coefs["conv_de"]
        elif j[J_KIND] == K_DENSE and j[DN_DENSE] >= 0:
            ev, de = csr_features(npre, npost, fan)
            ce, cet, cd = coefs["csr_ev"], coefs["csr_ev_track"], coefs["csr_de"]
        else:
            continue
        dense = float(de @ cd)
        thr[m, 0] = dense / max(float(ev @ ce), 1e-12)
        thr[m, 1] = (dense + upd * npost) / max(float(ev @ cet), 1e-12)
    return thr


def best_time(fn, reps=3, min_time=0.004) -> float:
    """Best time per call (seconds) over ``reps`` rounds of at least ``min_time`` each."""
    best = np.inf
    for _ in range(reps):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt > min_time:
                break
        best = min(best, dt / n)
    return best
