"""The Numba event engine equals the NumPy reference, record for record (design.md, "Event engine").

Random networks come from tests/strategies.py (dyadic weights and inputs, so float32
sums are exact). Every field of SimResult is compared: readout at every step, counts,
values, spikes ±, SOPs, input MACs, raster, sleep steps, quiescence.
"""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from evsnn import engine
from evsnn.convert import convert
from evsnn.errors import ConversionError
from evsnn.ir import ann as A
from evsnn.ir import snn as S
from evsnn.reference import simulate as ref_simulate
from strategies import graphs, inputs

FIELDS = ("counts", "values", "spikes_pos", "spikes_neg", "sops", "raster")


def assert_same(ref, got):
    assert ref.readout.shape == got.readout.shape
    np.testing.assert_array_equal(got.readout, ref.readout, err_msg="readout")
    assert ref.wake == got.wake
    for f in FIELDS:
        a, b = getattr(ref, f), getattr(got, f)
        assert a.keys() == b.keys(), f
        for k in a:
            assert a[k].shape == b[k].shape, (f, k)
            assert a[k].dtype == b[k].dtype, (f, k)
            np.testing.assert_array_equal(b[k], a[k], err_msg=f"{f}[{k}]")
    for f in ("input_macs", "sleep_steps", "quiescent"):
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f)


def _weights(pr):
    if isinstance(pr, S.DenseProjection):
        return pr.data
    if isinstance(pr, S.ConvProjection):
        return pr.kernel
    if isinstance(pr, S.PoolProjection):
        return pr.weight
    if isinstance(pr, S.IdentityProjection):
        return np.array([pr.weight])
    return np.zeros(1)


def dyadic(net) -> bool:
    """All weights and biases exact in float32 with ≤ 20 fractional bits (sums then exact in any order).

    Average pools with a divisor of 3, 6 or 9 (3×3 windows, count_include_pad False) break this; such
    networks are skipped: the reference multiplies the window sum by 1/9, the engine each spike.
    """
    arrs = [_weights(pr) for pr in net.projections] + [p.bias for p in net.populations] + [net.readout.bias]
    for a in arrs:
        a = np.asarray(a, dtype=np.float64)
        if not (np.array_equal(a.astype(np.float32), a) and np.array_equal(np.round(a * 2**20), a * 2**20)):
            return False
    return True


PRESETS = ("if", "deng-gu", "qcfs", "casc", "bitserial")


@st.composite
def cases(draw, preset=None):
    preset = preset or draw(st.sampled_from(PRESETS))
    levels = (1, 3, 7) if preset == "bitserial" else (1, 2, 4, 8)
    graph = draw(graphs(levels=levels, max_depth=4))
    x = draw(inputs(graph, max_samples=3))
    mode = "analog" if preset == "bitserial" else draw(st.sampled_from(["analog", "analog", "rate", "events"]))
    if mode == "rate":
        x = np.abs(x)
    net = convert(graph, preset, input_mode=mode)
    if mode == "events":  # binned address events: integer counts per bin, up to the wake length
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        # deng-gu's shift θ/(2·T_w) stays dyadic only for T_w a power of two: wake is drawn from 1, 4, 8
        bins = draw(st.integers(1, max(1, net.default_wake if preset == "casc" else 4)))
        x = rng.integers(0, 3, size=(len(x), bins) + tuple(graph.input.shape)).astype(float)
    kw = {}
    if preset == "casc":
        kw["sleep"] = draw(st.sampled_from(["auto", 0, 3, 12]))
        if kw["sleep"] == 0:
            kw["allow_inexact"] = True  # casc with no sleep does not settle: allowed for ablations only
        if kw["sleep"] == "auto":
            kw["max_sleep"] = draw(st.sampled_from([None, 2]))
    elif preset != "bitserial":
        kw["wake"] = draw(st.sampled_from([w for w in (1, 4, 8) if mode != "events" or w >= x.shape[1]]))
        kw["sleep"] = draw(st.sampled_from([0, 2, "auto"]))
    kw["record"] = ("counts", "raster")
    kw["seed"] = draw(st.integers(0, 3))
    return net, x, kw


