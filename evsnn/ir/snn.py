"""The SNN description: populations, projections, readout. Plain data, no execution.

Neurons of a population are indexed in the flattened C-order of ``shape``
(NCHW without batch). Thresholds are normalised to 1 by ``convert``; weights
then carry λ_pre/λ_post (see ``design.md``), so a neuron's total wake input
equals L × its scale-1 ANN pre-activation.

Neuron models (``Population.model``), θ = threshold, S = net spike count,
t_w = wake steps so far (the current one included, T_w during sleep):

- ``"if"``:  v += I; s = [v ≥ θ]; v -= θ·s (reset "subtract") or v = 0 when
  s = 1 (reset "zero"). ``shift`` adds δ = θ/(2·T_w) to I each wake step (Deng & Gu).
- ``"cif"``: v += I; s = clip(floor(v/θ), −1, 1); s = −1 only if S > 0,
  s = +1 only if S < min(t_w, L); S += s; v -= θ·s.
- ``"bitserial"``: integrates input until its emit window, then for k = 0..K−1
  θ_k = θ·2^(K−1−k), s = [v ≥ θ_k], v -= θ_k·s; outgoing weights ×2^(K−1−k).
  Its drive (below) is added once, at step 0.
- ``"maxpool"``: keeps the net count c_i of each input of its window and emits
  sign(max_i c_i − S) (±1 per step at most) so S tracks the window maximum.
  Bit-serial networks: c_i accumulate bit-weighted values; the gate emits the
  K bits of max_i c_i in its window.

Every population starts with v = v0·θ.

Rounding (``Population.rounding``, from the source ``QuantAct``): "floor"
realises the level clip(floor(X + φ), 0, L) of a neuron whose total input is X
(level units, θ = 1, v0 = φ). "half_even" realises clip(rint(X + φ − ½), 0, L),
ties to even (ONNX QuantizeLinear, QONNX ROUND, QKeras); it changes the rules
only at equality, where X + φ is an exact integer:

- ``"cif"``: with q = v/θ, s = +1 iff (q > 1, or q = 1 and S is odd) and
  S < min(t_w, L); s = −1 iff S > 0 and (q < 0, or q = 0 and S is odd).
  Proof (θ = 1, so v = X + φ − S at any time after the input has arrived):
  the floor rule's quiet states are v ∈ [0, 1). q = 1 means X + φ − ½ = S + ½,
  a tie between S and S + 1: move up only if S + 1 is even (S odd). q = 0
  means X + φ − ½ = S − ½, a tie between S − 1 and S: move down only if S − 1
  is even (S odd). Each spike moves v by 1 towards [0, 1], so the run ends;
  a neuron can no longer fire iff v ∈ (0, 1), or v ∈ {0, 1} with S even, or
  it is held by a clip end: S = 0 with v < 0 (X + φ − ½ < −½: rint ≤ −1, clip
  0; v = 0 at S = 0 is the tie −½ → 0 anyway), or S = cap = min(T_w, L) with
  v > 1 or v = 1 (X + φ − ½ ≥ cap + ½: rint ≥ cap, clip cap). These cases
  partition the values of X + φ − ½, so the final count is the unique
  S = clip(rint(X + φ − ½), 0, cap). The wake-phase cap min(t_w, L) only
  delays spikes; after the wake phase the cap is fixed and the argument holds.
- ``"bitserial"``: bits k < K − 1 unchanged (s = [v ≥ θ_k]); the last bit
  (θ_{K−1} = θ) is s = [v > θ]. The earlier bits are the binary digits of
  2·⌊n/2⌋ for n = floor(X + φ) in range, so the last bit sees v = X + φ − 2·⌊n/2⌋
  ∈ [0, 2), and v = 1 ⇔ X + φ is an odd integer n, a tie whose even neighbour
  is n − 1: the bit stays 0. Clip ends: below 0 no bit fires (0); at
  L = 2^K − 1 (odd) the tie X + φ = L gives L − 1 (the earlier bits fire, v = 1
  stays); at X + φ = L + 1 = 2^K (tie to L + 1, clipped to L) every earlier bit
  fires and the last sees v = 2 > 1, so L; above, v > 1 again: L.
- ``"if"`` (rate presets) and ``"maxpool"`` gates ignore it (a gate's input
  counts are integers: no ties).

Constant currents (see :mod:`evsnn.ir.drive`): a population with ``drive_scale``
set (the exact presets) receives its *drive* D = (Σ analog input projections(x)
+ ``bias``)·``drive_scale`` in level units, in total over the wake phase (casc:
spread over the T_w wake steps on an exact fixed-point grid; bitserial: at step
0). Its ``bias`` and its analog input projections are then in ANN units (the
pre-activation z), and D is computed like the quantized ANN scales z, so an
input exactly on a level boundary gives the ANN's level. Without
``drive_scale`` (rate presets, network files written before it existed)
``bias`` and the input projections give a current added at every wake step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evsnn.errors import ConversionError

Shape = tuple[int, ...]
INPUT = "input"
MODELS = ("if", "cif", "bitserial", "maxpool")
ROUNDINGS = ("floor", "half_even")
EXACT_PRESETS = ("casc", "bitserial")  # presets whose counts equal the quantized ANN (float64 by default)


@dataclass
class Population:
    """A group of spiking neurons of one model. ``threshold``, ``bias``: (size,) float64."""

    name: str
    shape: Shape
    model: str
    threshold: np.ndarray
    bias: np.ndarray
    v0: float = 0.0
    levels: int | None = None
    reset: str = "subtract"
    shift: bool = False
    scale: float = 1.0  # ANN value of one spike × L (the source activation's λ); informational
    drive_scale: float | None = None  # L/λ: level units per ANN unit of the drive (None: per-step bias)
    rounding: str = "floor"  # the source quantizer's tie rule: "floor" or "half_even" (cif, bitserial; see above)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Readout:
    """Non-spiking accumulator: out[t] = out[t−1] + incoming weighted spikes + bias (wake steps)."""

    name: str
    shape: Shape
    bias: np.ndarray

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Projection:
    """Synapses from ``pre`` (a population or :data:`INPUT`) to ``post`` (a population or the readout).

    A spike of ``pre`` at step t reaches ``post`` at step t + ``delay``.
    """

    pre: str
    post: str
    pre_shape: Shape
    post_shape: Shape
    delay: int = 0
    kind = "projection"


@dataclass
class DenseProjection(Projection):
    """CSR with one row per *pre* neuron: row i lists neuron i's targets (``indices``) and weights (``data``)."""

    indptr: np.ndarray = None
    indices: np.ndarray = None
    data: np.ndarray = None
    kind = "dense"


