"""The engine records sleep-"auto" runs in growing rounds instead of wake + max_sleep steps up front
(evsnn.engine.run.SLEEP_WINDOW): the records equal the reference's whatever the window, memory follows
the steps the samples need, and a round that would exceed the memory budget is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evsnn import engine
from evsnn.engine import run as engine_run
from evsnn.errors import FormatError
from evsnn.reference import simulate as ref_simulate
from test_engine import _small_net, assert_same, cases, dyadic


class window:
    """Temporarily set the first round's sleep window (a context manager usable inside @given)."""

    def __init__(self, steps: int):
        self.steps = steps

    def __enter__(self):
        self.old, engine_run.SLEEP_WINDOW = engine_run.SLEEP_WINDOW, self.steps

    def __exit__(self, *exc):
        engine_run.SLEEP_WINDOW = self.old


@settings(max_examples=25)
@given(cases(), st.sampled_from([0, 1, 2]), st.data())
def test_rounds_equal_the_reference(case, w, data):
    net, x, kw = case
    if kw.get("sleep") != "auto" or not dyadic(net):
        return
    ref = ref_simulate(net, x, **kw)
    with window(w):
        got = engine.simulate(net, x, threads=data.draw(st.sampled_from([1, 2])), **kw)
    assert_same(ref, got)


@pytest.mark.parametrize("preset", ["casc", "if"])
def test_samples_quiet_at_different_steps_are_merged_like_one_run(preset):
    net, x = _small_net(preset)
    x = np.concatenate([x, x[::-1] * 0.5, x * 0])
    kw = dict(sleep="auto", record=("counts", "raster"))
    if preset == "if":
        kw["wake"] = 4
    ref = ref_simulate(net, x, **kw)
    assert len(set(ref.sleep_steps.tolist())) > 1  # the batch really mixes quiescence times
    for w in (0, 1, 3, 1000):
        with window(w):
            assert_same(ref, engine.simulate(net, x, **kw))


def test_a_huge_sleep_cap_allocates_only_what_the_samples_need():
    net, x = _small_net()
    budget = 8 << 20  # 10^9 sleep steps of records would need terabytes
    res = engine.simulate(net, x, sleep="auto", max_sleep=10**9, memory_budget=budget, record=("counts", "raster"))
    assert res.quiescent.all() and res.steps < 64
    assert_same(ref_simulate(net, x, sleep="auto", record=("counts", "raster")), res)


def test_a_round_beyond_the_memory_budget_is_a_format_error():
    net, x = _small_net()
    with window(0), pytest.raises(FormatError, match="memory budget"):
        engine.simulate(net, x, sleep="auto", max_sleep=10**9, memory_budget=1)
