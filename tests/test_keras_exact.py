"""casc and bitserial conversions of the Keras QuantReLU fixture are exact against Keras' own activations."""

import numpy as np
import pytest

from evsnn.convert import convert
from evsnn.reference import simulate
from test_keras_frontend import SUFFIXES, keras_run, to_graph_layout  # noqa: F401  (sets KERAS_BACKEND)


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_casc_counts_equal_keras_quantrelu_levels(keras, suffix):
    from pathlib import Path
    path = str(Path(__file__).parent / "fixtures" / "keras" / f"quant_cnn{suffix}")
    graph, vals, kvals, ok, model = keras_run(path)
    x = vals[graph.input.name][ok][:16]
    net = convert(graph, "casc")
    res = simulate(net, x, sleep="auto")
    quant = [lay for lay in model.layers if type(lay).__name__ == "QuantReLU"]
    assert quant
    for lay in quant:
        want = to_graph_layout(kvals[lay.name], graph.meta["flatten_hwc"].get(lay.name))[ok][:16]
        levels = np.round(want.reshape(len(want), -1) * lay.levels / lay.threshold)
        np.testing.assert_array_equal(res.counts[lay.name], levels, err_msg=lay.name)
    keras_out = kvals["__predict__"][ok][:16]
    assert (res.predictions == keras_out.argmax(axis=1)).all()