@dataclass
class ConvProjection(Projection):
    """Implicit convolution. ``kernel``: (kh, kw, Cin/groups, Cout) channels-last; pads (t, l, b, r)."""

    kernel: np.ndarray = None
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1
    kind = "conv"


@dataclass
class PoolProjection(Projection):
    """Average pooling: every input of output window (c, y, x) gets weight ``weight[y, x]`` (Ho, Wo)."""

    window: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    weight: np.ndarray = None
    kind = "pool"


@dataclass
class IdentityProjection(Projection):
    """post[i] += weight · s[i] (residual add, flatten: neurons are already in flattened order)."""

    weight: float = 1.0
    kind = "identity"


@dataclass
class MaxProjection(Projection):
    """Feeds a ``maxpool`` population: the window (c, y, x) of input neurons each gate watches."""

    window: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    kind = "max"


@dataclass
class Network:
    """A converted SNN. ``populations`` are in topological order of the delay-0 edges."""

    input_shape: Shape
    populations: list[Population]
    projections: list[Projection]
    readout: Readout
    preset: str
    input_mode: str = "analog"
    levels: int | None = None
    bits: int | None = None
    default_wake: int | None = None
    meta: dict = field(default_factory=dict)
    default_sleep: int | str | None = None  # steps or "auto"; None: the preset's (see schedule_defaults)

    @property
    def exact(self) -> bool:
        """Whether the preset is exact (casc, bitserial): every count equals the quantized ANN level."""
        return self.preset in EXACT_PRESETS

    def schedule_defaults(self) -> tuple[int, int | str]:
        """(wake, sleep) a run uses when none is given: casc T_w = L then sleep until quiet ("auto");
        bitserial its K·(depth+1) pipeline and no sleep; rate presets T wake steps and no sleep."""
        sleep = self.default_sleep
        if sleep is None:
            sleep = "auto" if self.preset == "casc" else 0
        return self.default_wake, sleep

    def population(self, name: str) -> Population:
        for p in self.populations:
            if p.name == name:
                return p
        raise KeyError(name)

    def incoming(self, name: str) -> list[Projection]:
        return [p for p in self.projections if p.post == name]

    def outgoing(self, name: str) -> list[Projection]:
        return [p for p in self.projections if p.pre == name]

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    def validate(self) -> None:
        """Check names, shapes and that every cycle has a delay ≥ 1."""
        order = {INPUT: -1}
        for i, p in enumerate(self.populations):
            if p.name in order or p.name == self.readout.name:
                raise ConversionError(f"duplicate population name {p.name!r}")
            if p.model not in MODELS:
                raise ConversionError(f"population {p.name!r}: unknown model {p.model!r}; known: {MODELS}")
            if p.rounding not in ROUNDINGS:
                raise ConversionError(f"population {p.name!r}: unknown rounding {p.rounding!r}; known: {ROUNDINGS}")
            order[p.name] = i
        order[self.readout.name] = len(self.populations)
        sizes = {p.name: p.shape for p in self.populations}
        sizes[INPUT] = self.input_shape
        sizes[self.readout.name] = self.readout.shape
        for pr in self.projections:
            for end, shp in ((pr.pre, pr.pre_shape), (pr.post, pr.post_shape)):
                if end not in order:
                    raise ConversionError(f"projection {pr.pre!r}→{pr.post!r} names unknown population {end!r}")
                if tuple(sizes[end]) != tuple(shp):
                    raise ConversionError(f"projection {pr.pre!r}→{pr.post!r}: shape {shp} != {end!r} shape {sizes[end]}")
            if pr.delay < 0:
                raise ConversionError(f"projection {pr.pre!r}→{pr.post!r}: negative delay {pr.delay}")
            if pr.pre == self.readout.name:
                raise ConversionError("the readout cannot be the source of a projection")
            if pr.delay == 0 and order[pr.pre] >= order[pr.post]:
                raise ConversionError(
                    f"projection {pr.pre!r}→{pr.post!r} closes a cycle (or goes against population order) "
                    "with delay 0; a recurrent edge needs delay ≥ 1")
            if pr.pre == INPUT and pr.delay != 0:
                raise ConversionError("projections from the input must have delay 0")

    def stages(self) -> dict[str, int]:
        """Bit-serial emit slot of each population: 1 + the largest slot among its sources (input = 0)."""
        st = {INPUT: 0}
        for p in self.populations:
            st[p.name] = 1 + max((st[pr.pre] for pr in self.incoming(p.name) if pr.pre in st), default=0)
        return st

    def depth(self) -> int:
        st = self.stages()
        return max((st[p.name] for p in self.populations), default=0)