def _check(net, x, kw, data):
    assume(dyadic(net))
    ref = ref_simulate(net, x, **kw)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    threads = data.draw(st.sampled_from([1, 2]), label="threads")
    path = data.draw(st.sampled_from(["auto", "event", "dense"]), label="path")
    group = data.draw(st.sampled_from([None, 1, 2, 3]), label="group")  # small nets: None is 1
    window = data.draw(st.sampled_from([None, 0, 1, 2, 5]), label="window")  # 0: step-major
    got = engine.simulate(net, x, dtype=dtype, threads=threads, path=path, group=group, window=window, **kw)
    assert_same(ref, got)


@given(cases(), st.data())
def test_engine_equals_reference(case, data):
    net, x, kw = case
    _check(net, x, kw, data)


@pytest.mark.parametrize("preset", PRESETS)
@settings(max_examples=8)
@given(data=st.data())
def test_engine_equals_reference_per_preset(preset, data):
    net, x, kw = data.draw(cases(preset))
    _check(net, x, kw, data)


def _with_delays(net, rng, recurrent: bool):
    """Copy of ``net`` with random delays ≥ 1 on some population→population edges, and a recurrent edge."""
    net = dataclasses.replace(net, projections=[dataclasses.replace(pr) for pr in net.projections])
    for pr in net.projections:
        if pr.pre != S.INPUT and rng.random() < 0.5:
            pr.delay = int(rng.integers(1, 4))
    if recurrent:
        p = net.populations[int(rng.integers(len(net.populations)))]
        if p.model != "maxpool":
            n = p.size
            dense = rng.integers(-8, 9, size=(n, n)) / 64.0 * (rng.random((n, n)) < 0.3)
            m = sp.csr_matrix(dense)
            net.projections.append(S.DenseProjection(p.name, p.name, p.shape, p.shape, delay=int(rng.integers(1, 3)),
                                                     indptr=m.indptr.astype(np.int64),
                                                     indices=m.indices.astype(np.int64), data=m.data))
    return net


@settings(max_examples=15)
@given(st.sampled_from(["casc", "if", "qcfs", "deng-gu"]), graphs(levels=(2, 4), max_depth=3), st.integers(0, 2**31),
       st.data())
def test_delays_and_recurrence_equal_reference(preset, graph, seed, data):
    rng = np.random.default_rng(seed)
    x = data.draw(inputs(graph, max_samples=2))
    net = _with_delays(convert(graph, preset), rng, recurrent=bool(rng.integers(2)))
    kw = dict(sleep="auto", max_sleep=40) if preset == "casc" else dict(wake=8, sleep=data.draw(
        st.sampled_from([0, 5, "auto"])), max_sleep=20)
    kw["record"] = ("counts", "raster")
    _check(net, x, kw, data)


def _small_net(preset="casc"):
    rng = np.random.default_rng(1)
    g = A.AnnGraph([
        A.Input("x", (), (2, 6, 6)),
        A.Conv("c1", ("x",), rng.integers(-32, 33, (4, 2, 3, 3)) / 64, rng.integers(-8, 9, 4) / 64, (1, 1),
               (1, 1, 1, 1), 1),
        A.QuantAct("a1", ("c1",), 4, 1.0, 0.0),
        A.MaxPool("m1", ("a1",), (2, 2), (2, 2)),
        A.Flatten("f", ("m1",)),
        A.Dense("d1", ("f",), rng.integers(-32, 33, (8, 36)) / 64, rng.integers(-8, 9, 8) / 64),
        A.QuantAct("a2", ("d1",), 4, 1.0, 0.0),
        A.Dense("out", ("a2",), rng.integers(-32, 33, (3, 8)) / 64, rng.integers(-8, 9, 3) / 64),
    ], "out", "small")
    x = rng.integers(-256, 257, (5, 2, 6, 6)) / 256
    return convert(g, preset), x


