"""What a simulation is asked to do (:class:`RunPlan`) and what it returns (:class:`SimResult`).

Both executors, the NumPy reference and the Numba engine, take the same plan
and fill the same record, so tests compare them field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from evsnn.errors import ConversionError, ShapeError
from evsnn.ir.ann import prepare_input
from evsnn.ir.snn import Network

DEFAULT_MAX_SLEEP = 1000
RECORD_KINDS = ("counts", "raster")


@dataclass(frozen=True)
class RunPlan:
    """Schedule of one run: ``wake`` steps with bias/input on, then ``sleep`` steps (or until quiet)."""

    wake: int
    sleep: int  # fixed sleep steps, or the cap when ``auto``
    auto: bool
    record: tuple[str, ...] = ("counts",)
    seed: int = 0

    @property
    def max_steps(self) -> int:
        return self.wake + self.sleep


def make_plan(net: Network, wake: int | None = None, sleep: int | str | None = None, max_sleep: int | None = None,
              record=("counts",), seed: int = 0, allow_inexact: bool = False) -> RunPlan:
    """Validate run options against the network's preset; raise ConversionError (a ValueError) on misuse.

    ``wake``/``sleep`` None: the network's schedule (:meth:`Network.schedule_defaults`; casc: T_w = L,
    sleep "auto"). casc is exact only with wake = L and a sleep phase that lets it settle: another wake
    length, or sleep = 0, needs ``allow_inexact`` (ablations). bitserial runs exactly K·(depth+1)
    steps; more wake steps change nothing, fewer are an error.
    """
    dwake, dsleep = net.schedule_defaults()
    if wake is None:
        wake = dwake
    if sleep is None:
        sleep = dsleep
    if net.preset == "casc" and not allow_inexact and not isinstance(sleep, (bool, np.bool_)) and (
            isinstance(sleep, (int, np.integer)) and sleep == 0):
        raise ConversionError(
            "casc settles only with a sleep phase: sleep=0 leaves counts short of the ANN levels; use "
            "sleep='auto' (the default) or pass allow_inexact=True (--allow-inexact) to run it anyway")
    if isinstance(wake, bool) or not isinstance(wake, (int, np.integer)) or wake < 1:
        raise ConversionError(f"wake must be a positive number of steps, got {wake!r}")
    if net.preset == "casc" and wake != net.levels and not allow_inexact:
        raise ConversionError(
            f"casc is exact only with wake T_w = L = {net.levels} steps, got {wake}; "
            "pass allow_inexact=True (--allow-inexact) to run it anyway")
    if net.preset == "bitserial":
        need = net.default_wake
        if wake < need:
            raise ConversionError(f"bitserial needs K·(depth+1) = {need} steps, got wake = {wake}")
        if sleep not in (0, "auto"):
            raise ConversionError("bitserial networks have no sleep phase; use sleep=0")
        sleep = 0
    record = tuple(record)
    for r in record:
        if r not in RECORD_KINDS:
            raise ConversionError(f"unknown record kind {r!r}; known: {', '.join(RECORD_KINDS)}")
    if sleep == "auto":
        cap = DEFAULT_MAX_SLEEP if max_sleep is None else int(max_sleep)
        if cap < 0:
            raise ConversionError(f"max_sleep must be ≥ 0, got {max_sleep}")
        return RunPlan(int(wake), cap, True, record, int(seed))
    if isinstance(sleep, bool) or not isinstance(sleep, (int, np.integer)) or sleep < 0:
        raise ConversionError(f"sleep must be a number of steps ≥ 0 or 'auto', got {sleep!r}")
    return RunPlan(int(wake), int(sleep), False, record, int(seed))


def check_batch(net: Network, x) -> np.ndarray:
    """x as float64 (N, *input_shape), or ShapeError naming both shapes.

    A network converted from a channels-last model or one with an input quantizer
    (``net.meta["input_layout"]``/``["input_quant"]``, see :func:`evsnn.ir.ann.prepare_input`)
    gets its input transposed/quantized here, so both simulators see what the model computes with.

    Networks with ``input_mode == "events"`` take binned address events instead:
    (N, T, *input_shape) non-negative integer counts per time bin (see
    ``evsnn.datasets.events_to_frames``), T ≤ the wake steps of the run.
    """
    x = np.asarray(x, dtype=np.float64)
    want = tuple(net.input_shape)
    if net.input_mode == "events":
        if x.ndim != len(want) + 2 or x.shape[2:] != want:
            raise ShapeError(f"event input has shape {x.shape[1:]} per sample, the network expects "
                             f"(time bins, {', '.join(map(str, want))})")
        if (x < 0).any() or (x != np.round(x)).any() or (x > 255).any():
            raise ShapeError("event input must hold integer event counts 0..255 per bin and neuron")
        return x
    return prepare_input(x, want, net.meta, "the network")


def input_spikes(net: Network, x: np.ndarray, plan: RunPlan) -> np.ndarray | None:
    """(N, wake, input size) uint8 input spike counts per wake step, or None for analog input.

    "rate": Bernoulli spikes drawn by :func:`rate_spikes`; "events": the binned
    counts of ``x`` (from :func:`check_batch`), zero after the last bin.
    """
    n = len(x)
    if net.input_mode == "rate":
        return rate_spikes(x.reshape(n, -1), plan.wake, plan.seed)
    if net.input_mode == "events":
        bins = x.shape[1]
        if bins > plan.wake:
            raise ShapeError(f"event input has {bins} time bins but the run has only {plan.wake} wake steps")
        out = np.zeros((n, plan.wake, net.input_size), dtype=np.uint8)
        out[:, :bins] = x.reshape(n, bins, -1)
        return out
    return None


def rate_spikes(x: np.ndarray, wake: int, seed: int) -> np.ndarray:
    """(N, wake, input size) uint8 Bernoulli spikes with p = clip(x, 0, 1), from ``seed``.

    Drawn once here so the reference and the engine see the same spikes.
    """
    rng = np.random.default_rng(seed)
    p = np.clip(x.reshape(len(x), 1, -1), 0.0, 1.0)
    return (rng.random((len(x), wake, p.shape[-1])) < p).astype(np.uint8)


class CountValues(Mapping):
    """:attr:`SimResult.values` of a run whose every spike carries ±1 (every preset but bitserial): a
    neuron's transmitted value is then its net count (design.md), so the event engine does not write a
    second (N, size) array per population; ``values[name]`` is ``counts[name]`` as float64, made on first
    access and kept (a dict's behaviour: the same array each time, and writes to it stay)."""

    def __init__(self, counts: dict):
        self._counts = counts
        self._made: dict = {}

    def __getitem__(self, name):
        if name not in self._made:
            self._made[name] = np.asarray(self._counts[name], dtype=np.float64)
        return self._made[name]

    def __iter__(self):
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)