def _axis_fanout(n_in: int, n_out: int, k: int, s: int, p0: int) -> np.ndarray:
    """For each input index along one axis, the number of output windows covering it."""
    cnt = np.zeros(n_in, dtype=np.int64)
    for o in range(n_out):
        lo, hi = o * s - p0, o * s - p0 + k
        cnt[max(lo, 0):max(min(hi, n_in), 0)] += 1
    return cnt


def window_fanout(in_shape: Shape, out_shape: Shape, window, stride, pads, per_position: int) -> np.ndarray:
    """(C·H·W,) fan-out of each input of a windowed operator with ``per_position`` targets per covering window."""
    _, h, w = in_shape
    fy = _axis_fanout(h, out_shape[1], window[0], stride[0], pads[0])
    fx = _axis_fanout(w, out_shape[2], window[1], stride[1], pads[1])
    return np.broadcast_to((fy[:, None] * fx[None, :])[None] * per_position, in_shape).reshape(-1).copy()


def fanout(pr: Projection) -> np.ndarray:
    """(pre size,) number of target synapses of each pre neuron: the SOPs one of its spikes costs."""
    if isinstance(pr, DenseProjection):
        return np.diff(pr.indptr).astype(np.int64)
    if isinstance(pr, ConvProjection):
        kh, kw, _, co = pr.kernel.shape
        return window_fanout(pr.pre_shape, pr.post_shape, (kh, kw), pr.stride, pr.pads, co // pr.groups)
    if isinstance(pr, (PoolProjection, MaxProjection)):
        return window_fanout(pr.pre_shape, pr.post_shape, pr.window, pr.stride, pr.pads, 1)
    if isinstance(pr, IdentityProjection):
        return np.ones(int(np.prod(pr.pre_shape)), dtype=np.int64)
    raise TypeError(f"unknown projection kind {type(pr).__name__}")


def source_fanouts(net: Network) -> dict[str, np.ndarray]:
    """name → (size,) int64 SOPs one spike of each neuron costs: :func:`fanout` summed over its
    outgoing projections, for every population and :data:`INPUT` (rate or event input spikes)."""
    out = {}
    for name, size in [(INPUT, net.input_size)] + [(p.name, p.size) for p in net.populations]:
        f = np.zeros(size, dtype=np.int64)
        for pr in net.outgoing(name):
            f += fanout(pr)
        out[name] = f
    return out