def test_delay_zero_cycle_is_rejected():
    net, x = _small_net()
    p = net.populations[-1]
    m = sp.csr_matrix(np.eye(p.size) / 2)
    net.projections.append(S.DenseProjection(p.name, p.name, p.shape, p.shape, delay=0, indptr=m.indptr,
                                             indices=m.indices, data=m.data))
    with pytest.raises(ConversionError, match="delay"):
        engine.simulate(net, x, sleep="auto")


def test_results_do_not_depend_on_thread_count_path_or_group():
    net, x = _small_net()
    x = np.concatenate([x * s for s in (0.3, 1, 3)])  # 15 samples: groups of 4 leave partial groups
    runs = [engine.simulate(net, x, sleep="auto", threads=th, path=pa, group=gr, record=("counts", "raster"))
            for th in (1, 2, 4) for pa in ("event", "dense", "auto") for gr in (1, 4)]
    assert len(set(runs[0].sleep_steps)) > 1  # samples of one group go quiet at different steps
    for r in runs[1:]:
        assert_same(runs[0], r)
    assert_same(ref_simulate(net, x, sleep="auto", record=("counts", "raster")), runs[0])


def _real_net(preset, scales=(0.7, 1.3, 0.9, 1.9, 1.0)):
    """A conv → max-pool → conv with a residual add → dense net with He-normal float32 weights (not dyadic:
    the order of additions shows in the last bits of membranes and readout); ``scales``: its activations'
    (powers of two keep the converted kernels float32 numbers)."""
    rng = np.random.default_rng(7)
    s1, s2, s2b, s3, s4 = scales

    def he(*shape):
        return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32).astype(float)

    g = A.AnnGraph([
        A.Input("x", (), (2, 8, 8)),
        A.Conv("c1", ("x",), he(6, 2, 3, 3), he(6, 1)[:, 0] * 0.1, (1, 1), (1, 1, 1, 1), 1),
        A.QuantAct("a1", ("c1",), 7, s1, 0.0),
        A.MaxPool("m1", ("a1",), (2, 2), (2, 2)),
        A.Conv("c2", ("m1",), he(6, 6, 3, 3), he(6, 1)[:, 0] * 0.1, (1, 1), (1, 1, 1, 1), 1),
        A.QuantAct("a2", ("c2",), 7, s2, 0.0),
        A.Conv("c3", ("m1",), he(6, 6, 1, 1), he(6, 1)[:, 0] * 0.1, (1, 1), (0, 0, 0, 0), 1),
        A.QuantAct("a2b", ("c3",), 7, s2b, 0.0),
        A.Add("r", ("a2", "m1", "a2b")),  # three sources into one accumulator: their order shows
        A.QuantAct("a3", ("r",), 7, s3, 0.0),
        A.Flatten("f", ("a3",)),
        A.Dense("d1", ("f",), he(10, 96), he(10, 1)[:, 0] * 0.1),
        A.QuantAct("a4", ("d1",), 7, s4, 0.0),
        A.Dense("out", ("a4",), he(3, 10), he(3, 1)[:, 0]),
    ], "out", "real")
    x = np.abs(rng.standard_normal((7, 2, 8, 8)))
    return convert(g, preset, input_mode="rate" if preset == "if" else "analog"), x


@pytest.mark.parametrize("preset,kw", [("casc", dict(sleep="auto")), ("if", dict(wake=12, sleep="auto")),
                                       ("bitserial", {})])
