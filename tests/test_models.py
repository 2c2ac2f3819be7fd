"""Neuron rules on hand-computed sequences (design.md, "Neuron rules")."""

import numpy as np

from evsnn import models


def run_if(inputs, theta=1.0, reset="subtract", v0=0.0):
    v, out = np.array([v0]), []
    for i in inputs:
        v, s = models.if_step(v, np.array([i]), np.array([theta]), reset)
        out.append(int(s[0]))
    return out, float(v[0])


def test_if_soft_reset_keeps_the_remainder():
    spikes, v = run_if([0.6, 0.6, 0.6, 0.6])
    assert spikes == [0, 1, 0, 1]
    assert np.isclose(v, 0.4)


def test_if_zero_reset_drops_the_remainder():
    spikes, v = run_if([0.75, 0.75, 0.75, 0.75], reset="zero")
    assert spikes == [0, 1, 0, 1]
    assert v == 0.0


def test_if_fires_at_most_once_per_step():
    spikes, v = run_if([3.0, 0.0, 0.0])
    assert spikes == [1, 1, 1] and v == 0.0


def test_cif_overshoot_in_wake_is_corrected_by_a_negative_spike_in_sleep():
    """L = 4, T_w = 4: inputs 1, 1, then −1.5 arrives late; net count must settle at floor(0.5) = 0."""
    v, S = np.array([0.0]), np.array([0])
    seq = []
    wake_inputs = [1.0, 1.0, -1.5, 0.0]
    for t, i in enumerate(wake_inputs + [0.0, 0.0, 0.0]):
        cap = min(min(t + 1, 4), 4)
        v, S, s = models.cif_step(v, S, np.array([i]), np.array([1.0]), cap)
        seq.append(int(s[0]))
    # t0: v=1 → +1 (v 0); t1: v=1 → +1 (v 0); t2: v=−1.5 → −1 (v −0.5); t3: v −0.5 → −1 (v 0.5, S 0); then quiet
    assert seq == [1, 1, -1, -1, 0, 0, 0]
    assert S[0] == 0 and np.isclose(v[0], 0.5)


def test_cif_positive_spikes_capped_by_wake_steps_and_levels():
    v, S = np.array([0.0]), np.array([0])
    seq = []
    for t, i in enumerate([5.0, 0.0, 0.0, 0.0, 0.0]):
        cap = min(min(t + 1, 2), 3)  # T_w = 2, L = 3: cap is min(t_w, L)
        v, S, s = models.cif_step(v, S, np.array([i]), np.array([1.0]), cap)
        seq.append(int(s[0]))
    assert seq == [1, 1, 0, 0, 0] and S[0] == 2


def test_cif_negative_spike_needs_a_positive_count():
    v, S, s = models.cif_step(np.array([0.0]), np.array([0]), np.array([-3.0]), np.array([1.0]), 4)
    assert s[0] == 0 and S[0] == 0 and v[0] == -3.0


def test_bitserial_emits_binary_digits_msb_first():
    for level in range(8):
        v = np.array([level + 0.25])
        bits = []
        for k in range(3):
            v, s = models.bitserial_emit(v, np.array([1.0]), k, 3)
            bits.append(int(s[0]))
        assert bits == [int(b) for b in format(level, "03b")]


def test_bitserial_saturates_at_all_ones():
    v = np.array([11.0])
    bits = []
    for k in range(3):
        v, s = models.bitserial_emit(v, np.array([1.0]), k, 3)
        bits.append(int(s[0]))
    assert bits == [1, 1, 1]


def test_maxpool_gate_follows_the_window_maximum_one_step_at_a_time():
    S = np.array([0])
    out = []
    for m in [1, 2, 2, 1, 3]:
        S, s = models.maxpool_gate(np.array([m]), S)
        out.append(int(s[0]))
    assert out == [1, 1, 0, -1, 1] and S[0] == 2
