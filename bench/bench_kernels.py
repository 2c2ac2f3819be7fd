"""SOP/s of the conv and CSR scatter kernels against activity and layer size, on one thread.

Compares with the dense alternative the engine switches to (im2col + sgemm, gemv) and
prints the measured break-even activity. Last line: ``SUMMARY key=value ...``.

    python bench/bench_kernels.py [--quick]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core for BLAS too (set before numpy loads)

import numba
import numpy as np

from evsnn.engine import kernels as KN
from evsnn.engine.cost import best_time
from evsnn.ir.snn import window_fanout


def _best(fn):
    return best_time(fn, reps=5, min_time=0.05)


def conv_case(c, h, cout, act, rng, dtype=np.float32, k=3, wdtype=None):
    """A k×k stride-1 conv c×h×h → cout×h×h at activity ``act``: (event call, dense call, SOPs, MACs,
    fan-out). ``wdtype``: the event scatter's weight dtype (default ``dtype``; float32 in a float64
    run is how the engine stores float32-exact kernels, evsnn.engine.pack.narrow_weights)."""
    n = h * h * c
    idx = np.flatnonzero(rng.random(n) < act).astype(np.int64)
    sig = np.ones(len(idx), dtype)
    w = (rng.integers(-64, 65, k * k * c * cout) / 64).astype(wdtype or dtype)
    wd = w.astype(dtype)
    acc = np.zeros(h * h * cout, dtype)
    mark = np.zeros(h * h, np.uint8)
    lst = np.zeros(h * h, np.int64)
    sigbuf = np.zeros(n + 1, dtype)
    scratch = np.empty(h * h * (k * k * c + cout), dtype)
    ev = lambda: KN.conv_scatter(idx, sig, len(idx), w, k, k, c, cout, 1, h, h, c, h, h, 1, 1, 1, 1, acc, False,
                                 mark, lst, 0)
    de = lambda: KN.conv_dense(idx, sig, len(idx), wd, k, k, c, cout, 1, h, h, c, h, h, 1, 1, 1, 1, sigbuf, acc,
                                scratch)
    fan = window_fanout((c, h, h), (cout, h, h), (k, k), (1, 1), (1, 1, 1, 1), cout)
    fan = fan.reshape(c, h, h).transpose(1, 2, 0).reshape(-1)  # internal (y, x, c) order
    return ev, de, max(1, int(fan[idx].sum())), h * h * k * k * c * cout, fan


def csr_case(n_pre, n_post, act, rng, dtype=np.float32):
    W = (rng.integers(-64, 65, (n_pre, n_post)) / 64).astype(dtype)
    indptr = (np.arange(n_pre + 1) * n_post).astype(np.int64)
    indices = np.tile(np.arange(n_post, dtype=np.uint32), n_pre)
    data = W.reshape(-1).copy()
    idx = np.flatnonzero(rng.random(n_pre) < act).astype(np.int64)
    sig = np.ones(len(idx), dtype)
    acc = np.zeros(n_post, dtype)
    sigbuf = np.zeros(n_pre + 1, dtype)
    mark, lst = np.zeros(1, np.uint8), np.zeros(1, np.int64)
    ev = lambda: KN.csr_scatter(idx, sig, len(idx), indptr, indices, data, acc, False, mark, lst, 0, 1)
    de = lambda: KN.csr_dense(idx, sig, len(idx), data, n_pre, n_post, sigbuf, acc)
    return ev, de, max(1, len(idx) * n_post), n_pre * n_post


def main(quick=False):
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    acts = [0.01, 0.05, 0.1, 0.25, 0.5]
    print(f"# one thread; numba {numba.__version__}; numpy {np.__version__}")
    print("# kernel      layer                 act    event_SOP/s  dense_MAC/s  event_ms  dense_ms  winner")
    summary = {}
    conv_layers = [(64, 32, 64), (128, 16, 128)] if not quick else [(64, 32, 64)]
    for c, h, co in conv_layers:
        crossing = None
        for a in acts:
            ev, de, sops, macs, _ = conv_case(c, h, co, a, rng)
            ev(), de()
            te, td = _best(ev), _best(de)
            win = "event" if te < td else "dense"
            if win == "dense" and crossing is None:
                crossing = a
            print(f"conv3x3      {c}x{h}x{h}->{co:<10} {a:5.2f}  {sops / te:11.3e}  {macs / td:11.3e}  "
                  f"{te * 1e3:8.3f}  {td * 1e3:8.3f}  {win}")
            if (c, h, co) == conv_layers[0] and a == 0.1:
                summary["conv_sops"] = sops / te
                summary["gemm_macs"] = macs / td
        summary.setdefault("conv_break_even", crossing if crossing else ">0.5")
    for n_pre, n_post in ([(512, 512), (1024, 1024)] if not quick else [(512, 512)]):
        crossing = None
        for a in acts:
            ev, de, sops, macs = csr_case(n_pre, n_post, a, rng)
            ev(), de()
            te, td = _best(ev), _best(de)
            win = "event" if te < td else "dense"
            if win == "dense" and crossing is None:
                crossing = a
            print(f"csr          {n_pre}x{n_post} ({n_pre * n_post * 4 >> 20} MB)    {a:5.2f}  {sops / te:11.3e}  "
                  f"{macs / td:11.3e}  {te * 1e3:8.3f}  {td * 1e3:8.3f}  {win}")
            if (n_pre, n_post) == (512, 512) and a == 0.1:
                summary["csr_sops_1MB"] = sops / te
                summary["gemv_macs"] = macs / td
        if (n_pre, n_post) == (512, 512):
            summary["csr_break_even"] = crossing if crossing else ">0.5"
    print("SUMMARY " + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
