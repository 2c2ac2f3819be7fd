"""Each engine kernel equals its NumPy (or onnx.reference) expression."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from evsnn import models
from evsnn.engine import kernels as KN
from evsnn.engine import neurons as NR
from evsnn.ir import drive as DR


def _events(rng, n, frac, dtype, signed=True):
    idx = np.flatnonzero(rng.random(n) < frac).astype(np.int64)
    sig = (rng.choice([-1.0, 1.0], len(idx)) if signed else np.ones(len(idx))).astype(dtype)
    s = np.zeros(n, dtype=np.float64)
    s[idx] = sig
    return idx, sig, s


def dirty_marks(n):
    """The neuron updates' uint8 work space, full of stale marks: an update must clear what it reads."""
    return np.full(n + 8, 0xFF, np.uint8)


def dirty_incs(n, dtype):
    """The drive increments' work space, full of NaN: an increment must be written before it is added."""
    return np.full(n + 8, np.nan, dtype)


def _onnx_conv(x, w, stride, pads, groups):
    node = helper.make_node("Conv", ["X", "W"], ["Y"], strides=list(stride), pads=list(pads), group=groups)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, None),
                                            helper.make_tensor_value_info("W", TensorProto.DOUBLE, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, None)])
    return ReferenceEvaluator(helper.make_model(graph)).run(None, {"X": x, "W": w})[0]


def assert_listed(mark, lst, n, want):
    """A tracking scatter listed exactly the blocks ``want`` (indices), each once, and marked those only."""
    assert n == len(set(lst[:n].tolist())), "a block listed twice"
    assert set(lst[:n].tolist()) == set(np.asarray(want).tolist())
    assert set(np.flatnonzero(mark).tolist()) == set(lst[:n].tolist())


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0.0, 1.0), st.integers(0, 2**31),
       st.sampled_from([np.float32, np.float64]))
def test_csr_scatter_equals_matvec(n_pre, n_post, frac, seed, dtype):
    rng = np.random.default_rng(seed)
    W = rng.integers(-64, 65, (n_pre, n_post)) / 64 * (rng.random((n_pre, n_post)) < 0.5)
    m = sp.csr_matrix(W)
    idx, sig, s = _events(rng, n_pre, frac, dtype)
    acc = np.zeros(n_post, dtype)
    mark = np.zeros(n_post, np.uint8)
    lst = np.zeros(n_post, np.int64)
    n = KN.csr_scatter(idx, sig, len(idx), m.indptr.astype(np.int64), m.indices.astype(np.uint32),
                       m.data.astype(dtype), acc, True, mark, lst, 0, 1)
    np.testing.assert_array_equal(acc, s @ W)
    assert_listed(mark, lst, n, np.unique(m[idx].indices))  # touched = union of the rows' targets
    acc2 = np.zeros(n_post, dtype)
    KN.csr_dense(idx, sig, len(idx), W.astype(dtype).reshape(-1), n_pre, n_post, np.zeros(n_pre + 1, dtype), acc2,
                 np.empty(n_post, dtype))
    np.testing.assert_array_equal(acc2, s @ W)


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, 8)), draw(st.integers(kw, 8))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    return groups, cig, cog, kh, kw, h, w, stride, pads


