"""Effective synaptic-operation rate of the engine on a real network against its own kernel peak, and
the speed-up of 2 engine threads over 1 (issue #14's targets: ≥ 60 % of the peak on VGG-16 casc,
2 threads ≥ 1.8× 1 thread).

    python bench/gsops.py [--case vgg16-casc] [--samples 16] [--reps 3]

- effective rate: the SOPs the run records (every population's ``sops``, all steps and samples) over
  the wall time of one ``engine.simulate`` call (network packed beforehand, ``path="auto"``, the
  preset's default schedule and dtype), 1 thread, best of ``--reps``. Analog input MACs (the first
  layer of an analog-input network) are not SOPs and are not counted.
- kernel peak: :func:`evsnn.engine.kernels.conv_scatter` alone (bench/bench_kernels.py's case), in
  the run's dtype with the weights stored as the engine stores that layer's (float32 where the kernel
  is float32-exact, :func:`evsnn.engine.pack.narrow_weights`), on every distinct conv geometry of the network at the run's mean activity of that
  layer's input, one thread; the best of those rates is the peak (the rate the kernel reaches when
  nothing else runs: no neuron updates, no bookkeeping, the layer's weights hot in cache).
- samples in turn: the same call with ``group=1`` (one sample at a time per thread) against the default
  group (:func:`evsnn.engine.run.sample_group`).
- threads: the same call with ``threads=2`` (samples split between the threads), after one untimed
  call on 2 threads (as the 1-thread side is timed after a warm-up call), best of ``--reps``, the
  1- and 2-thread calls alternating; the machine's core count and load average are printed (a loaded 2-core machine cannot
  show the scaling).

Cases are bench/peers.py's (random dyadic weights, calibrated). Last line: ``SUMMARY key=value ...``.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels import _best, conv_case  # noqa: E402
from peers import CASES, build_case  # noqa: E402

from evsnn import engine  # noqa: E402
from evsnn.engine.cost import best_time  # noqa: E402
from evsnn.engine.pack import narrow_weights  # noqa: E402
from evsnn.engine.run import default_dtype, sample_group  # noqa: E402
from evsnn.ir import snn as S  # noqa: E402


def best_call(fn, reps: int) -> tuple[float, object]:
    """(best time of ``reps`` calls of ``fn``, the last call's result)."""
    out = [None]

    def call():
        out[0] = fn()

    return best_time(call, reps=reps, min_time=0.0), out[0]


def conv_layers(net: S.Network, dtype) -> list[tuple[str, tuple, tuple, object]]:
    """(source population, source shape (C, H, W), target shape, the scatter's weight dtype) of every 3×3
    stride-1 ungrouped conv; the weight dtype is the engine's (float32 for float32-exact kernels in a
    float64 run: evsnn.engine.pack.narrow_weights)."""
    pops = {p.name for p in net.populations}
    return [(pr.pre, tuple(pr.pre_shape), tuple(pr.post_shape),
             np.float32 if narrow_weights(pr.kernel, dtype) is not None else np.dtype(dtype))
            for pr in net.projections
            if isinstance(pr, S.ConvProjection) and pr.pre in pops and pr.stride == (1, 1)
            and pr.kernel.shape[:2] == (3, 3) and pr.kernel.shape[2] == pr.pre_shape[0]]


def step_activity(res, name: str, size: int) -> float:
    """Mean fraction of the population's neurons that spike in a step in which it spikes at all."""
    sp = res.spikes_pos[name] + res.spikes_neg[name]
    active = int((sp > 0).sum())
    return float(sp.sum()) / (active * size) if active else 0.0


def case_args(description: str, case: str, samples: int, argv=None):
    """The benches' command line (``--case``, ``--samples``, ``--reps``) and its case, packed:
    (args, net, x, schedule keywords, dtype, prepared network)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--case", default=case, choices=sorted(CASES))
    ap.add_argument("--samples", type=int, default=samples)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    net, x, wake, sleep = build_case(a.case, a.samples)
    kw = {} if wake is None else {"wake": wake, "sleep": sleep}
    dtype = default_dtype(net)
    return a, net, x, kw, dtype, engine.prepare(net, dtype)


def main(argv=None) -> None:
    a, net, x, kw, dtype, prep = case_args(__doc__.splitlines()[0], "vgg16-casc", 16, argv)
    engine.simulate(prep, x[:2], threads=1, **kw)  # compile / cache load
    # one untimed call on 2 threads too: the second thread's first call takes fresh memory from its
    # allocator arena (3× the page faults; 0.26–0.27 s against 0.23–0.24 s after). Then the 1- and
    # 2-thread calls alternate, so that a change in the machine's load falls on both sides
    engine.simulate(prep, x, threads=2, **kw)
    t1 = t2 = np.inf
    for _ in range(a.reps):
        d1, res = best_call(lambda: engine.simulate(prep, x, threads=1, **kw), 1)
        d2, res2 = best_call(lambda: engine.simulate(prep, x, threads=2, **kw), 1)
        t1, t2 = min(t1, d1), min(t2, d2)
    tg, _ = best_call(lambda: engine.simulate(prep, x, threads=1, group=1, **kw), a.reps)
    for p in res.counts:
        np.testing.assert_array_equal(res.counts[p], res2.counts[p])
    sops = sum(int(v.sum()) for v in res.sops.values())
    rate = sops / t1
    print(f"# {a.case}: {len(x)} samples, dtype {np.dtype(dtype).name}, {res.steps} steps at most; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"engine, 1 thread: {t1:.3f} s, {sops:.3e} SOPs, {rate / 1e9:.2f} GSOP/s effective")
    print(f"  samples in turn per thread: {sample_group(prep)}; one at a time took {tg:.3f} s "
          f"({tg / t1:.2f}× the default)")
    rng = np.random.default_rng(0)
    peak, seen = 0.0, set()
    for src, (c, h, w), (co, _, _), wdt in conv_layers(net, dtype):
        act = min(max(step_activity(res, src, c * h * w), 0.01), 1.0)
        key = (c, h, co, round(act, 2), np.dtype(wdt).name)
        if key in seen or h != w:
            continue
        seen.add(key)
        ev, _de, ks, _macs, _fan = conv_case(c, h, co, act, rng, dtype=np.dtype(dtype), wdtype=wdt)
        r = ks / _best(ev)
        peak = max(peak, r)
        print(f"  conv_scatter {c}x{h}x{w}->{co} at activity {act:.2f}, {np.dtype(wdt).name} weights: "
              f"{r / 1e9:.2f} GSOP/s")
    if peak == 0:
        raise SystemExit(f"{a.case} has no 3×3 stride-1 conv between populations to measure the kernel on")
    print(f"kernel peak {peak / 1e9:.2f} GSOP/s; effective / peak = {rate / peak:.2f} (target ≥ 0.60)")
    print(f"engine, 2 threads: {t2:.3f} s; speed-up {t1 / t2:.2f} (target ≥ 1.8)")
    print(f"SUMMARY gsops={rate / 1e9:.3g} peak_gsops={peak / 1e9:.3g} ratio={rate / peak:.3g} "
          f"speedup_2t={t1 / t2:.3g} group_gain={tg / t1:.3g} load_avg={os.getloadavg()[0]:.2f} "
          f"cores={os.cpu_count()}")


if __name__ == "__main__":
    main()
