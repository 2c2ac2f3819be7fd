"""Thread pools of the engine (evsnn.threads, issue #14 item 4): BLAS on one thread inside the engine,
restored after; engine threads default to the usable cores."""

import threading

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from evsnn import engine, threads
from evsnn.convert import convert
from evsnn.engine import run as engine_run
from evsnn.errors import ConversionError
from evsnn.ir import ann as A


def _dense_net():
    rng = np.random.default_rng(3)
    g = A.AnnGraph([
        A.Input("x", (), (12,)),
        A.Dense("d1", ("x",), rng.integers(-32, 33, (16, 12)) / 64, rng.integers(-8, 9, 16) / 64),
        A.QuantAct("a1", ("d1",), 4, 1.0, 0.0),
        A.Dense("out", ("a1",), rng.integers(-32, 33, (3, 16)) / 64, np.zeros(3)),
    ], "out", "dense")
    return convert(g, "casc"), rng.integers(0, 257, (4, 12)) / 256


@pytest.fixture
def blas_at_two():
    """BLAS at two threads around the test (what a user's OPENBLAS_NUM_THREADS=2 gives)."""
    threads.blas_threads()  # loads the BLAS Numba calls before the limit is set
    with threadpool_limits(limits=2, user_api="blas"):
        assert set(threads.blas_threads()) == {2}
        yield


def _spy(monkeypatch, seen, fail=False):
    real = engine_run.run_batch

    def spy(*args):
        seen.append((threads.blas_threads(), numba.get_num_threads()))
        if fail:
            raise RuntimeError("kernel failed")
        return real(*args)

    monkeypatch.setattr(engine_run, "run_batch", spy)


def test_input_drive_is_computed_with_blas_on_one_thread(blas_at_two, monkeypatch):
    """The input-fed drive (a NumPy conv/matmul of the batch) runs before the engine's threads start: with
    BLAS at two threads its workers would then spin on the engine threads' cores, so it runs at one too."""
    net, x = _dense_net()
    real, seen = engine_run.input_drive, []

    def spy(*args):
        seen.append(threads.blas_threads())
        return real(*args)

    monkeypatch.setattr(engine_run, "input_drive", spy)
    engine.simulate(net, x, threads=2)
    assert len(seen) == 1 and set(seen[0]) == {1}
    assert set(threads.blas_threads()) == {2}


def test_engine_runs_blas_on_one_thread_and_restores_it(blas_at_two, monkeypatch):
    net, x = _dense_net()
    seen = []
    _spy(monkeypatch, seen)
    before = numba.get_num_threads()
    res = engine.simulate(net, x, threads=2, path="dense")
    assert res.counts  # the run happened, through the spy
    assert seen == [([1] * len(seen[0][0]), min(2, numba.config.NUMBA_NUM_THREADS))]
    assert set(threads.blas_threads()) == {2}
    assert numba.get_num_threads() == before


def test_limits_are_restored_when_the_engine_raises(blas_at_two, monkeypatch):
    net, x = _dense_net()
    seen = []
    _spy(monkeypatch, seen, fail=True)
    before = numba.get_num_threads()
    with pytest.raises(RuntimeError, match="kernel failed"):
        engine.simulate(net, x, threads=1)
    assert set(seen[0][0]) == {1} and seen[0][1] == 1
    assert set(threads.blas_threads()) == {2}
    assert numba.get_num_threads() == before


def test_overlapping_engine_calls_restore_the_limit_once_the_last_ends(blas_at_two):
    a, b = threads.one_blas_thread(), threads.one_blas_thread()
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)  # b still running: BLAS stays at one thread
    assert set(threads.blas_threads()) == {1}
    b.__exit__(None, None, None)
    assert set(threads.blas_threads()) == {2}


def test_engine_calls_from_several_python_threads_leave_blas_as_it_was(blas_at_two):
    net, x = _dense_net()
    prep = engine.prepare(net)
    out, errors = [], []

    def work():
        try:
            for _ in range(3):
                out.append(engine.simulate(prep, x, threads=1, path="dense").counts)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(out) == 9
    assert set(threads.blas_threads()) == {2}


def test_default_engine_threads_are_the_usable_cores(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert threads.default_engine_threads() == 1
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(4096)), raising=False)
    assert threads.default_engine_threads() == numba.config.NUMBA_NUM_THREADS
    assert threads.engine_threads(None) == numba.config.NUMBA_NUM_THREADS
    assert threads.engine_threads(10**6) == numba.config.NUMBA_NUM_THREADS
    assert threads.engine_threads(1) == 1
    with pytest.raises(ConversionError, match="threads must be"):
        threads.engine_threads(0)


def test_engine_uses_the_default_thread_count(monkeypatch):
    net, x = _dense_net()
    seen = []
    _spy(monkeypatch, seen)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    engine.simulate(net, x)
    assert seen[0][1] == 1