@settings(max_examples=40, deadline=None)
@given(conv_cases(), st.floats(0.0, 1.0), st.integers(0, 2**31), st.sampled_from([np.float32, np.float64]))
def test_conv_scatter_equals_onnx_conv(case, frac, seed, dtype):
    groups, cig, cog, kh, kw, h, w, stride, pads = case
    rng = np.random.default_rng(seed)
    cin, cout = cig * groups, cog * groups
    wt = rng.integers(-64, 65, (cout, cig, kh, kw)) / 64  # ONNX layout
    idx_int, sig, s_int = _events(rng, h * w * cin, frac, dtype)  # internal (y, x, c) order
    x = s_int.reshape(h, w, cin).transpose(2, 0, 1)[None]  # → NCHW
    want = _onnx_conv(x, wt, stride, pads, groups)[0]  # (Cout, Ho, Wo)
    ho, wo = want.shape[1:]
    kern = np.ascontiguousarray(wt.transpose(2, 3, 1, 0)).astype(dtype)  # (kh, kw, cig, cout)
    acc = np.zeros(ho * wo * cout, dtype)
    mark = np.zeros(ho * wo, np.uint8)
    lst = np.zeros(ho * wo, np.int64)
    n = KN.conv_scatter(idx_int, sig, len(idx_int), kern.reshape(-1), kh, kw, cig, cout, groups, h, w, cin, ho, wo,
                        stride[0], stride[1], pads[0], pads[1], acc, True, mark, lst, 0)
    np.testing.assert_array_equal(acc.reshape(ho, wo, cout).transpose(2, 0, 1), want)
    # listed: every output position whose window holds an event (whatever the weights' sum)
    cover = _onnx_conv((x != 0).astype(float), np.ones((cout, cig, kh, kw)), stride, pads, groups)[0]
    assert_listed(mark, lst, n, np.flatnonzero(cover.sum(axis=0).reshape(-1)))
    wd = kern.reshape(kh * kw * cig, groups, cog).transpose(1, 0, 2).copy().reshape(-1)
    acc2 = np.zeros_like(acc)
    KN.conv_dense(idx_int, sig, len(idx_int), wd, kh, kw, cig, cout, groups, h, w, cin, ho, wo, stride[0],
                  stride[1], pads[0], pads[1], np.zeros(h * w * cin + 1, dtype), acc2,
                  np.full(ho * wo * (kh * kw * cig + cog), np.nan, dtype))  # garbage scratch must not leak
    np.testing.assert_array_equal(acc2, acc)


def _conv_scatter_per_event(idx, sig, w, kh, kw, cig, cout, groups, h, w_, cin, ho, wo, stride, pads, acc):
    """NumPy: one event at a time, in order, each adding s·w[ky, kx, ci, group's columns] at its outputs."""
    cog = cout // groups
    k = w.reshape(kh, kw, cig, cout)
    for j, s in zip(idx, sig):
        pos, c = divmod(int(j), cin)
        y, x = divmod(pos, w_)
        g, ci = divmod(c, cig)
        for ky in range(kh):
            for kx in range(kw):
                ny, nx = y + pads[0] - ky, x + pads[1] - kx
                if ny < 0 or nx < 0 or ny % stride[0] or nx % stride[1]:
                    continue
                oy, ox = ny // stride[0], nx // stride[1]
                if oy < ho and ox < wo:
                    ob = (oy * wo + ox) * cout + g * cog
                    acc[ob:ob + cog] += s * k[ky, kx, ci, g * cog:(g + 1) * cog]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([1, 1, 2]), st.integers(1, 11), st.integers(1, 9), st.integers(1, 3), st.integers(3, 6),
       st.integers(1, 2), st.floats(0.05, 1.0), st.integers(0, 2**31),
       st.sampled_from([(np.float64, np.float64), (np.float64, np.float32), (np.float32, np.float32)]))
def test_conv_scatter_adds_events_in_order_on_real_weights(groups, cig, cog, k, h, stride, frac, seed, dtypes):
    """He-normal (non-dyadic) weights, where the order of additions shows in the last bits: the scatter,
    which takes the events of one position together, adds them to every output in event order, exactly
    as one event at a time does (runs of 1 to 22 events: every unrolled path)."""
    dtype, wdtype = dtypes
    rng = np.random.default_rng(seed)
    cin, cout = cig * groups, cog * groups
    kern = (rng.standard_normal((k, k, cig, cout)) * np.sqrt(2 / (k * k * cig))).astype(wdtype)
    idx, sig, _ = _events(rng, h * h * cin, frac, dtype)
    ho = (h + 2 - k) // stride + 1
    acc = rng.standard_normal(ho * ho * cout).astype(dtype)  # a membrane input already holding currents
    want = acc.copy()
    _conv_scatter_per_event(idx, sig, kern.reshape(-1), k, k, cig, cout, groups, h, h, cin, ho, ho,
                            (stride, stride), (1, 1), want)
    mark = np.zeros(ho * ho, np.uint8)
    lst = np.zeros(ho * ho, np.int64)
    KN.conv_scatter(idx, sig, len(idx), kern.reshape(-1), k, k, cig, cout, groups, h, h, cin, ho, ho, stride,
                    stride, 1, 1, acc, True, mark, lst, 0)
    np.testing.assert_array_equal(acc, want)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(2, 7), st.integers(2, 7), st.sampled_from([(2, 2, 0), (3, 2, 1), (2, 1, 0)]),
       st.integers(0, 2**31))
