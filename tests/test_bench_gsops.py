"""bench/gsops.py's bookkeeping (which convs it measures the kernel on, at what activity); the timing is a
bench, not a test."""

import numpy as np

from evsnn import engine
from evsnn.convert import convert
from evsnn.ir import snn as S
from scripts import bench_script
from test_peers_bench import _graph


def test_gsops_measures_the_3x3_convs_between_populations_at_their_step_activity():
    gs = bench_script("gsops")
    g, x = _graph()
    net = convert(g, "casc")
    res = engine.simulate(net, x)
    convs = [pr for pr in net.projections if isinstance(pr, S.ConvProjection)]
    assert [pr.pre for pr in convs][0] == S.INPUT  # the first conv reads the input: no events, not measured
    layers = gs.conv_layers(net)
    assert layers == [(pr.pre, tuple(pr.pre_shape), tuple(pr.post_shape)) for pr in convs[1:]]
    for name, shape, _ in layers:
        size = int(np.prod(shape))
        sp = res.spikes_pos[name] + res.spikes_neg[name]
        a = gs.step_activity(res, name, size)
        assert 0 < a <= 1
        assert np.isclose(a * size * (sp > 0).sum(), sp.sum())  # mean over the steps in which it spikes
