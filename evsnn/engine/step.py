"""The compiled step of one sample: its input, each population, the readout (the batch drivers that call
them in step-major or layer-major order: :mod:`evsnn.engine.batch`).

Per step t, populations in order: read the input accumulator of ring slot t % R,
update the neurons (all of them while biases/inputs are on and at the first
sleep step; afterwards only the listed blocks: touched by a scatter or still
able to fire). Max-pool gates are updated in full at step 0 only; afterwards, in
wake too, only the gates whose window received an event or that were still off
by ≥ 1 (a gate's window max changes only where an input neuron spiked). Then
record the events and scatter them along every outgoing
projection into slot (t + delay) % R of the target. A conv or dense projection
whose step costs less dense (the event count against a threshold per projection
from :mod:`evsnn.engine.cost`) takes the dense path (BLAS) instead; the target is
then updated in full. A population with a drive (exact presets, evsnn.ir.drive) gets
its grid increment added to its accumulator in each delivery step (casc: the
wake steps; bitserial: step 0) instead of input and bias. The readout accumulates last. A sample stops when it is
quiet (no spike in the last D+1 steps, t ≥ T_w): nothing can change after
that, so its remaining records are padding (readout held, zeros elsewhere).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from evsnn.engine import kernels as KN
from evsnn.engine.jit import kernel
from evsnn.engine import neurons as NR
from evsnn.engine.pack import (
    CV_CIG, CV_CIN, CV_COUT, CV_GROUPS, CV_H, CV_HO, CV_KH, CV_KW, CV_PL, CV_PT, CV_SH, CV_SW, CV_W, CV_W32, CV_WDOFF,
    CV_WO, CV_WOFF, DN_DATA, DN_DENSE, DN_INDICES, DN_INDPTR, ID_MAP, ID_WOFF, J_DELAY, J_KIND, J_NPOST, J_NPRE, J_POST,
    K_CONV, K_DENSE, K_IDENT, K_MAX, K_POOL, M_CIF, M_MAX, PI_ACCOFF, PI_ACCSZ, PI_BOFF, PI_BS, PI_COFF, PI_DOFF,
    PI_DPER, PI_DRIVE, PI_GATE, PI_HALF_EVEN, PI_LEVELS, PI_MODEL, PI_NBLK, PI_OFF, PI_RESET, PI_SHIFT, PI_SIZE, PI_SLOT,
    PI_TRACK, PL_C, PL_H, PL_HO, PL_KH, PL_KW, PL_PL, PL_PT, PL_SH, PL_SW, PL_W, PL_WO, PL_WOFF,
)


@kernel
def scatter(m, ji, jf, wbuf, ibuf, idx32, ev_idx, ev_sig, n_ev, acc_row, pi, mark_row, lst_row, lst_n, full, rr,
            track, thr, sig, scratch):
    """Deliver n_ev events along projection m into ring slot rr; returns nothing (updates lists/flags).

    ``thr`` (M, 2): this step's path choice, dense (BLAS) iff ``n_ev > thr[m, track]`` (see
    :func:`evsnn.engine.cost.thresholds`; inf: event, −1: dense). Either path adds the same currents.
    """
    j = ji[m]
    kind = j[J_KIND]
    q = j[J_POST]
    a0 = pi[q, PI_ACCOFF]
    acc = acc_row[a0:a0 + pi[q, PI_ACCSZ]]
    b0 = pi[q, PI_BOFF]
    nb = pi[q, PI_NBLK]
    mark = mark_row[b0:b0 + nb]
    lst = lst_row[b0:b0 + nb]
    track = track and pi[q, PI_TRACK] == 1 and full[rr, q] == 0
    dense = n_ev > thr[m, 1 if track else 0]
    n = lst_n[rr, q]
    bs = pi[q, PI_BS]
    if kind == K_CONV:
        kh, kw, cig, cout, groups = j[CV_KH], j[CV_KW], j[CV_CIG], j[CV_COUT], j[CV_GROUPS]
        if dense:
            o = j[CV_WDOFF]
            ln = kh * kw * cig * cout
            KN.conv_dense(ev_idx, ev_sig, n_ev, wbuf[o:o + ln], kh, kw, cig, cout, groups, j[CV_H], j[CV_W],
                          j[CV_CIN], j[CV_HO], j[CV_WO], j[CV_SH], j[CV_SW], j[CV_PT], j[CV_PL], sig, acc, scratch)
            if track:
                full[rr, q] = 1
            return
        ln = kh * kw * cig * cout
        o = j[CV_W32]
        if o >= 0:  # float32 weights in wbuf's words (pack.narrow_weights): the same sums, half the bytes
            n = KN.conv_scatter(ev_idx, ev_sig, n_ev, wbuf[o:o + (ln + 1) // 2].view(np.float32)[:ln], kh, kw, cig,
                                cout, groups, j[CV_H], j[CV_W], j[CV_CIN], j[CV_HO], j[CV_WO], j[CV_SH], j[CV_SW],
                                j[CV_PT], j[CV_PL], acc, track, mark, lst, n)
        else:
            o = j[CV_WOFF]
            n = KN.conv_scatter(ev_idx, ev_sig, n_ev, wbuf[o:o + ln], kh, kw, cig, cout, groups, j[CV_H], j[CV_W],
                                j[CV_CIN], j[CV_HO], j[CV_WO], j[CV_SH], j[CV_SW], j[CV_PT], j[CV_PL],
                                acc, track, mark, lst, n)
    elif kind == K_DENSE:
        npre = j[J_NPRE]
        npost = j[J_NPOST]
        od = j[DN_DENSE]
        if od >= 0 and dense:
            KN.csr_dense(ev_idx, ev_sig, n_ev, wbuf[od:od + npre * npost], npre, npost, sig, acc, scratch)
            if track:
                full[rr, q] = 1
            return
        op = j[DN_INDPTR]
        indptr = ibuf[op:op + npre + 1]
        nnz = indptr[npre] - indptr[0]
        oi = j[DN_INDICES]
        ow = j[DN_DATA]
        n = KN.csr_scatter(ev_idx, ev_sig, n_ev, indptr, idx32[oi:oi + nnz], wbuf[ow:ow + nnz], acc, track,
                           mark, lst, n, bs)
    elif kind == K_POOL:
        o = j[PL_WOFF]
        n = KN.pool_scatter(ev_idx, ev_sig, n_ev, wbuf[o:o + j[PL_HO] * j[PL_WO]], j[PL_KH], j[PL_KW], j[PL_C],
                            j[PL_H], j[PL_W], j[PL_HO], j[PL_WO], j[PL_SH], j[PL_SW], j[PL_PT], j[PL_PL],
                            acc, track, mark, lst, n)
    elif kind == K_MAX:
        n = KN.max_scatter(ev_idx, ev_sig, n_ev, j[PL_KH], j[PL_KW], j[PL_C], j[PL_H], j[PL_W], j[PL_HO], j[PL_WO],
                           j[PL_SH], j[PL_SW], j[PL_PT], j[PL_PL], acc, track, mark, lst, n)
    elif kind == K_IDENT:
        o = j[ID_MAP]
        direct = o < 0
        mp = ibuf[0:1] if direct else ibuf[o:o + j[J_NPRE]]
        n = KN.ident_scatter(ev_idx, ev_sig, n_ev, mp, direct, wbuf[j[ID_WOFF]], acc, track, mark, lst, n, bs)
    lst_n[rr, q] = n


@kernel
def _update_pop(p, t, r, R, pi, ji, v0, theta, bias, v, cnt, val, acc, inp, cvals, mark, lst, lst_n, full, carry,
                ev_idx, ev_sig, wake, bitserial, bits, shift_den, dbase, dunit, drem, dmod, dsteps, marks, incs):
    """Update population p at step t (slot r); returns its event count (events at ev_idx[off:...]).
    ``marks`` (uint8) and ``incs`` (engine dtype): work space of the neuron updates, ≥ size + 8 entries."""
    off = pi[p, PI_OFF]
    size = pi[p, PI_SIZE]
    model = pi[p, PI_MODEL]
    a0 = pi[p, PI_ACCOFF]
    accp = acc[r, a0:a0 + pi[p, PI_ACCSZ]]
    inpp = inp[a0:a0 + pi[p, PI_ACCSZ]]
    vp = v[off:off + size]
    cp = cnt[off:off + size]
    valp = val[off:off + size]
    th = theta[off:off + size]
    bi = bias[off:off + size]
    ei = ev_idx[off:off + size]
    es = ev_sig[off:off + size]
    b0 = pi[p, PI_BOFF]
    nb = pi[p, PI_NBLK]
    bs = pi[p, PI_BS]
    mk = mark[r, b0:b0 + nb]
    ls = lst[r, b0:b0 + nb]
    on = (t == 0) if bitserial else (t < wake)
    # a delivery step of a drive (always updated in full: t < wake); a CIF population adds it as it integrates
    fuse = pi[p, PI_DRIVE] != 0 and t < dsteps and t < wake and model == M_CIF and not bitserial
    dper = pi[p, PI_DPER]  # drive state entries (the population's channels, or its size)
    if pi[p, PI_DRIVE] != 0:
        if t < dsteps and not fuse:
            NR.drive_add(accp[:size], dbase[off:off + dper], dunit[off:off + dper], drem[off:off + dper],
                         dmod[off:off + dper], dsteps, dper, incs)
        on = False  # its drive replaces input and bias
    sleep = (not bitserial) and t >= wake
    nl = lst_n[r, p]
    # a max-pool gate changes only where its window received an event (listed by max_scatter in every step)
    # or where it was still off by ≥ 1 after its last update (carried): after a full first step, only those
    # (or, when most of them are listed, all of them in one pass)
    sparse = (sleep and t > wake and full[r, p] == 0) or (model == M_MAX and t > 0 and 2 * nl < nb)
    levels = pi[p, PI_LEVELS]
    he = pi[p, PI_HALF_EVEN] == 1
    cap = min(min(t + 1, wake), levels)
    ncap_next = min(wake, levels)  # cap in every later sleep step
    n_ev = 0
    g = pi[p, PI_GATE]
    # gate geometry
    kh = kw = C = H = W = Wo = sh = sw = pt = pl = 0
    cv = cvals[0:1]
    if model == M_MAX and g >= 0:
        jg = ji[g]
        kh, kw, C, H, W = jg[PL_KH], jg[PL_KW], jg[PL_C], jg[PL_H], jg[PL_W]
        Wo, sh, sw, pt, pl = jg[PL_WO], jg[PL_SH], jg[PL_SW], jg[PL_PT], jg[PL_PL]
        co = pi[p, PI_COFF]
        cv = cvals[co:co + pi[p, PI_ACCSZ]]
    if model == M_MAX and g < 0:
        return 0  # a gate nothing feeds never changes (its window max is undefined)
    if bitserial:
        k = t - pi[p, PI_SLOT] * bits
        if model == M_MAX:
            NR.gate_absorb_all(cv, accp)
            n_ev = NR.update_bit_gate(cv, vp, cp, valp, th, v0[p], k, bits, kh, kw, C, H, W, Wo, sh, sw, pt, pl,
                                      nb, ei, es, 0)
        else:
            n_ev = NR.update_bit(vp, cp, valp, accp, inpp, bi, th, 0, size, on, k, bits, he, ei, es, 0)
        return n_ev
    nc = 0
    if sparse:
        for e in range(nl):
            b = ls[e]
            mk[b] = 0
            if model == M_MAX:
                NR.gate_absorb_block(cv, accp, b, kh, kw, C, H, W, Wo, sh, sw, pt, pl)
                n_ev, still = NR.update_gate(cv, cp, b, b + 1, kh, kw, C, H, W, Wo, sh, sw, pt, pl,
                                             ei, es, n_ev)
            elif model == M_CIF:
                n_ev = NR.update_cif(vp, cp, accp, inpp, bi, th, b * bs, b * bs + bs, False, cap, he, ei, es,
                                     n_ev, marks)
                still = NR.can_fire_cif(vp, cp, th, b * bs, b * bs + bs, ncap_next, he)
            else:
                n_ev = NR.update_if(vp, cp, accp, inpp, bi, th, b * bs, b * bs + bs, False, False, shift_den,
                                    pi[p, PI_RESET] == 1, ei, es, n_ev)
                still = NR.can_fire_if(vp, th, b * bs, b * bs + bs)
            if still:
                carry[nc] = b
                nc += 1
    else:
        for e in range(nl):
            mk[ls[e]] = 0
        if model == M_MAX:
            NR.gate_absorb_all(cv, accp)
            for b in range(nb):
                n_ev, still = NR.update_gate(cv, cp, b, b + 1, kh, kw, C, H, W, Wo, sh, sw, pt, pl, ei, es,
                                             n_ev)
                if still:
                    carry[nc] = b
                    nc += 1
        elif model == M_CIF:
            if fuse:
                n_ev = NR.update_cif_drive(vp, cp, accp, th, dbase[off:off + dper], dunit[off:off + dper],
                                           drem[off:off + dper], dmod[off:off + dper], dsteps, dper, cap, he, ei,
                                           es, 0, marks, incs)
            else:
                n_ev = NR.update_cif(vp, cp, accp, inpp, bi, th, 0, size, on, cap, he, ei, es, 0, marks)
            if sleep:
                for b in range(nb):
                    if NR.can_fire_cif(vp, cp, th, b * bs, b * bs + bs, ncap_next, he):
                        carry[nc] = b
                        nc += 1
        else:
            n_ev = NR.update_if(vp, cp, accp, inpp, bi, th, 0, size, on,
                                pi[p, PI_SHIFT] == 1 and t < wake, shift_den, pi[p, PI_RESET] == 1, ei, es, 0)
            if sleep:
                for b in range(nb):
                    if NR.can_fire_if(vp, th, b * bs, b * bs + bs):
                        carry[nc] = b
                        nc += 1
    lst_n[r, p] = 0
    full[r, p] = 0
    if nc > 0:
        r1 = (t + 1) % R
        mk1 = mark[r1, b0:b0 + nb]
        ls1 = lst[r1, b0:b0 + nb]
        n1 = lst_n[r1, p]
        for e in range(nc):
            b = carry[e]
            if mk1[b] == 0:
                mk1[b] = 1
                ls1[n1] = b
                n1 += 1
        lst_n[r1, p] = n1
    return n_ev


@kernel
def init_sample(n, x, use_rate, pi, v0, theta, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, thr,
                v, cnt, val, acc, inp, cvals, mark, lst, lst_n, full, ev_in_idx, ev_in_sig, sig, scratch, out,
                dd, dperm, dgrid, dwq, dwork, sq, su, dsteps, dbase, dunit, drem, dmod):
    """Fresh state for sample n in one state slot (``v`` … ``dmod``); an analog input's current (the same in
    every "on" step) delivered once into ``inp``. Input-fed drives: sample n's totals ``dd[n]`` (external
    order, population p's at PI_DOFF), gathered by ``dperm`` into internal order, put on their grid here
    (levels and φ in ``dgrid[p]``; work space ``dwq`` int64 (ndyn,), ``dwork`` float64 (3, ndyn)), then
    split over the steps: one sample's grid at a time, so a batch allocates no (N, ndyn) grid arrays."""
    P = pi.shape[0] - 1
    for p in range(P):
        off = pi[p, PI_OFF]
        for i in range(off, off + pi[p, PI_SIZE]):
            v[i] = v0[p] * theta[i]
    cnt[:] = 0
    val[:] = 0
    acc[:] = 0
    inp[:] = 0
    cvals[:] = 0
    mark[:] = 0
    lst_n[:] = 0
    full[:] = 0
    out[:] = 0
    for p in range(P):
        dk = pi[p, PI_DRIVE]
        if dk != 0:
            off = pi[p, PI_OFF]
            sz = pi[p, PI_DPER]  # a static drive that repeats at every position: one state per channel
            if dk == 2:  # fed by the input: this sample's grid
                o = pi[p, PI_DOFF]
                q, u = dwq[o:o + sz], dwork[0, o:o + sz]
                NR.grid_row(dd[n], dperm[o:o + sz], dgrid[p, 0], dgrid[p, 1], pi[p, PI_HALF_EVEN] == 1, q, u,
                            dwork[1], dwork[2])
                NR.drive_init(q, u, dsteps, dbase[off:off + sz], dunit[off:off + sz], drem[off:off + sz],
                              dmod[off:off + sz])
            else:
                NR.drive_init(sq[off:off + sz], su[off:off + sz], dsteps, dbase[off:off + sz], dunit[off:off + sz],
                              drem[off:off + sz], dmod[off:off + sz])
    if not use_rate:  # analog input: its current is the same every "on" step, computed once
        ne = 0
        for j in range(x.shape[1]):
            if x[n, j] != 0:
                ev_in_idx[ne] = j
                ev_in_sig[ne] = x[n, j]
                ne += 1
        for e in range(out_ptr[P], out_ptr[P + 1]):
            scatter(out_list[e], ji, jf, wbuf, ibuf, idx32, ev_in_idx, ev_in_sig, ne, inp, pi, mark[0], lst[0],
                    lst_n, full, 0, False, thr[0], sig, scratch)


