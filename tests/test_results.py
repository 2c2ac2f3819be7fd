"""Results files: fixed names, batch streaming with padding, atomic rename, resume, versions."""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from evsnn import runner
from evsnn.convert import convert
from evsnn.errors import FormatError
from evsnn.ir import ann as A
from evsnn.reference import simulate
from evsnn.store import escape_name, open_results, partial_path, read_summary, unescape_name


def small_graph(levels=3):
    """Three conv layers (names with "/"), L = 3; samples go quiet after different sleep lengths."""
    rng = np.random.default_rng(2)
    nodes = [
        A.Input("x", (), (1, 6, 6)),
        A.Conv("c1", ("x",), rng.integers(-8, 9, (3, 1, 3, 3)) / 16, np.full(3, 1 / 32), (1, 1), (1, 1, 1, 1), 1),
        A.QuantAct("/blk/act1", ("c1",), levels, 1.0, 0.0),
        A.Conv("c2", ("/blk/act1",), rng.integers(-16, 17, (4, 3, 3, 3)) / 16, np.zeros(4), (2, 2), (1, 1, 1, 1), 1),
        A.QuantAct("blk/act2", ("c2",), levels, 1.0, 0.0),
        A.Conv("c3", ("blk/act2",), rng.integers(-16, 17, (4, 4, 3, 3)) / 16, np.zeros(4), (1, 1), (1, 1, 1, 1), 1),
        A.QuantAct("act3", ("c3",), levels, 1.0, 0.0),
        A.Flatten("f", ("act3",)),
        A.Dense("logits", ("f",), rng.integers(-8, 9, (5, 36)) / 16, np.zeros(5)),
    ]
    return A.AnnGraph(nodes, "logits", "small")


def small_data(n=7):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 257, (n, 1, 6, 6)) / 256
    x[0] = 0  # quiet at once: batches end at different steps
    return x, rng.integers(0, 5, n)


def h5_content(path) -> dict:
    """Every dataset and attribute of an HDF5 file, keyed by path, as comparable Python/NumPy values."""
    out = {}

    def attrs(obj):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()}

    with h5py.File(path, "r") as f:
        out["/"] = attrs(f)

        def visit(name, obj):
            out[name] = (attrs(obj), obj[()] if isinstance(obj, h5py.Dataset) else None)
        f.visititems(visit)
    return out


def assert_same_content(a, b, skip_config=("threads",)):
    ca, cb = h5_content(a), h5_content(b)
    assert sorted(ca) == sorted(cb)
    for k in ca:
        if k == "config":
            assert {i: v for i, v in ca[k][0].items() if i not in skip_config} == \
                   {i: v for i, v in cb[k][0].items() if i not in skip_config}
            continue
        if k == "/":
            assert ca[k] == cb[k]
            continue
        assert ca[k][0] == cb[k][0], k
        if ca[k][1] is not None:
            np.testing.assert_array_equal(ca[k][1], cb[k][1], err_msg=k)


def test_escape_names_round_trip():
    for name in ["/act1/Floor", "a%2Fb", "plain", "x/y%z", ".", "", "ü/∕"]:
        e = escape_name(name)
        assert "/" not in e and e not in (".", "..", "")
        assert unescape_name(e) == name
    assert escape_name("/act1/Floor") == "%2Fact1%2FFloor"


def test_batched_file_equals_one_whole_batch_simulation(tmp_path):
    """Batches of 2 that end at different steps give the same records as one batch of all samples."""
    net = convert(small_graph(), "casc")
    x, y = small_data()
    out = runner.run_to_file(net, x, y, str(tmp_path / "r.h5"), runner.RunOptions(
        engine="reference", batch_size=2, record=("counts", "raster")))
    ref = simulate(net, x, sleep="auto", record=("counts", "raster"))
    assert len(np.unique(ref.sleep_steps)) > 1  # the padding path is exercised
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["readout"][()], ref.readout)
        np.testing.assert_array_equal(f["predictions"][()], ref.predictions)
        np.testing.assert_array_equal(f["labels"][()], y)
        np.testing.assert_array_equal(f["sleep_steps"][()], ref.sleep_steps)
        np.testing.assert_array_equal(f["accuracy"][()], (ref.readout.argmax(axis=2) == y[:, None]).mean(axis=0))
        np.testing.assert_array_equal(f["input_macs"][()], ref.input_macs.sum(axis=0))
        for name in ("/blk/act1", "blk/act2", "act3"):
            g = f["layers"][escape_name(name)]
            assert g.attrs["name"] == name
            np.testing.assert_array_equal(g["count"][()], ref.counts[name])
            np.testing.assert_array_equal(g["value"][()], ref.values[name])
            np.testing.assert_array_equal(g["spikes_pos"][()], ref.spikes_pos[name].sum(axis=0))
            np.testing.assert_array_equal(g["spikes_neg"][()], ref.spikes_neg[name].sum(axis=0))
            np.testing.assert_array_equal(g["spikes"][()],
                                          (ref.spikes_pos[name] + ref.spikes_neg[name]).sum(axis=0))
            np.testing.assert_array_equal(g["sops"][()], ref.sops[name].sum(axis=0))
            smp, stp, nrn = np.nonzero(ref.raster[name])
            ev = g["events"]
            np.testing.assert_array_equal(ev["sample"][()], smp)
            np.testing.assert_array_equal(ev["step"][()], stp)
            np.testing.assert_array_equal(ev["neuron"][()], nrn)
            np.testing.assert_array_equal(ev["polarity"][()], ref.raster[name][smp, stp, nrn])
        assert "_batches" not in f
        assert f.attrs["format"] == "evsnn-results" and f.attrs["format_version"] == 1
    assert not os.path.exists(partial_path(out))


