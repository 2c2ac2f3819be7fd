"""Neuron-update kernels: one population, neurons ``lo..hi`` (internal order), one step.

Arrays are population-local views: ``v`` membrane (engine dtype), ``cnt`` net
count (int64), ``val`` transmitted value (float64; kept by the bit-serial updates only: elsewhere every
spike carries ±1, so the value is the net count, and the engine does not write it a second time),
``acc`` this step's input
accumulator (cleared as it is read), ``inp`` precomputed analog input current,
``bias``, ``theta``. Spikes are appended to ``ev_idx``/``ev_sig`` (signal = ±1,
or 2^(K−1−k) for a bit-serial spike); each function returns the new event count.

Each rule equals the matching function of :mod:`evsnn.models` (tested), in the
same order of operations as the reference: I = (Σ projections + input) + bias (+ δ).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from evsnn.engine.jit import kernel
from evsnn.ir.drive import CLAMP


@njit(cache=True, inline="always")
def _current(acc, inp, bias, i, on):
    cur = acc[i]
    acc[i] = 0
    if on:
        cur = (cur + inp[i]) + bias[i]
    return cur


@njit(cache=True, inline="always")
def _integrate(v, acc, inp, bias, on):
    """v += I with I = (acc + inp) + bias while ``on``, else acc; acc cleared (slices of one length)."""
    if on:
        for k in range(len(v)):
            cur = (acc[k] + inp[k]) + bias[k]
            acc[k] = 0
            v[k] = v[k] + cur
    else:
        for k in range(len(v)):
            v[k] = v[k] + acc[k]
            acc[k] = 0


@kernel
def update_if(v, cnt, acc, inp, bias, theta, lo, hi, on, shift, shift_den, zero_reset, ev_idx, ev_sig, n_ev):
    """IF: v += I; s = [v ≥ θ]; v -= θ (or v = 0). ``shift`` adds θ/shift_den[0] (Deng & Gu δ = θ/(2T)).

    ``shift_den``: 1-element array in the engine dtype, so δ is computed in that dtype.
    """
    sd = shift_den[0]
    # two passes: the integration loop has no branch on the neuron and vectorises; the threshold scan
    # is cheap (spikes are rare). Same result per neuron as the one-pass rule.
    # (over slices from 0: an index that may be negative gets Numba's wrap-around select, which keeps LLVM
    # from vectorising; the same holds for every integration loop below)
    vs, ac, ip, bi, th = v[lo:hi], acc[lo:hi], inp[lo:hi], bias[lo:hi], theta[lo:hi]
    if on and shift:
        for k in range(hi - lo):
            cur = (ac[k] + ip[k]) + bi[k]
            ac[k] = 0
            vs[k] = vs[k] + (cur + th[k] / sd)
    elif shift:
        for k in range(hi - lo):
            cur = ac[k]
            ac[k] = 0
            vs[k] = vs[k] + (cur + th[k] / sd)
    else:
        _integrate(vs, ac, ip, bi, on)
    # threshold scan without a branch on the neuron (near 50 % activity a branch mispredicts half the time):
    # every index is written, the count advances only on a spike; then the spikes are applied
    n0 = n_ev
    for i in range(lo, hi):
        ev_idx[n_ev] = i  # n_ev ≤ neurons scanned so far < population size: in bounds
        n_ev += 1 if v[i] >= theta[i] else 0
    for e in range(n0, n_ev):
        i = ev_idx[e]
        vi = v[i]
        v[i] = vi - vi if zero_reset else vi - theta[i]
        cnt[i] += 1
        ev_sig[e] = 1
    return n_ev


@njit(cache=True, inline="always")
def cif_sign(vi, th, c, cap, half_even):
    """s = clip(floor(v/θ), −1, 1), −1 only if S > 0, +1 only if S < cap; ``half_even``: at q = 1 or
    q = 0 (exact ties) only when S is odd (models.cif_step)."""
    q = vi / th  # floor(q) ≥ 1 ⟺ q ≥ 1 and floor(q) ≤ −1 ⟺ q < 0 (−0.0 and NaN give 0 either way)
    odd = half_even and (c & 1) == 1
    if q > 1 or (q == 1 and (odd or not half_even)):
        return 1 if c < cap else 0
    if q < 0 or (q == 0 and odd):
        return -1 if c > 0 else 0
    return 0


#: may_fire_cif's bounds, in units of θ: below 1 − 2^-40, v/θ rounds below 1; above 2^-148, above 0
#: (in float32, whose smallest positive value is 2^-149, as in float64)
BELOW_ONE = 1.0 - 2.0 ** -40
ABOVE_ZERO = 2.0 ** -148
MANY = 128  # neurons from which update_cif marks candidates in a vectorised pass first (one allocation)


@njit(cache=True, inline="always")
def may_fire_cif(vi, th, c, cap):
    """False when a CIF neuron with count c cannot fire (cif_sign is 0), decided without a division:
    +1 needs fl(v/θ) ≥ 1 and c < cap, −1 needs fl(v/θ) ≤ 0 and c > 0. For θ > 0 (the products are
    taken in float64, exact for float32 θ): fl(v/θ) ≥ 1 needs v/θ ≥ 1 − 2^-24 (float32) or 1 − 2^-53,
    so v ≥ θ·(1 − 2^-24) > θ·(1 − 2^-40) ≥ fl(θ·(1 − 2^-40)) up to one rounding; fl(v/θ) ≤ 0 needs
    v/θ < 2^-149 (float32) or 2^-1074, which v > fl(θ·2^-148) rules out (where θ·2^-148 is subnormal or 0,
    v ≥ 2^-1074 gives v/θ > 2^-148 already). True is only a maybe (the exact rule decides); for θ ≤ 0 or
    NaN the comparisons fail and it is True unless the count rules out both signs. Most neurons (below
    threshold, or negative with a zero count) leave here."""
    up = (not (vi < th * BELOW_ONE)) & (c < cap)
    down = (not (vi > th * ABOVE_ZERO)) & (c > 0)
    return up | down


@njit(cache=True, inline="always")
def _cif_list(i, v, theta, cnt, cap, half_even, ev_idx, ev_sig, n_ev):
    """Lists neuron i (a candidate) at ``ev_idx[n_ev]`` with its sign at ``ev_sig[n_ev]`` and returns
    n_ev + 1 if it fires (cif_sign ≠ 0), else n_ev: the exact rule, without a branch on the outcome."""
    q = v[i] / theta[i]
    c = cnt[i]
    ev_idx[n_ev] = i  # n_ev ≤ neurons scanned so far < population size: in bounds
    odd = half_even & ((c & 1) == 1)
    up = (q > 1) | ((q == 1) & (odd | (not half_even)))  # floor: q ≥ 1
    down = (q < 0) | ((q == 0) & odd)  # floor: q < 0
    fire_up = up & (c < cap)
    ev_sig[n_ev] = 1 if fire_up else -1  # up and down exclude each other: a spike that is not +1 is −1
    return n_ev + (1 if fire_up | (down & (c > 0)) else 0)


@njit(cache=True, inline="always")
def _cif_fire(v, cnt, theta, ev_idx, ev_sig, n0, n_ev):
    """The spikes of the listed neurons ev_idx[n0:n_ev] (each fires, with the sign at ev_sig): reset by
    ±θ (v − (−θ) is v + θ, bit for bit), count, signal."""
    for e in range(n0, n_ev):
        i = ev_idx[e]
        s = ev_sig[e]
        v[i] = v[i] - s * theta[i]
        cnt[i] += np.int64(s)
    return n_ev


@kernel
def update_cif(v, cnt, acc, inp, bias, theta, lo, hi, on, cap, half_even, ev_idx, ev_sig, n_ev, marks):
    """CIF (CASC) with signed spikes; ``cap`` = min(t_w, L); ``half_even``: ties to even (cif_sign);
    ``marks``: uint8 work space, ≥ hi − lo + 8 bytes."""
    # passes with the same result per neuron as the one-pass rule: integration (no branch: vectorises),
    # the exact rule (q = v/θ as in cif_sign) on the neurons may_fire_cif does not rule out, the spikes.
    # Many neurons: _update_cif_marked. A few (a block of the sleep phase): one loop, no marks
    if hi - lo >= MANY:
        return _update_cif_marked(v, cnt, acc, inp, bias, theta, lo, hi, on, cap, half_even, ev_idx, ev_sig,
                                  n_ev, marks)
    _integrate(v[lo:hi], acc[lo:hi], inp[lo:hi], bias[lo:hi], on)  # from 0: see update_if
    n0 = n_ev
    for i in range(lo, hi):
        if may_fire_cif(v[i], theta[i], cnt[i], cap):
            n_ev = _cif_list(i, v, theta, cnt, cap, half_even, ev_idx, ev_sig, n_ev)
    return _cif_fire(v, cnt, theta, ev_idx, ev_sig, n0, n_ev)


@kernel
def _update_cif_marked(v, cnt, acc, inp, bias, theta, lo, hi, on, cap, half_even, ev_idx, ev_sig, n_ev,
                       marks):
    """:func:`update_cif` on many neurons: the integration also marks the neurons that may fire (reading
    each membrane once), and the exact rule runs on the marked ones (listed by :func:`_cif_scan`)."""
    maybe = _marks(marks, hi - lo)
    vs, ac, ip, bi, th, cs = v[lo:hi], acc[lo:hi], inp[lo:hi], bias[lo:hi], theta[lo:hi], cnt[lo:hi]
    if on:
        for k in range(hi - lo):
            vi = vs[k] + ((ac[k] + ip[k]) + bi[k])
            ac[k] = 0
            vs[k] = vi
            maybe[k] = may_fire_cif(vi, th[k], cs[k], cap)
    else:
        for k in range(hi - lo):
            vi = vs[k] + ac[k]
            ac[k] = 0
            vs[k] = vi
            maybe[k] = may_fire_cif(vi, th[k], cs[k], cap)
    n1 = _cif_scan(maybe, hi - lo, lo, v, theta, cnt, cap, half_even, ev_idx, ev_sig, n_ev)
    return _cif_fire(v, cnt, theta, ev_idx, ev_sig, n_ev, n1)


@kernel
def update_cif_drive(v, cnt, acc, theta, base, unit, rem, mod, steps, per, cap, half_even, ev_idx, ev_sig,
                     n_ev, marks, incs):
    """:func:`drive_add` then :func:`update_cif` (input and bias off) in one pass over the neurons 0..len(v):
    each takes acc + its drive increment, then v + that, the same additions in the same order (bit for bit),
    reading the currents once. Neuron k's drive state is entry k % ``per`` (see :func:`drive_add`). Work
    space: ``marks`` (uint8, ≥ len(v) + 8 bytes), ``incs`` (≥ per entries)."""
    n = len(v)
    maybe = _marks(marks, n)
    if per == n:
        for k in range(n):
            cur = acc[k] + _drive_increment(base, unit, rem, mod, k, steps)
            acc[k] = 0
            vi = v[k] + cur
            v[k] = vi
            maybe[k] = may_fire_cif(vi, theta[k], cnt[k], cap)
    else:
        inc = _drive_increments(base, unit, rem, mod, per, steps, incs)
        for b in range(0, n, per):
            for c in range(per):
                k = np.uint64(b + c)  # unsigned: no negative-index select, the inner loop vectorises
                cur = acc[k] + inc[c]
                acc[k] = 0
                vi = v[k] + cur
                v[k] = vi
                maybe[k] = may_fire_cif(vi, theta[k], cnt[k], cap)
    n1 = _cif_scan(maybe, n, 0, v, theta, cnt, cap, half_even, ev_idx, ev_sig, n_ev)
    return _cif_fire(v, cnt, theta, ev_idx, ev_sig, n_ev, n1)


@njit(cache=True, inline="always")
def _marks(buf, n):
    """Room for n one-byte marks at the start of ``buf``, in whole 8-byte words (read as words)."""
    return buf[:(n + 7) // 8 * 8]


#: (word · PACK) >> 56 gathers the low bits of a word's eight 0/1 bytes into one byte (byte k → bit k):
#: each byte's bit lands at 56 + k, and no two partial products share a bit, so nothing carries
PACK = np.uint64(0x0102040810204080)


@njit(cache=True, inline="always")
def _cif_scan(maybe, n, lo, v, theta, cnt, cap, half_even, ev_idx, ev_sig, n_ev):
    """The marked neurons (``maybe[k]`` ∈ {0, 1} for neuron lo + k, k < n) that fire listed from
    ev_idx[n_ev] on (signs in ev_sig); returns the new count. ev_idx, ev_sig: room for n entries from n_ev.

    Without a branch per mark: the marks of 64 neurons packed into one bit mask, whose set bits are
    listed (trailing zeros); then the exact rule on the listed candidates, in place (each read before any
    later write). A branch per mark or per word of marks mispredicted on the digits run (a new pattern
    every step): two thirds of update_cif_drive's time."""
    words = maybe.view(np.uint64)
    m = n_ev
    nfull = n // 8
    for g0 in range(0, nfull, 8):
        bits = np.uint64(0)
        for j in range(min(8, nfull - g0)):
            bits |= ((words[g0 + j] * PACK) >> np.uint64(56)) << np.uint64(8 * j)
        first = lo + 8 * g0
        while bits != 0:
            ev_idx[m] = first + trailing_zeros(bits)
            m += 1
            bits &= bits - np.uint64(1)
    for k in range(n - n % 8, n):  # the last marks, not past n: the list has room for n entries only
        ev_idx[m] = lo + k
        m += maybe[k]
    n1 = n_ev
    for e in range(n_ev, m):
        n1 = _cif_list(ev_idx[e], v, theta, cnt, cap, half_even, ev_idx, ev_sig, n1)
    return n1