def test_pool_and_max_scatter_equal_window_sums(c, h, w, geom, seed):
    k, s, p = geom
    rng = np.random.default_rng(seed)
    from evsnn.ir import ops
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    idx, sig, s_int = _events(rng, h * w * c, 0.4, np.float64)
    x = s_int.reshape(h, w, c).transpose(2, 0, 1)[None]
    pw = rng.integers(1, 9, (ho, wo)) / 8
    want = ops.windows(x, (k, k), (s, s), (p, p, p, p)).sum(axis=(-1, -2))[0] * pw
    acc = np.zeros(ho * wo * c)
    mark = np.zeros(ho * wo, np.uint8)
    lst = np.zeros(ho * wo, np.int64)
    n = KN.pool_scatter(idx, sig, len(idx), pw.reshape(-1), k, k, c, h, w, ho, wo, s, s, p, p, acc, True, mark,
                        lst, 0)
    np.testing.assert_array_equal(acc.reshape(ho, wo, c).transpose(2, 0, 1), want)
    # every window (pool output, gate) that holds an event is listed, once
    cnt = ops.windows(np.abs(x), (k, k), (s, s), (p, p, p, p)).sum(axis=(-1, -2))[0].sum(axis=0)
    assert_listed(mark, lst, n, np.flatnonzero(cnt.reshape(-1)))
    delta = np.zeros(h * w * c)
    mark[:] = 0
    n = KN.max_scatter(idx, sig, len(idx), k, k, c, h, w, ho, wo, s, s, p, p, delta, True, mark, lst, 0)
    assert_listed(mark, lst, n, np.flatnonzero(cnt.reshape(-1)))
    assert np.abs(delta).sum() <= np.abs(sig).sum()


def test_ident_scatter_maps_and_scales():
    rng = np.random.default_rng(0)
    idx, sig, s = _events(rng, 20, 0.5, np.float32)
    mp = rng.permutation(20).astype(np.int64)
    acc = np.zeros(20, np.float32)
    KN.ident_scatter(idx, sig, len(idx), mp, False, np.float32(0.5), acc, False, np.zeros(20, np.uint8),
                     np.zeros(20, np.int64), 0, 1)
    want = np.zeros(20)
    want[mp] = 0.5 * s
    np.testing.assert_array_equal(acc, want)
    mark, lst = np.zeros(10, np.uint8), np.zeros(10, np.int64)
    n = KN.ident_scatter(idx, sig, len(idx), mp, False, np.float32(0.5), acc, True, mark, lst, 0, 2)
    assert_listed(mark, lst, n, np.unique(mp[idx] // 2))  # blocks of 2 targets


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([np.float32, np.float64]))
def test_may_fire_cif_never_rules_out_a_spike(seed, dtype):
    """may_fire_cif (no division) is False only where the exact rule cif_sign gives 0: membranes at and
    one or two float steps around θ and 0, tiny and subnormal ones, thresholds from 2^-60 to 2^60."""
    rng = np.random.default_rng(seed)
    n = 400
    theta = (2.0 ** rng.integers(-60, 61, n) * rng.uniform(0.5, 2, n)).astype(dtype)
    base = theta * rng.choice([1.0, 0.0, 1 - 2.0 ** -45, 0.5], n).astype(dtype)
    base = np.where(rng.random(n) < 0.1, rng.choice([5e-324, -5e-324, 1e-310, 1.4e-45, 1.2e-38, 0.0], n), base).astype(dtype)
    steps = rng.integers(-2, 3, n)
    v = base.copy()
    for i in range(n):
        for _ in range(abs(int(steps[i]))):
            v[i] = np.nextafter(v[i], dtype(np.inf) if steps[i] > 0 else dtype(-np.inf))
    count = rng.integers(-1, 5, n)
    cap = int(rng.integers(0, 5))
    for he in (False, True):
        for i in range(n):
            if NR.cif_sign(v[i], theta[i], count[i], cap, he) != 0:
                assert NR.may_fire_cif(v[i], theta[i], count[i], cap), (v[i], theta[i], count[i], cap, he)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([np.float32, np.float64]))
