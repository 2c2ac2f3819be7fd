"""``evsnn run`` on a real ``distributed.LocalCluster`` (worker processes): same file as one process,
a worker killed mid-run, an unreachable scheduler, resume after an interruption with out-of-order batches.

One cluster of 2 single-threaded worker processes serves the module (starting one costs seconds). Tests
slow chosen batches down inside the workers (``client.run`` patches ``evsnn.runner.simulate_batch`` in
each worker process) to fix the completion order or to have work in flight when a worker is killed.
"""

import os
import signal
import socket
import time

import h5py
import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the dask extra (dask[distributed]) is not installed")

from evsnn import runner  # noqa: E402
from evsnn import distributed as D  # noqa: E402
from evsnn.convert import convert  # noqa: E402
from evsnn.store import partial_path  # noqa: E402
from evsnn.store import results as RS  # noqa: E402
from test_cli import assert_user_error, invoke, ok, run_args  # noqa: E402
from test_results import assert_same_content, small_data, small_graph  # noqa: E402

CLUSTER_CONFIG = ("threads", "scheduler", "workers")  # the config entries a distributed run may change


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


def _slow(delays: dict):
    """(Runs in a worker) sleep ``delays[b]`` (or ``delays["*"]``) seconds before simulating batch b of
    more than one sample (the warm-up task runs one sample and is never slowed)."""
    import evsnn.runner as R

    real = getattr(R, "_real_simulate_batch", R.simulate_batch)
    R._real_simulate_batch = real

    def slow(sim, engine, net, x, opts, sleep, b):
        if len(x) > 1:
            time.sleep(delays.get(b, delays.get("*", 0)))
        return real(sim, engine, net, x, opts, sleep, b)

    R.simulate_batch = slow


def _unslow():
    import evsnn.runner as R

    R.simulate_batch = getattr(R, "_real_simulate_batch", R.simulate_batch)


@pytest.fixture
def slow(client):
    def apply(delays):
        # a worker restarted by an earlier test may still be joining: patch every worker of the cluster
        client.wait_for_workers(2, timeout=120)
        client.run(_slow, delays)
    yield apply
    client.run(_unslow)


@pytest.mark.parametrize("preset,input_mode,record", [("casc", "analog", ("counts", "raster")),
                                                       ("casc", "analog", ()),
                                                       ("if", "rate", ("counts",))])
def test_file_equals_single_process_run(client, tmp_path, preset, input_mode, record):
    """Event engine on the workers; rate input checks every batch keeps its index (its seed)."""
    net = convert(small_graph(), preset, input_mode=input_mode)
    x, y = small_data(9)
    opts = runner.RunOptions(batch_size=2, record=record, wake=None if preset == "casc" else 6)
    full = runner.run_to_file(net, x, y, str(tmp_path / "full.h5"), opts)
    seen = []
    out = runner.run_to_file(net, x, y, str(tmp_path / "dist.h5"), opts, client=client, progress=seen.append)
    assert sorted(seen) == [1, 2, 2, 2, 2]  # one progress step per batch
    assert_same_content(full, out, skip_config=CLUSTER_CONFIG)
    with h5py.File(out, "r") as f:
        assert f["config"].attrs["scheduler"] == "local" and f["config"].attrs["workers"] == 2
    with h5py.File(full, "r") as f:
        assert "scheduler" not in f["config"].attrs
        if input_mode == "rate":  # seeded per batch: batches differ, so a wrong index would show
            assert f["layers/input/spikes"][()].sum() > 0


@pytest.mark.parametrize("record", [(), ("counts",)])
def test_a_batch_task_returns_only_what_the_file_keeps(record):
    """The engine fills every neuron's count and value; a worker sends them back only when the file
    records counts (on a VGG-sized network they are 4 MB a sample, which the client would drop)."""
    net = convert(small_graph(), "casc")
    x, _ = small_data(3)
    opts = runner.RunOptions(batch_size=3, record=record, threads=1)  # as map_batches sends them
    name = "evsnn-network-test-recorded-only"
    D._networks[name] = net
    try:
        b, res = D.run_batch(name, runner.network_digest(net), 4, x, opts, "auto", "event")
    finally:
        D._networks.pop(name)
    assert b == 4
    sim, engine = runner.get_simulator("event")
    full = runner.simulate_batch(sim, engine, net, x, opts, "auto", 4)
    assert full.counts and set(full.values) == set(full.counts)
    if record:
        assert set(res.counts) == set(full.counts)
        for k in full.counts:
            np.testing.assert_array_equal(res.counts[k], full.counts[k])
            np.testing.assert_array_equal(res.values[k], full.values[k])
    else:
        assert res.counts == {} and res.values == {}
    np.testing.assert_array_equal(res.readout, full.readout)
    for k in full.sops:
        np.testing.assert_array_equal(res.sops[k], full.sops[k])


