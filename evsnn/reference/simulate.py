"""Clock-driven NumPy simulator: the oracle the event engine must match spike for spike.

Clarity over speed: every step updates every neuron of every sample with
dense arrays. Step semantics (design.md): within step t populations run in
topological order; population p receives I = Σ projections(signal of pre at
t − delay) + bias (wake) + input (wake, first layers); its neuron rule emits
signed spikes; the *signal* a spike carries is ±1, or 2^(K−1−k) for a
bit-serial spike at emit step k. The readout accumulates its current after
every step.

Populations with a drive (exact presets, :mod:`evsnn.ir.drive`) receive
their drive's grid increment instead of the analog input and bias, added after
the incoming spikes: I = Σ projections(spikes) + increment. Bit-serial networks
take their input and biases once, at step 0 (in level units); population p of slot j (see
:meth:`Network.stages`) integrates until step j·K and emits its K bits in
steps j·K … j·K+K−1.

``sleep="auto"``: a sample is quiet at sleep step t when no population
emitted a spike in steps t−D … t (D = largest delay); from then on its state
can no longer change. The run stops when every sample is quiet, or at the cap.
"""

from __future__ import annotations

import numpy as np

from evsnn import models
from evsnn.ir import drive as DR
from evsnn.ir import snn as S
from evsnn.ir.records import SimResult, check_batch, input_spikes, make_plan, readout_quantizer
from evsnn.reference.projections import apply_projection, window_max


class _State:
    """Per-population state over the batch: membrane v, net count S, transmitted value, gate inputs c."""

    def __init__(self, pop: S.Population, n: int, pre_size: int | None):
        self.v = np.broadcast_to(pop.v0 * pop.threshold, (n, pop.size)).astype(np.float64).copy()
        self.count = np.zeros((n, pop.size), dtype=np.int64)
        self.value = np.zeros((n, pop.size))
        self.c = np.zeros((n, pre_size)) if pre_size is not None else None


def _step_population(pop, st, current, t, plan, net, slot, gate_pr):
    """Advance one population by one step; returns (spikes int8, signal float64)."""
    zeros = np.zeros(st.v.shape, dtype=np.int8)
    if pop.model == "maxpool" and net.preset != "bitserial":
        st.count, s = models.maxpool_gate(window_max(gate_pr, st.c), st.count)
        return s, s.astype(np.float64)
    if net.preset == "bitserial":
        k = t - slot * net.bits
        if pop.model == "maxpool":
            if k == 0:
                st.v = window_max(gate_pr, st.c) + pop.v0 * pop.threshold
        else:
            st.v = st.v + current
        if 0 <= k < net.bits:
            return _emit(pop, st, k, net)
        return zeros, zeros.astype(np.float64)
    if pop.model == "if":
        if pop.shift and t < plan.wake:
            current = current + pop.threshold / (2.0 * plan.wake)
        st.v, s = models.if_step(st.v, current, pop.threshold, pop.reset)
    else:  # cif
        cap = min(t + 1, plan.wake) if pop.levels is None else min(t + 1, plan.wake, pop.levels)
        st.v, st.count, s = models.cif_step(st.v, st.count, current, pop.threshold, cap,
                                            pop.rounding == "half_even")
        return s, s.astype(np.float64)
    st.count += s
    return s, s.astype(np.float64)


def _emit(pop, st, k, net):
    st.v, s = models.bitserial_emit(st.v, pop.threshold, k, net.bits, pop.rounding == "half_even")
    st.count += s
    return s, s * float(2 ** (net.bits - 1 - k))


