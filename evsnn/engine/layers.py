"""Layer-major order for feed-forward networks without delays: one population runs a window of steps
before the next, so its weights are read once per window (and sample), not once per step.

Why it gives the same records as the step-major loop (:func:`evsnn.engine.batch.steps_chunk`), bit for
bit: with every delay 0 and every projection going to a later population (or the readout), what
population q receives in step t is the step-t events of the input and of populations before q, and in
step-major order they reach q's accumulator input first, then population by population in table order,
each along its projections in ``out_list`` order; q's own update at t then lists the blocks it carries
into t + 1 before any step-(t + 1) scatter. :func:`deliver` replays exactly that order from the events
the sources logged for the window, so every membrane receives the same additions in the same order.

Stopping: population q is silent from the first step t ≥ max(T_w, the steps its sources went silent
from) in which it has no event (no input any more, no spike now: nothing can make it spike later). The
sample is quiet at the first t ≥ T_w with no event anywhere, which is the latest of those steps; the
readout runs to it, so the records equal step-major's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from evsnn.engine import kernels as KN
from evsnn.engine.blas import dot_into
from evsnn.engine.jit import kernel
from evsnn.engine.pack import (
    CV_CIN, CV_COUT, CV_GROUPS, CV_H, CV_HO, CV_KH, CV_KW, CV_PL, CV_PT, CV_SH, CV_SW, CV_W, CV_WDOFF, CV_WO,
    DN_DENSE, J_KIND, J_NPOST, J_NPRE, J_POST, J_PRE, K_CONV, K_DENSE, PI_ACCOFF, PI_ACCSZ, PI_OFF, PI_SIZE,
    PI_TRACK,
)
from evsnn.engine.step import (
    _update_pop, finish_sample, init_sample, input_events, record_events, scatter, step_readout, tracks,
)


@kernel
def deliver(q, t, k, P, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, pi, use_rate, wake, bitserial, thr,
            acc, mark, lst, lst_n, full, in_idx, in_sig, lin, log_idx, log_sig, lnum, sig, scratch, mb, pre, bbuf):
    """Step t's events (row k of one sample's window log) of every source of target q (a population, or the
    readout at P) into q's accumulator, in step-major order: the input's, then each earlier population's,
    each along its projections to q in ``out_list`` order. Projection ``mb``'s dense step, when
    :func:`plan_dense` batched it (``pre[k]`` ≥ 0), is added from ``bbuf[pre[k]:]``."""
    th = thr[t % thr.shape[0]]
    if use_rate and t < wake and lin[k] > 0:
        for e in range(out_ptr[P], out_ptr[P + 1]):
            m = out_list[e]
            if m == mb and pre[k] >= 0:
                add_batched(q, m, pi, ji, acc, full, bbuf, pre[k], tracks(bitserial, 0, 0, 1, ji[m, J_KIND]))
            elif ji[m, J_POST] == q:
                scatter(m, ji, jf, wbuf, ibuf, idx32, in_idx[k], in_sig[k], lin[k], acc[0], pi, mark[0], lst[0],
                        lst_n, full, 0, tracks(bitserial, 0, 0, 1, ji[m, J_KIND]), th, sig, scratch)
    for p in range(min(q, P)):
        ne = lnum[k, p]
        if ne == 0:
            continue
        off = pi[p, PI_OFF]
        sz = pi[p, PI_SIZE]
        for e in range(out_ptr[p], out_ptr[p + 1]):
            m = out_list[e]
            if m == mb and pre[k] >= 0:
                add_batched(q, m, pi, ji, acc, full, bbuf, pre[k], tracks(bitserial, t, 0, wake, ji[m, J_KIND]))
            elif ji[m, J_POST] == q:
                scatter(m, ji, jf, wbuf, ibuf, idx32, log_idx[k, off:off + sz], log_sig[k, off:off + sz], ne,
                        acc[0], pi, mark[0], lst[0], lst_n, full, 0, tracks(bitserial, t, 0, wake, ji[m, J_KIND]),
                        th, sig, scratch)


@kernel
def batched_projection(q, ji):
    """The projection into q whose dense steps :func:`plan_dense` batches: its only conv (one group) or
    dense projection with a dense copy; −1 if it has none or several (those run one step at a time)."""
    mb = -1
    for m in range(ji.shape[0]):
        if ji[m, J_POST] != q:
            continue
        kind = ji[m, J_KIND]
        if (kind == K_CONV and ji[m, CV_GROUPS] == 1) or (kind == K_DENSE and ji[m, DN_DENSE] >= 0):
            if mb != -1:
                return -1
            mb = m
    return mb


@kernel
def plan_dense(mb, q, ta, t0, t1, wake, bitserial, use_rate, pi, ji, wbuf, thr, in_idx, in_sig, lin, log_idx,
               log_sig, lnum, sig, bbuf, pre, sel):
    """Projection mb's dense steps from step ``ta`` on, as many as ``bbuf`` holds, in one BLAS gemm: their
    inputs as rows (conv: im2col, Ho·Wo rows a step; dense: the step's input vector), times the weights.
    The choice per step is the one :func:`evsnn.engine.step.scatter` makes (mb is q's only projection
    that can go dense, so q is not yet updated in full when it is delivered). ``pre[k]``: where step
    t0 + k's output rows start in ``bbuf`` (−1: not batched). Returns the first step not planned."""
    p = ji[mb, J_PRE]
    kind = ji[mb, J_KIND]
    if kind == K_CONV:
        rows, K, nout = ji[mb, CV_HO] * ji[mb, CV_WO], ji[mb, CV_KH] * ji[mb, CV_KW] * ji[mb, CV_CIN], ji[mb, CV_COUT]
    else:
        rows, K, nout = 1, ji[mb, J_NPRE], ji[mb, J_NPOST]
    npre = ji[mb, J_NPRE]
    off = pi[p, PI_OFF] if p >= 0 else 0
    nsel = 0
    t = ta
    while t < t1:
        k = t - t0
        pre[k] = -1
        n_ev = (lin[k] if use_rate and t < wake else 0) if p < 0 else lnum[k, p]
        if n_ev > 0:
            tr = tracks(bitserial, 0, 0, 1, kind) if p < 0 else tracks(bitserial, t, 0, wake, kind)
            tr = tr and pi[q, PI_TRACK] == 1
            if n_ev > thr[t % thr.shape[0], mb, 1 if tr else 0]:
                if (nsel + 1) * rows * (K + nout) > bbuf.shape[0]:
                    break
                sel[nsel] = t
                nsel += 1
        t += 1
    if nsel == 0:
        return t
    nr = nsel * rows
    cols = bbuf[:nr * K].reshape((nr, K))
    out = bbuf[nr * K:nr * (K + nout)].reshape((nr, nout))
    for i in range(nsel):
        k = sel[i] - t0
        ei = in_idx[k] if p < 0 else log_idx[k, off:off + npre]
        es = in_sig[k] if p < 0 else log_sig[k, off:off + npre]
        n_ev = lin[k] if p < 0 else lnum[k, p]
        if kind == K_CONV:
            KN.events_to_signal(ei, es, n_ev, npre, sig)
            KN.im2col(sig, cols[i * rows:(i + 1) * rows], 0, ji[mb, CV_KH], ji[mb, CV_KW], ji[mb, CV_CIN], 1,
                      ji[mb, CV_H], ji[mb, CV_W], ji[mb, CV_CIN], ji[mb, CV_HO], ji[mb, CV_WO], ji[mb, CV_SH],
                      ji[mb, CV_SW], ji[mb, CV_PT], ji[mb, CV_PL])
        else:
            KN.events_to_signal(ei, es, n_ev, npre, cols[i])
        pre[k] = nr * K + i * rows * nout
    o = ji[mb, CV_WDOFF] if kind == K_CONV else ji[mb, DN_DENSE]
    wd = wbuf[o:o + K * nout].reshape((K, nout))
    if kind == K_CONV:
        dot_into(cols, wd, out)  # the rows of several steps' im2col in one gemm, as conv_dense's of one step
    else:
        # one gemv a step, the call csr_dense makes: OpenBLAS's gemm kernels sum a dot product in another
        # order than its gemv on some CPUs (found on an AMD EPYC: 1-ulp readout differences)
        for i in range(nsel):
            dot_into(cols[i], wd, out[i])
    return t


@kernel
def add_batched(q, m, pi, ji, acc, full, bbuf, o, track):
    """Projection m's batched dense output of this step (at ``bbuf[o:]``) into q's accumulator, as
    :func:`evsnn.engine.kernels.conv_dense` / ``csr_dense`` add theirs; q is then updated in full."""
    a0 = pi[q, PI_ACCOFF]
    accq = acc[0, a0:a0 + pi[q, PI_ACCSZ]]
    if ji[m, J_KIND] == K_CONV:
        M = ji[m, CV_HO] * ji[m, CV_WO]
        cout = ji[m, CV_COUT]
        KN.add_conv_out(accq, bbuf[o:o + M * cout].reshape((M, cout)), 0, M, cout, cout)
    else:
        n = ji[m, J_NPOST]
        accq += bbuf[o:o + n]
    if track and pi[q, PI_TRACK] == 1 and full[0, q] == 0:
        full[0, q] = 1


@kernel
def silent_from(q, wake, ji, stop):
    """The step from which population q gets no input: T_w, or later while a source population spikes
    (``stop[p]``: the step population p is silent from)."""
    s = wake
    for m in range(ji.shape[0]):
        p = ji[m, J_PRE]
        if ji[m, J_POST] == q and p >= 0 and stop[p] > s:
            s = stop[p]
    return s


@njit(cache=True)
def window_space(G, W, P, nall, nin, dtype_like, batched, ji):
    """One thread's work arrays for :func:`layers_chunk` (which, counting no references, cannot allocate):
    log_idx, log_sig (G, W, nall): population p's events of step t0 + k at [g, k, off:]; lnum (G, W, P + 1):
    their numbers; in_idx, in_sig (G, W, nin), lin (G, W): the rate input's events; stop (G, P): the step
    each population went silent from; silent, t_end (G,); pre, sel (W,): :func:`plan_dense`'s plan; mbs
    (P + 1,): each target's batched projection (−1: none, or ``batched`` false)."""
    mbs = np.full(P + 1, -1, dtype=np.int64)
    if batched:
        for q in range(P + 1):
            mbs[q] = batched_projection(q, ji)
    return (np.empty((G, W, nall), dtype=np.int64), np.empty((G, W, nall), dtype=dtype_like.dtype),
            np.zeros((G, W, P + 1), dtype=np.int64), np.zeros((G, W, nin), dtype=np.int64),
            np.zeros((G, W, nin), dtype=dtype_like.dtype), np.zeros((G, W), dtype=np.int64),
            np.zeros((G, P), dtype=np.int64), np.zeros(G, dtype=np.int64), np.zeros(G, dtype=np.int64),
            np.full(W, -1, dtype=np.int64), np.zeros(W, dtype=np.int64), mbs)


@kernel
def layers_chunk(lo, hi, G, W, x, rate, use_rate, pi, v0, theta, bias, ji, jf, wbuf, ibuf, idx32, out_ptr,
                 out_list, fan, fan_in, ext, back, wake, max_steps, bitserial, bits, thr, shift_den, rec_out, rec_pos,
                 rec_neg, rec_sops, rec_in_pos, rec_in_sops, raster, do_raster, counts, values, qa_out, silent_out,
                 dd, dperm, dgrid, dwq, dwork, sq, su, dsteps, v, cnt, val, acc, inp, cvals, mark, lst, lst_n, full,
                 out, dbase, dunit, drem, dmod, carry, sig, scratch, bbuf, marks, incs, log_idx, log_sig, lnum, in_idx,
                 in_sig, lin, stop, silent, t_end, pre, sel, mbs):
    """Samples lo..hi, ``G`` at a time, layer-major over windows of ``W`` steps: per window, population by
    population, each sample of the group over the window's steps (its events logged per step), then the
    readout, which decides when a sample is quiet. State arrays as in :func:`evsnn.engine.batch.run_batch`
    (one ring slot: no delays); the window's work arrays as :func:`window_space` makes them. ``bbuf``: room
    for :func:`plan_dense`'s batched dense steps (size ≤ 1: none, each dense step then runs on its own)."""
    P = pi.shape[0] - 1
    for n0 in range(lo, hi, G):
        k = min(G, hi - n0)
        for g in range(k):
            init_sample(n0 + g, x, use_rate, pi, v0, theta, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, thr,
                        v[g], cnt[g], val[g], acc[g], inp[g], cvals[g], mark[g], lst[g], lst_n[g], full[g],
                        in_idx[g, 0], in_sig[g, 0], sig, scratch, out[g], dd, dperm, dgrid, dwq, dwork, sq, su,
                        dsteps, dbase[g], dunit[g], drem[g], dmod[g])
            silent[g] = 0
            t_end[g] = max_steps
            qa_out[n0 + g] = -1
            stop[g, :] = max_steps
        for t0 in range(0, max_steps, W):
            t1 = min(t0 + W, max_steps)
            for g in range(k):
                for t in range(t0, min(t1, wake) if use_rate and t0 < t_end[g] else t0):
                    lin[g, t - t0] = input_events(n0 + g, t, rate, fan_in, in_idx[g, t - t0], in_sig[g, t - t0],
                                                  rec_in_pos, rec_in_sops)
            for q in range(P):
                for g in range(k):
                    lnum[g, :, q] = 0
                    if t_end[g] <= t0 or stop[g, q] < t0:
                        continue
                    quiet = silent_from(q, wake, ji, stop[g])
                    pre[:] = -1
                    nxt = t0
                    # sample g's views, made once per window
                    vg, cg, valg, accg, inpg, cvg = v[g], cnt[g], val[g], acc[g], inp[g], cvals[g]
                    mkg, lsg, lng, flg = mark[g], lst[g], lst_n[g], full[g]
                    iig, isg, lig, lxg, lzg, lcg = in_idx[g], in_sig[g], lin[g], log_idx[g], log_sig[g], lnum[g]
                    dbg, dug, drg, dmg = dbase[g], dunit[g], drem[g], dmod[g]
                    for t in range(t0, t1):
                        kk = t - t0
                        if mbs[q] >= 0 and t == nxt:
                            nxt = plan_dense(mbs[q], q, t, t0, t1, wake, bitserial, use_rate, pi, ji, wbuf, thr,
                                             iig, isg, lig, lxg, lzg, lcg, sig, bbuf, pre, sel)
                        deliver(q, t, kk, P, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, pi, use_rate, wake,
                                bitserial, thr, accg, mkg, lsg, lng, flg, iig, isg, lig, lxg, lzg, lcg, sig, scratch,
                                mbs[q], pre, bbuf)
                        ek, sk = lxg[kk], lzg[kk]
                        ne = _update_pop(q, t, 0, 1, pi, ji, v0, theta, bias, vg, cg, valg, accg, inpg, cvg, mkg,
                                         lsg, lng, flg, carry, ek, sk, wake, bitserial, bits, shift_den, dbg, dug,
                                         drg, dmg, dsteps, marks, incs)
                        lcg[kk, q] = ne
                        if ne > 0:
                            record_events(n0 + g, t, q, ne, pi, ek, sk, fan, ext, max_steps, rec_pos, rec_neg,
                                          rec_sops, raster, do_raster)
                        elif t >= quiet:
                            stop[g, q] = t
                            break
            for g in range(k):
                pre[:] = -1
                nxt = t0
                accg, inpg, outg, mkg, lsg, lng, flg = acc[g], inp[g], out[g], mark[g], lst[g], lst_n[g], full[g]
                iig, isg, lig, lxg, lzg, lcg = in_idx[g], in_sig[g], lin[g], log_idx[g], log_sig[g], lnum[g]
                for t in range(t0, min(t1, t_end[g])):
                    kk = t - t0
                    if mbs[P] >= 0 and t == nxt:
                        nxt = plan_dense(mbs[P], P, t, t0, t1, wake, bitserial, use_rate, pi, ji, wbuf, thr,
                                         iig, isg, lig, lxg, lzg, lcg, sig, bbuf, pre, sel)
                    deliver(P, t, kk, P, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, pi, use_rate, wake,
                            bitserial, thr, accg, mkg, lsg, lng, flg, iig, isg, lig, lxg, lzg, lcg, sig, scratch,
                            mbs[P], pre, bbuf)
                    step_readout(n0 + g, t, pi, bias, ext, wake, bitserial, 1, accg, inpg, outg, rec_out)
                    silent[g] = silent[g] + 1
                    for p in range(P):
                        if lnum[g, kk, p] > 0:
                            silent[g] = 0
                            break
                    if t >= wake and silent[g] > 0:
                        qa_out[n0 + g] = t
                        t_end[g] = t + 1
                        break
            done = True
            for g in range(k):
                done = done and t_end[g] <= t1
            if done:
                break
        for g in range(k):
            finish_sample(n0 + g, t_end[g], pi, ext, back, cnt[g], val[g], out[g], rec_out, counts, values)
            silent_out[n0 + g] = silent[g]
