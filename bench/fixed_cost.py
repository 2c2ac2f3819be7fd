"""Fixed cost of the command line (issue #14 item 5): wall and CPU time of short commands, in subprocesses.

    python bench/fixed_cost.py [--repeat 5] [--phases]

Prints, for each command, the median over ``--repeat`` fresh processes of the wall time and of
the CPU time (user + system, of the child): the CPU time is what the wall time would be on an
idle machine for these single-threaded start-ups, so it is the figure to compare on a shared one.

Commands:
  python -c pass          the interpreter alone
  import evsnn            target ≤ 0.2 s
  evsnn --help            the CLI's own start-up
  numba floor             import NumPy + Numba and call one cached @njit function: what any
                          Numba program pays before its first kernel runs (context set-up) and at
                          exit (a plain program: the interpreter tears its modules down at exit, which the
                          evsnn CLI skips, see evsnn.cli.main)
  evsnn run (1 sample)    the bundled digits network (evsnn/data/digits_cnn.onnx converted with
                          casc, once) on one digits sample, Numba cache warm; target ≤ 0.5 s. The
                          default --engine auto runs a job this small on the NumPy reference
                          (evsnn.runner.choose_engine)
  ... --engine event      the same on the event engine: the Numba floor plus loading the kernels

``--engines`` prints the NumPy reference's predicted (the auto engine's cost model) and measured time
on digits for 1–256 samples. ``--phases`` also runs the steps of ``evsnn run --engine event`` in one process and prints each one's wall and
CPU time (imports, data, network, engine import, first engine call, file write, summary).

Every child runs with PYTHONDONTWRITEBYTECODE unset, so compiled ``.pyc`` files are used as in an
installed package (a warm-up run of each command, not counted, writes them and the Numba cache).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"import evsnn": 0.2, "evsnn run (1 sample)": 0.5}

FLOOR_MODULE = """
import numba
import numpy as np

@numba.njit(cache=True)
def total(a):
    return a.sum()
"""


def child_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(cmd: list[str], cwd: str | None = None) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of ``cmd``; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def evsnn_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "evsnn.cli", *args]


def commands(tmp: str) -> dict[str, tuple[list[str], list[str] | None, str | None]]:
    """name → (command, command to run after each timed run (cleanup) or None, cwd)."""
    net = os.path.join(tmp, "net.h5")
    out = os.path.join(tmp, "r.h5")
    model = os.path.join(ROOT, "evsnn", "data", "digits_cnn.onnx")
    subprocess.run(evsnn_cmd("convert", model, "--preset", "casc", "-o", net), check=True, env=child_env(),
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(tmp, "floor_mod.py"), "w") as fh:
        fh.write(FLOOR_MODULE)
    rm = [sys.executable, "-c", f"import os; os.remove({out!r})"]
    return {
        "python -c pass": ([sys.executable, "-c", "pass"], None, None),
        "import evsnn": ([sys.executable, "-c", "import evsnn"], None, None),
        "evsnn --help": (evsnn_cmd("--help"), None, None),
        "numba floor": ([sys.executable, "-c", "import numpy as np, floor_mod; floor_mod.total(np.ones(3))"], None,
                        tmp),
        "evsnn run (1 sample)": (evsnn_cmd("run", net, "--data", "digits", "--limit", "1", "-o", out), rm, None),
        "... --engine event": (evsnn_cmd("run", net, "--data", "digits", "--limit", "1", "-o", out, "--engine",
                                         "event"), rm, None),
    }


def phases(tmp: str) -> None:
    """Steps of `evsnn run` in this process (run it in a fresh interpreter: the first imports count)."""
    code = f"""
import time
last = [time.perf_counter(), time.process_time()]
def mark(name):
    w, c = time.perf_counter(), time.process_time()
    print(f"  {{name:34s}} wall {{w - last[0]:6.3f}} s  cpu {{c - last[1]:6.3f}} s")
    last[:] = [w, c]
import numpy as np; mark("import numpy")
import evsnn.cli; mark("import evsnn.cli (click)")
from evsnn import energy, runner; mark("import runner, energy, store (h5py)")
x, y, info = runner.load_data("digits", 1); mark("load digits, 1 sample")
net, _ = runner.prepare_network({os.path.join(tmp, "net.h5")!r}, None, None, None, 99.99, "analog")
mark("load + validate network")
import numba; mark("import numba")
import evsnn.engine; mark("import evsnn.engine")
r = runner.run_to_file(net, x, y, {os.path.join(tmp, "p.h5")!r}, runner.RunOptions(engine="event"), info)
mark("run_to_file (first engine call)")
from evsnn.report import summarize; summarize(r); mark("summarize")
"""
    p = subprocess.run([sys.executable, "-c", code], env=child_env(), text=True, capture_output=True)
    print(p.stdout + p.stderr, end="")
    os.remove(os.path.join(tmp, "p.h5"))


def engines() -> None:
    """The reference's cost model (evsnn.runner.reference_seconds) against its measured time, and auto's choice."""
    from evsnn import runner
    from evsnn.ir.records import make_plan
    from evsnn.reference import simulate

    x = runner.load_data("digits", 256)[0]
    print(f"{'preset':8s} {'samples':>7s} {'predicted':>10s} {'measured':>9s}  auto's choice")
    for preset in ("casc", "if"):
        net = runner.prepare_network(os.path.join(ROOT, "evsnn", "data", "digits_cnn.onnx"), preset)[0]
        sleep = runner.default_sleep(net, None)
        plan = make_plan(net, None, sleep, None, (), 0, False)
        opts = runner.RunOptions(engine="auto", dtype="float64")
        for n in (1, 16, 64, 256):
            t = time.perf_counter()
            simulate(net, x[:n], sleep=sleep)
            took = time.perf_counter() - t
            print(f"{preset:8s} {n:7d} {runner.reference_seconds(net, n, plan):9.3f}s {took:8.3f}s  "
                  f"{runner.choose_engine(net, n, plan, opts)}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes per command (median)")
    ap.add_argument("--phases", action="store_true", help="also print the steps of `evsnn run` in one process")
    ap.add_argument("--engines", action="store_true",
                    help="also compare the reference's predicted and measured time (the auto engine's cost model)")
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (wall times grow with it, CPU times less)")
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(tmp)
        rows = {}
        for name, (cmd, after, cwd) in cmds.items():  # warm-up: .pyc files and the Numba cache
            timed(cmd, cwd)
            if after:
                timed(after)
        for _ in range(args.repeat):  # interleaved, so a change of load hits every command alike
            for name, (cmd, after, cwd) in cmds.items():
                rows.setdefault(name, []).append(timed(cmd, cwd))
                if after:
                    timed(after)
        print(f"{'command':24s} {'wall':>8s} {'cpu':>8s}  target  (medians of {args.repeat})")
        for name, runs in rows.items():
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            target = f"≤ {TARGETS[name]:.1f} s" if name in TARGETS else ""
            print(f"{name:24s} {wall:7.3f}s {cpu:7.3f}s  {target}")
        floor = statistics.median(r[1] for r in rows["numba floor"])
        run = statistics.median(r[1] for r in rows["... --engine event"])
        print(f"evsnn run --engine event beyond the Numba floor: {run - floor:.3f} s CPU ({run / floor:.2f}× the floor)")
        if args.phases:
            print("steps of evsnn run in one process:")
            phases(tmp)
    if args.engines:
        engines()


if __name__ == "__main__":
    main()
