"""Throughput of ``evsnn run`` on a Dask cluster against one process (issue #15), on the VGG case.

The VGG-like CNN of bench_engine.py (3×32×32 inputs, random dyadic weights, scales calibrated), converted
with a preset (default casc: wake L = 8, sleep auto), run into a results file by
:func:`evsnn.runner.run_to_file`:

- one process, one engine thread (``threads=1``), as one single-threaded worker runs;
- a ``LocalCluster`` of N single-threaded worker processes for each N of ``--workers``.

Every timed run is preceded by an untimed warm-up run of one batch per worker on the same network
(Numba compile or cache load, network scattered and packed), so the timed runs measure the steady state;
the warm-up time is printed. Throughput = samples / wall time of the whole run (writing included);
"per worker" divides it by N; "ratio" is that per-worker rate over the single-process rate (the issue's
target: ≥ 0.8). Scaling beyond the machine's free cores is not measurable: the machine's core count and
load average are printed with the results.

    python bench/bench_distributed.py [--samples 48] [--batch-size 4] [--workers 1,2] [--preset casc]

Last line: ``SUMMARY key=value ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from bench_engine import calibrate, vgg  # noqa: E402

from evsnn import runner  # noqa: E402
from evsnn.convert import convert  # noqa: E402


def timed_run(net, x, out, opts, client=None) -> float:
    t0 = time.perf_counter()
    runner.run_to_file(net, x, None, out, opts, client=client)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--preset", default="casc")
    a = ap.parse_args()
    import distributed

    rng = np.random.default_rng(0)
    x = rng.integers(0, 257, (a.samples, 3, 32, 32)) / 256.0
    net = convert(calibrate(vgg(np.random.default_rng(1)), x[:4], 8), a.preset)
    opts = runner.RunOptions(batch_size=a.batch_size, threads=1)
    print(f"# VGG 3x32x32, preset {a.preset}, {a.samples} samples in batches of {a.batch_size}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.h5")
        t_warm = timed_run(net, x[:a.batch_size], out, opts)
        t1 = timed_run(net, x, out, opts)
        r1 = a.samples / t1
        summary["single_sps"] = r1
        print(f"single process, 1 thread: warm-up {t_warm:6.2f} s, {t1:7.2f} s, {r1:7.2f} samples/s")
        for n in (int(w) for w in a.workers.split(",")):
            t0 = time.perf_counter()
            with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                          silence_logs=40) as cluster, distributed.Client(cluster) as client:
                client.wait_for_workers(n)
                t_start = time.perf_counter() - t0
                t_warm = timed_run(net, x[:n * a.batch_size], out, opts, client)
                tn = timed_run(net, x, out, opts, client)
            rn = a.samples / tn
            summary[f"w{n}_sps"] = rn
            summary[f"w{n}_per_worker_ratio"] = rn / n / r1
            print(f"{n:2d} workers: cluster start {t_start:5.1f} s, warm-up {t_warm:6.2f} s, {tn:7.2f} s, "
                  f"{rn:7.2f} samples/s, {rn / n:7.2f} per worker, ratio {rn / n / r1:5.2f} "
                  f"(load average {os.getloadavg()[0]:.1f})")
    print("SUMMARY " + " ".join(f"{k}={v:.3g}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
