"""Start-up cost (issue #14 item 5): what each entry point imports. Times are measured in
bench/fixed_cost.py; here only which heavy modules a fresh interpreter ends up holding."""

import json
import subprocess
import sys

import pytest

HEAVY = ("numpy", "scipy", "h5py", "onnx", "numba", "llvmlite", "torch", "keras", "click", "threadpoolctl")


def loaded_after(code: str) -> set[str]:
    """Top-level packages among HEAVY that a fresh interpreter holds after running ``code``."""
    probe = code + f"\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_evsnn_loads_no_heavy_module():
    assert loaded_after("import evsnn") == set()


def test_cli_module_loads_only_click():
    # `evsnn --help` and argument errors need no NumPy, h5py or engine
    assert loaded_after("import evsnn.cli") == {"click"}


@pytest.mark.parametrize("module", ["evsnn.runner", "evsnn.store", "evsnn.convert", "evsnn.energy", "evsnn.report",
                                    "evsnn.datasets", "evsnn.ir", "evsnn.ir.drive", "evsnn.reference"])
def test_run_path_modules_load_no_scipy_onnx_or_numba(module):
    assert loaded_after(f"import {module}") <= {"numpy", "h5py"}


def _saved_dense_net(tmp_path):
    """(path of a saved casc network with a dense projection, its inputs)."""
    from evsnn.store import save_network
    from test_threads import _dense_net

    net, x = _dense_net()
    assert any(pr.kind == "dense" for pr in net.projections)
    path = str(tmp_path / "net.h5")
    save_network(net, path)
    return path, x


def test_loading_data_and_a_network_file_loads_no_scipy_onnx_or_numba(tmp_path):
    path, _ = _saved_dense_net(tmp_path)
    code = ("from evsnn import runner\n"
            f"runner.prepare_network({path!r}, None, None, None, 99.99, 'analog')\n"
            "runner.load_data('digits', 1)")
    assert loaded_after(code) <= {"numpy", "h5py"}


def test_a_reference_run_through_a_dense_projection_loads_no_scipy(tmp_path):
    # SciPy's import was a third of a one-sample `evsnn run` on a slow machine; the reference simulator's
    # dense projections no longer need it (evsnn.ir.drive.dense_project)
    path, x = _saved_dense_net(tmp_path)
    code = ("import numpy as np\nfrom evsnn.store import load_network\nfrom evsnn.reference import simulate\n"
            f"res = simulate(load_network({path!r}), np.array({x.tolist()!r}))\n"
            "assert sum(int(c.sum()) for c in res.counts.values()) > 0")
    assert loaded_after(code) <= {"numpy", "h5py"}


@pytest.mark.parametrize("only_daemons", [True, False])
def test_cli_main_skips_the_interpreter_teardown(monkeypatch, only_daemons):
    # the teardown of Numba's objects was 0.2 s of a one-sample run (bench/fixed_cost.py); main() ends
    # through _leave (os._exit after the atexit handlers, tested in a subprocess in test_cli), or, with a
    # non-daemon thread left, through the usual shutdown with the collector off
    import gc

    from evsnn import cli

    left = []
    monkeypatch.setattr(cli, "_leave", left.append)  # os._exit would end this test process
    monkeypatch.setattr(cli, "_only_daemon_threads", lambda: only_daemons)
    monkeypatch.setattr(sys, "argv", ["evsnn", "--version"])
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    try:
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == 0
        assert left == ([0] if only_daemons else [])
        assert not gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()