def test_layer_major_equals_step_major_bit_for_bit_on_real_weights(preset, kw):
    """Layer-major windows (evsnn.engine.layers) replay step-major's order of additions exactly: on
    non-dyadic weights every record, membrane-sensitive readout included, is bit-identical whatever the
    window, the group and the path (each path on its own)."""
    net, x = _real_net(preset)
    prep = engine.prepare(net)
    assert prep.packed.layered
    for path in ("event", "auto", "dense"):
        step = engine.simulate(prep, x, path=path, window=0, group=1, record=("counts", "raster"), **kw)
        if preset != "bitserial":
            assert step.sleep_steps.min() < step.sleep_steps.max()  # samples go quiet at different steps
        for window, group in ((1, 1), (3, 1), (5, 2), (None, None), (None, 3)):
            got = engine.simulate(prep, x, path=path, window=window, group=group, threads=2,
                                  record=("counts", "raster"), **kw)
            assert_same(step, got)


def test_only_feed_forward_networks_without_delays_are_layered():
    net, x = _small_net()
    assert engine.prepare(net).packed.layered
    rng = np.random.default_rng(3)
    delayed = _with_delays(net, rng, recurrent=False)
    assert any(pr.delay for pr in delayed.projections)
    assert not engine.prepare(delayed).packed.layered
    a, b = net.populations[0], net.populations[1]
    m = sp.csr_matrix(np.ones((b.size, a.size)) / 64)  # one row per pre neuron (b), to an earlier population
    back = dataclasses.replace(net, projections=list(net.projections) + [S.DenseProjection(
        b.name, a.name, b.shape, a.shape, delay=1, indptr=m.indptr.astype(np.int64),
        indices=m.indices.astype(np.int64), data=m.data)])
    assert not engine.prepare(back).packed.layered


def test_fixed_sleep_after_quiet_is_padded_like_the_reference():
    net, x = _small_net()
    ref = ref_simulate(net, x, sleep=60)
    got = engine.simulate(net, x, sleep=60)
    assert_same(ref, got)
    assert got.quiescent.all()


def test_options_are_checked():
    net, x = _small_net()
    with pytest.raises(ConversionError):
        engine.simulate(net, x, path="fast")
    with pytest.raises(ConversionError):
        engine.simulate(net, x, dtype=np.int32)
    with pytest.raises(ConversionError, match="group"):
        engine.simulate(net, x, group=0)
    with pytest.raises(ConversionError, match="window"):
        engine.simulate(net, x, window=-1)
    with pytest.raises(ConversionError):
        engine.simulate(net, x, wake=3)  # casc needs wake = L
    with pytest.raises(ValueError):
        engine.simulate(net, x[:, :1])


def test_engine_does_not_import_the_reference():
    code = "import sys, evsnn.engine; print('evsnn.reference' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_second_process_loads_compiled_kernels_from_cache():
    net, x = _small_net()
    engine.simulate(net, x, sleep="auto")  # make sure the cache is written
    engine.simulate(net, x, sleep="auto", dtype=np.float64)
    code = (
        "import numpy as np, sys; sys.path.insert(0, %r)\n"
        "from test_engine import _small_net\n"
        "from evsnn import engine\n"
        "from evsnn.engine import batch\n"
        "net, x = _small_net(); engine.simulate(net, x, sleep='auto')\n"
        "print(sum(batch.run_batch.stats.cache_misses.values()), sum(batch.run_batch.stats.cache_hits.values()))\n"
    ) % os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    misses, hits = map(int, out.stdout.split()[-2:])
    assert misses == 0 and hits >= 1, out.stdout


# ---------------------------------------------------------------------------------------------- prepare()

@settings(max_examples=30)
@given(cases(), st.data())
def test_prepared_equals_network_call(case, data):
    """simulate(prepare(net), ...) gives exactly what simulate(net, ...) gives (and the reference)."""
    net, x, kw = case
    assume(dyadic(net))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    threads = data.draw(st.sampled_from([1, 2]), label="threads")
    path = data.draw(st.sampled_from(["auto", "event", "dense"]), label="path")
    prep = engine.prepare(net, dtype)
    got = engine.simulate(prep, x, threads=threads, path=path, **kw)
    assert_same(engine.simulate(net, x, dtype=dtype, threads=threads, path=path, **kw), got)
    assert_same(ref_simulate(net, x, **kw), got)


