"""Batched dense steps (issue #14, item 3): the BLAS gemm of a layer's dense steps over a layer-major
window against this machine's gemm rate, and the engine with every step dense, batched or not.

    python bench/dense_batch.py [--case vgg16-if] [--samples 4] [--reps 3]

- gemm peak: ``np.dot`` of two 1024 × 1024 matrices in the run's dtype (sgemm for the rate presets,
  dgemm for casc), 1 BLAS thread, best of ``--reps``.
- per layer: the gemm a dense step runs, (Ho·Wo, kh·kw·Cin) @ (kh·kw·Cin, Cout), one step at a time
  (step-major) and for every step of a window at once (layer-major, :func:`evsnn.engine.layers.plan_dense`:
  ``steps`` × Ho·Wo rows, as many steps as :data:`evsnn.engine.run.DENSE_BATCH_BYTES` holds); rates in
  GMAC/s and as a fraction of the peak; the last line weights the layers by their MACs.
- engine: ``path="dense"`` (every conv and dense step through BLAS), step-major (``window=0``) against
  the default layer-major windows with batched gemms; records asserted equal.

Cases are bench/peers.py's. Last line: ``SUMMARY key=value ...``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gsops import best_call, case_args  # noqa: E402

from evsnn import engine  # noqa: E402
from evsnn.engine.cost import best_time  # noqa: E402
from evsnn.engine.run import DENSE_BATCH_BYTES  # noqa: E402
from evsnn.ir import snn as S  # noqa: E402


def gemm_rate(m: int, k: int, n: int, dtype, reps: int) -> float:
    """MACs per second of ``np.dot`` on (m, k) @ (k, n) in ``dtype``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.empty((m, n), dtype=dtype)
    return m * k * n / best_time(lambda: np.dot(a, b, out), reps=reps, min_time=0.02)


def main(argv=None) -> None:
    a, net, x, kw, dtype, prep = case_args(__doc__.splitlines()[0], "vgg16-if", 4, argv)
    isz = np.dtype(dtype).itemsize
    res = engine.simulate(prep, x[:2], threads=1, path="dense", **kw)  # compile / cache load
    steps = res.steps
    peak = gemm_rate(1024, 1024, 1024, dtype, a.reps)
    print(f"# {a.case}: dtype {np.dtype(dtype).name}, {steps} steps; gemm peak {peak / 1e9:.1f} GMAC/s (1 thread)")
    tot = {"macs": 0.0, "step": 0.0, "batch": 0.0}
    seen = {}
    for pr in net.projections:
        if not isinstance(pr, S.ConvProjection) or pr.groups != 1:
            continue
        kh, kw_, cin, cout = pr.kernel.shape
        _, ho, wo = pr.post_shape
        m, k = ho * wo, kh * kw_ * cin
        fit = max(1, DENSE_BATCH_BYTES // (isz * m * (k + cout)))
        w = min(steps, fit)
        key = (m, k, cout, w)
        if key not in seen:
            seen[key] = (gemm_rate(m, k, cout, dtype, a.reps), gemm_rate(w * m, k, cout, dtype, a.reps))
            r1, rw = seen[key]
            print(f"  conv {cin}x{pr.pre_shape[1]}x{pr.pre_shape[2]}->{cout}: one step ({m}×{k})@({k}×{cout}) "
                  f"{r1 / 1e9:.1f} GMAC/s ({r1 / peak:.2f} of peak); {w} steps ({w * m} rows) "
                  f"{rw / 1e9:.1f} GMAC/s ({rw / peak:.2f})")
        r1, rw = seen[key]
        macs = m * k * cout
        tot["macs"] += macs
        tot["step"] += macs / r1
        tot["batch"] += macs / rw
    step_rate, batch_rate = tot["macs"] / tot["step"], tot["macs"] / tot["batch"]
    print(f"all convs, weighted by MACs: one step at a time {step_rate / 1e9:.1f} GMAC/s "
          f"({step_rate / peak:.2f} of peak), batched {batch_rate / 1e9:.1f} GMAC/s ({batch_rate / peak:.2f}; "
          f"target ≥ 0.70)")
    t0, r0 = best_call(lambda: engine.simulate(prep, x, threads=1, path="dense", window=0, **kw), a.reps)
    tw, rw_ = best_call(lambda: engine.simulate(prep, x, threads=1, path="dense", **kw), a.reps)
    for p in r0.counts:
        np.testing.assert_array_equal(r0.counts[p], rw_.counts[p])
    print(f"engine, path dense, {len(x)} samples: step-major {t0:.3f} s, layer-major batched {tw:.3f} s "
          f"({t0 / tw:.2f}×)")
    print(f"SUMMARY peak_gmacs={peak / 1e9:.3g} step_ratio={step_rate / peak:.3g} "
          f"batch_ratio={batch_rate / peak:.3g} engine_speedup={t0 / tw:.3g} load_avg={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