def test_can_fire_cif_is_any_exact_spike_in_the_block(seed, dtype):
    """can_fire_cif(lo, hi) is True exactly when some neuron of lo..hi has cif_sign ≠ 0: blocks without
    a candidate, with one at the first, the last or any other neuron, at θ and 0 and beside them."""
    rng = np.random.default_rng(seed)
    n = 64
    theta = rng.uniform(0.5, 2, n).astype(dtype)
    v = (theta * rng.uniform(0.05, 0.9, n)).astype(dtype)  # below threshold, above 0: no spike
    count = rng.integers(0, 4, n)
    k = rng.integers(0, 3)  # 0, 1 or 2 neurons moved where they may fire
    for i in rng.choice(n, k, replace=False):
        v[i] = rng.choice([theta[i], 0.0, -theta[i], np.nextafter(theta[i], dtype(0)), 3 * theta[i]])
    cap = int(rng.integers(0, 5))
    for he in (False, True):
        for lo, hi in ((0, n), (0, 1), (n - 1, n), (5, 37), (10, 10)):
            want = any(NR.cif_sign(v[i], theta[i], count[i], cap, he) != 0 for i in range(lo, hi))
            assert NR.can_fire_cif(v, count, theta, lo, hi, cap, he) == want, (lo, hi, cap, he)


@pytest.mark.parametrize("drive", [False, True])
@pytest.mark.parametrize("size,lo", [(NR.MANY + 3, 0), (2 * NR.MANY + 5, NR.MANY + 2), (NR.MANY + 8, 0)])
def test_cif_event_list_stays_in_its_room(size, lo, drive):
    """Every neuron of a block lo..size fires, after size − (size − lo) = lo events already listed: the
    list fills the population's room exactly, and nothing is written past it (the marks are read eight at
    a time, the last word padded)."""
    n = size - lo
    theta = np.full(size, 0.75)
    v = np.full(size, 2.0)
    parent = np.full(size + 16, -7, np.int64)  # the population's room, then a sentinel
    parent_s = np.full(size + 16, -7.0)
    ev_i, ev_s = parent[:size], parent_s[:size]
    cnt = np.zeros(size, np.int64)
    if drive:  # update_cif_drive lists neurons 0..n of its arrays (a block's views)
        z = np.zeros(n)
        ne = NR.update_cif_drive(v[lo:], cnt[lo:], z.copy(), theta[lo:], z, z, np.zeros(n, np.int64),
                                 np.zeros(n, np.int64), 3, n, 5, False, ev_i, ev_s, lo, dirty_marks(n),
                                 dirty_incs(n, np.float64))
        want = list(range(n))
    else:
        ne = NR.update_cif(v, cnt, np.zeros(size), np.zeros(size), np.zeros(size), theta, lo, size,
                           False, 5, False, ev_i, ev_s, lo, dirty_marks(size))
        want = list(range(lo, size))
    assert ne == size
    assert list(ev_i[lo:]) == want
    assert (parent[size:] == -7).all() and (parent_s[size:] == -7).all()
    assert (ev_s[lo:] == 1).all()
    np.testing.assert_array_equal(v[lo:], 1.25)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from(["subtract", "zero"]), st.sampled_from([np.float32, np.float64]),
       st.booleans())
