"""Operation counts and energy estimates of a converted SNN against its ANN (all energies in pJ).

Counts (per layer; the runner sums them over samples and steps)
-------------------------------------------------------------------
- **spikes**: signed spikes a population emits, positive and negative (each ±1 is one event).
- **SOP** (synaptic operation): one per target synapse of an emitted spike,
  ``SOP_l = Σ_i |s_i| · fanout_i`` over every outgoing projection of population l
  (:func:`evsnn.ir.fanout`); negative spikes and sleep-phase spikes count like
  positive ones. A SOP is an accumulate (AC). SOPs are attributed to the
  *emitting* population; the rate-coded input is the layer ``"input"``.
- **MAC_in**: multiply-accumulates of the analog first layer(s): every wake step
  each input element is multiplied into each of its targets (input size × fan-out).
- **ANN MACs** per node (:func:`ann_ops`): Conv ``Cout·Ho·Wo·(Cin/g)·kh·kw``,
  Dense ``in·out``. Pooling and residual adds are counted as *additions*:
  AvgPool ``C·Ho·Wo·kh·kw`` (window sums; the division folds into the next
  weights), MaxPool ``C·Ho·Wo·(kh·kw−1)`` comparisons, Add ``(k−1)·size``.
  Biases (one add per output) and activations are not counted: they are below
  1/fan-in of a layer's MACs. ``outputs`` is the number of values a node writes.

Energy model (per sample)
-------------------------
::

    E_SNN = (E_MAC + M_mac)·MAC_in + (E_AC + M_sop)·SOP + M_upd·U_snn
    E_ANN = (E_MAC + M_mac)·ΣMAC   + (E_AC + M_add)·ΣADD + M_out·U_ann

with ``U_snn = Σ_l size_l · T_w`` neuron updates (every neuron integrates its
bias and is checked each wake step; sleep work is event driven and paid by its
SOPs) and ``U_ann = Σ outputs``. For the arithmetic-only profiles every ``M``
is 0 and ADD = 0 for conv/dense-only models, which is design.md's
``E_SNN = E_MAC·MAC_in + E_AC·SOP``, ``E_ANN = E_MAC·ΣMAC``.

Built-in profiles (Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, 0.9 V):

============== ============================= ====================================
profile        E_MAC (mult + add)            E_AC
============== ============================= ====================================
45nm-fp32      3.7 + 0.9 = 4.6               0.9 (fp32 add)
45nm-int32     3.1 + 0.1 = 3.2               0.1 (int32 add)
45nm-int8      0.2 + 0.03 = 0.23             0.03 (int8 add)
45nm-fp32-sram fp32 arithmetic plus SRAM traffic, one 8 KB SRAM access (64-bit
               read ≈ 10 pJ, Horowitz; writes taken equal) per word moved:
               M_mac = 20 (weight + input read), M_sop = 30 (weight read +
               membrane read + write), M_add = 10, M_upd = 20 (membrane read +
               write), M_out = 10 (activation write)
============== ============================= ====================================

A user profile is a JSON or TOML file with keys ``mac`` and ``ac`` (pJ) and
optionally ``name``, ``mem_mac``, ``mem_sop``, ``mem_add``, ``mem_update``,
``mem_output``, ``source`` (see :func:`load_profile`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from evsnn.errors import FormatError
from evsnn.ir import ann as A
from evsnn.ir import snn as S

HOROWITZ = "Horowitz, Computing's energy problem (and what we can do about it), ISSCC 2014, 45 nm"


@dataclass(frozen=True)
class Profile:
    """Energy per operation in pJ; ``mem_*`` are memory-traffic terms (see the module docstring)."""

    name: str
    mac: float
    ac: float
    mem_mac: float = 0.0
    mem_sop: float = 0.0
    mem_add: float = 0.0
    mem_update: float = 0.0
    mem_output: float = 0.0
    source: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "45nm-fp32": Profile("45nm-fp32", 4.6, 0.9, source=HOROWITZ + ": fp32 mult 3.7 + add 0.9; AC = fp32 add"),
    "45nm-int32": Profile("45nm-int32", 3.1 + 0.1, 0.1, source=HOROWITZ + ": int32 mult 3.1 + add 0.1"),
    "45nm-int8": Profile("45nm-int8", 0.2 + 0.03, 0.03, source=HOROWITZ + ": int8 mult 0.2 + add 0.03"),
    "45nm-fp32-sram": Profile("45nm-fp32-sram", 4.6, 0.9, mem_mac=20.0, mem_sop=30.0, mem_add=10.0,
                              mem_update=20.0, mem_output=10.0,
                              source=HOROWITZ + ": fp32 arithmetic + one 8 KB SRAM access (≈10 pJ) per word moved"),
}
DEFAULT_PROFILES = tuple(PROFILES)
_KEYS = {"name", "mac", "ac", "mem_mac", "mem_sop", "mem_add", "mem_update", "mem_output", "source"}


def load_profile(path: str | os.PathLike) -> Profile:
    """Read a user profile from a ``.json`` or ``.toml`` file (a flat table; energies in pJ, ≥ 0)."""
    from evsnn.paths import existing_file

    path = existing_file(path, "an energy profile file")
    if os.path.getsize(path) > 1 << 20:
        raise FormatError(f"{path}: an energy profile is a small table; this file is over 1 MiB")
    try:
        if path.lower().endswith(".toml"):
            import tomllib
            with open(path, "rb") as fh:
                d = tomllib.load(fh)
        else:
            with open(path, encoding="utf-8") as fh:
                d = json.load(fh)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSON/TOML decode errors are ValueErrors
        raise FormatError(f"{path}: not a readable energy profile ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})") from None
    if not isinstance(d, dict):
        raise FormatError(f"{path}: an energy profile must be a table of numbers")
    unknown = set(d) - _KEYS
    if unknown:
        raise FormatError(f"{path}: unknown energy profile keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    for k in ("mac", "ac"):
        if k not in d:
            raise FormatError(f"{path}: energy profile needs '{k}' (pJ per operation)")
    for k in ("name", "source"):
        if k in d and not isinstance(d[k], str):
            raise FormatError(f"{path}: '{k}' must be text")
    kw = {"name": str(d.get("name") or os.path.splitext(os.path.basename(path))[0]),
          "source": str(d.get("source", path))}
    for k in _KEYS - {"name", "source"}:
        if k in d:
            v = d[k]
            try:
                fv = float(v) if not isinstance(v, bool) and isinstance(v, (int, float)) else None
            except OverflowError:  # a 400-digit integer
                fv = None
            if fv is None or not np.isfinite(fv) or fv < 0:
                raise FormatError(f"{path}: '{k}' must be a finite number ≥ 0 (pJ), got {str(v)[:40]!r}")
            kw[k] = fv
    return Profile(**kw)


def get_profile(spec: str) -> Profile:
    """A built-in profile by name, or a user profile from a .json/.toml path."""
    if spec in PROFILES:
        return PROFILES[spec]
    if spec.lower().endswith((".json", ".toml")) or os.path.sep in spec:
        return load_profile(spec)
    raise FormatError(f"unknown energy profile {spec!r}; built-in: {', '.join(PROFILES)}, or a .json/.toml file")


# ---------------------------------------------------------------------------------------------- counts

def ann_ops(graph: A.AnnGraph) -> dict[str, dict[str, int]]:
    """Per-sample operation counts of every arithmetic ANN node: name → {macs, adds, outputs}.

    Rules in the module docstring. Nodes that do no arithmetic (Input,
    Flatten, Identity, activations) are left out.
    """
    shapes = graph.shapes()
    out: dict[str, dict[str, int]] = {}
    for n in graph.nodes:
        shp = shapes[n.name]
        size = int(np.prod(shp))
        if isinstance(n, A.Conv):
            co, cig, kh, kw = n.weight.shape
            out[n.name] = {"macs": co * shp[1] * shp[2] * cig * kh * kw, "adds": 0, "outputs": size}
        elif isinstance(n, A.Dense):
            o, i = n.weight.shape
            out[n.name] = {"macs": o * i, "adds": 0, "outputs": size}
        elif isinstance(n, A.AvgPool):
            out[n.name] = {"macs": 0, "adds": size * n.kernel[0] * n.kernel[1], "outputs": size}
        elif isinstance(n, A.MaxPool):
            out[n.name] = {"macs": 0, "adds": size * (n.kernel[0] * n.kernel[1] - 1), "outputs": size}
        elif isinstance(n, A.Add):
            out[n.name] = {"macs": 0, "adds": size * (len(n.inputs) - 1), "outputs": size}
    return {k: {kk: int(vv) for kk, vv in v.items()} for k, v in out.items()}


def network_ann_ops(net: S.Network) -> dict[str, dict[str, int]]:
    """Fallback when the source graph is unknown: the dense cost of the network's own projections.

    Each conv/dense projection costs one MAC per synapse (Σ fan-out over all
    pre neurons), pool/identity/max projections one addition per synapse;
    entries are keyed ``"pre→post"``. Composed chains (pool∘conv) can cost more
    than the original layers, so prefer :func:`ann_ops` on the source graph.
    """
    out: dict[str, dict[str, int]] = {}
    for pr in net.projections:
        syn = int(S.fanout(pr).sum())
        post_size = int(np.prod(pr.post_shape))
        arith = isinstance(pr, (S.ConvProjection, S.DenseProjection))
        out[f"{pr.pre}→{pr.post}"] = {"macs": syn if arith else 0, "adds": 0 if arith else syn,
                                     "outputs": post_size}
    return out


layer_fanout = S.source_fanouts  # name → (size,) SOPs per spike of each neuron, INPUT included


def sop_count(net: S.Network, name: str, spikes: np.ndarray) -> int:
    """SOPs caused by ``spikes`` of population ``name``: Σ |spikes| · fan-out.

    ``spikes``: (..., size) per-neuron spike counts (signed counts of events,
    e.g. a raster or |pos| + |neg| totals; the absolute value is taken).
    """
    f = layer_fanout(net)[name]
    return int((np.abs(np.asarray(spikes, dtype=np.int64)).reshape(-1, f.size) @ f).sum())


def input_macs_per_step(net: S.Network) -> int:
    """MACs of the analog input projections in one wake step (input size × fan-out, summed)."""
    if net.input_mode != "analog":
        return 0
    return int(sum(S.fanout(pr).sum() for pr in net.outgoing(S.INPUT)))


def snn_updates(net: S.Network, wake: int) -> int:
    """Neuron updates per sample charged by the memory terms: Σ population sizes × wake steps."""
    return int(sum(p.size for p in net.populations)) * int(wake)


# ---------------------------------------------------------------------------------------------- estimate

def estimate(profile: Profile, sops: dict[str, float], input_macs: float, updates: float,
             ann: dict[str, dict[str, float]]) -> dict:
    """Energy per sample (pJ) of the SNN and the ANN under ``profile``.

    ``sops``: layer → SOPs per sample; ``input_macs``: analog MACs per sample;
    ``updates``: SNN neuron updates per sample (:func:`snn_updates`); ``ann``:
    node → {macs, adds, outputs} (:func:`ann_ops`). Returns ``snn_pj``,
    ``ann_pj``, ``ratio`` (E_SNN/E_ANN, NaN if E_ANN = 0), ``snn_layers`` and
    ``ann_layers`` (name → pJ; the SNN's analog MACs are the entry ``"input (MAC)"``,
    its neuron updates ``"neuron updates"`` when the profile charges them).
    """
    p = profile
    snn_layers = {}
    if input_macs:
        snn_layers["input (MAC)"] = (p.mac + p.mem_mac) * float(input_macs)
    for name, n in sops.items():
        snn_layers[name] = (p.ac + p.mem_sop) * float(n)
    if p.mem_update and updates:
        snn_layers["neuron updates"] = p.mem_update * float(updates)
    ann_layers = {name: (p.mac + p.mem_mac) * o.get("macs", 0) + (p.ac + p.mem_add) * o.get("adds", 0)
                  + p.mem_output * o.get("outputs", 0) for name, o in ann.items()}
    e_snn, e_ann = float(sum(snn_layers.values())), float(sum(ann_layers.values()))
    return {"snn_pj": e_snn, "ann_pj": e_ann, "ratio": e_snn / e_ann if e_ann > 0 else float("nan"),
            "snn_layers": snn_layers, "ann_layers": ann_layers}
