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
    layers = gs.conv_layers(net, np.float64)
    assert [ly[:3] for ly in layers] == [(pr.pre, tuple(pr.pre_shape), tuple(pr.post_shape)) for pr in convs[1:]]
    for (*_, wdt), pr in zip(layers, convs[1:]):  # the kernel is timed with the weights the engine scatters
        exact32 = np.array_equal(pr.kernel.astype(np.float32).astype(np.float64), pr.kernel)
        assert np.dtype(wdt) == (np.float32 if exact32 else np.float64)
    assert all(np.dtype(ly[3]) == np.float32 for ly in gs.conv_layers(net, np.float32))  # a float32 run's
    for name, shape, _, _ in layers:
        size = int(np.prod(shape))
        sp = res.spikes_pos[name] + res.spikes_neg[name]
        a = gs.step_activity(res, name, size)
        assert 0 < a <= 1
        assert np.isclose(a * size * (sp > 0).sum(), sp.sum())  # mean over the steps in which it spikes
