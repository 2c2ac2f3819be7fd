"""Scatter kernels: deliver a list of events (internal index, signal) along one projection.

Each kernel adds ``signal × weight`` into the target's input accumulator ``acc``
(one ring slot, target-local, internal channels-last order). With ``track`` set
it also records the touched blocks of the target (``mark``/``lst``, ``n`` listed
so far; returns the new ``n``) so the sleep phase updates only those. The marks are written in
place at each site (history: under Numba's reference counting a helper taking ``mark`` and ``lst``
made the tracked conv scatter 1.5× slower; the kernels now compile without it, :mod:`evsnn.engine.jit`).

NumPy meaning of each kernel (tested in tests/test_engine_kernels.py):

- :func:`csr_scatter`: ``acc += s @ W`` for the CSR matrix W (row = pre neuron);
- :func:`conv_scatter`: ``acc += conv2d(s)`` (cross-correlation, stride, zero pads, groups) in HWC layout;
- :func:`pool_scatter`: ``acc += window_sum(s) · w[pos]``;
- :func:`max_scatter`: ``delta += s`` for pre neurons covered by at least one gate window;
- :func:`ident_scatter`: ``acc[map] += weight · s``.

Dense alternatives for many events (:func:`conv_dense`, :func:`csr_dense`) use BLAS
(:func:`evsnn.engine.blas.dot_into`, ``np.dot``'s call) and give the same sums (exactly, on dyadic-grid weights).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from evsnn.engine.blas import dot_into
from evsnn.engine.jit import kernel


@kernel
def csr_scatter(ev_idx, ev_sig, n_ev, indptr, indices, data, acc, track, mark, lst, n, bs):
    """acc[indices[k]] += s·data[k] for k in row ev_idx[e]."""
    for e in range(n_ev):
        j = ev_idx[e]
        s = ev_sig[e]
        ri = indices[indptr[j]:indptr[j + 1]]  # uint32: no wrap-around checks
        rd = data[indptr[j]:indptr[j + 1]]
        if track:
            for k in range(len(ri)):
                q = ri[k]
                acc[q] += s * rd[k]
                bk = q // bs
                if mark[bk] == 0:  # a block's first event: listed
                    mark[bk] = 1
                    lst[n] = bk
                    n += 1
        else:
            for k in range(len(ri)):
                acc[ri[k]] += s * rd[k]
    return n


@njit(cache=True, inline="always")
def _run_end(ev_idx, e0, n_ev, lo, hi):
    """The end of the run of events from e0 on whose index lies in [lo, hi) (one input position)."""
    e1 = e0 + 1
    while e1 < n_ev and lo <= ev_idx[e1] < hi:
        e1 += 1
    return e1


@njit(cache=True, inline="always")
def _add_rows(a, w, wk, cout, ev_idx, ev_sig, e0, e1, c0):
    """a += Σ_e s_e·w[wk + (j_e − c0)·cout:][:cout] over events e0..e1, added to each a[q] in event order
    (the sums of one event at a time, bit for bit), four events per pass over ``a``: one load and store
    of ``a`` per four weight rows instead of per row."""
    e = e0
    while e + 4 <= e1:
        s0, s1, s2, s3 = ev_sig[e], ev_sig[e + 1], ev_sig[e + 2], ev_sig[e + 3]
        o0 = wk + (ev_idx[e] - c0) * cout
        o1 = wk + (ev_idx[e + 1] - c0) * cout
        o2 = wk + (ev_idx[e + 2] - c0) * cout
        o3 = wk + (ev_idx[e + 3] - c0) * cout
        b0, b1, b2, b3 = w[o0:o0 + cout], w[o1:o1 + cout], w[o2:o2 + cout], w[o3:o3 + cout]
        for q in range(cout):
            a[q] = (((a[q] + s0 * b0[q]) + s1 * b1[q]) + s2 * b2[q]) + s3 * b3[q]
        e += 4
    while e < e1:
        s0 = ev_sig[e]
        o0 = wk + (ev_idx[e] - c0) * cout
        b0 = w[o0:o0 + cout]
        for q in range(cout):
            a[q] += s0 * b0[q]
        e += 1


@kernel
def conv_scatter(ev_idx, ev_sig, n_ev, w, kh, kw, cig, cout, groups, H, W, Cin, Ho, Wo, sh, sw, pt, pl,
                 acc, track, mark, lst, n):
    """Implicit conv fan-out: event (y, x, c) adds s·w[ky, kx, ci, g·cog:(g+1)·cog] at every covered (oy, ox).

    Consecutive events at one input position (they come sorted by index, channels last) share the window
    walk, and each covered output position takes their rows together (:func:`_add_rows`); every output
    still receives the events' products one by one in event order, so the sums equal the one-event-at-a-time
    scatter bit for bit."""
    cog = cout // groups
    e0 = 0
    while e0 < n_ev:
        pos = ev_idx[e0] // Cin
        c0 = pos * Cin
        e1 = _run_end(ev_idx, e0, n_ev, c0, c0 + Cin)
        y = pos // W
        x = pos - y * W
        for ky in range(kh):
            ny = y + pt - ky
            if ny < 0:
                break
            oy = ny
            if sh != 1:  # integer division only for strided convs
                if ny % sh != 0:
                    continue
                oy = ny // sh
            if oy >= Ho:
                continue
            for kx in range(kw):
                nx = x + pl - kx
                if nx < 0:
                    break
                ox = nx
                if sw != 1:
                    if nx % sw != 0:
                        continue
                    ox = nx // sw
                if ox >= Wo:
                    continue
                ob = (oy * Wo + ox) * cout
                wk = (ky * kw + kx) * cig * cout
                if groups == 1:
                    _add_rows(acc[ob:ob + cout], w, wk, cout, ev_idx, ev_sig, e0, e1, c0)
                else:
                    for e in range(e0, e1):
                        c = ev_idx[e] - c0
                        g = c // cig
                        co0 = g * cog
                        o = wk + (c - g * cig) * cout + co0
                        a = acc[ob + co0:ob + co0 + cog]  # slices: the inner loop vectorises
                        b = w[o:o + cog]
                        s = ev_sig[e]
                        for q in range(cog):
                            a[q] += s * b[q]
                if track:
                    bk = oy * Wo + ox
                    if mark[bk] == 0:  # a block's first event: listed
                        mark[bk] = 1
                        lst[n] = bk
                        n += 1
        e0 = e1
    return n


@kernel
def pool_scatter(ev_idx, ev_sig, n_ev, w, kh, kw, C, H, W, Ho, Wo, sh, sw, pt, pl, acc, track, mark, lst, n):
    """Average pool fan-out: event (y, x, c) adds s·w[oy, ox] to (oy, ox, c) of every covering window."""
    for e in range(n_ev):
        j = ev_idx[e]
        s = ev_sig[e]
        c = j % C
        pos = j // C
        x = pos % W
        y = pos // W
        for ky in range(kh):
            ny = y + pt - ky
            if ny < 0:
                break
            if ny % sh != 0:
                continue
            oy = ny // sh
            if oy >= Ho:
                continue
            for kx in range(kw):
                nx = x + pl - kx
                if nx < 0:
                    break
                if nx % sw != 0:
                    continue
                ox = nx // sw
                if ox >= Wo:
                    continue
                p = oy * Wo + ox
                acc[p * C + c] += s * w[p]
                if track:
                    if mark[p] == 0:  # a block's first event: listed
                        mark[p] = 1
                        lst[n] = p
                        n += 1
    return n


@kernel
def max_scatter(ev_idx, ev_sig, n_ev, kh, kw, C, H, W, Ho, Wo, sh, sw, pt, pl, delta, track, mark, lst, n):
    """Max-pool gate input: delta[j] += s for every watched j; marks every gate position whose window covers j."""
    last = -1
    covered = False
    for e in range(n_ev):
        j = ev_idx[e]
        pos = j // C
        if pos != last:  # events come sorted by index: the C channels of a position share one window walk
            last = pos
            y = pos // W
            x = pos - y * W
            covered = False
            for ky in range(kh):
                ny = y + pt - ky
                if ny < 0:
                    break
                if ny % sh != 0:
                    continue
                oy = ny // sh
                if oy >= Ho:
                    continue
                for kx in range(kw):
                    nx = x + pl - kx
                    if nx < 0:
                        break
                    if nx % sw != 0:
                        continue
                    ox = nx // sw
                    if ox >= Wo:
                        continue
                    covered = True
                    if track:
                        bk = oy * Wo + ox
                        if mark[bk] == 0:  # a block's first event: listed
                            mark[bk] = 1
                            lst[n] = bk
                            n += 1
        if covered:
            delta[j] += ev_sig[e]
    return n


@kernel
def ident_scatter(ev_idx, ev_sig, n_ev, mp, direct, wt, acc, track, mark, lst, n, bs):
    """acc[map[j]] += wt·s (map = identity when ``direct``)."""
    for e in range(n_ev):
        j = ev_idx[e]
        q = j if direct else mp[j]
        acc[q] += wt * ev_sig[e]
        if track:
            bk = q // bs
            if mark[bk] == 0:  # a block's first event: listed
                mark[bk] = 1
                lst[n] = bk
                n += 1
    return n


@kernel
def csr_dense(ev_idx, ev_sig, n_ev, dense, n_pre, n_post, sig, acc, scratch):
    """acc += s @ D with D the (n_pre, n_post) dense copy of the CSR matrix (BLAS gemv, its result in
    ``scratch[:n_post]``)."""
    events_to_signal(ev_idx, ev_sig, n_ev, n_pre, sig)
    out = scratch[:n_post]
    dot_into(sig[:n_pre], dense.reshape((n_pre, n_post)), out)
    for q in range(n_post):
        acc[q] += out[q]


@kernel
def events_to_signal(ev_idx, ev_sig, n_ev, npre, sig):
    """sig[:npre] = the step's input as a dense vector (0 where no event)."""
    sig[:npre] = 0
    for e in range(n_ev):
        sig[ev_idx[e]] = ev_sig[e]


