"""Check a run against the quantized ANN: ``verify(net, x, result)`` and the oracle it uses.

Exactness, as evsnn promises it for casc and bitserial: *every hidden count equals the quantized
ANN evaluated in float64 on the file's own float32 weights*. The oracle here is that ANN written on
the converted network itself (:func:`expected_levels`), a level-unit forward pass:

    level_p = clip(floor(Σ_pre project(pre → p, level_pre) + D_p + φ_p), 0, cap_p)

(a population with ``rounding="half_even"``: clip(rint(… + D_p + φ_p − ½), 0, cap_p), ties to even,
the rule of ONNX QuantizeLinear, QONNX ROUND and QKeras, which its neurons realise)

with the network's normalised weights (W·u_pre/u_post), the delivered drive total D_p of
:mod:`evsnn.ir.drive` (the analog input's W·x + b in level units, computed as the ANN's quantizer
scales z), φ_p = v0, cap_p = min(T_w, L_p) (casc) or L_p (bitserial), and max-pool gates = the
maximum of their window's levels. Algebraically this is the graph's quantized forward pass (each
level times λ_pre/L_pre, through the linear ops, scaled by L_post/λ_post), so it equals
:func:`evsnn.reference.ann_levels` up to float64 rounding; it is exact wherever real arithmetic is
(an average pool of equal-scale levels, a residual add of equal scales, inputs on level boundaries),
where the graph-order evaluation is not. Agreement with onnxruntime's float32 levels is measured
(bench/), not promised: float32 inference itself differs near level boundaries.

Rate presets (if, deng-gu, qcfs) are not exact; for them the report holds |count/T − a| per neuron,
a = clip(X, 0, 1) the clip-ReLU ANN activation in units of its λ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evsnn.errors import ConversionError
from evsnn.ir import drive as DR
from evsnn.ir import ops
from evsnn.ir import snn as S
from evsnn.ir.records import RunPlan, SimResult, check_batch, input_spikes


@dataclass
class VerifyReport:
    """Per-sample verdict of a run against the quantized ANN.

    Exact presets: ``exact`` (N,) bool, every neuron of every population matched; ``mismatches``
    name → (N,) int64 neurons whose level differs. Rate presets: ``exact`` is None and
    ``rate_error_mean`` / ``rate_error_max`` name → (N,) float64 hold |count/T − a| per sample.
    """

    kind: str  # "exact" or "rate"
    exact: np.ndarray | None = None
    mismatches: dict = field(default_factory=dict)
    rate_error_mean: dict = field(default_factory=dict)
    rate_error_max: dict = field(default_factory=dict)

    @property
    def percent_exact(self) -> float | None:
        """Share of samples whose every hidden count matched, in percent (None for rate presets)."""
        if self.exact is None:
            return None
        return 100.0 * float(self.exact.mean()) if len(self.exact) else 100.0


def _feed_forward(net: S.Network) -> None:
    order = {S.INPUT: -1, **{p.name: i for i, p in enumerate(net.populations)}}
    for pr in net.projections:
        if pr.post in order and order[pr.pre] >= order[pr.post]:
            raise NotImplementedError(
                f"verify needs a feed-forward network; {pr.pre!r}→{pr.post!r} is recurrent")


def _input_signal(net: S.Network, x: np.ndarray, wake: int, seed: int) -> np.ndarray:
    """(N, input size) what the input projections carry in total: x (analog), or the summed spike counts."""
    n = len(x)
    if net.input_mode == "analog":
        return x.reshape(n, -1)
    spikes = input_spikes(net, x, RunPlan(int(wake), 0, False, ("counts",), int(seed)))
    return spikes.sum(axis=1, dtype=np.float64)


def _gate_levels(net: S.Network, p: S.Population, levels: dict) -> np.ndarray:
    pr = next(q for q in net.incoming(p.name) if isinstance(q, S.MaxProjection))
    src = levels[pr.pre]
    n = len(src)
    return ops.maxpool2d(src.reshape((n,) + tuple(pr.pre_shape)), pr.window, pr.stride,
                         pr.pads).reshape(n, -1)


def expected_levels(net: S.Network, x, wake: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """name → (N, size) float64 level of every population of an exact-preset network (see the module
    docstring); ``wake`` defaults to the network's, ``seed`` is the run's (rate input spikes)."""
    if not net.exact:
        raise ConversionError(f"preset {net.preset!r} is not exact; use rate_levels")
    _feed_forward(net)
    wake = net.default_wake if wake is None else int(wake)
    x = check_batch(net, x)
    n = len(x)
    sig_in = _input_signal(net, x, wake, seed)
    totals = DR.delivered_totals(net, x.reshape(n, -1) if net.input_mode == "analog" else None)
    n_on = 1 if net.preset == "bitserial" else wake  # steps an old-style per-step bias is added
    levels: dict[str, np.ndarray] = {}
    for p in net.populations:
        if p.model == "maxpool":
            levels[p.name] = _gate_levels(net, p, levels)
            continue
        X = np.zeros((n, p.size))
        for pr in net.incoming(p.name):
            if isinstance(pr, S.MaxProjection) or DR.input_in_drive(net, pr):
                continue
            if pr.pre == S.INPUT:
                per_step = net.input_mode == "analog"  # no drive (a file older than drives): x every step
                X = X + DR.project(pr, sig_in) * (n_on if per_step else 1)
            else:
                X = X + DR.project(pr, levels[pr.pre])
        if p.name in totals:
            X = X + totals[p.name]
        else:
            X = X + np.asarray(p.bias, dtype=np.float64) * n_on
        cap = p.levels if net.preset == "bitserial" else min(wake, p.levels)
        levels[p.name] = ops.round_levels(X / p.threshold, p.v0, cap, p.rounding)  # as the neurons resolve ties
    return levels


def rate_levels(net: S.Network, x, wake: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """name → (N, size) float64 activation a = clip(X, 0, 1) a rate-preset population approximates by
    count/T (X: its per-step current at the ANN's rates; max-pool gates: the window maximum)."""
    _feed_forward(net)
    wake = net.default_wake if wake is None else int(wake)
    x = check_batch(net, x)
    n = len(x)
    if net.input_mode == "analog":
        sig_in = x.reshape(n, -1)
    elif net.input_mode == "rate":
        sig_in = np.clip(x.reshape(n, -1), 0.0, 1.0)
    else:  # events: the mean event frame per wake step
        sig_in = x.sum(axis=1).reshape(n, -1) / wake
    acts: dict[str, np.ndarray] = {}
    for p in net.populations:
        if p.model == "maxpool":
            acts[p.name] = _gate_levels(net, p, acts)
            continue
        X = np.zeros((n, p.size)) + np.asarray(p.bias, dtype=np.float64)
        for pr in net.incoming(p.name):
            if not isinstance(pr, S.MaxProjection):
                X = X + DR.project(pr, sig_in if pr.pre == S.INPUT else acts[pr.pre])
        acts[p.name] = np.clip(X / p.threshold, 0.0, 1.0)
    return acts


def verify(net: S.Network, x, result: SimResult, seed: int = 0) -> VerifyReport:
    """Compare ``result`` (a run of ``net`` on ``x``) with the quantized ANN, neuron by neuron.

    ``seed``: the run's seed (only rate input depends on it). Exact presets compare each population's
    transmitted value (the net count; bitserial: the bit-weighted sum) with :func:`expected_levels`.
    """
    if net.exact:
        want = expected_levels(net, x, result.wake, seed)
        n = len(result.readout)
        ok = np.ones(n, dtype=bool)
        mism = {}
        for name, lv in want.items():
            bad = (result.values[name] != lv).sum(axis=1).astype(np.int64)
            mism[name] = bad
            ok &= bad == 0
        return VerifyReport("exact", ok, mism)
    want = rate_levels(net, x, result.wake, seed)
    mean, mx = {}, {}
    for name, a in want.items():
        err = np.abs(result.counts[name] / float(result.wake) - a)
        mean[name] = err.mean(axis=1)
        mx[name] = err.max(axis=1)
    return VerifyReport("rate", None, {}, mean, mx)
