"""Export a converted network to NIR (the Neural Intermediate Representation, ``nir`` package).

:func:`to_nir` builds a :class:`nir.NIRGraph`; :func:`write_nir` writes it to an
HDF5 file that ``nir.read`` loads back (type checking on). Only the rate
presets (``if``, ``qcfs``, ``deng-gu``) without max pooling can be exported:
CIF, bit-serial and max-pool gate neurons have no NIR primitive.

Mapping (one NIR node per population, chains of linear nodes per projection):

- input → ``nir.Input`` with the network's input shape.
- population (model ``if``) → ``nir.IF(r=1, v_threshold=θ, v_reset=0)`` in the
  population's shape (flat ``(size,)`` when a dense projection feeds it: NIR
  has no reshape node to un-flatten an ``Affine`` output).
- readout (non-spiking accumulator, out[t] = out[t−1] + input) →
  ``nir.I(r=1)`` then ``nir.Output``: the integrator's state is evsnn's
  readout, so the Output carries the accumulated value, not a per-step current.
- conv → ``nir.Conv2d`` (weight (Cout, Cin, kh, kw), stride, symmetric padding,
  dilation 1). Grouped kernels are expanded to the equivalent block-diagonal
  kernel with groups = 1, because nir 1.0's Conv2d type check takes the input
  channels from the weight and rejects grouped convolutions on ``nir.read``.
  Asymmetric pads are exact only when the extra bottom/right pad is never read
  (same output size); otherwise ConversionError.
- pool (average, per-window weight) → ``nir.SumPool2d`` then ``nir.Scale`` with
  the weight of each output: exact for any divisor rule (count_include_pad or
  not), where a depthwise Conv2d would be grouped (see above) and AvgPool2d
  leaves the divisor at the borders unspecified.
- dense (CSR, one row per pre neuron) → ``nir.Linear`` / ``nir.Affine`` with
  weight (post, pre); a ``nir.Flatten`` (start_dim 0: NIR shapes have no batch
  axis) is put before it when the source is not flat.
- identity → ``nir.Scale`` (+ ``nir.Flatten`` when the target is flat).
- delay d > 0 → ``nir.Delay`` of d time steps before the target.
- bias current (per neuron, per wake step) → the bias of one incoming delay-0
  ``Affine`` (dense) or ``Conv2d`` (when uniform within each channel); if no
  such projection exists, ConversionError. Several projections into one
  population are several edges into its node: NIR sums a node's inputs.

What NIR's IF does not say, and the graph and node metadata state: time is
discrete with step 1.0 (a delta input adds its weight to v); evsnn resets by
*subtracting* θ (``reset: "subtract"``; NIR's v_reset = 0 is the ``zero``
reset) and fires on v ≥ θ (NIR: v > θ); v starts at v0·θ (``v0_fraction``,
½ for qcfs); deng-gu adds δ = θ/(2·T_w) to the input each wake step; biases
and analog input are on only during the T_w wake steps (``wake_steps``).
"""

from __future__ import annotations

import io
import os
import re

import numpy as np

from evsnn.errors import ConversionError, EvsnnError
from evsnn.ir import snn as S
from evsnn.ir.drive import dense_matrix
from evsnn.store.files import write_bytes_atomic

RATE_PRESETS = ("if", "qcfs", "deng-gu")
_NODE = {"conv": "Conv2d", "dense": "Affine"}
_INPUT_NOTES = {"analog": "analog: the input x is a current added every wake step",
                "rate": "rate: Bernoulli spikes with p = clip(x, 0, 1) each wake step",
                "events": "events: binned address events, one spike of value 1 per event and time bin"}


def _nir():
    try:
        import nir
    except ImportError:
        raise EvsnnError("NIR export needs the nir package: pip install 'evsnn[nir]'") from None
    return nir


def _clean(meta: dict) -> dict:
    """Metadata HDF5 can store: no None, tuples as arrays."""
    out = {}
    for k, v in meta.items():
        if v is None:
            continue
        out[k] = _clean(v) if isinstance(v, dict) else np.asarray(v) if isinstance(v, (tuple, list)) else v
    return out