@kernel
def can_fire_if(v, theta, lo, hi):
    for i in range(lo, hi):
        if v[i] >= theta[i]:
            return True
    return False


@kernel
def can_fire_cif(v, cnt, theta, lo, hi, cap, half_even):
    """Whether a neuron of lo..hi fires now (cif_sign ≠ 0): a branch-free pass (it vectorises) tells whether
    any may (may_fire_cif), and the exact rule runs only then. Most blocks after the first sleep step have
    no candidate, and a loop that left at the first one could not vectorise."""
    vs, th, cs = v[lo:hi], theta[lo:hi], cnt[lo:hi]
    maybe = False
    for k in range(hi - lo):
        maybe |= may_fire_cif(vs[k], th[k], cs[k], cap)
    if not maybe:
        return False
    for k in range(hi - lo):
        if may_fire_cif(vs[k], th[k], cs[k], cap) and cif_sign(vs[k], th[k], cs[k], cap, half_even) != 0:
            return True
    return False


@kernel
def update_bit(v, cnt, val, acc, inp, bias, theta, lo, hi, on, k, bits, half_even, ev_idx, ev_sig, n_ev):
    """Bit-serial: v += I every step; in emit step k (0 ≤ k < K) θ_k = θ·2^(K−1−k), s = [v ≥ θ_k], v -= θ_k·s;
    ``half_even``: the last bit is s = [v > θ] (models.bitserial_emit)."""
    emit = 0 <= k < bits
    wk = float(2 ** (bits - 1 - k)) if emit else 0.0
    strict = half_even and k == bits - 1
    for i in range(lo, hi):
        cur = _current(acc, inp, bias, i, on)
        vi = v[i] + cur
        if emit:
            tk = theta[i] * wk
            if vi > tk or (vi == tk and not strict):
                vi = vi - tk
                cnt[i] += 1
                val[i] += wk
                ev_idx[n_ev] = i
                ev_sig[n_ev] = wk
                n_ev += 1
        v[i] = vi
    return n_ev