@settings(max_examples=15)
@given(cases(), st.data())
def test_prepared_reused_across_calls_equals_fresh_calls(case, data):
    """One Prepared, two calls with different inputs (and seeds): each equals a fresh simulate(net)."""
    net, x, kw = case
    assume(dyadic(net))
    x2 = data.draw(inputs_like(x), label="x2")
    prep = engine.prepare(net)
    kw2 = dict(kw, seed=kw["seed"] + 1)
    a = engine.simulate(prep, x, **kw)
    b = engine.simulate(prep, x2, **kw2)
    a_again = engine.simulate(prep, x, **kw)
    assert_same(engine.simulate(net, x, **kw), a)
    assert_same(engine.simulate(net, x2, **kw2), b)
    assert_same(a, a_again)


@st.composite
def inputs_like(draw, x):
    """Another input of x's shape and kind: dyadic values (or event counts) redrawn, sign kept."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if np.array_equal(x, np.round(x)) and (x >= 0).all():  # event counts (or integer-valued input)
        return rng.integers(0, 3, size=x.shape).astype(float)
    y = rng.integers(-256, 257, size=x.shape) / 256.0
    return np.abs(y) if (x >= 0).all() else y


def test_prepared_dtype_and_reuse_checks():
    net, x = _small_net()
    prep = engine.prepare(net, np.float64)
    assert prep.dtype == np.float64
    assert_same(engine.simulate(net, x, sleep="auto", dtype=np.float64),
                engine.simulate(prep, x, sleep="auto", dtype=np.float64))
    with pytest.raises(ConversionError, match="dtype"):
        engine.simulate(prep, x, sleep="auto", dtype=np.float32)
    with pytest.raises(ConversionError):
        engine.prepare(net, np.int32)
    r1 = engine.simulate(prep, x[:2], sleep="auto")
    r2 = engine.simulate(prep, x[2:], sleep="auto")
    full = engine.simulate(net, x, sleep="auto", dtype=np.float64)
    np.testing.assert_array_equal(np.concatenate([r1.readout, r2.readout]), full.readout)


@pytest.mark.parametrize("preset", ["casc", "if", "qcfs"])
@pytest.mark.parametrize("kernel,stride,pads", [((3, 3), (1, 1), (1, 1, 1, 1)), ((3, 3), (2, 2), (1, 0, 1, 0)),
                                                ((2, 2), (1, 1), (0, 0, 1, 1))])
def test_overlapping_padded_maxpool_gates_equal_reference(preset, kernel, stride, pads):
    """Gates are updated only where their window received an event: overlapping and padded windows."""
    rng = np.random.default_rng(7)
    g = A.AnnGraph([
        A.Input("x", (), (2, 7, 7)),
        A.Conv("c1", ("x",), rng.integers(-32, 33, (4, 2, 3, 3)) / 64, rng.integers(-8, 9, 4) / 64, (1, 1),
               (1, 1, 1, 1), 1),
        A.QuantAct("a1", ("c1",), 4, 1.0, 0.0),
        A.MaxPool("m1", ("a1",), kernel, stride, pads),
        A.Conv("c2", ("m1",), rng.integers(-32, 33, (3, 4, 2, 2)) / 64, rng.integers(-8, 9, 3) / 64, (1, 1),
               (0, 0, 0, 0), 1),
        A.QuantAct("a2", ("c2",), 4, 1.0, 0.0),
        A.Flatten("f", ("a2",)),
    ], "f", "pool")
    g = A.AnnGraph(g.nodes + [A.Dense("out", ("f",), rng.integers(-32, 33, (3, _flat_size(g))) / 64,
                                      np.zeros(3))], "out", "pool")
    x = rng.integers(-256, 257, (4, 2, 7, 7)) / 256
    net = convert(g, preset)
    kw = dict(sleep="auto", record=("counts", "raster")) if preset == "casc" else dict(
        wake=8, sleep=4, record=("counts", "raster"))
    ref = ref_simulate(net, x, **kw)
    for path in ("event", "auto"):
        assert_same(ref, engine.simulate(net, x, path=path, **kw))


def _flat_size(g):
    from evsnn.reference import ann_forward
    return int(np.prod(ann_forward(g, np.zeros((1, 2, 7, 7))).shape[1:]))


def test_stale_numba_cache_is_removed_when_engine_sources_change(tmp_path):
    """Numba keys caches on one file's timestamp; the engine drops its cache when any engine source changes."""
    from evsnn.engine import _cache
    folder = tmp_path / "engine"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "kernels.py").write_text("x = 1\n")
    stale = folder / "__pycache__" / "batch.run_batch-1.py311.nbi"
    stale.write_bytes(b"old")
    assert _cache.invalidate_stale_cache(str(folder))  # no stamp yet: caches of unknown origin go
    assert not stale.exists()
    stale.write_bytes(b"fresh")
    assert not _cache.invalidate_stale_cache(str(folder))  # same sources: cache kept
    assert stale.exists()
    (folder / "kernels.py").write_text("x = 2\n")
    assert _cache.invalidate_stale_cache(str(folder))  # a kernel changed: cache dropped
    assert not stale.exists()