def _full_kernel(k: np.ndarray, groups: int) -> np.ndarray:
    """(kh, kw, Cin/g, Cout) channels-last kernel → (Cout, Cin, kh, kw) with groups = 1."""
    w = k.transpose(3, 2, 0, 1)
    if groups == 1:
        return np.ascontiguousarray(w, dtype=np.float64)
    co, cig = w.shape[:2]
    cog = co // groups
    full = np.zeros((co, cig * groups) + w.shape[2:])
    for g in range(groups):
        full[g * cog:(g + 1) * cog, g * cig:(g + 1) * cig] = w[g * cog:(g + 1) * cog]
    return full


def _padding(pr: S.Projection, kernel, out_hw) -> tuple[int, int]:
    """Symmetric (ph, pw) equivalent to ``pr.pads``, or ConversionError naming the projection."""
    t, l, b, r = pr.pads
    _, h, w = pr.pre_shape
    nir_out = ((h + 2 * t - kernel[0]) // pr.stride[0] + 1, (w + 2 * l - kernel[1]) // pr.stride[1] + 1)
    if (t, l) != (b, r) and (b < t or r < l or nir_out != tuple(out_hw)):
        raise ConversionError(
            f"projection {pr.pre!r}→{pr.post!r} ({pr.kind}): pads (t, l, b, r) = {tuple(pr.pads)} are asymmetric; "
            "NIR Conv2d/SumPool2d take symmetric padding only")
    return int(t), int(l)


class _Builder:
    def __init__(self, net: S.Network, nir):
        self.net, self.nir = net, nir
        self.nodes: dict = {}
        self.edges: list = []
        self.names: dict = {}  # evsnn name → NIR node name
        self.shapes: dict = {}  # NIR node name → shape of the signal it emits

    def add(self, name: str, node, shape) -> str:
        base = re.sub(r"[^\w.\-+>]", ".", name).strip(".") or "node"
        key, i = base, 1
        while key in self.nodes:
            key, i = f"{base}_{i}", i + 1
        self.nodes[key] = node
        self.shapes[key] = tuple(int(d) for d in shape)
        return key

    def edge(self, a: str, b: str) -> None:
        self.edges.append((a, b))

    def flatten(self, src: str, label: str) -> str:
        shape = self.shapes[src]
        if len(shape) == 1:
            return src
        f = self.add(label + ".flatten", self.nir.Flatten({"input": np.array(shape)}, start_dim=0),
                     (int(np.prod(shape)),))
        self.edge(src, f)
        return f

    def target_shape(self, name: str, shape) -> tuple:
        """NIR shape of a population/readout node: flat when a dense projection feeds it."""
        if any(pr.kind == "dense" for pr in self.net.incoming(name)):
            return (int(np.prod(shape)),)
        return tuple(shape)

    def projection(self, pr: S.Projection, bias: np.ndarray | None) -> None:
        """Nodes and edges from ``pr.pre``'s node to ``pr.post``'s; ``bias`` (post shape) goes into the linear node."""
        nir, label = self.nir, f"{pr.pre}→{pr.post}"
        src, dst = self.names[pr.pre], self.names[pr.post]
        key = f"{src}->{dst}"  # NIR node names: from the (cleaned) node names of both ends
        meta = _clean({"evsnn_pre": pr.pre, "evsnn_post": pr.post, "evsnn_kind": pr.kind, "delay": int(pr.delay),
                       "carries_bias_of": pr.post if bias is not None else None})
        pre_shape = self.shapes[src]
        if pr.kind in ("conv", "pool") and len(pre_shape) != 3:
            raise ConversionError(f"projection {label!r} ({pr.kind}) reads population {pr.pre!r} whose NIR node is "
                                  f"flat {pre_shape} (it is fed by a dense projection); NIR has no reshape node")
        if pr.kind == "conv":
            w = _full_kernel(pr.kernel, pr.groups)
            out = (w.shape[0],) + tuple(self._out_hw(pr))
            pad = _padding(pr, w.shape[2:], out[1:])
            b = np.zeros(w.shape[0]) if bias is None else bias.reshape(w.shape[0], -1)[:, 0].copy()
            node = nir.Conv2d(input_shape=tuple(pre_shape[1:]), weight=w, stride=tuple(int(s) for s in pr.stride),
                              padding=pad, dilation=(1, 1), groups=1, bias=b, metadata=meta)
            cur = self.add(key, node, out)
            self.edge(src, cur)
        elif pr.kind == "pool":
            out = (pre_shape[0],) + tuple(self._out_hw(pr))
            pad = _padding(pr, pr.window, out[1:])
            node = nir.SumPool2d(kernel_size=np.array(pr.window), stride=np.array(pr.stride), padding=np.array(pad),
                                 metadata=meta)
            pool = self.add(key, node, out)
            self.edge(src, pool)
            scale = np.broadcast_to(np.asarray(pr.weight, dtype=np.float64), out).copy()  # weight: (Ho, Wo)
            cur = self.add(key + ".scale", nir.Scale(scale, metadata=meta), out)
            self.edge(pool, cur)
        elif pr.kind == "dense":
            src = self.flatten(src, key + ".pre")
            w = dense_matrix(pr).T.toarray()
            node = (nir.Linear(w, metadata=meta) if bias is None
                    else nir.Affine(w, np.asarray(bias, dtype=np.float64).reshape(-1), metadata=meta))
            cur = self.add(key, node, (w.shape[0],))
            self.edge(src, cur)
        elif pr.kind == "identity":
            cur = self.add(key, nir.Scale(np.full(pre_shape, float(pr.weight)), metadata=meta), pre_shape)
            self.edge(src, cur)
        else:
            raise ConversionError(f"projection {label!r}: kind {pr.kind!r} has no NIR equivalent")
        want = self.shapes[dst]
        if self.shapes[cur] != want:
            if len(want) != 1 or int(np.prod(self.shapes[cur])) != want[0]:
                raise ConversionError(f"projection {label!r} delivers shape {self.shapes[cur]} to {pr.post!r} "
                                      f"(NIR shape {want}); NIR has no reshape node")
            cur = self.flatten(cur, key)
        if pr.delay > 0:
            d = self.add(key + ".delay", nir.Delay(np.full(want, float(pr.delay)), metadata=meta), want)
            self.edge(cur, d)
            cur = d
        self.edge(cur, dst)

    @staticmethod
    def _out_hw(pr: S.Projection) -> tuple:
        return tuple(pr.post_shape[1:]) if len(pr.post_shape) == 3 else tuple(
            (pr.pre_shape[1 + i] + pr.pads[i] + pr.pads[i + 2] - k) // pr.stride[i] + 1
            for i, k in enumerate(pr.kernel.shape[:2] if pr.kind == "conv" else pr.window))


def _bias_carrier(net: S.Network, name: str, bias: np.ndarray) -> S.Projection | None:
    """The incoming projection whose NIR linear node takes the bias of ``name``; None when the bias is zero."""
    if not np.any(bias):
        return None
    for pr in net.incoming(name):
        if pr.delay != 0:
            continue
        if pr.kind == "dense":
            return pr
        if pr.kind == "conv":
            per_ch = bias.reshape(pr.kernel.shape[3], -1)
            if np.all(np.abs(per_ch - per_ch[:, :1]) <= 1e-12 * (1 + np.abs(per_ch).max())):
                return pr
    raise ConversionError(
        f"the bias current of {name!r} cannot be exported: NIR adds constant currents only as the bias of an "
        "Affine or Conv2d node, and no delay-0 dense projection (or conv projection with a bias uniform within "
        f"each channel) feeds {name!r}")


def _check(net: S.Network) -> None:
    for p in net.populations:
        if p.model != "if":
            raise ConversionError(
                f"population {p.name!r} (model {p.model!r}, preset {net.preset!r}) has no NIR equivalent; only the "
                f"rate presets ({', '.join(RATE_PRESETS)}) without max pooling can be exported to NIR")


def graph_metadata(net: S.Network) -> dict:
    """The graph-level metadata: what NIR's IF semantics leave unsaid about evsnn's neurons."""
    pops = net.populations
    v0 = sorted({float(p.v0) for p in pops})
    return _clean({
        "evsnn_preset": net.preset, "time_step": 1.0, "time": "discrete steps of 1.0; a spike adds its weight to v",
        "reset": ",".join(sorted({p.reset for p in pops})) or "subtract",
        "reset_note": "subtract: v -= v_threshold on a spike (v_reset unused); zero: v = v_reset = 0",
        "threshold_comparison": ">=", "input_mode": net.input_mode,
        "input_note": _INPUT_NOTES.get(net.input_mode, net.input_mode),
        "wake_steps": None if net.default_wake is None else int(net.default_wake),
        "v0_fraction": v0[0] if len(v0) == 1 else None,
        "bias_current": "per wake step", "sleep": "input and bias currents are off after the wake steps",
        "deng_gu_shift": ("delta = v_threshold / (2 * wake_steps) added to each IF input every wake step"
                          if any(p.shift for p in pops) else None),
        "readout": "nir.I integrator (r = 1): the Output is evsnn's accumulated readout, read after T steps",
        "levels": None if net.levels is None else int(net.levels),
        "source": net.meta.get("source"),
    })


def to_nir(net: S.Network):
    """``net`` as a :class:`nir.NIRGraph`; ConversionError for networks NIR cannot describe (see module doc)."""
    nir = _nir()
    _check(net)
    net.validate()
    b = _Builder(net, nir)
    b.names[S.INPUT] = b.add("input", nir.Input({"input": np.array(net.input_shape)},
                                                metadata={"input_mode": net.input_mode}), net.input_shape)
    biases = {t.name: np.asarray(t.bias, dtype=np.float64) for t in net.populations + [net.readout]}
    carriers = {name: _bias_carrier(net, name, bias) for name, bias in biases.items()}
    for p in net.populations:
        shp = b.target_shape(p.name, p.shape)
        car = carriers[p.name]
        meta = _clean({"evsnn_name": p.name, "evsnn_model": p.model, "evsnn_shape": tuple(p.shape),
                       "reset": p.reset, "threshold_comparison": ">=", "v0_fraction": float(p.v0),
                       "bias_current": (f"per wake step, in the bias of the incoming {_NODE[car.kind]} node whose "
                                        "metadata carries_bias_of names this population") if car else "none",
                       "deng_gu_shift": "delta = v_threshold / (2 * wake_steps) each wake step" if p.shift else None,
                       "levels": p.levels, "scale": float(p.scale)})
        b.names[p.name] = b.add(p.name, nir.IF(r=np.ones(shp), v_threshold=np.asarray(p.threshold, np.float64)
                                               .reshape(shp).copy(), v_reset=np.zeros(shp), metadata=meta), shp)
    ro = net.readout
    shp = b.target_shape(ro.name, ro.shape)
    b.names[ro.name] = b.add(ro.name, nir.I(r=np.ones(shp), metadata=_clean({
        "evsnn_name": ro.name, "evsnn_model": "readout", "evsnn_shape": tuple(ro.shape),
        "note": "non-spiking accumulator out[t] = out[t-1] + input; its bias is on during wake steps"})), shp)
    out = b.add("output", nir.Output({"output": np.array(shp)}), shp)
    b.edge(b.names[ro.name], out)
    for pr in net.projections:
        b.projection(pr, biases[pr.post] if carriers[pr.post] is pr else None)
    try:
        return nir.NIRGraph(b.nodes, b.edges, metadata=graph_metadata(net))
    except (ValueError, AssertionError) as e:  # a shape this exporter got wrong: a bug, but say where
        raise ConversionError(f"NIR rejected the exported graph: {e}") from None


def write_nir(net: S.Network, path: str | os.PathLike):
    """Write ``to_nir(net)`` to ``path`` (HDF5, read with ``nir.read``) atomically; returns the graph."""
    nir = _nir()
    graph = to_nir(net)
    buf = io.BytesIO()  # built in memory, written with plain I/O: a full disk is one OSError
    nir.write(buf, graph)
    write_bytes_atomic(path, buf.getvalue())
    return graph