def test_cli_interrupted_with_out_of_order_batches_resumes(client, tmp_path, monkeypatch):
    """The client holds batch 0's result back (deterministic out-of-order completion; a gated task on a
    worker was not: the scheduler sometimes queued the other batches behind it), so batches 1.. are
    written first; interrupted after 3 writes, --resume completes the single-process file."""
    net, out, full = str(tmp_path / "net.h5"), str(tmp_path / "o.h5"), str(tmp_path / "full.h5")
    x, y = small_data(13)  # 7 batches of 2 (the last of 1)
    data = str(tmp_path / "data.npz")
    np.savez(data, x=x, y=y)
    from evsnn.store import save_network
    save_network(convert(small_graph(), "casc"), net)
    args = ["--batch-size", "2", "--record", "counts", "--record", "raster"]
    ok(invoke(*run_args(net, data, full, *args)))
    address = client.scheduler.address
    real, writes = RS.ResultsWriter.write_batch, []
    real_map = D.map_batches

    def batch_0_last(*args, **kw):
        held = []
        for b, res in real_map(*args, **kw):
            if b == 0:
                held.append((b, res))
            else:
                yield b, res
        yield from held

    def write_then_interrupt(self, b, res, yb=None):
        if len(writes) == 3:
            raise KeyboardInterrupt
        writes.append(b)
        real(self, b, res, yb)

    with monkeypatch.context() as m:
        m.setattr(RS.ResultsWriter, "write_batch", write_then_interrupt)
        m.setattr(D, "map_batches", batch_0_last)
        r = invoke(*run_args(net, data, out, *args, "--scheduler", address))
    assert r.exit_code == 130, (r.output, r.exception)
    assert "interrupted after 6 of 13 samples" in r.stderr and "--resume" in r.stderr
    assert 0 not in writes, (writes, r.stderr)
    assert not os.path.exists(out)
    with h5py.File(partial_path(out), "r") as f:
        done = f["_batches/done"][()]
    assert done.sum() == 3 and done[0] == 0 and sorted(np.flatnonzero(done)) == sorted(writes)
    assert "unfinished evsnn run, 6 of 13" in ok(invoke("inspect", partial_path(out))).output
    r = ok(invoke(*run_args(net, data, out, *args, "--scheduler", address, "--resume")))
    assert "2 Dask workers" in r.output
    assert not os.path.exists(partial_path(out))
    assert_same_content(full, out, skip_config=CLUSTER_CONFIG)