def simulate(net: S.Network, x, wake: int | None = None, sleep: int | str | None = None,
             max_sleep: int | None = None, record=("counts",), seed: int = 0, allow_inexact: bool = False,
             verify: bool = False) -> SimResult:
    """Run ``net`` on ``x`` (N, *input_shape) for ``wake`` steps then ``sleep`` (steps or "auto").

    ``wake``/``sleep`` None: the network's own schedule (casc: T_w = L, then sleep until quiet).
    ``verify``: attach :func:`evsnn.verify.verify`'s report (``res.verify``). See
    :class:`evsnn.ir.records.SimResult` for what is returned and
    :func:`evsnn.ir.records.make_plan` for the option checks.
    """
    plan = make_plan(net, wake, sleep, max_sleep, record, seed, allow_inexact)
    x = check_batch(net, x)
    n = len(x)
    xin = x.reshape(n, -1)
    dsteps = DR.delivery_steps(net, plan.wake)
    drives = {}  # population → grid split of its drive (see evsnn.ir.drive)
    for p in net.populations:
        if DR.has_drive(p):
            q, unit = DR.grid(DR.drive_total(net, p, xin), p.levels, p.v0, p.rounding)
            drives[p.name] = DR.grid_split(q, unit, dsteps)
    rate = input_spikes(net, x, plan)  # None for analog input
    bitserial = net.preset == "bitserial"
    slots = net.stages() if bitserial else {}
    pops = net.populations
    incoming = {p.name: net.incoming(p.name) for p in pops + [net.readout]}
    gates = {p.name: next(pr for pr in incoming[p.name] if isinstance(pr, S.MaxProjection))
             for p in pops if p.model == "maxpool"}
    states = {p.name: _State(p, n, int(np.prod(gates[p.name].pre_shape)) if p.name in gates else None) for p in pops}
    fan = S.source_fanouts(net)
    # every input projection is applied at every "on" step: analog MACs = the input's total fan-out
    macs_on = int(fan[S.INPUT].sum()) if rate is None else 0
    max_delay = max((pr.delay for pr in net.projections), default=0)
    history: dict[str, list] = {p.name: [] for p in pops}  # signals of the last max_delay+1 steps, newest last

    out = np.zeros((n, net.readout.size))
    rec_out, rec_pos, rec_neg, rec_sops, rec_macs, rec_raster = [], [], [], [], [], []
    if rate is not None:
        rec_pos_in, rec_sops_in = [], []
    silent_run = np.zeros(n, dtype=np.int64)  # consecutive silent steps per sample
    quiet_at = np.full(n, -1, dtype=np.int64)

    def signal_at(pre: str, delay: int, now: dict):
        if delay == 0:
            return now[pre]
        h = history[pre]
        return h[-delay] if len(h) >= delay else None

    def current_into(target, size, t, now):
        cur = np.zeros((n, size))
        on = (t == 0) if bitserial else (t < plan.wake)
        for pr in incoming[target]:
            if isinstance(pr, S.MaxProjection):
                continue
            if pr.pre == S.INPUT:
                if on and not DR.input_in_drive(net, pr):
                    sig = xin if rate is None else rate[:, t].astype(np.float64)
                    cur += apply_projection(pr, sig)
                continue
            sig = signal_at(pr.pre, pr.delay, now)
            if sig is not None and sig.any():
                cur += apply_projection(pr, sig)
        return cur, on

    for t in range(plan.max_steps):
        if plan.auto and t >= plan.wake and (quiet_at >= 0).all():
            break
        now, spikes = {}, {}
        for p in pops:
            st = states[p.name]
            cur, on = current_into(p.name, p.size, t, now)
            if p.name in drives:
                if t < dsteps:
                    cur = cur + DR.grid_increment(drives[p.name], t, dsteps)
            elif on:
                cur += p.bias
            if p.name in gates:
                pr = gates[p.name]
                sig = signal_at(pr.pre, pr.delay, now)
                if sig is not None:
                    st.c += sig
            s, sig = _step_population(p, st, cur, t, plan, net, slots.get(p.name, 0), gates.get(p.name))
            st.value += sig
            now[p.name], spikes[p.name] = sig, s
        cur, on = current_into(net.readout.name, net.readout.size, t, now)
        out = out + cur + (net.readout.bias if on else 0.0)
        for p in pops:
            history[p.name] = (history[p.name] + [now[p.name]])[-(max_delay + 1):]
        rec_out.append(out.copy())
        rec_pos.append({k: (s > 0).sum(axis=1) for k, s in spikes.items()})
        rec_neg.append({k: (s < 0).sum(axis=1) for k, s in spikes.items()})
        rec_sops.append({k: np.abs(s).astype(np.int64) @ fan[k] for k, s in spikes.items()})
        rec_macs.append(np.full(n, macs_on if on else 0, dtype=np.int64))
        if "raster" in plan.record:
            rec_raster.append(spikes)
        if rate is not None:
            sp_in = rate[:, t] if t < plan.wake else np.zeros_like(rate[:, 0])
            rec_pos_in.append(sp_in.sum(axis=1).astype(np.int64))
            rec_sops_in.append(sp_in.astype(np.int64) @ fan[S.INPUT])
        active = np.zeros(n, dtype=bool)
        for s in spikes.values():
            active |= s.any(axis=1)
        silent_run = np.where(active, 0, silent_run + 1)
        if t >= plan.wake:
            quiet_at = np.where((quiet_at < 0) & (silent_run > max_delay), t, quiet_at)

    names = [p.name for p in pops]
    res = SimResult(readout=np.stack(rec_out, axis=1).reshape((n, len(rec_out)) + tuple(net.readout.shape)),
                    wake=plan.wake, readout_quant=readout_quantizer(net, plan.wake))
    for k in names:
        res.spikes_pos[k] = np.stack([r[k] for r in rec_pos], axis=1).astype(np.int64)
        res.spikes_neg[k] = np.stack([r[k] for r in rec_neg], axis=1).astype(np.int64)
        res.sops[k] = np.stack([r[k] for r in rec_sops], axis=1).astype(np.int64)
        res.counts[k] = states[k].count.copy()
        res.values[k] = states[k].value.copy()
        if "raster" in plan.record:
            res.raster[k] = np.stack([r[k] for r in rec_raster], axis=1).astype(np.int8)
    if rate is not None:
        res.spikes_pos[S.INPUT] = np.stack(rec_pos_in, axis=1)
        res.spikes_neg[S.INPUT] = np.zeros_like(res.spikes_pos[S.INPUT])
        res.sops[S.INPUT] = np.stack(rec_sops_in, axis=1)
    res.input_macs = np.stack(rec_macs, axis=1)
    steps = len(rec_out)
    if plan.auto:
        res.sleep_steps = np.where(quiet_at >= 0, quiet_at - plan.wake + 1, steps - plan.wake)
        res.quiescent = quiet_at >= 0
    else:
        res.sleep_steps = np.full(n, steps - plan.wake, dtype=np.int64)
        res.quiescent = silent_run > max_delay
    if verify:
        from evsnn.verify import verify as run_verify  # lazy: the oracle is not needed for a plain run
        res.verify = run_verify(net, x, res, seed=seed)
    return res