def test_neuron_kernels_equal_models(seed, reset, dtype, half_even):
    """Kernels == evsnn.models, floor and half-even rounding (values on a k/8 grid: many v = θ and v = 0)."""
    rng = np.random.default_rng(seed)
    # update_cif's one-neuron-at-a-time and marking passes (the marks read eight at a time: any tail)
    n = 17 if seed % 2 else NR.MANY + 23 + seed % 16
    theta = rng.integers(1, 5, n) / 2.0
    v = rng.integers(-16, 17, n) / 8.0
    cur = rng.integers(-24, 25, n) / 8.0
    z = np.zeros(n, dtype)
    ev_i, ev_s = np.zeros(n, np.int64), np.zeros(n, dtype)
    # IF
    vv, cc = v.astype(dtype), np.zeros(n, np.int64)
    ne = NR.update_if(vv, cc, cur.astype(dtype), z, z, theta.astype(dtype), 0, n, False, False,
                      np.ones(1, dtype), reset == "zero", ev_i, ev_s, 0)
    wv, ws = models.if_step(v, cur, theta, reset)
    np.testing.assert_array_equal(vv, wv)
    assert list(ev_i[:ne]) == list(np.flatnonzero(ws))
    # CIF
    count = rng.integers(-1, 4, n)
    cap = int(rng.integers(0, 5))
    vv, cc = v.astype(dtype), count.copy()
    ne = NR.update_cif(vv, cc, cur.astype(dtype), z, z, theta.astype(dtype), 0, n, False, cap,
                       half_even, ev_i, ev_s, 0, dirty_marks(n))
    wv, wc, ws = models.cif_step(v, count, cur, theta, cap, half_even)
    np.testing.assert_array_equal(vv, wv)
    np.testing.assert_array_equal(cc, wc)
    assert list(ev_i[:ne]) == list(np.flatnonzero(ws))
    np.testing.assert_array_equal(ev_s[:ne], ws[ws != 0])
    # the same on the neurons lo..n only (a block of a population): the others untouched
    lo = int(rng.integers(0, 9))
    vv, cc, ev_i2 = v.astype(dtype), count.copy(), np.zeros(n, np.int64)
    ne = NR.update_cif(vv, cc, cur.astype(dtype), z, z, theta.astype(dtype), lo, n, False, cap,
                       half_even, ev_i2, ev_s, 0, dirty_marks(n))
    np.testing.assert_array_equal(vv[lo:], wv[lo:])
    np.testing.assert_array_equal(vv[:lo], v[:lo].astype(dtype))
    np.testing.assert_array_equal(cc[lo:], wc[lo:])
    assert list(ev_i2[:ne]) == list(lo + np.flatnonzero(ws[lo:]))
    # can_fire_cif: a neuron can fire iff a step with no input would make it spike
    v2 = (v + cur).astype(dtype)
    _, _, s0 = models.cif_step(v + cur, count, np.zeros(n), theta, cap, half_even)
    for i in range(n):
        assert NR.can_fire_cif(v2, count, theta.astype(dtype), i, i + 1, cap, half_even) == (s0[i] != 0)
    # bit-serial emit (no input this step); the last bit is where half-even differs
    K = int(rng.integers(1, 4))
    k = int(rng.integers(0, K))
    vv = v.astype(dtype)
    ne = NR.update_bit(vv, np.zeros(n, np.int64), np.zeros(n), z.copy(), z, z, theta.astype(dtype), 0, n, False,
                       k, K, half_even, ev_i, ev_s, 0)
    wv, ws = models.bitserial_emit(v, theta, k, K, half_even)
    np.testing.assert_array_equal(vv, wv)
    assert list(ev_i[:ne]) == list(np.flatnonzero(ws))


@pytest.mark.parametrize("L", [1, 2, 3, 4, 7])
def test_half_even_cif_and_bitserial_settle_on_the_even_level(L):
    """One neuron, θ = 1, v0 = ½, total input X on every quarter in [−2, L + 2] (ties at X = k + ½):
    the CIF rule (X at step 0, wake cap min(t+1, L), then sleep) and the bit-serial rule give clip(rint(X), 0, L); the
    floor rules give clip(floor(X + ½), 0, L)."""
    X = np.arange(-8, 4 * L + 9) / 4.0
    for half_even in (False, True):
        want = np.clip(np.rint(X) if half_even else np.floor(X + 0.5), 0, L)
        v, count = np.full(len(X), 0.5), np.zeros(len(X), np.int64)
        for t in range(4 * L + 8):
            cur = X if t == 0 else np.zeros(len(X))  # all at step 0: exact for every L
            v, count, _ = models.cif_step(v, count, cur, np.ones(len(X)), min(t + 1, L) if t < L else L,
                                          half_even)
        np.testing.assert_array_equal(count, want, err_msg=f"cif half_even={half_even}")
        if (L + 1) & L == 0:  # bit-serial: L = 2^K − 1
            K = (L + 1).bit_length() - 1
            v, val = X + 0.5, np.zeros(len(X))
            for k in range(K):
                v, s = models.bitserial_emit(v, np.ones(len(X)), k, K, half_even)
                val += s * 2.0 ** (K - 1 - k)
            np.testing.assert_array_equal(val, want, err_msg=f"bitserial half_even={half_even}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gate_kernel_equals_maxpool_gate(dtype):
    rng = np.random.default_rng(3)
    from evsnn.ir import ops
    c, h, w = 2, 4, 4
    cvals = rng.integers(-2, 5, h * w * c).astype(dtype)
    cnt = rng.integers(0, 4, 4 * c)
    x = cvals.astype(np.float64).reshape(h, w, c).transpose(2, 0, 1)[None]
    wmax = ops.maxpool2d(x, (2, 2), (2, 2))[0].transpose(1, 2, 0).reshape(-1)
    want_c, want_s = models.maxpool_gate(wmax, cnt)
    cc = cnt.copy()
    ev_i, ev_s = np.zeros(8, np.int64), np.zeros(8, dtype)
    ne, _ = NR.update_gate(cvals, cc, 0, 4, 2, 2, c, h, w, 2, 2, 2, 0, 0, ev_i, ev_s, 0)
    np.testing.assert_array_equal(cc, want_c)
    assert list(ev_i[:ne]) == list(np.flatnonzero(want_s))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 12), st.integers(1, 25), st.integers(1, 9),
       st.sampled_from([np.float32, np.float64]), st.booleans(), st.booleans())
