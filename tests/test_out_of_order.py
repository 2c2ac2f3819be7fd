"""Results files written with batches in any order (as a distributed run completes them): same file, resumable."""

import os

import h5py
import numpy as np
import pytest

from evsnn import runner
from evsnn.convert import convert
from evsnn.store import partial_path
from test_results import assert_same_content, small_data, small_graph


class Stop(Exception):
    pass


def in_order(monkeypatch, order):
    """Make run_to_file's local batches complete in ``order`` (a permutation of the batches it asks for)."""
    real = runner.local_batches

    def permuted(sim, engine, net, x, todo, opts, sleep):
        results = dict(real(sim, engine, net, x, todo, opts, sleep))
        for b in order:
            if b in results:
                yield b, results[b]

    monkeypatch.setattr(runner, "local_batches", permuted)


@pytest.fixture
def case(tmp_path):
    net = convert(small_graph(), "casc")
    x, y = small_data()  # 7 samples, batches of 2: 4 batches, the last one of 1 sample
    opts = runner.RunOptions(engine="reference", batch_size=2, record=("counts", "raster"))
    full = runner.run_to_file(net, x, y, str(tmp_path / "full.h5"), opts)
    return net, x, y, opts, full, str(tmp_path / "r.h5")


def test_batches_written_in_any_order_give_the_same_file(case, monkeypatch):
    net, x, y, opts, full, out = case
    in_order(monkeypatch, [3, 1, 0, 2])
    starts = []
    runner.run_to_file(net, x, y, out, opts, on_batch=lambda s, r, yb: starts.append(s))
    assert starts == [6, 2, 0, 4]
    assert_same_content(full, out)
    with h5py.File(out, "r") as f:
        assert np.all(np.diff(f["layers/act3/events/sample"][()]) >= 0)


def test_interrupted_out_of_order_run_resumes_the_missing_batches(case, monkeypatch):
    net, x, y, opts, full, out = case
    with monkeypatch.context() as m:
        in_order(m, [3, 0, 2, 1])

        def stop_after_two(start, res, yb, seen=[]):
            seen.append(start)
            if len(seen) == 2:
                raise Stop

        with pytest.raises(Stop):
            runner.run_to_file(net, x, y, out, opts, on_batch=stop_after_two)
    assert not os.path.exists(out)
    with h5py.File(partial_path(out), "r") as f:
        assert f["_batches/done"][()].tolist() == [1, 0, 0, 1]
        assert f.attrs["batches_done"] == 2 and f.attrs["samples_done"] == 3
    seen, ran = [], []
    in_order(monkeypatch, [2, 1])  # the resumed run completes out of order too
    runner.run_to_file(net, x, y, out, opts, resume=True, progress=seen.append,
                       on_batch=lambda s, r, yb: ran.append(s))
    assert seen == [3, 2, 2] and ran == [4, 2]  # the 3 samples done, then batches 2 and 1 only
    assert not os.path.exists(partial_path(out))
    assert_same_content(full, out)


def test_stopped_while_putting_events_in_order_resumes(case, monkeypatch):
    net, x, y, opts, full, out = case
    in_order(monkeypatch, [2, 3, 1, 0])
    real, calls = h5py.Group.move, []

    def move_then_stop(self, a, b):
        calls.append(a)
        if len(calls) == 2:  # one column of the first layer replaced, the others not yet
            raise Stop
        real(self, a, b)

    with monkeypatch.context() as m:
        m.setattr(h5py.Group, "move", move_then_stop)
        with pytest.raises(Stop):
            runner.run_to_file(net, x, y, out, opts)
    assert not os.path.exists(out)
    runner.run_to_file(net, x, y, out, opts, resume=True)
    assert_same_content(full, out)


def test_partial_file_without_done_map_resumes(case):
    """A partial file of an evsnn without the done map (batches in order, ``batches_done`` count) resumes."""
    net, x, y, opts, full, out = case

    def stop_after_two(start, res, yb):
        if start == 2:
            raise Stop

    with pytest.raises(Stop):
        runner.run_to_file(net, x, y, out, opts, on_batch=stop_after_two)
    with h5py.File(partial_path(out), "a") as f:
        del f["_batches/done"], f["_batches/ev_start"]
        f["_batches/events"][2:] = 0
    ran = []
    runner.run_to_file(net, x, y, out, opts, resume=True, on_batch=lambda s, r, yb: ran.append(s))
    assert ran == [4, 6]
    assert_same_content(full, out)