@kernel
def input_events(n, t, rate, fan_in, ev_in_idx, ev_in_sig, rec_in_pos, rec_in_sops):
    """Step t (< wake) of sample n's rate input: its events into ``ev_in_idx``/``ev_in_sig``, its records;
    returns the event count."""
    ne = 0
    so = 0
    cnt_in = 0
    for j in range(rate.shape[2]):
        c = rate[n, t, j]
        if c != 0:  # a rate spike (1) or several address events in this bin: each worth 1
            ev_in_idx[ne] = j
            ev_in_sig[ne] = c
            so += fan_in[j] * c
            cnt_in += c
            ne += 1
    rec_in_pos[n, t] = cnt_in
    rec_in_sops[n, t] = so
    return ne


@njit(cache=True, inline="always")
def tracks(bitserial, t, d, wake, kind):
    """Whether a scatter at step t along a projection (delay d, kind) lists the target blocks it touches
    (the sleep phase updates only those; a max gate's window always)."""
    return (not bitserial) and (t + d > wake or kind == K_MAX)


@kernel
def step_input(n, t, rate, pi, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, fan_in, bitserial, R, thr,
               acc, mark, lst, lst_n, full, ev_in_idx, ev_in_sig, sig, scratch, rec_in_pos, rec_in_sops):
    """Step t (< wake) of sample n's rate input: its spikes scattered into the ring slot t % R; records."""
    P = pi.shape[0] - 1
    r = t % R
    ne = input_events(n, t, rate, fan_in, ev_in_idx, ev_in_sig, rec_in_pos, rec_in_sops)
    if ne > 0:
        for e in range(out_ptr[P], out_ptr[P + 1]):
            scatter(out_list[e], ji, jf, wbuf, ibuf, idx32, ev_in_idx, ev_in_sig, ne, acc[r], pi, mark[r],
                    lst[r], lst_n, full, r, tracks(bitserial, 0, 0, 1, ji[out_list[e], J_KIND]),
                    thr[t % thr.shape[0]], sig, scratch)