def test_update_cif_drive_equals_drive_add_then_update_cif(seed, C, npos, steps, dtype, half_even, periodic):
    """The fused delivery step: the same membranes, counts, carries and spikes, bit for bit, as drive_add
    followed by update_cif, step after step, on real (non-dyadic) drives, currents and thresholds; with one
    drive state per neuron, and with one per channel of a drive that repeats at every position (per = C)."""
    rng = np.random.default_rng(seed)
    size = C * npos
    per = C if periodic else size
    theta = rng.uniform(0.1, 2.0, size).astype(dtype)
    q, unit = DR.grid(rng.standard_normal(per) * 3, 15, 0.5)
    base, un = np.zeros(per, dtype), np.zeros(per, dtype)
    rem, mod = np.zeros(per, np.int64), np.zeros(per, np.int64)
    NR.drive_init(q, unit, steps, base, un, rem, mod)
    v, cnt = (rng.standard_normal(size) * theta).astype(dtype), rng.integers(-2, 3, size)
    want = [v.copy(), cnt.copy(), mod.copy()]
    got = [v.copy(), cnt.copy(), mod.copy()]
    z = np.zeros(size, dtype)
    cap = int(rng.integers(1, 8))
    for t in range(steps):
        cur = (rng.standard_normal(size) * theta).astype(dtype)
        ei, es = np.zeros(size, np.int64), np.zeros(size, dtype)
        acc = cur.copy()
        NR.drive_add(acc, base, un, rem, want[2], steps, per, dirty_incs(per, dtype))
        ne = NR.update_cif(want[0], want[1], acc, z, z, theta, 0, size, False, cap, half_even,
                           ei, es, 0, dirty_marks(size))
        fi, fs = np.zeros(size, np.int64), np.zeros(size, dtype)
        acc2 = cur.copy()
        nf = NR.update_cif_drive(got[0], got[1], acc2, theta, base, un, rem, got[2], steps, per,
                                 cap, half_even, fi, fs, 0, dirty_marks(size), dirty_incs(per, dtype))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(acc2, acc)
        assert nf == ne and list(fi[:nf]) == list(ei[:ne]) and list(fs[:nf]) == list(es[:ne])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 12), st.integers(2, 25), st.integers(1, 40),
       st.sampled_from([np.float32, np.float64]))
