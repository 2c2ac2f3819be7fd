"""The evsnn command line, through click's CliRunner: every command, its --help, and each bad input."""

import hashlib
import json
import os
import pickle
import re
from dataclasses import replace

import click
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import evsnn.frontends as frontends
from evsnn import runner as R
from evsnn.cli import cli
from evsnn.ir import ann as A
from evsnn.ir.records import make_plan
from evsnn.store import partial_path
from test_results import assert_same_content, small_data, small_graph

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "onnx")


class TinyFrontend:
    """A test frontend: ``*.tiny`` files hold a pickled AnnGraph (so the CLI is tested without ONNX)."""

    @staticmethod
    def can_open(path):
        return str(path).endswith(".tiny")

    @staticmethod
    def load(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A model file, a data file and a folder; the frontend table holds only the tiny frontend."""
    monkeypatch.setattr(frontends, "available", lambda: {"tiny": TinyFrontend})
    model = tmp_path / "model.tiny"
    model.write_bytes(pickle.dumps(small_graph()))
    x, y = small_data(7)
    data = tmp_path / "data.npz"
    np.savez(data, x=x.astype(np.float32), y=y)
    return tmp_path, str(model), str(data)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(r):
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def assert_user_error(r, pattern):
    """Exit code 2, exactly one line on stderr starting with "error:", no traceback."""
    assert r.exit_code == 2, (r.output, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)


def run_args(net, data, out, *more):
    return ["run", net, "--data", data, "-o", out, "--engine", "reference", *more]


# ---------------------------------------------------------------------------------------------- help

@pytest.mark.parametrize("cmd", [[], ["convert"], ["run"], ["report"], ["inspect"], ["demo"]])
def test_help(cmd):
    r = ok(invoke(*cmd, "--help"))
    assert "Usage:" in r.output


def test_bare_command_shows_help():
    r = ok(invoke())
    assert "Usage:" in r.output and "convert" in r.output


def test_cli_imports_no_heavy_modules():
    import subprocess
    import sys
    code = "import sys, evsnn.cli; print([m for m in ('numpy', 'h5py', 'numba') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


_MAIN_WITH = """
import atexit, sys, threading, time
from evsnn.cli import main
atexit.register(lambda: print("atexit ran"))  # buffered: printed only if the streams are flushed after it
if {thread!r}:
    def late():
        time.sleep(0.3)
        print("thread finished")
    threading.Thread(target=late).start()
sys.argv = ["evsnn", *{args!r}]
main()
"""


@pytest.mark.parametrize("args,rc", [(["--help"], 0), (["inspect", "no-such-file.onnx"], 2)])
@pytest.mark.parametrize("thread", [False, True])
def test_main_ends_with_exit_handlers_run_and_streams_flushed(tmp_path, args, rc, thread):
    """main() skips the interpreter's teardown (evsnn.cli._leave) but not what an exit must do: the exit
    code, atexit handlers, buffered output (stdout is a file here: block-buffered), and a non-daemon thread
    still running is waited for."""
    import subprocess
    import sys
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        p = subprocess.run([sys.executable, "-c", _MAIN_WITH.format(args=args, thread=thread)], stdout=fh,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    text = out.read_text()
    assert p.returncode == rc, p.stderr
    assert text.rstrip().endswith("atexit ran")
    assert ("Usage:" in text) == (rc == 0) and ("error:" in p.stderr) == (rc != 0)
    assert ("thread finished" in text) == thread


def test_every_option_has_help():
    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help, f"{name} {p.opts}"


def test_version():
    assert "evsnn" in ok(invoke("--version")).output


# ---------------------------------------------------------------------------------------------- commands

def test_convert_run_report_inspect(files):
    tmp, model, data = files
    net, out = str(tmp / "net.h5"), str(tmp / "r.h5")
    r = ok(invoke("convert", model, "-o", net, "--preset", "casc"))
    assert "wrote" in r.output and "casc" in r.output
    r = ok(invoke("inspect", net))
    assert "evsnn-network, format_version 1" in r.output and "preset casc" in r.output
    assert "/blk/act1" in r.output and "threshold" in r.output and "L = 3" in r.output
    r = ok(invoke(*run_args(net, data, out, "--record", "counts", "--batch-size", "3", "--seed", "1",
                            "--threads", "1")))
    assert "final accuracy" in r.output and "reference engine" in r.output
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    with h5py.File(out, "r") as f:
        cfg = f["config"].attrs
        assert cfg["source_sha256"] == sha and cfg["preset"] == "casc" and cfg["batch_size"] == 3
        assert cfg["engine"] == "reference" and cfg["sleep"] == "auto" and cfg["wake"] == 3
        assert f["layers/%2Fblk%2Fact1/count"].shape == (7, 108)
        assert f["energy"].attrs["ann_ops_source"] == "graph"
    r = ok(invoke("report", out, "--at", "1,3"))
    assert "acc@3" in r.output and "casc" in r.output and "SOPs/smp" in r.output and "fp32" in r.output
    try:
        import matplotlib  # noqa: F401
        for suffix in ("accuracy_vs_T", "spikes_per_step", "energy_per_layer"):
            assert (tmp / f"r_{suffix}.png").stat().st_size > 1000
    except ImportError:
        pass
    js = json.loads(ok(invoke("report", out, "--json", "--no-plots")).stdout)
    s = js["results"][0]
    assert s["preset"] == "casc" and s["samples"] == 7 and set(s["accuracy_at"]) == {"1", "2", "4", "8", "16"}
    assert [ly["name"] for ly in s["layers"]] == ["/blk/act1", "blk/act2", "act3"]
    assert s["energy"]["45nm-fp32"]["ratio"] > 0
    r = ok(invoke("inspect", out))
    assert "evsnn-results, format_version 1" in r.output and "7 samples" in r.output
    r = ok(invoke("inspect", model))
    assert "tiny frontend" in r.output and "L = 3" in r.output and "(4, 3, 3)" in r.output
    info = json.loads(ok(invoke("inspect", model, "--json")).stdout)
    assert info["levels"] == [3] and info["input_shape"] == [1, 6, 6]


def test_run_summarizes_its_own_output_unchecked_and_the_same(files, monkeypatch):
    # `evsnn run` reads back the file it has just written without the untrusted-file walks (35 ms of a
    # one-sample run on a slow machine, bench/fixed_cost.py); every other reader still checks
    from evsnn.report import summarize
    from evsnn.store import results as R

    tmp, model, data = files
    net, out = str(tmp / "net.h5"), str(tmp / "r.h5")
    ok(invoke("convert", model, "-o", net, "--preset", "casc"))
    checked = []
    real = R.check_results
    monkeypatch.setattr(R, "check_results", lambda *a: checked.append(a[1]) or real(*a))
    r = ok(invoke(*run_args(net, data, out)))
    assert checked == [] and "final accuracy" in r.output
    assert summarize(out, trusted=True) == summarize(out)
    assert checked == [out]


def test_run_converts_a_model_on_the_fly(files):
    tmp, model, data = files
    out = str(tmp / "r.h5")
    ok(invoke(*run_args(model, data, out, "--preset", "bitserial", "--limit", "5")))
    with h5py.File(out, "r") as f:
        assert f["config"].attrs["converted"] and f["config"].attrs["preset"] == "bitserial"
        assert f["readout"].shape[0] == 5
        assert f["config"].attrs["source_sha256"] == hashlib.sha256(open(model, "rb").read()).hexdigest()


def test_report_compares_several_runs(files):
    tmp, model, data = files
    outs = []
    for preset, extra in (("if", ["--wake", "12"]), ("qcfs", ["--wake", "12"]), ("casc", [])):
        outs.append(str(tmp / f"{preset}.h5"))
        ok(invoke(*run_args(model, data, outs[-1], "--preset", preset, *extra)))
    r = ok(invoke("report", *outs, "--plots", str(tmp)))
    for preset in ("if", "qcfs", "casc"):
        assert re.search(rf"^{preset}\s", r.output, re.M)
    try:
        import matplotlib  # noqa: F401
        assert (tmp / "report_accuracy_vs_T.png").exists()
    except ImportError:
        pass


def test_calibration_and_energy_profiles(files, tmp_path):
    tmp, _, data = files
    g = small_graph()
    relu = A.AnnGraph([A.Relu(n.name, n.inputs) if isinstance(n, A.QuantAct) else n for n in g.nodes], g.output)
    model = tmp / "relu.tiny"
    model.write_bytes(pickle.dumps(relu))
    assert_user_error(invoke("convert", model, "-o", tmp / "n.h5", "--preset", "if"), "calibrate")
    ok(invoke("convert", model, "-o", tmp / "n.h5", "--preset", "if", "--calibrate", data, "--percentile", "99"))
    prof = tmp / "chip.toml"
    prof.write_text('name = "chip"\nmac = 1.0\nac = 0.5\n')
    out = tmp / "r.h5"
    ok(invoke(*run_args(tmp / "n.h5", data, out, "--wake", "16", "--energy-profile", "45nm-int8",
                        "--energy-profile", prof)))
    with h5py.File(out, "r") as f:
        assert [k for k in f["energy"] if isinstance(f["energy"][k], h5py.Group)] == ["45nm-int8", "chip"]
        assert f["energy/chip"].attrs["ac"] == 0.5


def test_real_onnx_fixture(tmp_path):
    path = os.path.join(FIXTURES, "qcfs_legacy.onnx")
    if not os.path.exists(path):
        pytest.skip("ONNX fixtures not present")
    pytest.importorskip("evsnn.frontends.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32))
    ok(invoke("convert", path, "-o", tmp_path / "net.h5", "--preset", "casc"))
    ok(invoke(*run_args(tmp_path / "net.h5", data, tmp_path / "r.h5")))
    r = ok(invoke("report", tmp_path / "r.h5", "--no-plots"))
    assert "casc" in r.output
    assert "onnx frontend" in ok(invoke("inspect", path)).output


# ---------------------------------------------------------------------------------------------- bad input

@pytest.fixture
def made(files):
    tmp, model, data = files
    net, res = str(tmp / "net.h5"), str(tmp / "res.h5")
    ok(invoke("convert", model, "-o", net))
    ok(invoke(*run_args(net, data, res)))
    newer = str(tmp / "newer.h5")
    with open(res, "rb") as a, open(newer, "wb") as b:
        b.write(a.read())
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = 99
    junk = tmp / "junk.txt"
    junk.write_text("not a model\n")
    wrong = tmp / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 1, 8, 8), np.float32))
    return dict(tmp=tmp, model=model, data=data, net=net, res=res, newer=newer, junk=str(junk), wrong=str(wrong))


BAD = [
    # missing files
    (lambda m: ["convert", m["tmp"] / "nope.onnx", "-o", m["tmp"] / "n.h5"], "not found"),
    (lambda m: run_args(m["tmp"] / "nope.h5", m["data"], m["tmp"] / "o.h5"), "not found"),
    (lambda m: run_args(m["net"], m["tmp"] / "nope.npz", m["tmp"] / "o.h5"), "no such file"),
    (lambda m: ["report", m["tmp"] / "nope.h5"], "not found"),
    (lambda m: ["inspect", m["tmp"] / "nope.h5"], "not found"),
    # wrong format
    (lambda m: ["convert", m["junk"], "-o", m["tmp"] / "n.h5"], "not a model format"),
    (lambda m: run_args(m["junk"], m["data"], m["tmp"] / "o.h5", "--preset", "casc"), "not a model format"),
    (lambda m: ["inspect", m["junk"]], "not a model format"),
    (lambda m: ["report", m["net"]], "not an evsnn-results file"),
    (lambda m: run_args(m["res"], m["data"], m["tmp"] / "o.h5"), "evsnn-results file, not a network"),
    (lambda m: run_args(m["net"], m["junk"], m["tmp"] / "o.h5"), "unknown dataset"),
    # data shape
    (lambda m: run_args(m["net"], m["wrong"], m["tmp"] / "o.h5"), r"\(1, 8, 8\).*\(1, 6, 6\)"),
    (lambda m: run_args(m["net"], "digits", m["tmp"] / "o.h5"), r"\(1, 8, 8\).*\(1, 6, 6\)"),
    # presets
    (lambda m: ["convert", m["model"], "-o", m["tmp"] / "n.h5", "--preset", "foo"], "unknown preset 'foo'"),
    (lambda m: run_args(m["model"], m["data"], m["tmp"] / "o.h5", "--preset", "foo"), "unknown preset 'foo'"),
    (lambda m: run_args(m["model"], m["data"], m["tmp"] / "o.h5"), "give --preset"),
    (lambda m: run_args(m["net"], m["data"], m["tmp"] / "o.h5", "--preset", "if"), "converted with preset 'casc'"),
    (lambda m: ["demo", "--presets", "if,nope"], "unknown preset 'nope'"),
    # unwritable outputs
    (lambda m: ["convert", m["model"], "-o", m["tmp"] / "no" / "n.h5"], "does not exist"),
    (lambda m: run_args(m["net"], m["data"], m["tmp"] / "no" / "o.h5"), "does not exist"),
    (lambda m: run_args(m["net"], m["data"], m["tmp"]), "is a folder"),
    (lambda m: ["demo", "--out", m["junk"], "--model", m["model"], "--data", m["data"]], "not a folder"),
    # newer format version
    (lambda m: ["report", m["newer"]], "format_version 99"),
    (lambda m: ["inspect", m["newer"]], "format_version 99"),
    # options
    (lambda m: run_args(m["net"], m["data"], m["tmp"] / "o.h5", "--sleep", "soon"), "--sleep"),
    (lambda m: run_args(m["net"], m["data"], m["tmp"] / "o.h5", "--wake", "5"), "T_w = L = 3"),
    (lambda m: run_args(m["net"], m["data"], m["tmp"] / "o.h5", "--batch-size", "0"), "batch-size"),
    (lambda m: run_args(m["net"], m["data"], m["tmp"] / "o.h5", "--energy-profile", "7nm"), "energy profile"),
    (lambda m: run_args(m["net"], m["data"], m["tmp"] / "o.h5", "--levels", "3"), "already converted"),
    (lambda m: ["run", m["net"], "-o", m["tmp"] / "o.h5"], "Missing option '--data'"),
    (lambda m: ["run", m["net"], "--data", m["data"], "-o", m["tmp"] / "o.h5", "--engine", "gpu"], "--engine"),
    (lambda m: ["report", m["res"], "--at", "a,b"], "--at"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_is_one_line_exit_2(made, case):
    args, pattern = BAD[case]
    r = invoke(*args(made))
    assert_user_error(r, pattern)
    assert not (made["tmp"] / "o.h5").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_folder(made):
    ro = made["tmp"] / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_user_error(invoke(*run_args(made["net"], made["data"], ro / "o.h5")), "not writable")
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------------------------------------- interruption

def _failing_after_first_batch(monkeypatch, exc):
    real = R.simulate_batch
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(R, "simulate_batch", flaky)
    return real


def test_killed_run_leaves_nothing_under_final_name_and_resume_completes_it(made, monkeypatch):
    tmp, net, data = made["tmp"], made["net"], made["data"]
    full, out = str(tmp / "full.h5"), str(tmp / "o.h5")
    args = ["--batch-size", "2", "--record", "counts", "--record", "raster"]
    ok(invoke(*run_args(net, data, full, *args)))
    real = _failing_after_first_batch(monkeypatch, KeyboardInterrupt())
    r = invoke(*run_args(net, data, out, *args))
    assert r.exit_code == 130
    assert "interrupted after 2 of 7 samples" in r.stderr and "--resume" in r.stderr
    assert not os.path.exists(out) and os.path.exists(partial_path(out))
    assert "unfinished evsnn run, 2 of 7" in ok(invoke("inspect", partial_path(out))).output
    monkeypatch.setattr(R, "simulate_batch", real)
    assert_user_error(invoke(*run_args(net, data, out, "--batch-size", "3", "--resume")), "cannot resume")
    ok(invoke(*run_args(net, data, out, *args, "--resume")))
    assert not os.path.exists(partial_path(out))
    assert_same_content(full, out)


def test_failing_run_leaves_no_file_under_final_name(made, monkeypatch):
    out = made["tmp"] / "o.h5"
    _failing_after_first_batch(monkeypatch, RuntimeError("boom"))
    r = invoke(*run_args(made["net"], made["data"], out, "--batch-size", "2"))
    assert isinstance(r.exception, RuntimeError)  # a bug, not a user error: it keeps its traceback
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- event engine

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_event_engine_matches_reference(made, dtype):
    pytest.importorskip("evsnn.engine")
    tmp = made["tmp"]
    ev, ref = tmp / "ev.h5", tmp / "ref.h5"
    ok(invoke("run", made["net"], "--data", made["data"], "-o", ev, "--engine", "event", "--threads", "1",
              "--dtype", dtype, "--record", "counts", "--batch-size", "4"))
    ok(invoke(*run_args(made["net"], made["data"], ref, "--record", "counts", "--batch-size", "4")))
    with h5py.File(ev, "r") as a, h5py.File(ref, "r") as b:
        assert a["config"].attrs["engine"] == "event" and a["config"].attrs["dtype"] == dtype
        np.testing.assert_allclose(a["readout"][()], b["readout"][()], rtol=1e-5, atol=1e-5)
        keys = ["predictions", "layers/act3/count", "layers/%2Fblk%2Fact1/value"]
        if dtype == "float64":  # spike for spike
            keys += ["layers/blk%2Fact2/spikes", "layers/act3/sops", "sleep_steps"]
        for k in keys:
            np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)


def test_auto_engine_runs_small_float64_jobs_on_the_reference(made):
    """--engine auto (the default): a float64 job predicted to take less than half the event engine's start-up
    runs on the NumPy reference, with the event engine's counts; a float32 one runs on the event engine."""
    pytest.importorskip("evsnn.engine")
    tmp = made["tmp"]
    auto, ev, f32 = tmp / "auto.h5", tmp / "ev.h5", tmp / "f32.h5"
    base = ("run", made["net"], "--data", made["data"], "--record", "counts", "--batch-size", "4", "-o")
    r = ok(invoke(*base, auto))
    assert "reference engine" in r.output
    ok(invoke(*base, ev, "--engine", "event", "--threads", "1"))
    ok(invoke(*base, f32, "--dtype", "float32"))
    with h5py.File(auto, "r") as a, h5py.File(ev, "r") as b, h5py.File(f32, "r") as c:
        assert a["config"].attrs["engine"] == "reference" and a["config"].attrs["dtype"] == "float64"
        assert b["config"].attrs["engine"] == "event" and c["config"].attrs["engine"] == "event"
        for k in ["predictions", "layers/act3/count", "layers/blk%2Fact2/spikes", "layers/act3/sops"]:
            np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)
        np.testing.assert_allclose(a["readout"][()], b["readout"][()], rtol=1e-12, atol=1e-12)