@dataclass
class SimResult:
    """Records of one run over a batch of N samples and ``steps`` time steps.

    - ``readout``: (N, steps, classes) accumulator after each step.
    - ``counts``: name → (N, size) int64 net spike count at the end.
    - ``values``: name → (N, size) float64 transmitted value in level units (the
      net count; for bitserial the bit-weighted sum). A mapping: the engine gives a
      :class:`CountValues` (made from ``counts`` on access) where the two are equal.
    - ``spikes_pos`` / ``spikes_neg``: name → (N, steps) int64 spikes emitted per step.
    - ``sops``: name → (N, steps) int64 synaptic operations caused by those spikes.
    - ``input_macs``: (N, steps) int64 multiply-accumulates of analog input projections.
    - ``raster``: name → (N, steps, size) int8 signed spikes (only with record "raster").
    - ``sleep_steps``: (N,) sleep steps each sample ran until it went quiet (auto) or the fixed count.
    - ``quiescent``: (N,) whether the sample was quiet at its end.
    - ``verify``: the :class:`evsnn.verify.VerifyReport` of a run with ``verify=True``, else None.
    - ``readout_quant``: ``(spec, u)`` when the model quantizes its logits (``net.meta["readout_quant"]``,
      e.g. an ONNX QDQ on the logits) with u the readout's units per logit (L for the exact presets,
      T_w for the rate ones), set by both simulators (:func:`readout_quantizer`); else None.
    """

    readout: np.ndarray
    wake: int
    counts: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    spikes_pos: dict = field(default_factory=dict)
    spikes_neg: dict = field(default_factory=dict)
    sops: dict = field(default_factory=dict)
    input_macs: np.ndarray | None = None
    raster: dict = field(default_factory=dict)
    sleep_steps: np.ndarray | None = None
    quiescent: np.ndarray | None = None
    verify: object | None = None
    readout_quant: tuple | None = None

    @property
    def steps(self) -> int:
        return self.readout.shape[1]

    @property
    def predictions(self) -> np.ndarray:
        """(N,) class after the last step: the readout's argmax (ties: lowest class), or, for a model
        whose logits are quantized, the argmax of its quantized logits, as the model itself predicts
        (quantizing is monotone, so only logits that quantize to the same integer can differ)."""
        last = self.readout[:, -1].reshape(len(self.readout), -1)
        if self.readout_quant is not None:
            spec, unit = self.readout_quant
            last = quantize_logits(last / unit, spec)
        return last.argmax(axis=1)


def readout_quantizer(net: Network, wake: int) -> tuple | None:
    """``(spec, u)`` for :attr:`SimResult.readout_quant`: the readout after the run is u × the logits
    (u = L for casc/bitserial, T_w for the rate presets' average over the wake phase)."""
    spec = net.meta.get("readout_quant")
    if not spec:
        return None
    return dict(spec), float(net.levels if net.exact and net.levels else wake)


def quantize_logits(logits: np.ndarray, spec: dict) -> np.ndarray:
    """The integers ``clip(rint(logits / scale) + zero_point, qmin, qmax)`` of a readout quantizer
    (half to even, as ONNX QuantizeLinear; ``rounding="floor"`` floors instead)."""
    y = logits / float(spec["scale"])
    y = np.floor(y) if spec.get("rounding") == "floor" else np.rint(y)
    return np.clip(y + float(spec["zero_point"]), float(spec["qmin"]), float(spec["qmax"]))