def test_periodic_drive_equals_the_drive_tiled_per_neuron(seed, C, npos, steps, dtype):
    """A drive that repeats at every position, kept once per channel (per = C), delivers step after step
    the same increments, bit for bit, as the same drive tiled to one state per neuron; its carries are the
    first position's."""
    rng = np.random.default_rng(seed)
    size = C * npos
    q, unit = DR.grid(rng.standard_normal(C) * 10 ** rng.uniform(-3, 2, C), 255, 0.5)
    states = []
    for qq, uu in ((q, unit), (np.tile(q, npos), np.tile(unit, npos))):
        st_ = [np.zeros(len(qq), dtype), np.zeros(len(qq), dtype), np.zeros(len(qq), np.int64),
               np.zeros(len(qq), np.int64)]
        NR.drive_init(qq, uu, steps, *st_)
        states.append(st_)
    for t in range(steps):
        a_per, a_all = np.zeros(size, dtype), np.zeros(size, dtype)
        NR.drive_add(a_per, *states[0], steps, C, dirty_incs(C, dtype))
        NR.drive_add(a_all, *states[1], steps, size, dirty_incs(size, dtype))
        np.testing.assert_array_equal(a_per, a_all)
        np.testing.assert_array_equal(states[0][3], states[1][3][:C])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 300))
def test_drive_init_divides_exactly_near_2_53_and_at_the_int64_ends(seed, steps):
    """drive_init's floor division (a float quotient checked by its remainder) equals NumPy's on grids
    where the quotient lies within rounding of an integer: multiples of ``steps`` ± 1 up to 2^53 and
    beyond, and the int64 ends (a NaN drive's grid)."""
    rng = np.random.default_rng(seed)
    k = rng.integers(-(2**53) // steps, 2**53 // steps, 64, dtype=np.int64)
    q = np.concatenate([k * steps + rng.integers(-1, 2, 64), rng.integers(-(2**62), 2**62, 16, dtype=np.int64),
                        np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).min + 1, np.iinfo(np.int64).max,
                                  2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 0, -1])]).astype(np.int64)
    unit = np.full(len(q), 2.0 ** -20)
    base, un = np.zeros(len(q)), np.zeros(len(q))
    rem, mod = np.zeros(len(q), np.int64), np.ones(len(q), np.int64)
    NR.drive_init(q, unit, steps, base, un, rem, mod)
    qt = np.floor_divide(q, steps)
    np.testing.assert_array_equal(rem, q - qt * steps)
    np.testing.assert_array_equal(base, qt.astype(np.float64) * unit)
    assert not mod.any()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 9), st.sampled_from([(2, 2, 0), (2, 1, 0), (3, 2, 1), (2, 2, 1)]),
       st.integers(2, 7), st.sampled_from([np.float32, np.float64]))
def test_update_gate_equals_maxpool_gate_on_any_window(seed, c, geom, h, dtype):
    """Max-pool gates, whole 2×2 windows (one branch-free pass over four rows) and clipped or 3×3 ones,
    on real-valued inputs (ties, NaN-free) against ops.maxpool2d and models.maxpool_gate: counts, the
    spikes in order, and whether a gate that spiked is still off by ≥ 1."""
    from evsnn.ir import ops
    k, s, pd = geom
    rng = np.random.default_rng(seed)
    ho = (h + 2 * pd - k) // s + 1
    cvals = (rng.integers(-6, 10, h * h * c) / rng.choice([1.0, 2.0, 3.0])).astype(dtype)
    cnt = rng.integers(0, 5, ho * ho * c)
    x = cvals.astype(np.float64).reshape(h, h, c).transpose(2, 0, 1)[None]
    wmax = ops.maxpool2d(x, (k, k), (s, s), (pd, pd, pd, pd))[0].transpose(1, 2, 0).reshape(-1)
    want_c, want_s = models.maxpool_gate(wmax, cnt)
    p0 = int(rng.integers(0, ho * ho))
    p1 = int(rng.integers(p0, ho * ho + 1))
    sl = slice(p0 * c, p1 * c)
    cc = cnt.copy()
    ev_i, ev_s = np.zeros(ho * ho * c, np.int64), np.zeros(ho * ho * c, dtype)
    ne, still = NR.update_gate(cvals, cc, p0, p1, k, k, c, h, h, ho, s, s, pd, pd, ev_i,
                               ev_s, 0)
    np.testing.assert_array_equal(cc[sl], want_c[sl])
    np.testing.assert_array_equal(cc[:p0 * c], cnt[:p0 * c])
    assert list(ev_i[:ne]) == list(p0 * c + np.flatnonzero(want_s[sl]))
    np.testing.assert_array_equal(ev_s[:ne], want_s[sl][want_s[sl] != 0])
    left = wmax[sl] - want_c[sl]
    assert still == bool(((want_s[sl] != 0) & (np.abs(left) >= 1)).any())