@kernel
def gate_absorb_all(cvals, delta):
    for j in range(len(delta)):
        cvals[j] += delta[j]
        delta[j] = 0


@kernel
def gate_absorb_block(cvals, delta, p, kh, kw, C, H, W, Wo, sh, sw, pt, pl):
    """c += delta over the window of gate position p (all channels)."""
    oy = p // Wo
    ox = p - oy * Wo
    for ky in range(kh):
        y = oy * sh - pt + ky
        if y < 0 or y >= H:
            continue
        for kx in range(kw):
            x = ox * sw - pl + kx
            if x < 0 or x >= W:
                continue
            b = (y * W + x) * C
            for c in range(C):
                cvals[b + c] += delta[b + c]
                delta[b + c] = 0


@njit(cache=True, inline="always")
def window_max(cvals, p, c, kh, kw, C, H, W, Wo, sh, sw, pt, pl):
    """max of c over the window of gate (p, c); −inf when the window holds only pads."""
    oy = p // Wo
    ox = p - oy * Wo
    m = -np.inf
    for ky in range(kh):
        y = oy * sh - pt + ky
        if y < 0 or y >= H:
            continue
        for kx in range(kw):
            x = ox * sw - pl + kx
            if x < 0 or x >= W:
                continue
            q = cvals[(y * W + x) * C + c]
            if q > m:
                m = q
    return m


