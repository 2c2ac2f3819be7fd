"""Throughput of ``evsnn run`` on a Dask cluster against one process (issue #15), on the VGG case.

The VGG-like CNN of bench_engine.py (3×32×32 inputs, random dyadic weights, scales calibrated), converted
with a preset (default casc: wake L = 8, sleep auto), run into a results file by
:func:`evsnn.runner.run_to_file`:

- one process, one engine thread (``threads=1``), as one single-threaded worker runs;
- a ``LocalCluster`` of N single-threaded worker processes for each N of ``--workers``.

Each setting first has an untimed warm-up run of one batch per worker on the same network (Numba
compile or cache load, network sent and packed), so the timed runs measure the steady state; the
warm-up time is printed. The timed runs of the settings are interleaved (``--repeat`` rounds) and the
medians reported, so a load change on a shared machine hits every setting alike (each repetition
starts its clusters afresh: an idle cluster's processes would take CPU from the timed one).
Throughput = samples / wall time of the whole run (writing included); "per worker" divides it by N; "ratio" is that per-worker rate over the single-process rate (the issue's
target: ≥ 0.8). Scaling beyond the machine's free cores is not measurable: the machine's core count and
load average are printed with the results. Each batch costs one client round trip (the worker waits for
its next batch: tens of ms on a loaded machine), hence batches of 16 rather than a handful of samples, and
each run a fixed ~0.15 s (network digest and plugin, warm-up check), hence 288 samples (18 batches) by
default: a short run measures that overhead rather than the throughput a long run gets.

    python bench/bench_distributed.py [--samples 288] [--batch-size 16] [--workers 1,2] [--preset casc]

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
    ap.add_argument("--samples", type=int, default=288, help="samples per run (18 batches of 16)")
    ap.add_argument("--batch-size", type=int, default=16,
                    help="samples per task: each task costs a client round trip (tens of ms on a loaded machine)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--preset", default="casc")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each setting, interleaved; medians reported")
    a = ap.parse_args()
    import distributed

    rng = np.random.default_rng(0)
    x = rng.integers(0, 257, (a.samples, 3, 32, 32)) / 256.0
    net = convert(calibrate(vgg(np.random.default_rng(1)), x[:4], 8), a.preset)
    opts = runner.RunOptions(batch_size=a.batch_size, threads=1)
    counts = [int(w) for w in a.workers.split(",")]
    print(f"# VGG 3x32x32, preset {a.preset}, {a.samples} samples in batches of {a.batch_size}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; {a.repeat} interleaved "
          "repetitions, medians")
    times = {k: [] for k in ["single", *counts]}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.h5")
        t_warm = timed_run(net, x[:a.batch_size], out, opts)
        print(f"single process: warm-up {t_warm:.2f} s")
        for rep in range(a.repeat):
            times["single"].append(timed_run(net, x, out, opts))
            for n in counts:  # one cluster at a time: idle clusters' processes would take CPU from the timed one
                t0 = time.perf_counter()
                with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                              dashboard_address=":0", silence_logs=40) as cluster, \
                        distributed.Client(cluster) as client:
                    client.wait_for_workers(n)
                    t_start = time.perf_counter() - t0
                    t_warm = timed_run(net, x[:n * a.batch_size], out, opts, client)
                    times[n].append(timed_run(net, x, out, opts, client))
                if rep == 0:
                    print(f"{n:2d} workers: cluster start {t_start:5.1f} s, warm-up {t_warm:6.2f} s")
            loads.append(os.getloadavg()[0])
            print(f"  repetition {rep + 1}: " + ", ".join(f"{k}: {a.samples / v[-1]:.2f}/s" for k, v in times.items())
                  + f" (load average {loads[-1]:.1f})", flush=True)
    r1 = a.samples / float(np.median(times["single"]))
    summary = {"single_sps": r1}
    print(f"single process, 1 thread: {r1:7.2f} samples/s")
    for n in counts:
        rn = a.samples / float(np.median(times[n]))
        summary[f"w{n}_sps"] = rn
        summary[f"w{n}_per_worker_ratio"] = rn / n / r1
        print(f"{n:2d} workers: {rn:7.2f} samples/s, {rn / n:7.2f} per worker, per-worker / single-process "
              f"ratio {rn / n / r1:5.2f}")
    summary["load_avg"] = float(np.median(loads))
    summary["cores"] = os.cpu_count()
    print("SUMMARY " + " ".join(f"{k}={v:.3g}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
