"""Linear chains between activations fold into one projection, exactly."""

import numpy as np
import pytest

from evsnn.convert import convert
from evsnn.convert.compose import LinOp, apply_chain, compose
from evsnn.ir import ann as A
from evsnn.reference import ann_forward, simulate

rng = np.random.default_rng(0)


def d(*shape):
    return rng.integers(-16, 17, shape) / 64


def conv(cin, cout, k, s, p, shape, groups=1):
    ho = (shape[1] + 2 * p - k) // s + 1
    wo = (shape[2] + 2 * p - k) // s + 1
    return LinOp("conv", shape, (cout, ho, wo), d(cout, cin // groups, k, k), (s, s), (p, p, p, p), groups)


def pool(k, shape):
    return LinOp("pool", shape, (shape[0], shape[1] // k, shape[2] // k), stride=(k, k), kernel=(k, k))


@pytest.mark.parametrize("chain, kind", [
    ([pool(2, (3, 8, 8)), conv(3, 4, 3, 1, 1, (3, 4, 4))], "conv"),        # pool then padded conv: exact fold
    ([conv(3, 4, 3, 1, 1, (3, 8, 8)), pool(2, (4, 8, 8))], "conv"),        # conv then pool
    ([conv(3, 3, 1, 1, 0, (3, 8, 8), groups=3), conv(3, 2, 3, 2, 1, (3, 8, 8))], "conv"),  # BN-affine then conv
    ([conv(3, 3, 3, 1, 1, (3, 6, 6)), conv(3, 2, 3, 1, 1, (3, 6, 6))], "dense"),  # padding would not line up
    ([pool(2, (2, 4, 4)), LinOp("reshape", (2, 2, 2), (8,)), LinOp("dense", (8,), (3,), d(3, 8))], "dense"),
])
def test_composed_operator_equals_the_chain(chain, kind):
    op = compose(chain, chain[0].in_shape)
    assert op.kind == kind
    x = rng.standard_normal((4,) + tuple(chain[0].in_shape))
    np.testing.assert_allclose(op.apply(x).reshape(4, -1), apply_chain(chain, x).reshape(4, -1), atol=1e-12)


def test_two_convolutions_in_a_row_convert_exactly():
    g = A.AnnGraph([A.Input("x", (), (2, 6, 6)),
                    A.Conv("c1", ("x",), d(3, 2, 3, 3), d(3), (1, 1), (1, 1, 1, 1), 1),
                    A.QuantAct("q", ("c1",), 4, 1.0, 0.0),
                    A.Conv("c2", ("q",), d(3, 3, 3, 3), d(3), (1, 1), (1, 1, 1, 1), 1),
                    A.Conv("c3", ("c2",), d(2, 3, 3, 3), d(2), (2, 2), (1, 1, 1, 1), 1),
                    A.Flatten("f", ("c3",)), A.Dense("o", ("f",), d(4, 18), d(4))], "o")
    net = convert(g, "casc")
    x = rng.integers(0, 256, (3, 2, 6, 6)) / 256
    res = simulate(net, x, sleep="auto")
    np.testing.assert_allclose(res.readout[:, -1], 4 * ann_forward(g, x), atol=1e-12)


def test_composition_keeps_the_grouping_so_zero_blocks_cost_no_synapses():
    """pool ∘ grouped conv is still grouped: the fan-out (SOPs per spike) must not count zero blocks."""
    from evsnn.ir import snn as S
    grouped = conv(4, 4, 3, 1, 1, (4, 4, 4), groups=2)
    op = compose([pool(2, (4, 8, 8)), grouped], (4, 8, 8))
    assert op.kind == "conv" and op.groups == 2 and op.weight.shape[1] == 2
    dw = compose([pool(2, (4, 8, 8)), conv(4, 4, 3, 1, 1, (4, 4, 4), groups=4)], (4, 8, 8))
    assert dw.groups == 4 and dw.weight.shape[1] == 1
    g = A.AnnGraph([A.Input("x", (), (4, 8, 8)), A.Conv("c0", ("x",), d(4, 4, 1, 1), d(4), (1, 1), (0,) * 4, 1),
                    A.QuantAct("q0", ("c0",), 4, 1.0, 0.0), A.AvgPool("p", ("q0",), (2, 2), (2, 2)),
                    A.Conv("c1", ("p",), grouped.weight, d(4), (1, 1), (1, 1, 1, 1), 2),
                    A.QuantAct("q1", ("c1",), 4, 1.0, 0.0), A.Flatten("f", ("q1",)),
                    A.Dense("o", ("f",), d(3, 64), d(3))], "o")
    net = convert(g, "casc")
    pr = next(p for p in net.projections if p.pre == "q0")
    assert pr.groups == 2
    # an interior input reaches 3×3 output positions × the 2 output channels of its group (36 if ungrouped)
    assert S.fanout(pr).max() == 3 * 3 * 2
    x = rng.integers(0, 256, (2, 4, 8, 8)) / 256
    res = simulate(net, x, sleep="auto")
    np.testing.assert_allclose(res.readout[:, -1], 4 * ann_forward(g, x), atol=1e-12)