@njit(cache=True, inline="always")
def _gate_2x2(cvals, cnt, i0, r0, row, C, ev_idx, ev_sig, n_ev):
    """:func:`update_gate`'s rule for the C gates from i0 on, whose window is the 2×2 block of inputs at
    r0, r0 + C, r0 + row, r0 + row + C (channels last): the maximum taken in that order, as window_max
    does; the spikes listed without a branch (every index written, the count advanced on a spike).
    Returns (n_ev, whether a gate that spiked is still off by ≥ 1)."""
    a, b = cvals[r0:r0 + C], cvals[r0 + C:r0 + 2 * C]
    c_, d_ = cvals[r0 + row:r0 + row + C], cvals[r0 + row + C:r0 + row + 2 * C]
    cs = cnt[i0:i0 + C]
    still = False
    for c in range(C):
        m = -np.inf
        q = a[c]
        m = q if q > m else m
        q = b[c]
        m = q if q > m else m
        q = c_[c]
        m = q if q > m else m
        q = d_[c]
        m = q if q > m else m
        d = m - cs[c]
        s = 1 if d >= 1 else (-1 if d <= -1 else 0)
        cs[c] += s
        ev_idx[n_ev] = i0 + c  # n_ev ≤ gates scanned so far < population size: in bounds
        ev_sig[n_ev] = s
        n_ev += 1 if s != 0 else 0
        still = still | ((s != 0) & ((d - s >= 1) | (d - s <= -1)))
    return n_ev, still


