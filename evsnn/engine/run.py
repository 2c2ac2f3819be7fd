"""Python entry of the event engine: options, packing, threads, and the records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evsnn.engine import cost
from evsnn.engine.pack import DN_DENSE, J_KIND, J_NPOST, J_NPRE, K_DENSE, PI_OFF, Packed, input_drive, pack
from evsnn.engine.batch import run_batch
from evsnn.errors import ConversionError
from evsnn.ir import drive as DR
from evsnn.ir import snn as S
from evsnn.ir.records import CountValues, SimResult, check_batch, input_spikes, make_plan, readout_quantizer
from evsnn.threads import engine_pools, engine_threads, one_blas_thread

PATHS = ("auto", "event", "dense")


@dataclass(frozen=True, eq=False)
class Prepared:
    """A network packed once for the engine (see :func:`prepare`); pass it to :func:`simulate` instead of the
    :class:`~evsnn.ir.snn.Network` to skip the per-call packing. Read-only: one Prepared may serve any number of
    calls (and threads); results equal ``simulate(net, ...)`` exactly.

    ``ext[i]``: where internal index ``i`` goes in the records: for a population neuron its external
    (flattened NCHW) index plus the population's offset, for a readout entry its external readout index.
    ``back``: the inverse over the populations' neurons, ``back[ext[i]] = i`` for i < ntot (the counts are
    gathered through it, so that they are written in order).
    """

    net: S.Network
    dtype: np.dtype
    packed: Packed
    ext: np.ndarray
    back: np.ndarray


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConversionError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def default_dtype(net: S.Network) -> np.dtype:
    """float64 for the exact presets (their counts must equal the ANN evaluated in float64), float32 else."""
    return np.dtype(np.float64 if net.exact else np.float32)


def prepare(net: S.Network, dtype=None) -> Prepared:
    """Validate and pack ``net`` for the engine in ``dtype`` (float32 or float64; default
    :func:`default_dtype`), once.

    The work done here (validation, tables, weight layouts, index maps) is what every
    ``simulate(net, ...)`` call would otherwise repeat; reuse the result across batches.
    The network must not be modified afterwards (prepare again if it is).
    """
    dtype = _check_dtype(default_dtype(net) if dtype is None else dtype)
    pk = pack(net, dtype)
    P = len(pk.names)
    ext = np.empty(len(pk.theta), dtype=np.int64)
    for p in range(P):
        off = int(pk.pi[p, PI_OFF])
        ext[off:off + pk.sizes[p]] = off + pk.perms[p]
    ext[pk.ntot:] = pk.out_perm
    back = np.empty(max(pk.ntot, 1), dtype=np.int64)
    back[ext[:pk.ntot]] = np.arange(pk.ntot)
    return Prepared(net, dtype, pk, ext, back)


def path_thresholds(prep: Prepared, path) -> np.ndarray:
    """(K, M, 2) float64 thresholds the step loop reads (step t uses row t % K; see :func:`simulate`'s ``path``):
    projection m's step runs dense iff its event count exceeds ``[t % K, m, track]`` (inf: never, −1: always)."""
    M = len(prep.packed.ji)
    if isinstance(path, str):
        if path not in PATHS:
            raise ConversionError(f"unknown path {path!r}; known: {', '.join(PATHS)}, or a (K, M) schedule")
        if path == "auto":
            return np.ascontiguousarray(cost.thresholds(prep.packed.ji, cost.model(prep.dtype))[None])
        return np.full((1, M, 2), np.inf if path == "event" else -1.0)
    sched = np.asarray(path)
    if sched.ndim != 2 or sched.shape[0] < 1 or sched.shape[1] != M or sched.dtype.kind not in "bui":
        raise ConversionError(f"a path schedule must be a (K ≥ 1, {M}) boolean array (True: dense), "
                              f"got shape {sched.shape} of {sched.dtype}")
    thr = np.where(sched.astype(bool), -1.0, np.inf)
    return np.ascontiguousarray(np.repeat(thr[:, :, None], 2, axis=2))


def simulate(net: S.Network | Prepared, x, wake: int | None = None, sleep: int | str | None = None,
             max_sleep: int | None = None, record=("counts",), seed: int = 0, allow_inexact: bool = False,
             threads: int | None = None, dtype=None, path="auto", verify: bool = False,
             memory_budget: int | None = None, group: int | None = None, window: int | None = None) -> SimResult:
    """Event-driven run of ``net`` on ``x``; same arguments and records as :func:`evsnn.reference.simulate`.

    ``net``: a :class:`~evsnn.ir.snn.Network`, or a :class:`Prepared` from :func:`prepare` (packed once,
    reusable across calls; same results). ``wake``/``sleep`` None: the network's schedule (casc: T_w = L,
    sleep until quiet). ``verify``: attach :func:`evsnn.verify.verify`'s report (``res.verify``). Extra
    options: ``threads`` (samples run in parallel, one state per thread; results do not depend on it;
    default: the usable cores, at most ``NUMBA_NUM_THREADS``; BLAS, used by the dense steps, is limited to one
    thread during the call and restored after, see :mod:`evsnn.threads`), ``dtype`` (float32 or float64 for membranes, currents and weights;
    default float64 for the exact presets casc and bitserial, whose counts then equal the quantized ANN
    evaluated in float64, float32 for the rate presets; or the Prepared's dtype, which an explicit
    ``dtype`` must match), and ``path``: how each conv/dense projection delivers a step's events.
    "auto" picks per projection and step between the event scatter and a dense BLAS step by the cost
    model of :mod:`evsnn.engine.cost` (calibrated on this machine: events × fan-out against the dense
    MACs, im2col and weight traffic, plus the full neuron update a dense step forces in the sleep
    phase); "event" / "dense" force one; a (K, M) boolean array (M projections, True: dense) forces
    the choice of step t from row t % K (for tests; a CSR projection without a dense copy stays event).
    Spike and SOP counts are event counts on every path.

    What mixing paths guarantees (tested with random per-step schedules against "event"): the paths add
    the same products in different orders (the event scatter per event, BLAS per output), so

    - dyadic weights and biases (exact in the engine dtype, sums representable: e.g. k/64 and float64
      or float32 within its mantissa): every record, readout included, is bit-identical on every path;
    - real weights (e.g. He-normal float32 in the default float64): membranes agree to float64 rounding
      (relative ~1e-16 per addition), so the counts, values and spikes are identical unless a membrane
      lies within that rounding of a firing threshold (a level boundary of the ANN), and the readout
      agrees to float64 accuracy (not necessarily bit for bit). ``memory_budget``: bytes one round of records
    may take when a sleep-"auto" run grows its record window (default
    :func:`evsnn.validate.limits.memory_budget`); beyond it a FormatError. ``group``: samples each thread
    runs in turn, population by population (default :func:`sample_group`), and ``window``: on a
    feed-forward network without delays, steps each population runs before the next (layer-major,
    :mod:`evsnn.engine.layers`; default :func:`layer_window`; 0: step by step; ignored on other networks).
    Layer-major runs a window's dense steps of a conv layer in one gemm (rows: every step's im2col; a
    dense layer's, one gemv a step as step-major: OpenBLAS's gemv and gemm kernels sum in different
    orders on some CPUs); both are speed only: every record is bit-identical whatever the group and window
    on the event path, and on the dense steps as long as BLAS's gemm sums each output in the same order
    whatever the number of rows (OpenBLAS does; tested on real weights); otherwise the guarantees of
    mixing paths above hold.

    Decisions (documented here, see design.md): after a sample is quiet (t ≥ T_w and no spike in
    the last D+1 steps, D the largest delay) its state cannot change, so the engine stops it and
    pads its records (readout held, no spikes); the returned arrays equal the reference's. The
    readout accumulates in ``dtype`` and is returned as float64.
    """
    if isinstance(path, str) and path not in PATHS:
        raise ConversionError(f"unknown path {path!r}; known: {', '.join(PATHS)}, or a (K, M) schedule")
    if isinstance(net, Prepared):
        prep = net
        if dtype is not None and _check_dtype(dtype) != prep.dtype:
            raise ConversionError(f"dtype {np.dtype(dtype)} differs from the prepared network's {prep.dtype}; "
                                  "prepare it again with that dtype")
    else:
        prep = prepare(net, dtype)
    net, dtype, pk = prep.net, prep.dtype, prep.packed
    plan = make_plan(net, wake, sleep, max_sleep, record, seed, allow_inexact)
    x = check_batch(net, x)
    n = len(x)
    spikes_in = input_spikes(net, x, plan)  # (N, wake, size) counts for rate/event input, else None
    use_rate = spikes_in is not None
    if use_rate:
        rate = np.ascontiguousarray(spikes_in[:, :, pk.in_perm])
        xin = np.zeros((n, net.input_size), dtype=np.float64)
    else:
        rate = np.zeros((n, 0, 0), dtype=np.uint8)
        xin = np.ascontiguousarray(x.reshape(n, -1)[:, pk.in_perm])
    with one_blas_thread():  # OpenBLAS's workers spin ~0.1 s after a threaded call, on the engine threads' cores
        dd = input_drive(net, pk, x.reshape(n, -1)) if pk.ndyn and not use_rate else np.zeros((n, 1))
    bitserial = net.preset == "bitserial"
    T = plan.max_steps
    thr = path_thresholds(prep, path)
    nthreads = engine_threads(threads)
    if group is None:
        group = sample_group(prep)
    elif int(group) < 1:
        raise ConversionError(f"group must be ≥ 1, got {group}")
    if window is not None and int(window) < 0:
        raise ConversionError(f"window must be ≥ 0, got {window}")
    # Records are allocated per round, not for wake + max_sleep steps up front: with sleep "auto" the
    # first round records wake + SLEEP_WINDOW steps; samples not quiet by then run again from the
    # start with twice the sleep window (same inputs, same seed: the same trajectory), up to the cap.
    # Memory then follows the steps the samples really need; the reruns cost at most about as much
    # again as one run to the slowest sample's quiescence.
    t_try = first_round_steps(plan)
    todo = np.arange(n)
    rounds = []
    while True:
        win = (0 if not pk.layered else layer_window(prep, group, t_try) if window is None
               else min(int(window), t_try))
        raw = _run_round(prep, plan, todo, xin, rate, use_rate, dd, t_try, thr, nthreads, group, win)
        quiet = raw["qa"] >= 0
        if t_try >= T or quiet.all():
            rounds.append((todo, raw))
            break
        rounds.append((todo[quiet], _take(raw, quiet)))
        todo = todo[~quiet]
        t_try = min(T, plan.wake + max(1, 2 * (t_try - plan.wake)))
        from evsnn.validate.limits import check_run_memory  # lazy: only when a round grows
        check_run_memory(net, t_try, len(todo), plan.record, plan.wake, memory_budget)
    qa = np.empty(n, dtype=np.int64)
    silent = np.empty(n, dtype=np.int64)
    for idx, raw in rounds:
        qa[idx] = raw["qa"]
        silent[idx] = raw["silent"]
    D = pk.max_delay
    if plan.auto:
        steps = int(qa.max()) + 1 if (qa >= 0).all() else T
        sleep_steps = np.where(qa >= 0, qa - plan.wake + 1, steps - plan.wake).astype(np.int64)
        quiescent = qa >= 0
    else:
        steps = T
        sleep_steps = np.full(n, steps - plan.wake, dtype=np.int64)
        quiescent = (qa >= 0) | (silent > D)
    res = SimResult(readout=_merge(rounds, "readout", n, steps, hold=True).reshape(
        (n, steps) + tuple(net.readout.shape)), wake=plan.wake, readout_quant=readout_quantizer(net, plan.wake))
    if not bitserial:
        res.values = CountValues(res.counts)
    for p, name in enumerate(pk.names):
        res.spikes_pos[name] = _merge(rounds, ("pos", p), n, steps)
        res.spikes_neg[name] = _merge(rounds, ("neg", p), n, steps)
        res.sops[name] = _merge(rounds, ("sops", p), n, steps)
        res.counts[name] = _merge(rounds, ("counts", p), n)
        if bitserial:
            res.values[name] = _merge(rounds, ("values", p), n)
        if "raster" in plan.record:
            res.raster[name] = _merge(rounds, ("raster", p), n, steps)
    if use_rate:
        res.spikes_pos[S.INPUT] = _merge(rounds, "in_pos", n, steps)
        res.spikes_neg[S.INPUT] = np.zeros_like(res.spikes_pos[S.INPUT])
        res.sops[S.INPUT] = _merge(rounds, "in_sops", n, steps)
    t = np.arange(steps)
    on = (t == 0) if bitserial else (t < plan.wake)
    res.input_macs = np.broadcast_to(np.where(on, pk.macs_on, 0).astype(np.int64), (n, steps)).copy()
    res.sleep_steps = sleep_steps
    res.quiescent = quiescent
    if verify:
        from evsnn.verify import verify as run_verify  # lazy: evsnn.verify imports only evsnn.ir
        res.verify = run_verify(net, x, res, seed=seed)
    return res


GROUP_MAX = 4  # samples a thread runs in turn, population by population (step.run_batch), at most
GROUP_STATE_BYTES = 256 << 20  # and at most this much of their state per thread


def sample_group(prep: Prepared) -> int:
    """Samples each engine thread runs in turn, population by population (:func:`evsnn.engine.step.run_batch`).

    One sample's step reads every layer's weights; on a network whose weights do not stay in cache from one
    step to the next (VGG-16: 120 MB in float64) the next sample's step of the same layer then finds them in
    cache. That pays while the weights outweigh the samples' own state (membranes, currents, drive), which
    the group also keeps hot: measured on VGG-16 casc 1.16× (4 samples), if T = 32 1.23×; on ResNet-18 and
    a 6-conv VGG, whose state is about as large as their weights, no gain (1 thread; bench/gsops.py prints
    the default group's speed-up over 1). So: weights ÷ state, between 1 and :data:`GROUP_MAX`, within
    :data:`GROUP_STATE_BYTES` (memory beyond ``--memory-budget``, which bounds the records only).

    A network the engine runs layer-major (:attr:`~evsnn.engine.pack.Packed.layered`) reads each layer's
    weights once per window of steps already; there a group only adds state and event logs competing for
    the cache (VGG-16 casc, 8 samples: group 1 with 16-step windows 0.80 s, group 4 0.96 s), so 1.
    """
    pk, isz = prep.packed, prep.dtype.itemsize
    if pk.layered:
        return 1
    nall, R = len(pk.theta), pk.max_delay + 1
    state = (nall * (3 * isz + 4 * 8) + (R + 1) * pk.acc_tot * isz + pk.c_tot * isz
             + R * (pk.blk_tot + 1) * 9)
    weights = isz * sum(pr.kernel.size if isinstance(pr, S.ConvProjection) else pr.data.size
                        for pr in prep.net.projections if isinstance(pr, (S.ConvProjection, S.DenseProjection)))
    return int(max(1, min(GROUP_MAX, weights // state, GROUP_STATE_BYTES // state)))


LOG_BYTES = 64 << 20  # a layer-major window's event log, per thread, at most


def layer_window(prep: Prepared, group: int, steps: int) -> int:
    """Steps per layer-major window (:mod:`evsnn.engine.layers`): all ``steps`` if the event log of the
    ``group`` samples (room for every neuron to spike in every step: index and signal) fits in
    :data:`LOG_BYTES`, else as many as fit, at least 1."""
    per_step = group * len(prep.packed.theta) * (8 + prep.dtype.itemsize)
    return int(max(1, min(steps, LOG_BYTES // max(per_step, 1))))


DENSE_BATCH_BYTES = 32 << 20  # batched dense steps of one layer-major window, per thread, at most


def dense_batch_size(prep: Prepared) -> int:
    """Engine-dtype elements of a thread's buffer for batched dense steps
    (:func:`evsnn.engine.layers.plan_dense`): :data:`DENSE_BATCH_BYTES`, and at least one step of the
    largest batchable projection."""
    pk = prep.packed
    one = max([pk.max_cols] + [int(j[J_NPRE] + j[J_NPOST]) for j in pk.ji
                               if j[J_KIND] == K_DENSE and j[DN_DENSE] >= 0])
    return int(max(one, DENSE_BATCH_BYTES // prep.dtype.itemsize))


SLEEP_WINDOW = 64  # sleep steps recorded in the first round of a sleep-"auto" run (then doubled)


def first_round_steps(plan) -> int:
    """Steps the engine records in its first round (what a run allocates up front)."""
    return min(plan.max_steps, plan.wake + SLEEP_WINDOW) if plan.auto else plan.max_steps


def _run_round(prep: Prepared, plan, idx: np.ndarray, xin, rate, use_rate: bool, dd, T: int,
               thr: np.ndarray, nthreads: int, group: int, window: int) -> dict:
    """Samples ``idx`` simulated for at most ``T`` steps; their records keyed as :func:`_merge` reads them.

    ``readout`` (m, T, classes), ``(pos|neg|sops, p)`` (m, T), ``in_pos``/``in_sops`` (m, T),
    ``(counts|values, p)`` (m, size), ``(raster, p)`` (m, T, size), ``qa``/``silent`` (m,).
    """
    net, dtype, pk = prep.net, prep.dtype, prep.packed
    m = len(idx)
    whole = m == xin.shape[0]
    if not whole:  # every per-sample input has the batch axis first
        xin, rate, dd = (np.ascontiguousarray(a[idx]) for a in (xin, rate, dd))
    bitserial = net.preset == "bitserial"
    bits = int(net.bits or 0)
    P = len(pk.names)
    D = pk.max_delay
    R = D + 1
    nall = len(pk.theta)
    osz = nall - pk.ntot
    do_raster = "raster" in plan.record
    # records are written by the kernels in external order, laid out so each population's are one block
    rec_out = np.empty((m, T, osz), dtype=np.float64)
    rec_pos = np.zeros((P, m, T), dtype=np.int64)
    rec_neg = np.zeros((P, m, T), dtype=np.int64)
    rec_sops = np.zeros((P, m, T), dtype=np.int64)
    rec_in_pos = np.zeros((m, T), dtype=np.int64)
    rec_in_sops = np.zeros((m, T), dtype=np.int64)
    raster = np.zeros(m * T * pk.ntot if do_raster else 1, dtype=np.int8)
    counts = np.empty(m * pk.ntot, dtype=np.int64)
    # a neuron's value differs from its net count only for bitserial's weighted spikes: elsewhere the
    # caller derives values from counts (ir.records.CountValues) and no second array is written
    values = np.empty(m * pk.ntot if bitserial else 0, dtype=np.float64)
    qa = np.empty(m, dtype=np.int64)  # run_batch writes both for every sample
    silent = np.empty(m, dtype=np.int64)
    shift_den = np.array([2.0 * plan.wake], dtype=dtype)
    with engine_pools(nthreads):  # Numba at nthreads, BLAS at 1 thread inside its workers; both restored after
        run_batch(max(1, min(m, nthreads)), int(group), int(window), xin, rate, use_rate, pk.pi, pk.v0, pk.theta,
                  pk.bias, pk.ji, pk.jf, pk.wbuf, pk.ibuf, pk.idx32, pk.out_ptr, pk.out_list, pk.fan, pk.fan_in,
                  prep.ext, prep.back, plan.wake, T, bitserial, bits, R, D, thr, shift_den, pk.acc_tot, pk.c_tot,
                  pk.blk_tot, max(nall, xin.shape[1]) + 1, pk.max_cols if np.isfinite(thr).any() else 1,
                  dense_batch_size(prep) if window > 0 and np.isfinite(thr).any() else 0,
                  rec_out, rec_pos, rec_neg, rec_sops, rec_in_pos, rec_in_sops, raster, do_raster, counts, values,
                  qa, silent, dd, pk.dperm, pk.dgrid, pk.sq, pk.su, DR.delivery_steps(net, plan.wake))
    raw = {"readout": rec_out, "in_pos": rec_in_pos, "in_sops": rec_in_sops, "qa": qa, "silent": silent}
    for p in range(P):
        off, size = int(pk.pi[p, PI_OFF]), pk.sizes[p]
        raw["pos", p], raw["neg", p], raw["sops", p] = rec_pos[p], rec_neg[p], rec_sops[p]
        raw["counts", p] = counts[m * off:m * (off + size)].reshape(m, size)
        if bitserial:
            raw["values", p] = values[m * off:m * (off + size)].reshape(m, size)
        if do_raster:
            raw["raster", p] = raster[m * T * off:m * T * (off + size)].reshape(m, T, size)
    return raw


def _take(raw: dict, keep: np.ndarray) -> dict:
    """The records of the samples ``keep`` (a boolean mask) of one round."""
    return {k: v[keep] for k, v in raw.items()}


def _merge(rounds: list, key, n: int, steps: int | None = None, hold: bool = False) -> np.ndarray:
    """One record over all ``n`` samples from the rounds' parts; time axis (axis 1) cut or padded to
    ``steps`` (padding: the last readout held (``hold``), zeros elsewhere — what a quiet sample records)."""
    if len(rounds) == 1 and len(rounds[0][0]) == n:  # one round with every sample: views, no gather
        a = rounds[0][1][key]
        if steps is None or a.shape[1] == steps:
            return a
        if a.shape[1] > steps:
            return np.ascontiguousarray(a[:, :steps])
    first = rounds[0][1][key]
    shape = (n,) + first.shape[1:] if steps is None else (n, steps) + first.shape[2:]
    out = np.zeros(shape, dtype=first.dtype)
    for idx, raw in rounds:
        a = raw[key]
        if steps is None:
            out[idx] = a
            continue
        k = min(steps, a.shape[1])
        out[idx, :k] = a[:, :k]
        if hold and k < steps:
            out[idx, k:] = a[:, k - 1:k]
    return out