def test_sigint_to_a_running_cli_leaves_a_resumable_file(client, files_cli, slow):
    """A real SIGINT to ``evsnn run --scheduler`` (a subprocess) while it waits for batches: exit 130, the
    partial file holds whole batches only, and --resume completes it to the single-process file."""
    import subprocess
    import sys

    tmp, net, data = files_cli
    full, out = str(tmp / "full.h5"), str(tmp / "o.h5")
    args = ["--batch-size", "2", "--record", "counts"]
    ok(invoke(*run_args(net, data, full, *args)))
    slow({"*": 1.0})  # 4 batches, at most 2 at a time: the run takes seconds after its partial file appears
    cmd = [sys.executable, "-c", "from evsnn.cli import main; main()",
           *run_args(net, data, out, *args, "--scheduler", client.scheduler.address)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(partial_path(out)) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert p.poll() is None, "the run ended before it could be interrupted: " + p.communicate()[1]
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "error: interrupted after" in err and "--resume" in err
    assert not os.path.exists(out)
    client.run(_unslow)
    ok(invoke(*run_args(net, data, out, *args, "--scheduler", client.scheduler.address, "--resume")))
    assert_same_content(full, out, skip_config=CLUSTER_CONFIG)


def test_cli_local_cluster(files_cli):
    tmp, net, data = files_cli
    full, out = str(tmp / "full.h5"), str(tmp / "local.h5")
    ok(invoke(*run_args(net, data, full, "--batch-size", "3", "--record", "counts")))
    r = ok(invoke(*run_args(net, data, out, "--batch-size", "3", "--record", "counts", "--scheduler", "local:1")))
    assert "1 Dask workers" in r.output
    assert_same_content(full, out, skip_config=CLUSTER_CONFIG)
    with h5py.File(out, "r") as f:
        assert f["config"].attrs["scheduler"] == "local" and f["config"].attrs["workers"] == 1


@pytest.fixture
def files_cli(tmp_path):
    from evsnn.store import save_network

    net = str(tmp_path / "net.h5")
    save_network(convert(small_graph(), "casc"), net)
    x, y = small_data(7)
    data = str(tmp_path / "data.npz")
    np.savez(data, x=x, y=y)
    return tmp_path, net, data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("spec,pattern", [
    ("tcp://127.0.0.1:{port}", r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:\d+ within 0\.5 s"),
    ("local:0", r"local:N needs a worker count N ≥ 1"),
    ("local:two", r"local:N needs a worker count"),
    ("foo://bar:1", r"cannot reach the Dask scheduler at foo://bar:1"),
])
def test_bad_or_unreachable_scheduler_is_one_line_and_writes_nothing(files_cli, spec, pattern):
    tmp, net, data = files_cli
    out = tmp / "o.h5"
    t0 = time.perf_counter()
    r = invoke(*run_args(net, data, out, "--scheduler", spec.format(port=_free_port()), "--scheduler-timeout", "0.5"))
    assert_user_error(r, pattern)
    assert time.perf_counter() - t0 < 20  # dask's own connect timeout (30 s) does not apply
    assert not out.exists() and not os.path.exists(partial_path(out))


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_bad_scheduler_timeout_is_refused(files_cli, value):
    tmp, net, data = files_cli
    r = invoke(*run_args(net, data, tmp / "o.h5", "--scheduler", "local:1", "--scheduler-timeout", value))
    assert r.exit_code == 2 and "--scheduler-timeout" in r.output, r.output
    assert not (tmp / "o.h5").exists()


def test_connect_takes_a_positive_timeout():
    with pytest.raises(D.SchedulerError, match="must be > 0"):
        with D.connect("tcp://127.0.0.1:1", 0):
            pass


def _gate(flag: str, give_up_s: float):
    """(Runs in a worker) batch 0 waits until the file ``flag`` exists (and fails after ``give_up_s``)."""
    import evsnn.runner as R

    real = getattr(R, "_real_simulate_batch", R.simulate_batch)
    R._real_simulate_batch = real

    def gated(sim, engine, net, x, opts, sleep, b):
        if b == 0 and len(x) > 1:
            deadline = time.monotonic() + give_up_s
            while not os.path.exists(flag):
                if time.monotonic() > deadline:
                    raise RuntimeError("batch 0 was never released: the other batches did not complete")
                time.sleep(0.01)
        return real(sim, engine, net, x, opts, sleep, b)

    R.simulate_batch = gated


def _networks_held():
    """(Runs in a worker) the networks of runs installed in this worker process."""
    from evsnn import distributed as D

    return sorted(D._networks)


def test_a_held_batch_does_not_keep_the_others_waiting(client, tmp_path):
    """Batch 0 is held on its worker until every other batch is written: the other worker must run them all
    (none may wait in the held worker's queue, and the net must stay usable on both), and at most one batch
    per worker thread is in flight."""
    net = convert(small_graph(), "casc")
    x, y = small_data(20)  # 10 batches of 2
    opts = runner.RunOptions(batch_size=2, record=("counts",))
    full = runner.run_to_file(net, x, y, str(tmp_path / "full.h5"), opts)
    flag = tmp_path / "release"
    client.wait_for_workers(2, timeout=120)
    client.run(_gate, str(flag), 90.0)
    written, in_flight = [], []

    def on_batch(start, res, yb):
        written.append(start // 2)
        in_flight.append(sum(1 for keys in client.processing().values() for k in keys if "run_batch" in str(k)))
        if len(written) == 9:
            assert all(len(v) == 1 for v in client.run(_networks_held).values())  # the run's network, on both
            flag.touch()

    try:
        out = runner.run_to_file(net, x, y, str(tmp_path / "dist.h5"), opts, client=client, on_batch=on_batch)
    finally:
        client.run(_unslow)
    assert written[-1] == 0 and sorted(written[:9]) == list(range(1, 10))
    assert max(in_flight) <= 2
    assert_same_content(full, out, skip_config=CLUSTER_CONFIG)
    assert not any(client.run(_networks_held).values())  # the run's worker plugin was removed at its end


@pytest.mark.parametrize("which", ["one", "all"])
def test_worker_killed_mid_run_still_gives_the_same_file(client, tmp_path, slow, which):
    """SIGKILL a worker process that holds batches (or every worker, losing every copy of the scattered
    network, which the client then scatters again); the scheduler reruns the batches on the workers left
    or restarted by their nannies, and the file is the same."""
    net = convert(small_graph(), "casc")
    x, y = small_data(10)
    opts = runner.RunOptions(batch_size=2, record=("counts", "raster"))
    full = runner.run_to_file(net, x, y, str(tmp_path / "full.h5"), opts)
    slow({"*": 0.7})
    pids_before = client.run(os.getpid)
    killed = {}

    def kill_busy_workers(start, res, yb):
        if killed:
            return
        busy = {w: keys for w, keys in client.processing().items() if any("run_batch" in str(k) for k in keys)}
        assert busy, "no worker had a batch in flight after the first batch was written"
        victims = [sorted(busy)[0]] if which == "one" else sorted(pids_before)
        killed.update(pids=[pids_before[a] for a in victims], batches=sum(len(busy.get(a, ())) for a in victims))
        for pid in killed["pids"]:
            os.kill(pid, signal.SIGKILL)

    out = runner.run_to_file(net, x, y, str(tmp_path / "dist.h5"), opts, client=client, on_batch=kill_busy_workers)
    assert killed and killed["batches"] >= 1
    assert_same_content(full, out, skip_config=CLUSTER_CONFIG)
    for pid in killed["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    client.wait_for_workers(2, timeout=120)  # the nannies restarted them: leave the cluster whole
    assert not set(killed["pids"]) & set(client.run(os.getpid).values())