@kernel
def update_gate(cvals, cnt, p0, p1, kh, kw, C, H, W, Wo, sh, sw, pt, pl, ev_idx, ev_sig, n_ev):
    """Max-pool gates at positions p0..p1: s = clip(max_i c_i − S, −1, 1); S += s. Returns (n_ev, still_off)."""
    still = False
    for p in range(p0, p1):
        # the window clipped to the input once per position (window_max's bounds, hoisted out of the channels)
        oy = p // Wo
        ox = p - oy * Wo
        y0 = max(oy * sh - pt, 0)
        y1 = min(oy * sh - pt + kh, H)
        x0 = max(ox * sw - pl, 0)
        x1 = min(ox * sw - pl + kw, W)
        if y1 - y0 == 2 and x1 - x0 == 2:  # a whole 2×2 window (most max pools): its four rows, no branches
            n_ev, fired = _gate_2x2(cvals, cnt, p * C, (y0 * W + x0) * C, W * C, C, ev_idx, ev_sig, n_ev)
            still = still or fired
            continue
        for c in range(C):
            i = p * C + c
            m = -np.inf
            for y in range(y0, y1):
                for x in range(x0, x1):
                    q = cvals[(y * W + x) * C + c]
                    if q > m:
                        m = q
            d = m - cnt[i]
            s = 1 if d >= 1 else (-1 if d <= -1 else 0)
            if s != 0:
                cnt[i] += s
                ev_idx[n_ev] = i
                ev_sig[n_ev] = s
                n_ev += 1
                if d - s >= 1 or d - s <= -1:
                    still = True
    return n_ev, still


@kernel
def gate_can_fire(cvals, cnt, p, kh, kw, C, H, W, Wo, sh, sw, pt, pl):
    for c in range(C):
        d = window_max(cvals, p, c, kh, kw, C, H, W, Wo, sh, sw, pt, pl) - cnt[p * C + c]
        if d >= 1 or d <= -1:
            return True
    return False


@kernel
def update_bit_gate(cvals, v, cnt, val, theta, v0, k, bits, kh, kw, C, H, W, Wo, sh, sw, pt, pl, nblk,
                    ev_idx, ev_sig, n_ev):
    """Bit-serial max-pool: at k = 0 v = max_i c_i + v0·θ, then emits its K bits like a bit-serial neuron."""
    if k == 0:
        for p in range(nblk):
            for c in range(C):
                i = p * C + c
                v[i] = window_max(cvals, p, c, kh, kw, C, H, W, Wo, sh, sw, pt, pl) + v0 * theta[i]
    if 0 <= k < bits:
        wk = float(2 ** (bits - 1 - k))
        for i in range(nblk * C):
            tk = theta[i] * wk
            if v[i] >= tk:
                v[i] = v[i] - tk
                cnt[i] += 1
                val[i] += wk
                ev_idx[n_ev] = i
                ev_sig[n_ev] = wk
                n_ev += 1
    return n_ev


#: 2^k and 2^-k for k = 0..63: scaling by them is exact (as ldexp), without a libm call per value
POW2 = np.ldexp(1.0, np.arange(64))
POW2_NEG = np.ldexp(1.0, -np.arange(64))