@kernel
def record_events(n, t, p, ne, pi, ev_idx, ev_sig, fan, ext, max_steps, rec_pos, rec_neg, rec_sops, raster,
                  do_raster):
    """Records of population p's ``ne`` events of step t (at ev_idx[off:off + ne]) for sample n."""
    N = rec_pos.shape[1]
    off = pi[p, PI_OFF]
    sz = pi[p, PI_SIZE]
    ei, es, fp = ev_idx[off:off + ne], ev_sig[off:off + ne], fan[off:off + sz]
    pos = 0
    so = 0
    for e in range(ne):  # no branch: a sum and a gather (the loop vectorises)
        pos += np.int64(es[e] > 0)
        so += fp[ei[e]]
    if do_raster:
        b = N * max_steps * off + (n * max_steps + t) * sz - off
        for e in range(ne):
            raster[b + ext[off + ei[e]]] = 1 if es[e] > 0 else -1
    rec_pos[p, n, t] = pos
    rec_neg[p, n, t] = ne - pos
    rec_sops[p, n, t] = so


@kernel
def step_pop(n, t, p, pi, v0, theta, bias, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, fan, ext, wake,
             max_steps, bitserial, bits, R, thr, shift_den, v, cnt, val, acc, inp, cvals, mark, lst, lst_n, full,
             carry, ev_idx, ev_sig, sig, scratch, rec_pos, rec_neg, rec_sops, raster, do_raster, dsteps, dbase,
             dunit, drem, dmod, marks, incs):
    """Step t of population p of sample n (its state slot ``v`` … ``dmod``): update, record and scatter its
    events along every outgoing projection; returns whether it spiked. ``marks``, ``incs``: work space
    (see :func:`_update_pop`)."""
    r = t % R
    ne = _update_pop(p, t, r, R, pi, ji, v0, theta, bias, v, cnt, val, acc, inp, cvals, mark, lst, lst_n,
                     full, carry, ev_idx, ev_sig, wake, bitserial, bits, shift_den, dbase, dunit, drem, dmod,
                     dsteps, marks, incs)
    if ne == 0:
        return False
    off = pi[p, PI_OFF]
    sz = pi[p, PI_SIZE]
    record_events(n, t, p, ne, pi, ev_idx, ev_sig, fan, ext, max_steps, rec_pos, rec_neg, rec_sops, raster,
                  do_raster)
    for e2 in range(out_ptr[p], out_ptr[p + 1]):
        m = out_list[e2]
        d = ji[m, J_DELAY]
        rr = (t + d) % R
        scatter(m, ji, jf, wbuf, ibuf, idx32, ev_idx[off:off + sz], ev_sig[off:off + sz], ne, acc[rr], pi,
                mark[rr], lst[rr], lst_n, full, rr, tracks(bitserial, t, d, wake, ji[m, J_KIND]), thr[t % thr.shape[0]], sig, scratch)
    return True