@kernel
def im2col(sig, cols, g, kh, kw, cig, groups, H, W, Cin, Ho, Wo, sh, sw, pt, pl):
    """cols (Ho·Wo, kh·kw·cig) = group g's receptive field of every output position in ``sig``
    (channels-last input; pads as zeros, every entry written). For groups = 1 the kw·Cin entries of one
    kernel row are one contiguous run of ``sig`` (one copy instead of kw)."""
    run = kw * cig
    for oy in range(Ho):
        for ox in range(Wo):
            row = cols[oy * Wo + ox]
            x0 = ox * sw - pl
            inside_x = x0 >= 0 and x0 + kw <= W
            for ky in range(kh):
                y = oy * sh - pt + ky
                dr = row[ky * run:ky * run + run]
                if y < 0 or y >= H:
                    dr[:] = 0
                elif inside_x and groups == 1:
                    ib = (y * W + x0) * Cin
                    for i in range(run):  # a loop, not a slice assignment (which may copy: NRT)
                        dr[i] = sig[ib + i]
                else:
                    for kx in range(kw):
                        x = x0 + kx
                        dst = dr[kx * cig:kx * cig + cig]
                        if x < 0 or x >= W:
                            dst[:] = 0
                        else:
                            ib = (y * W + x) * Cin + g * cig
                            for i in range(cig):
                                dst[i] = sig[ib + i]


