"""Python entry of the event engine: options, packing, threads, and the records."""

from __future__ import annotations

import numba
import numpy as np

from evsnn.engine.pack import PI_OFF, _inverse, pack
from evsnn.engine.step import run_batch
from evsnn.errors import ConversionError
from evsnn.ir import snn as S
from evsnn.ir.records import SimResult, check_batch, input_spikes, make_plan

# Break-even activity (events / pre neurons) above which a projection's step runs dense (BLAS),
# like a direction-optimizing BFS switching from push to pull. Model: break-even = event rate /
# dense rate. Measured on one core of the development machine (bench/bench_kernels.py):
# conv scatter ≈ 2.3e9 SOP/s vs im2col + sgemm ≈ 2e10 MAC/s → ≈ 12 %; CSR scatter ≈ 1e9 SOP/s vs
# gemv ≈ 9e9 MAC/s → ≈ 11 %. float64 halves the BLAS rate, so its break-even doubles. Edit this
# table (or run bench/bench_kernels.py and copy its measured break-evens) to re-calibrate.
BREAK_EVEN = {"conv": 0.12, "csr": 0.12}
PATHS = ("auto", "event", "dense")


def _fractions(path: str, dtype) -> tuple[float, float]:
    if path == "event":
        return np.inf, np.inf
    if path == "dense":
        return -1.0, -1.0
    f = 2.0 if np.dtype(dtype) == np.float64 else 1.0
    return BREAK_EVEN["conv"] * f, BREAK_EVEN["csr"] * f


def simulate(net: S.Network, x, wake: int | None = None, sleep: int | str = 0, max_sleep: int | None = None,
             record=("counts",), seed: int = 0, allow_inexact: bool = False, threads: int | None = None,
             dtype=np.float32, path: str = "auto") -> SimResult:
    """Event-driven run of ``net`` on ``x``; same arguments and records as :func:`evsnn.reference.simulate`.

    Extra options: ``threads`` (samples run in parallel, one state per thread; results do not
    depend on it; default: Numba's thread count), ``dtype`` (float32 like the source models, or
    float64) for membranes, currents and weights, and ``path``: "auto" picks per projection and
    step between the event scatter and a dense BLAS step from the event count; "event" / "dense"
    force one (for tests; spike and SOP counts are event counts either way).

    Decisions (documented here, see design.md): after a sample is quiet (t ≥ T_w and no spike in
    the last D+1 steps, D the largest delay) its state cannot change, so the engine stops it and
    pads its records (readout held, no spikes); the returned arrays equal the reference's. The
    readout accumulates in ``dtype`` and is returned as float64.
    """
    if path not in PATHS:
        raise ConversionError(f"unknown path {path!r}; known: {', '.join(PATHS)}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConversionError(f"dtype must be float32 or float64, got {dtype}")
    plan = make_plan(net, wake, sleep, max_sleep, record, seed, allow_inexact)
    x = check_batch(net, x)
    pk = pack(net, dtype)
    n = len(x)
    spikes_in = input_spikes(net, x, plan)  # (N, wake, size) counts for rate/event input, else None
    use_rate = spikes_in is not None
    if use_rate:
        rate = np.ascontiguousarray(spikes_in[:, :, pk.in_perm])
        xin = np.zeros((n, net.input_size), dtype=np.float64)
    else:
        rate = np.zeros((n, 0, 0), dtype=np.uint8)
        xin = np.ascontiguousarray(x.reshape(n, -1)[:, pk.in_perm])
    bitserial = net.preset == "bitserial"
    bits = int(net.bits or 0)
    P = len(pk.names)
    T = plan.max_steps
    D = pk.max_delay
    R = D + 1
    nall = len(pk.theta)
    osz = nall - pk.ntot
    do_raster = "raster" in plan.record
    rec_out = np.zeros((n, T, osz), dtype=np.float64)
    rec_pos = np.zeros((n, P, T), dtype=np.int64)
    rec_neg = np.zeros((n, P, T), dtype=np.int64)
    rec_sops = np.zeros((n, P, T), dtype=np.int64)
    rec_in_pos = np.zeros((n, T), dtype=np.int64)
    rec_in_sops = np.zeros((n, T), dtype=np.int64)
    raster = np.zeros((n, T, pk.ntot) if do_raster else (1, 1, 1), dtype=np.int8)
    counts = np.zeros((n, pk.ntot), dtype=np.int64)
    values = np.zeros((n, pk.ntot), dtype=np.float64)
    qa = np.full(n, -1, dtype=np.int64)
    silent = np.zeros(n, dtype=np.int64)
    fc, fd = _fractions(path, dtype)
    shift_den = np.array([2.0 * plan.wake], dtype=dtype)
    nthreads = numba.get_num_threads() if threads is None else int(threads)
    if nthreads < 1:
        raise ConversionError(f"threads must be ≥ 1, got {threads}")
    nthreads = min(nthreads, numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        run_batch(max(1, min(n, nthreads)), xin, rate, use_rate, pk.pi, pk.v0, pk.theta, pk.bias, pk.ji, pk.jf,
                  pk.wbuf, pk.ibuf, pk.idx32, pk.out_ptr, pk.out_list, pk.fan, pk.fan_in, plan.wake, T, bitserial,
                  bits, R, D, fc, fd, shift_den, pk.acc_tot, pk.c_tot, pk.blk_tot, max(nall, xin.shape[1]) + 1,
                  pk.max_cols if np.isfinite(fc) else 1,
                  rec_out, rec_pos, rec_neg, rec_sops, rec_in_pos, rec_in_sops, raster, do_raster, counts, values,
                  qa, silent)
    finally:
        numba.set_num_threads(old)

    if plan.auto:
        steps = int(qa.max()) + 1 if (qa >= 0).all() else T
        sleep_steps = np.where(qa >= 0, qa - plan.wake + 1, steps - plan.wake).astype(np.int64)
        quiescent = qa >= 0
    else:
        steps = T
        sleep_steps = np.full(n, steps - plan.wake, dtype=np.int64)
        quiescent = (qa >= 0) | (silent > D)
    out_inv = _inverse(pk.out_perm)
    readout = rec_out[:, :steps][:, :, out_inv].reshape((n, steps) + tuple(net.readout.shape))
    res = SimResult(readout=readout, wake=plan.wake)
    for p, name in enumerate(pk.names):
        off, size = int(pk.pi[p, PI_OFF]), pk.sizes[p]
        inv = _inverse(pk.perms[p])
        res.spikes_pos[name] = rec_pos[:, p, :steps].copy()
        res.spikes_neg[name] = rec_neg[:, p, :steps].copy()
        res.sops[name] = rec_sops[:, p, :steps].copy()
        res.counts[name] = counts[:, off:off + size][:, inv]
        res.values[name] = values[:, off:off + size][:, inv]
        if do_raster:
            res.raster[name] = raster[:, :steps, off:off + size][:, :, inv]
    if use_rate:
        res.spikes_pos[S.INPUT] = rec_in_pos[:, :steps].copy()
        res.spikes_neg[S.INPUT] = np.zeros_like(res.spikes_pos[S.INPUT])
        res.sops[S.INPUT] = rec_in_sops[:, :steps].copy()
    t = np.arange(steps)
    on = (t == 0) if bitserial else (t < plan.wake)
    res.input_macs = np.broadcast_to(np.where(on, pk.macs_on, 0).astype(np.int64), (n, steps)).copy()
    res.sleep_steps = sleep_steps
    res.quiescent = quiescent
    return res