@kernel
def step_readout(n, t, pi, bias, ext, wake, bitserial, R, acc, inp, out, rec_out):
    """Step t of sample n's readout: accumulate its input (and, while on, bias and analog input); record."""
    P = pi.shape[0] - 1
    r = t % R
    on = (t == 0) if bitserial else (t < wake)
    ro = pi[P, PI_OFF]
    ra0 = pi[P, PI_ACCOFF]
    for i in range(pi[P, PI_SIZE]):
        cur = acc[r, ra0 + i]
        acc[r, ra0 + i] = 0
        if on:
            cur = cur + inp[ra0 + i]
            out[i] = (out[i] + cur) + bias[ro + i]
        else:
            out[i] = out[i] + cur
        rec_out[n, t, ext[ro + i]] = out[i]


@kernel
def finish_sample(n, t_end, pi, ext, back, cnt, val, out, rec_out, counts, values):
    """Sample n's records after its last step ``t_end − 1``: the readout held to the end, counts and values
    (gathered through ``back``, written in order: a scatter through ``ext`` writes channels-last neurons
    one channel plane apart, 4–6× slower on the large layers)."""
    P = pi.shape[0] - 1
    N = rec_out.shape[0]
    ro = pi[P, PI_OFF]
    for t in range(t_end, rec_out.shape[1]):
        for i in range(pi[P, PI_SIZE]):
            rec_out[n, t, ext[ro + i]] = out[i]
    keep_values = values.shape[0] > 0  # empty: the values are the counts (engine.run)
    for p in range(P):
        off = pi[p, PI_OFF]
        sz = pi[p, PI_SIZE]
        b = N * off + n * sz
        cs = counts[b:b + sz]
        bk = back[off:off + sz]
        for k in range(sz):
            cs[k] = cnt[bk[k]]
        if keep_values:
            vs = values[b:b + sz]
            for k in range(sz):
                vs[k] = val[bk[k]]