def test_auto_engine_choice(made):
    """choose_engine: the reference only for local float64 runs the cost model predicts short."""
    net = R.prepare_network(made["net"])[0]
    plan = make_plan(net, None, "auto", None, (), 0, False)
    opts = R.RunOptions(engine="auto", dtype="float64")
    assert R.choose_engine(net, 4, plan, opts) == "reference"
    assert R.reference_seconds(net, 4, plan) < R.reference_seconds(net, 400, plan)
    huge = next(n for n in (10 ** k for k in range(1, 12)) if R.reference_seconds(net, n, plan) > R.ENGINE_START_S)
    assert R.choose_engine(net, huge, plan, opts) == "event"
    assert R.choose_engine(net, 4, plan, opts, distributed=True) == "event"
    assert R.choose_engine(net, 4, plan, replace(opts, dtype="float32")) == "event"
    for name in ("event", "reference"):
        assert R.choose_engine(net, huge, plan, replace(opts, engine=name)) == name


def test_run_with_binned_event_input(files):
    """--input-mode events: data x is (samples, bins, C, H, W) event counts; results count the input events."""
    tmp, model, _ = files
    x, y = small_data(5)
    rng = np.random.default_rng(0)
    ev = rng.integers(0, 3, size=(len(x), 2) + x.shape[1:]).astype(np.float32)
    data = tmp / "events.npz"
    np.savez(data, x=ev, y=y)
    out = tmp / "ev.h5"
    ok(invoke("run", model, "--preset", "casc", "--input-mode", "events", "--data", data, "-o", out,
              "--engine", "reference"))
    with h5py.File(out, "r") as f:
        assert f["layers/input/spikes"][()].sum() == ev.sum()
    assert_user_error(invoke("run", model, "--preset", "casc", "--input-mode", "events", "--data", files[2],
                             "-o", tmp / "bad.h5"), "time bins")
