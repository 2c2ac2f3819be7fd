"""The per-projection path choice on every network of issue #14's table: ``path="auto"`` against the
event-only and dense-only runs (the rule: auto ≤ 1.1 × the faster of the two).

    python bench/paths.py [--cases digits-if,...] [--samples N] [--reps 5]

Cases are bench/peers.py's (the same networks, weights, inputs and schedules). Samples: the table's 599
on the digits CNN (16 samples take 5 ms, too short to time), 16 on the others (the dense-only run of
VGG-16 if takes minutes at the table's 64); ``--samples`` caps every case instead. Each path is
run once untimed, then ``--reps`` rounds alternate auto / event / dense; a run's time is its process CPU
time (1 thread: the run's own time, less of the neighbours' load than wall time) and each path's best is
compared. The counts of the three runs are compared too: on dyadic weights they must be equal; on the
digits CNN's real weights a float32 rate run may move a spike (``simulate``'s docstring says why), which
is printed, not an error.

Last line: ``SUMMARY key=value ...`` (``<case>_auto_over_best`` and the worst of them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import CASES, build_case  # noqa: E402

from evsnn import engine  # noqa: E402

PATHS = ("auto", "event", "dense")
LARGE_SAMPLES = 16  # default samples of the cases other than the digits CNN
RULE = 1.1


def cpu_time(fn) -> tuple[float, object]:
    """(process CPU seconds of one call of ``fn``, its result)."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def differing_counts(a, b) -> int:
    """(sample, neuron) spike counts that differ between two results."""
    return sum(int((a.counts[k] != b.counts[k]).sum()) for k in a.counts)


def measure(case: str, samples: int, reps: int) -> float:
    """Best CPU time of each path on ``case`` (bench/peers.py's); prints a line and returns
    auto / min(event, dense)."""
    net, x, wake, sleep = build_case(case, samples)
    return measure_net(case, net, x, {} if wake is None else {"wake": wake, "sleep": sleep}, reps)


def wake_activity(res) -> float:
    """Spikes per neuron and wake step, over every population and sample of ``res``."""
    neurons = sum(v.shape[1] for v in res.counts.values())
    spikes = sum(int(res.spikes_pos[k][:, :res.wake].sum() + res.spikes_neg[k][:, :res.wake].sum())
                 for k in res.counts)
    return spikes / (neurons * res.wake * res.readout.shape[0])


def measure_net(name: str, net, x: np.ndarray, kw: dict, reps: int, threads: int = 1) -> float:
    """:func:`measure` on a built network ``net``, inputs ``x`` and keywords ``kw`` of ``engine.simulate``
    (the schedule), on ``threads`` engine threads."""
    prep = engine.prepare(net)
    run = {p: (lambda p=p: engine.simulate(prep, x, path=p, threads=threads, **kw)) for p in PATHS}
    for p in PATHS:
        run[p]()  # compile / cache load, first-touch of the state
    best, res = {p: np.inf for p in PATHS}, {}
    for _ in range(reps):
        for p in PATHS:
            t, res[p] = cpu_time(run[p])
            best[p] = min(best[p], t)
    r = best["auto"] / min(best["event"], best["dense"])
    diff = {p: differing_counts(res["event"], res[p]) for p in ("auto", "dense")}
    moved = "" if not any(diff.values()) else (
        f"  counts differing from event: auto {diff['auto']}, dense {diff['dense']}")
    ev = res["event"]
    print(f"{name:14s} {len(x):4d} samples [{prep.dtype}] steps {ev.readout.shape[1]:3d} wake_act "
          f"{wake_activity(ev):.3f} cpu: auto {best['auto']:8.3f}s event {best['event']:8.3f}s dense "
          f"{best['dense']:8.3f}s  auto/best {r:5.2f} {'ok' if r <= RULE else 'SLOWER'}{moved}", flush=True)
    return r


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names (bench/peers.py)")
    ap.add_argument("--samples", type=int, default=None,
                    help=f"samples per case at most (default: 599 on digits, {LARGE_SAMPLES} on the others)")
    ap.add_argument("--reps", type=int, default=5, help="timed rounds (auto, event, dense alternating)")
    a = ap.parse_args(argv)
    cases = a.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    print(f"# path choice, 1 thread, best CPU time of {a.reps} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    out = {f"{c.replace('-', '_')}_auto_over_best":
           measure(c, a.samples or (None if c.startswith("digits") else LARGE_SAMPLES), a.reps) for c in cases}
    out["worst_auto_over_best"] = max(out.values())
    print("SUMMARY " + " ".join(f"{k}={v:.3g}" for k, v in out.items()))


if __name__ == "__main__":
    main()