@kernel
def add_conv_out(acc, out, g, M, cout, cog):
    """acc[p, g·cog:(g+1)·cog] += out[p] for every output position p < M (acc channels-last)."""
    for p in range(M):
        a = acc[p * cout + g * cog:p * cout + g * cog + cog]
        o = out[p]
        for q in range(cog):
            a[q] += o[q]


@kernel
def conv_dense(ev_idx, ev_sig, n_ev, wd, kh, kw, cig, cout, groups, H, W, Cin, Ho, Wo, sh, sw, pt, pl, sig, acc,
               scratch):
    """acc += conv2d(s) through im2col and a BLAS gemm per group (wd: (groups, kh·kw·cig, cog)).

    ``scratch`` (engine dtype, ≥ Ho·Wo·(kh·kw·cig + cout/groups)) holds the im2col matrix and the gemm
    output, so a dense step allocates nothing.
    """
    events_to_signal(ev_idx, ev_sig, n_ev, H * W * Cin, sig)
    cog = cout // groups
    K = kh * kw * cig
    M = Ho * Wo
    cols = scratch[:M * K].reshape((M, K))
    out = scratch[M * K:M * K + M * cog].reshape((M, cog))
    for g in range(groups):
        im2col(sig, cols, g, kh, kw, cig, groups, H, W, Cin, Ho, Wo, sh, sw, pt, pl)
        dot_into(cols, wd[g * K * cog:(g + 1) * K * cog].reshape((K, cog)), out)
        add_conv_out(acc, out, g, M, cout, cog)