def test_batched_dense_steps_equal_one_step_at_a_time():
    """layers.plan_dense runs a window's dense steps of a projection in one gemm (as many steps as its
    buffer holds, then the next batch); each step's output equals kernels.conv_dense on that step alone."""
    from evsnn.engine import kernels as KN
    from evsnn.engine import layers
    from evsnn.engine.pack import (
        CV_CIG, CV_CIN, CV_COUT, CV_GROUPS, CV_H, CV_HO, CV_KH, CV_KW, CV_PL, CV_PT, CV_SH, CV_SW, CV_W, CV_WDOFF,
        CV_WO, J_PRE, PI_ACCOFF, PI_ACCSZ, PI_OFF, PI_SIZE,
    )
    net, _ = _real_net("casc")
    pk = engine.prepare(net).packed
    q = pk.names.index("a2")
    m = layers.batched_projection(q, pk.ji)
    j = pk.ji[m]
    assert m >= 0 and pk.ji[m, J_PRE] == pk.names.index("m1")
    P, W, nall = len(pk.names), 5, len(pk.theta)
    p, off, sz = j[J_PRE], pk.pi[j[J_PRE], PI_OFF], pk.pi[j[J_PRE], PI_SIZE]
    rng = np.random.default_rng(0)
    log_idx = np.zeros((W, nall), dtype=np.int64)
    log_sig = np.zeros((W, nall))
    lnum = np.zeros((W, P + 1), dtype=np.int64)
    for k in range(W):
        if k == 2:
            continue  # a step without events is not a dense step
        ev = np.sort(rng.choice(sz, size=int(rng.integers(1, sz)), replace=False))
        log_idx[k, off:off + len(ev)], log_sig[k, off:off + len(ev)] = ev, rng.choice([-1.0, 1.0], len(ev))
        lnum[k, p] = len(ev)
    thr = np.full((1, len(pk.ji), 2), -1.0)  # every step dense
    geom = [int(j[c]) for c in (CV_KH, CV_KW, CV_CIG, CV_COUT, CV_GROUPS, CV_H, CV_W, CV_CIN, CV_HO, CV_WO, CV_SH,
                                CV_SW, CV_PT, CV_PL)]
    one = j[CV_HO] * j[CV_WO] * (j[CV_KH] * j[CV_KW] * j[CV_CIN] + j[CV_COUT])  # one step's rows and output
    bbuf = np.zeros(2 * one)  # room for two steps a batch
    pre, sel = np.full(W, -1, dtype=np.int64), np.zeros(W, dtype=np.int64)
    sig = np.zeros(nall + 1)
    nin = np.zeros((W, 1), dtype=np.int64)
    args = (4, False, False, pk.pi, pk.ji, pk.wbuf, thr, nin, nin.astype(float), np.zeros(W, dtype=np.int64),
            log_idx, log_sig, lnum, sig, bbuf, pre, sel)
    nacc = pk.pi[q, PI_ACCSZ]
    t, batches = 0, []
    while t < W:
        pre[:] = -1
        nxt = layers.plan_dense(m, q, t, 0, W, *args)
        assert nxt > t
        for k in range(t, nxt):
            want = np.zeros(nacc)
            KN.conv_dense(log_idx[k, off:off + sz], log_sig[k, off:off + sz], lnum[k, p], pk.wbuf[j[CV_WDOFF]:],
                          *geom, sig, want, np.zeros(one))
            if lnum[k, p] == 0:
                assert pre[k] == -1
                continue
            assert pre[k] >= 0
            acc = np.zeros((1, pk.acc_tot))
            layers.add_batched(q, m, pk.pi, pk.ji, acc, np.zeros((1, P + 1), dtype=np.uint8), bbuf, pre[k], False)
            a0 = pk.pi[q, PI_ACCOFF]
            np.testing.assert_allclose(acc[0, a0:a0 + nacc], want, rtol=1e-12, atol=1e-12)
        batches.append((t, nxt))
        t = nxt
    assert batches == [(0, 3), (3, 5)]  # steps 0, 1 (2: no events, not dense), then 3, 4