@kernel
def grid_row(d, perm, levels, off, half_even, q, u, xs, mags):
    """q[i], u[i] = the drive grid (Q, 2^-F) of d[perm[i]] (one sample's drive totals, gathered into
    internal order): the operations of :func:`evsnn.ir.drive.grid` (``off`` = φ, or φ − ½ for
    ``half_even``), each exact, so the same numbers (tested). frexp's exponent is read from the bits and
    ldexp is a product with a power of two (exact: no result leaves the normal range). Two passes, each
    over slices from 0 and without branches, so that both vectorise; ``xs``, ``mags``: work space
    (float64, ≥ len(perm))."""
    m = perm.shape[0]
    mbits = mags.view(np.int64)
    for i in range(m):
        x = d[perm[i]]
        x = -CLAMP if x < -CLAMP else (CLAMP if x > CLAMP else x)  # NaN passes unchanged, as through np.clip
        xs[i] = x
        mags[i] = np.ceil(abs(x)) + levels + 2.0  # an integer in [3, 2^51), or NaN
    for i in range(m):
        mag = mags[i]
        e = ((mbits[i] >> 52) & 0x7FF) - 1022 if mag == mag else 0  # frexp(mag)[1]
        f = max(52 - e, 2)
        y = (xs[i] + off) * POW2[f]
        qi = np.int64(np.floor(y))
        # a false tie: one unit up, the same side of k + ½ (ir.drive.grid)
        tie = half_even & ((qi & ((np.int64(1) << f) - 1)) == (np.int64(1) << (f - 1))) & (y != qi)
        q[i] = (qi + (1 if tie else 0)) - np.int64(off * POW2[f])
        u[i] = POW2_NEG[f]


@kernel
def drive_init(q, u, steps, base, unit, rem, mod):
    """Split drive grids (Q, unit = 2^-F) over ``steps`` steps: Q = q·steps + rem, base = q·unit; mod = 0.

    Same numbers as :func:`evsnn.ir.drive.grid_split` (tested).
    """
    fs = float(steps)
    for i in range(len(q)):
        # floor division, as NumPy's, without an integer division on the common path: the float quotient's
        # floor is exact or one off (|Q| < 2^53, exact in float64), which the remainder shows; else (a NaN
        # drive's Q, or a rounding across an integer) the integer division decides
        qi = q[i]
        qt = np.int64(np.floor(qi / fs))
        r = qi - qt * steps
        if r < 0 or r >= steps:
            qt = qi // steps
        base[i] = qt * u[i]
        unit[i] = u[i]
        rem[i] = q[i] - qt * steps
        mod[i] = 0


@kernel
def drive_add(acc, base, unit, rem, mod, steps, per, incs):
    """acc += this step's drive increment: base, plus one unit when ⌊(t+1)·rem/steps⌋ > ⌊t·rem/steps⌋.

    ``mod`` carries t·rem mod steps from step to step (no division per neuron and step); the increment
    equals :func:`evsnn.ir.drive.grid_increment` (tested). Neuron k (of len(acc)) takes the drive state at
    k % ``per``: ``per`` = len(acc) for one state per neuron, or the channel count of an image population
    whose drive repeats at every position (engine.pack.drive_period): one increment per channel and step,
    kept in ``incs`` (≥ per entries).
    """
    n = len(acc)
    if per == n:
        for k in range(n):  # selects, not branches (the loop vectorises); same numbers in the same dtype
            acc[k] = acc[k] + _drive_increment(base, unit, rem, mod, k, steps)
    else:
        inc = _drive_increments(base, unit, rem, mod, per, steps, incs)
        for b in range(0, n, per):
            for c in range(per):
                k = np.uint64(b + c)
                acc[k] = acc[k] + inc[c]


@njit(cache=True, inline="always")
def _drive_increments(base, unit, rem, mod, per, steps, incs):
    """This step's increments of drive states 0..per (advancing their carries), in incs[:per]."""
    inc = incs[:per]
    for c in range(per):
        inc[c] = _drive_increment(base, unit, rem, mod, c, steps)
    return inc


@njit(cache=True, inline="always")
def _drive_increment(base, unit, rem, mod, k, steps):
    """Neuron k's drive increment this step (base, or base + unit when the carry ``mod`` + ``rem`` passes
    ``steps``); advances its carry."""
    m = mod[k] + rem[k]
    over = m >= steps
    mod[k] = m - steps if over else m
    return (base[k] + unit[k]) if over else base[k]
