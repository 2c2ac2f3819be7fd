"""The parallel batch driver: samples split between threads, each thread running a group of samples at a
time in one of two orders (both give every record bit for bit the same):

- step-major (:func:`steps_chunk`, any network): step by step, population by population, every sample of
  the group in turn;
- layer-major (:func:`evsnn.engine.layers.layers_chunk`, feed-forward networks without delays): one
  population over a window of steps before the next, its events kept in a log that its targets then read;
  a layer's weights are read once per window instead of once per step.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from evsnn.engine.jit import kernel
from evsnn.engine.layers import layers_chunk, window_space
from evsnn.engine.pack import PI_SIZE
from evsnn.engine.step import finish_sample, init_sample, step_input, step_pop, step_readout


@kernel
def steps_chunk(lo, hi, G, x, rate, use_rate, pi, v0, theta, bias, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list,
                fan, fan_in, ext, back, wake, max_steps, bitserial, bits, R, D, thr, shift_den, rec_out, rec_pos,
                rec_neg, rec_sops, rec_in_pos, rec_in_sops, raster, do_raster, counts, values, qa_out, silent_out, dd,
                dperm, dgrid, dwq, dwork, sq, su, dsteps, v, cnt, val, acc, inp, cvals, mark, lst, lst_n, full, out,
                dbase, dunit, drem, dmod, carry, ev_idx, ev_sig, ev_in_idx, ev_in_sig, sig, scratch, marks, incs,
                silent, t_end, spiked):
    """Samples lo..hi, ``G`` at a time in lock-step (one state slot each): in each step, population by
    population, every sample of the group in turn, so a layer's weights, read by one sample's scatter,
    are still in cache for the next sample's (the weights of a large network do not stay in cache from
    one step to the next). ``silent``, ``t_end`` (int64) and ``spiked`` (bool), (G,): work space."""
    P = pi.shape[0] - 1
    for n0 in range(lo, hi, G):
        k = min(G, hi - n0)
        for g in range(k):
            init_sample(n0 + g, x, use_rate, pi, v0, theta, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, thr,
                        v[g], cnt[g], val[g], acc[g], inp[g], cvals[g], mark[g], lst[g], lst_n[g], full[g],
                        ev_in_idx, ev_in_sig, sig, scratch, out[g], dd, dperm, dgrid, dwq, dwork, sq, su, dsteps,
                        dbase[g], dunit[g], drem[g], dmod[g])
            silent[g] = 0
            t_end[g] = max_steps
            qa_out[n0 + g] = -1
        left = k
        for t in range(max_steps):
            if left == 0:
                break
            for g in range(k):
                spiked[g] = False
                if use_rate and t < wake and t < t_end[g]:
                    step_input(n0 + g, t, rate, pi, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, fan_in,
                               bitserial, R, thr, acc[g], mark[g], lst[g], lst_n[g], full[g], ev_in_idx,
                               ev_in_sig, sig, scratch, rec_in_pos, rec_in_sops)
            for p in range(P):
                for g in range(k):
                    if t < t_end[g] and step_pop(
                            n0 + g, t, p, pi, v0, theta, bias, ji, jf, wbuf, ibuf, idx32, out_ptr, out_list, fan,
                            ext, wake, max_steps, bitserial, bits, R, thr, shift_den, v[g], cnt[g], val[g],
                            acc[g], inp[g], cvals[g], mark[g], lst[g], lst_n[g], full[g], carry, ev_idx, ev_sig,
                            sig, scratch, rec_pos, rec_neg, rec_sops, raster, do_raster, dsteps, dbase[g],
                            dunit[g], drem[g], dmod[g], marks, incs):
                        spiked[g] = True
            for g in range(k):
                if t >= t_end[g]:
                    continue
                n = n0 + g
                step_readout(n, t, pi, bias, ext, wake, bitserial, R, acc[g], inp[g], out[g], rec_out)
                silent[g] = 0 if spiked[g] else silent[g] + 1
                if t >= wake and silent[g] > D:
                    qa_out[n] = t
                    t_end[g] = t + 1
                    left -= 1
        for g in range(k):
            finish_sample(n0 + g, t_end[g], pi, ext, back, cnt[g], val[g], out[g], rec_out, counts, values)
            silent_out[n0 + g] = silent[g]


@njit(cache=True, parallel=True)
def run_batch(nchunks, group, window, x, rate, use_rate, pi, v0, theta, bias, ji, jf, wbuf, ibuf, idx32, out_ptr,
              out_list, fan, fan_in, ext, back, wake, max_steps, bitserial, bits, R, D, thr, shift_den, acc_tot, c_tot,
              blk_tot, sig_size, scratch_size, batch_size, rec_out, rec_pos, rec_neg, rec_sops, rec_in_pos,
              rec_in_sops, raster, do_raster, counts, values, qa_out, silent_out, dd, dperm, dgrid, sq, su, dsteps):
    """Samples split into ``nchunks`` contiguous chunks run in parallel, one per thread, ``group`` samples
    at a time; ``window`` > 0: layer-major over windows of that many steps (the network must be
    feed-forward without delays, :attr:`evsnn.engine.pack.Packed.layered`), 0: step-major; ``batch_size``:
    engine-dtype elements a thread may hold for a window's batched dense steps (layer-major; ≤ 1: none).
    Each sample's arithmetic is the same whatever the order, group or window (a batched dense step
    computes the same products in a larger gemm; see :func:`evsnn.engine.run.simulate` on the paths).

    Records are written in external order (``ext`` and its inverse ``back``, see
    :class:`evsnn.engine.run.Prepared`), population-major:
    ``rec_pos[p, n, t]``; ``counts``/``values``/``raster`` flat, population p's block at N·off (N·T·off for
    the raster) holding (N, size) (or (N, T, size)) in C order. A sample stops when it is quiet (t ≥ wake
    and no spike in the last D+1 steps): ``qa_out`` its last step (−1: never), ``silent_out`` its quiet steps.
    Input-fed drives: the batch's totals ``dd`` (N, ndyn), put on their grid per sample (``dperm``,
    ``dgrid``: :class:`evsnn.engine.pack.Packed`; :func:`evsnn.engine.step.init_sample`).
    """
    N = x.shape[0]
    P = pi.shape[0] - 1
    nall = theta.shape[0]
    G = max(1, group)
    for c in prange(nchunks):
        lo = c * N // nchunks
        hi = (c + 1) * N // nchunks
        v = np.empty((G, nall), dtype=theta.dtype)
        cnt = np.zeros((G, nall), dtype=np.int64)
        # transmitted values differ from the counts only for bit-serial spikes, and only the bit-serial
        # updates write them (neurons.py): elsewhere empty, nothing to clear or gather per sample
        val = np.zeros((G, nall if bitserial else 0), dtype=np.float64)
        acc = np.zeros((G, R, acc_tot), dtype=theta.dtype)
        inp = np.zeros((G, acc_tot), dtype=theta.dtype)
        cvals = np.zeros((G, c_tot), dtype=theta.dtype)
        mark = np.zeros((G, R, blk_tot + 1), dtype=np.uint8)
        lst = np.zeros((G, R, blk_tot + 1), dtype=np.int64)
        lst_n = np.zeros((G, R, P + 1), dtype=np.int64)
        full = np.zeros((G, R, P + 1), dtype=np.uint8)
        out = np.zeros((G, pi[P, PI_SIZE]), dtype=theta.dtype)
        dbase = np.zeros((G, nall), dtype=theta.dtype)
        dunit = np.zeros((G, nall), dtype=theta.dtype)
        drem = np.zeros((G, nall), dtype=np.int64)
        dmod = np.zeros((G, nall), dtype=np.int64)
        dwq = np.zeros(dperm.shape[0], dtype=np.int64)  # one sample's input-fed drive grid (step.init_sample)
        dwork = np.zeros((3, dperm.shape[0]), dtype=np.float64)
        carry = np.zeros(blk_tot + 1, dtype=np.int64)  # scratch, shared by the slots: a step runs to its end
        marks = np.zeros(nall + 8, dtype=np.uint8)  # the neuron updates' work space (step._update_pop)
        incs = np.zeros(nall + 8, dtype=theta.dtype)
        sig = np.zeros(sig_size, dtype=theta.dtype)
        scratch = np.empty(scratch_size, dtype=theta.dtype)
        if window > 0:
            (log_idx, log_sig, lnum, in_idx, in_sig, lin, stop, silent, t_end, pre, sel,
             mbs) = window_space(G, window, P, nall, x.shape[1] + 1, theta, batch_size > 1, ji)
            layers_chunk(lo, hi, G, window, x, rate, use_rate, pi, v0, theta, bias, ji, jf, wbuf, ibuf, idx32,
                         out_ptr, out_list, fan, fan_in, ext, back, wake, max_steps, bitserial, bits, thr, shift_den,
                         rec_out, rec_pos, rec_neg, rec_sops, rec_in_pos, rec_in_sops, raster, do_raster, counts,
                         values, qa_out, silent_out, dd, dperm, dgrid, dwq, dwork, sq, su, dsteps, v, cnt, val, acc,
                         inp, cvals, mark, lst, lst_n, full, out, dbase, dunit, drem, dmod, carry, sig, scratch,
                         np.empty(max(1, batch_size), dtype=theta.dtype), marks, incs, log_idx, log_sig, lnum,
                         in_idx, in_sig, lin, stop, silent, t_end, pre, sel, mbs)
        else:
            ev_idx = np.zeros(nall, dtype=np.int64)
            ev_sig = np.zeros(nall, dtype=theta.dtype)
            ev_in_idx = np.zeros(x.shape[1] + 1, dtype=np.int64)
            ev_in_sig = np.zeros(x.shape[1] + 1, dtype=theta.dtype)
            steps_chunk(lo, hi, G, x, rate, use_rate, pi, v0, theta, bias, ji, jf, wbuf, ibuf, idx32, out_ptr,
                        out_list, fan, fan_in, ext, back, wake, max_steps, bitserial, bits, R, D, thr, shift_den,
                        rec_out, rec_pos, rec_neg, rec_sops, rec_in_pos, rec_in_sops, raster, do_raster, counts, values,
                        qa_out, silent_out, dd, dperm, dgrid, dwq, dwork, sq, su, dsteps, v, cnt, val, acc, inp, cvals,
                        mark, lst, lst_n, full, out, dbase, dunit, drem, dmod, carry, ev_idx, ev_sig, ev_in_idx,
                        ev_in_sig, sig, scratch, marks, incs, np.zeros(G, dtype=np.int64), np.zeros(G, dtype=np.int64),
                        np.zeros(G, dtype=np.bool_))