@pytest.mark.parametrize("preset", ["casc", "if", "bitserial"])
def test_values_are_the_counts_where_every_spike_carries_one(preset):
    """The engine writes a second per-neuron array only for bitserial (weighted spikes); elsewhere
    ``values`` is a CountValues made from the counts: equal to the reference's values, the same array on
    every access (a write stays, as in a dict, and does not touch the counts), and it survives pickling
    (Dask sends results between processes)."""
    import pickle

    from evsnn.ir.records import CountValues

    net, x = _real_net(preset)
    got = engine.simulate(net, x, **({"sleep": "auto"} if preset == "casc" else {}))
    ref = ref_simulate(net, x, **({"sleep": "auto"} if preset == "casc" else {}))
    assert isinstance(got.values, CountValues) == (preset != "bitserial")
    assert got.values.keys() == ref.values.keys()
    for k in ref.values:
        np.testing.assert_array_equal(got.values[k], ref.values[k], err_msg=k)
        assert got.values[k].dtype == np.float64
    if preset == "bitserial":  # weighted spikes: values differ from counts somewhere
        assert any((got.values[k] != got.counts[k]).any() for k in got.values)
        return
    k = next(iter(got.values))
    again = pickle.loads(pickle.dumps(got))
    np.testing.assert_array_equal(again.values[k], got.values[k])
    got.values[k][0, 0] += 5
    assert got.values[k][0, 0] == got.counts[k][0, 0] + 5
    assert len(got.values) == len(got.counts) and set(got.values) == set(got.counts)


def test_narrow_weights_only_where_every_weight_is_a_float32_number():
    from evsnn.engine.pack import narrow_weights

    rng = np.random.default_rng(3)
    k32 = rng.standard_normal((3, 3, 4, 5)).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(narrow_weights(k32, np.float64), k32.reshape(-1).astype(np.float32))
    assert narrow_weights(k32, np.float32) is None  # the float32 engine's weights are float32 already
    k64 = k32.copy()
    k64[1, 2, 3, 4] += 2.0 ** -40  # one weight off the float32 grid
    assert narrow_weights(k64, np.float64) is None
    assert narrow_weights(np.array([1e300, 1.0]), np.float64) is None  # beyond float32's range


