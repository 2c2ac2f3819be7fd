"""bench/paths.py's bookkeeping (three paths run and their counts compared); the timing is a bench."""

import numpy as np
import pytest

from evsnn import engine
from evsnn.convert import convert
from scripts import bench_script
from test_peers_bench import _graph


def test_paths_bench_runs_each_path_and_finds_equal_counts_on_dyadic_weights(capsys):
    pb = bench_script("paths")
    g, x = _graph()
    net = convert(g, "casc")
    r = pb.measure_net("tiny", net, x, {}, reps=1)
    line = capsys.readouterr().out
    assert r > 0 and line.startswith("tiny") and f"auto/best {r:5.2f}" in line
    assert "differing" not in line  # dyadic weights: every path gives the same counts


def test_paths_bench_counts_the_differing_spike_counts():
    pb = bench_script("paths")
    g, x = _graph()
    net = convert(g, "casc")
    a = engine.simulate(net, x)
    b = engine.simulate(net, x)
    assert pb.differing_counts(a, b) == 0
    name = next(iter(b.counts))
    b.counts[name][0, :3] += 1
    b.counts[name][1, 0] -= 1
    assert pb.differing_counts(a, b) == 4


def test_paths_bench_refuses_an_unknown_case(capsys):
    with pytest.raises(SystemExit) as e:
        bench_script("paths").main(["--cases", "digits-if,nope"])
    assert e.value.code == 2 and "unknown case(s) nope" in capsys.readouterr().err