def test_read_back_with_plain_h5py_only(tmp_path):
    net = convert(small_graph(), "casc")
    x, y = small_data()
    out = runner.run_to_file(net, x, y, str(tmp_path / "r.h5"),
                             runner.RunOptions(engine="reference", batch_size=3, record=("counts",)),
                             {"source_sha256": "ab" * 32})
    script = textwrap.dedent(f"""
        import sys, h5py, numpy as np
        with h5py.File({out!r}, "r") as f:
            assert f.attrs["format"] == "evsnn-results" and int(f.attrs["format_version"]) == 1
            n, steps, classes = f["readout"].shape
            assert (n, classes) == (7, 5) and steps > 3
            assert f["predictions"].shape == (n,) and f["labels"].shape == (n,)
            act = f["layers/%2Fblk%2Fact1"]
            assert act.attrs["name"] == "/blk/act1"
            assert act["count"].shape == (n, 108) and act["value"].shape == (n, 108)
            assert act["spikes"].shape == (steps,) and act["sops"].shape == (steps,)
            assert f["layers/blk%2Fact2/count"].shape == (n, 36)
            assert f["config"].attrs["preset"] == "casc" and f["config"].attrs["source_sha256"] == "{'ab' * 32}"
            assert 0 < f["energy/45nm-fp32"].attrs["ratio"] < 100
            assert f["accuracy"].shape == (steps,)
        assert "evsnn" not in sys.modules
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


class Stop(Exception):
    pass


def test_interrupted_run_leaves_no_final_file_and_resume_completes_it(tmp_path):
    net = convert(small_graph(), "casc")
    x, y = small_data()
    opts = runner.RunOptions(engine="reference", batch_size=2, record=("counts", "raster"))
    full = runner.run_to_file(net, x, y, str(tmp_path / "full.h5"), opts)
    out = str(tmp_path / "r.h5")

    def boom(start, res, yb):
        if start >= 2:  # after the second batch
            raise Stop

    with pytest.raises(Stop):
        runner.run_to_file(net, x, y, out, opts, on_batch=boom)
    assert not os.path.exists(out)
    assert os.path.exists(partial_path(out))
    with h5py.File(partial_path(out), "r") as f:
        assert f.attrs["batches_done"] == 2 and f.attrs["format"] == "evsnn-results-partial"
    with pytest.raises(FormatError):
        open_results(partial_path(out))
    seen = []
    runner.run_to_file(net, x, y, out, opts, resume=True, progress=seen.append)
    assert seen[0] == 4 and sum(seen) == 7  # resumed after the two committed batches
    assert not os.path.exists(partial_path(out))
    assert_same_content(full, out)


def test_resume_refuses_other_options_and_starts_fresh_without_partial(tmp_path):
    net = convert(small_graph(), "casc")
    x, y = small_data()
    out = str(tmp_path / "r.h5")
    opts = runner.RunOptions(engine="reference", batch_size=2)

    def boom(start, res, yb):
        raise Stop

    with pytest.raises(Stop):
        runner.run_to_file(net, x, y, out, opts, on_batch=boom)
    with pytest.raises(FormatError, match="cannot resume.*batch_size"):
        runner.run_to_file(net, x, y, out, runner.RunOptions(engine="reference", batch_size=3), resume=True)
    with pytest.raises(FormatError, match="cannot resume.*data_sha256"):
        runner.run_to_file(net, x[:6], y[:6], out, opts, resume=True, info={"data_sha256": "other"})
    other = str(tmp_path / "other.h5")
    runner.run_to_file(net, x, y, other, opts, resume=True)  # nothing to resume: runs from the start
    assert os.path.exists(other)


def test_format_checks(tmp_path):
    net = convert(small_graph(), "casc")
    x, y = small_data(3)
    out = runner.run_to_file(net, x, y, str(tmp_path / "r.h5"), runner.RunOptions(engine="reference"))
    assert read_summary(out)["samples"] == 3
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(FormatError, match="format_version 99.*upgrade"):
        open_results(out)
    with pytest.raises(FormatError, match="not an evsnn-results file"):
        from evsnn.store import save_network
        save_network(net, tmp_path / "net.h5")
        open_results(tmp_path / "net.h5")
    with pytest.raises(FormatError, match="folder .* does not exist"):
        runner.run_to_file(net, x, y, str(tmp_path / "nope" / "r.h5"), runner.RunOptions(engine="reference"))


def test_rate_input_is_a_layer_without_counts(tmp_path):
    net = convert(small_graph(), "if", input_mode="rate")
    x, y = small_data(4)
    out = runner.run_to_file(net, x, y, str(tmp_path / "r.h5"),
                             runner.RunOptions(engine="reference", wake=8, batch_size=2, record=("counts",)))
    with h5py.File(out, "r") as f:
        g = f["layers/input"]
        assert g["spikes"][()].sum() > 0 and g["sops"][()].sum() > 0 and "count" not in g
        assert f["input_macs"][()].sum() == 0
        assert list(f["layers"]) == ["%2Fblk%2Fact1", "blk%2Fact2", "act3", "input"]  # network order
        assert f["config"].attrs["sleep"] == 0 and f["config"].attrs["wake"] == 8


@pytest.mark.parametrize("where", ["before the rename", "while finishing"])
def test_stopped_while_finishing_resumes(tmp_path, monkeypatch, where):
    from evsnn.store import results as RS

    net = convert(small_graph(), "casc")
    x, y = small_data()
    opts = runner.RunOptions(engine="reference", batch_size=3, record=("counts",))
    full = runner.run_to_file(net, x, y, str(tmp_path / "full.h5"), opts)
    out = str(tmp_path / "r.h5")
    with monkeypatch.context() as m:
        if where == "before the rename":
            def fail(a, b):
                raise Stop
            m.setattr(RS.os, "replace", fail)
        else:
            real = RS._replace
            def fail_at_accuracy(g, k, d):
                if k == "accuracy":
                    raise Stop
                real(g, k, d)
            m.setattr(RS, "_replace", fail_at_accuracy)
        with pytest.raises(Stop):
            runner.run_to_file(net, x, y, out, opts)
    assert not os.path.exists(out)
    runner.run_to_file(net, x, y, out, opts, resume=True)
    assert_same_content(full, out)


def test_disk_full_then_resume_says_what_to_do(tmp_path, monkeypatch):
    """A write failing with ENOSPC after two committed batches: the error says the batches are kept and
    how to continue; --resume then completes the file; a partial the failure damaged is refused with
    the command that removes it, and a run without --resume starts over."""
    import errno

    from evsnn.store import files as store_files
    from evsnn.store.results import ResultsWriter

    monkeypatch.setattr(store_files, "WRITE_FAILED", [])  # the failures below are simulated
    net = convert(small_graph(), "casc")
    x, y = small_data()
    opts = runner.RunOptions(engine="reference", batch_size=2, record=("counts",))
    full = runner.run_to_file(net, x, y, str(tmp_path / "full.h5"), opts)
    out = str(tmp_path / "r.h5")
    part = partial_path(out)
    real = ResultsWriter._write_batch

    def full_disk(self, b, res, yb=None):
        if b >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, b, res, yb)

    monkeypatch.setattr(ResultsWriter, "_write_batch", full_disk)
    with pytest.raises(FormatError) as e:
        runner.run_to_file(net, x, y, out, opts)
    msg = str(e.value)
    assert "disk full" in msg and "the 2 batches committed so far are kept in " + part in msg
    assert "free space and run the same command with --resume" in msg and f"rm '{part}'" in msg
    assert len(msg.splitlines()) == 1 and not os.path.exists(out) and os.path.exists(part)
    monkeypatch.setattr(ResultsWriter, "_write_batch", real)
    seen = []
    runner.run_to_file(net, x, y, out, opts, resume=True, progress=seen.append)
    assert seen[0] == 4  # continued after the two committed batches
    assert_same_content(full, out)

    os.remove(out)
    monkeypatch.setattr(ResultsWriter, "_write_batch", full_disk)
    with pytest.raises(FormatError, match="disk full"):
        runner.run_to_file(net, x, y, out, opts)
    monkeypatch.setattr(ResultsWriter, "_write_batch", real)
    with open(part, "r+b") as fh:  # what a full disk can leave: the file ends before its metadata
        fh.truncate(os.path.getsize(part) // 3)
    with pytest.raises(FormatError) as e:
        runner.run_to_file(net, x, y, out, opts, resume=True)
    msg = str(e.value)
    assert msg.startswith(f"{part}: the unfinished run's file is damaged (")
    assert f"delete it (rm '{part}')" in msg and "without --resume to start over" in msg
    assert len(msg.splitlines()) == 1 and not os.path.exists(out)
    runner.run_to_file(net, x, y, out, opts)  # without --resume: starts over
    assert_same_content(full, out)