@pytest.mark.parametrize("preset", ["casc", "if"])
def test_float32_exact_kernels_scatter_from_float32_with_the_same_records(preset, monkeypatch):
    """pack stores a float32-exact conv kernel (here He-normal float32 weights, not dyadic, with
    power-of-two activation scales) for the float64 event scatter once, as float32: every record equals,
    bit for bit, the run that scatters it as float64 (each weight converts back exactly, so every product
    and sum is the same)."""
    from evsnn.engine import pack
    from evsnn.engine.pack import CV_W32, CV_WOFF, J_KIND, K_CONV

    net, x = _real_net(preset, scales=(0.5, 1.0, 1.0, 2.0, 1.0))  # power-of-two scales (Brevitas po2, HGQ)
    kw = dict(sleep="auto", path="event", dtype=np.float64, record=("counts", "raster"))
    if preset == "if":
        kw["wake"] = 12
    prep = engine.prepare(net, np.float64)
    convs = [r for r in prep.packed.ji if r[J_KIND] == K_CONV]
    assert convs and all(r[CV_W32] >= 0 and r[CV_WOFF] == -1 for r in convs)  # stored once, as float32
    words = prep.packed.wbuf.view(np.float32)
    for r, pr in zip(prep.packed.ji, net.projections):
        if r[J_KIND] == K_CONV:
            k = pr.kernel.reshape(-1)
            np.testing.assert_array_equal(words[2 * r[CV_W32]:2 * r[CV_W32] + len(k)], k)
    narrow = engine.simulate(prep, x, **kw)
    monkeypatch.setattr(pack, "narrow_weights", lambda kernel, dtype: None)
    wide_prep = engine.prepare(net, np.float64)
    assert all(r[CV_W32] == -1 and r[CV_WOFF] >= 0 for r in wide_prep.packed.ji if r[J_KIND] == K_CONV)
    assert_same(engine.simulate(wide_prep, x, **kw), narrow)


def test_a_static_drive_that_repeats_per_position_is_kept_per_channel(monkeypatch):
    """A conv population's drive (its per-channel bias) is kept once per channel (pack.drive_period): every
    record equals, bit for bit, the run with one drive state per neuron; a per-neuron (non-periodic) bias
    keeps one state per neuron and its counts still equal the reference's."""
    from evsnn.engine import pack as PK
    net, x = _real_net("casc")
    pk = engine.prepare(net).packed
    pers = {n: int(pk.pi[i, PK.PI_DPER]) for i, n in enumerate(pk.names) if pk.pi[i, PK.PI_DRIVE] == PK.D_STATIC}
    chans = {p.name: p.shape[0] for p in net.populations if len(p.shape) == 3}
    assert any(pers[n] == chans.get(n) < pk.sizes[pk.names.index(n)] for n in pers), pers
    kw = dict(sleep="auto", record=("counts", "raster"))
    got = engine.simulate(net, x, **kw)
    monkeypatch.setattr(PK, "drive_period", lambda q, u, bs: len(q))
    per_neuron = engine.simulate(net, x, **kw)
    assert_same(per_neuron, got)
    monkeypatch.undo()

    rng = np.random.default_rng(3)
    name = next(n for n in pers if pers[n] == chans.get(n))
    pops = [dataclasses.replace(p, bias=p.bias + rng.standard_normal(p.size) * 0.3) if p.name == name else p
            for p in net.populations]
    net2 = dataclasses.replace(net, populations=pops)
    pk2 = engine.prepare(net2).packed
    i = pk2.names.index(name)
    assert pk2.pi[i, PK.PI_DPER] == pk2.sizes[i]
    ref = ref_simulate(net2, x, sleep="auto")
    got2 = engine.simulate(net2, x, sleep="auto")
    for k in ref.counts:
        np.testing.assert_array_equal(got2.counts[k], ref.counts[k], err_msg=k)
