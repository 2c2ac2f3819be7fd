"""Dense clock-driven simulator of a Network, for speed comparisons (not an oracle).

Every step applies every projection to the whole (N, pre) signal with torch (conv2d,
matmul, float32) or, without torch, NumPy (``evsnn.ir.ops.conv2d``, matmul), then
updates every neuron: the usual layer-wise PyTorch-style SNN simulation. Delay-0
feed-forward networks only; same step semantics as design.md, so its counts equal
the engine's (bench_engine.py checks this on every run). Populations with a drive
(exact presets, :mod:`evsnn.ir.drive`) get their grid increment each delivery step
instead of input and bias: the drive's analog input term is computed once per batch.
"""

from __future__ import annotations

import numpy as np

from evsnn.ir import drive as DR
from evsnn.ir import snn as S

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None


class DenseSim:
    def __init__(self, net: S.Network, threads: int = 1):
        if any(pr.delay for pr in net.projections):
            raise ValueError("the dense baseline supports delay-0 networks only")
        self.net = net
        if torch is not None:
            torch.set_num_threads(threads)
        self.ops = {id(pr): self._op(pr) for pr in net.projections}

    def _t(self, a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32)) if torch is not None else np.asarray(a, np.float32)

    def _op(self, pr):
        n_pre = int(np.prod(pr.pre_shape))
        if isinstance(pr, S.DenseProjection):
            m = np.zeros((n_pre, int(np.prod(pr.post_shape))), dtype=np.float32)
            rows = np.repeat(np.arange(n_pre), np.diff(pr.indptr))
            m[rows, pr.indices] = pr.data
            W = self._t(m)
            return lambda s: s @ W
        if isinstance(pr, S.ConvProjection):
            k = self._t(np.ascontiguousarray(pr.kernel.transpose(3, 2, 0, 1)))
            t, l, b, r = pr.pads
            shp = tuple(pr.pre_shape)
            if torch is not None:
                return lambda s: F.conv2d(F.pad(s.view((-1,) + shp), (l, r, t, b)), k, stride=tuple(pr.stride),
                                          groups=pr.groups).flatten(1)
            from evsnn.ir.ops import conv2d
            return lambda s: conv2d(s.reshape((-1,) + shp), k, pr.stride, pr.pads, pr.groups).reshape(len(s), -1)
        if isinstance(pr, S.PoolProjection):
            w = self._t(pr.weight)
            t, l, b, r = pr.pads
            shp = tuple(pr.pre_shape)
            if torch is not None:
                return lambda s: (F.avg_pool2d(F.pad(s.view((-1,) + shp), (l, r, t, b)), pr.window, pr.stride,
                                               divisor_override=1) * w).flatten(1)
            from evsnn.ir.ops import windows
            return lambda s: (windows(s.reshape((-1,) + shp), pr.window, pr.stride, pr.pads).sum(axis=(-1, -2))
                              * w).reshape(len(s), -1)
        if isinstance(pr, S.IdentityProjection):
            return lambda s: s * pr.weight
        if isinstance(pr, S.MaxProjection):
            t, l, b, r = pr.pads
            shp = tuple(pr.pre_shape)
            if torch is not None:
                return lambda c: F.max_pool2d(F.pad(c.view((-1,) + shp), (l, r, t, b), value=-np.inf), pr.window,
                                              pr.stride).flatten(1)
            from evsnn.ir.ops import maxpool2d
            return lambda c: maxpool2d(c.reshape((-1,) + shp), pr.window, pr.stride, pr.pads).reshape(len(c), -1)
        raise TypeError(type(pr).__name__)

    def run(self, x, steps: int, wake: int):
        """Run ``steps`` steps (``wake`` of them with input and biases on). Returns (readout, counts)."""
        net = self.net
        lib = torch if torch is not None else np
        n = len(x)
        xin = self._t(np.asarray(x, dtype=np.float64).reshape(n, -1))
        bits = net.bits or 0
        bitserial = net.preset == "bitserial"
        slots = net.stages() if bitserial else {}
        pops = net.populations
        inc = {p.name: net.incoming(p.name) for p in pops + [net.readout]}
        st = {}
        for p in pops:
            th = self._t(p.threshold)
            gate = next((pr for pr in inc[p.name] if isinstance(pr, S.MaxProjection)), None)
            st[p.name] = dict(v=(th * p.v0).repeat(n, 1) if torch is not None else np.tile(th * p.v0, (n, 1)),
                              S=lib.zeros((n, p.size)), th=th, b=self._t(p.bias), gate=gate,
                              c=lib.zeros((n, int(np.prod(gate.pre_shape)))) if gate is not None else None)
        out = lib.zeros((n, net.readout.size))
        rb = self._t(net.readout.bias)
        fixed_in = {}
        dsteps = DR.delivery_steps(net, wake)
        drives = {}
        for p in pops:
            if DR.has_drive(p):
                base, unit, rem = DR.grid_split(*DR.grid(DR.drive_total(net, p, np.asarray(x).reshape(n, -1)),
                                                         p.levels, p.v0, p.rounding), dsteps)
                drives[p.name] = (self._t(base), self._t(unit), torch.as_tensor(rem) if torch is not None else rem)
        for t in range(steps):
            on = (t == 0) if bitserial else (t < wake)
            now = {}
            for p in pops:
                s_ = st[p.name]
                cur = 0
                for pr in inc[p.name]:
                    if isinstance(pr, S.MaxProjection):
                        continue
                    if pr.pre == S.INPUT:
                        if on and not DR.input_in_drive(net, pr):
                            if id(pr) not in fixed_in:
                                fixed_in[id(pr)] = self.ops[id(pr)](xin)
                            cur = cur + fixed_in[id(pr)]
                    else:
                        cur = cur + self.ops[id(pr)](now[pr.pre])
                if p.name in drives:
                    if t < dsteps:
                        base, unit, rem = drives[p.name]
                        cur = cur + (base + unit * (((t + 1) * rem) // dsteps - (t * rem) // dsteps))
                elif on:
                    cur = cur + s_["b"]
                if p.model == "maxpool":
                    s_["c"] = s_["c"] + now[s_["gate"].pre]
                    wmax = self.ops[id(s_["gate"])](s_["c"])
                    if bitserial:
                        k = t - slots[p.name] * bits
                        if k == 0:
                            s_["v"] = wmax + p.v0 * s_["th"]
                        sig = self._emit(s_, k, bits)
                    else:
                        s = lib.clip(wmax - s_["S"], -1, 1)
                        s_["S"] = s_["S"] + s
                        sig = s
                elif bitserial:
                    s_["v"] = s_["v"] + cur
                    sig = self._emit(s_, t - slots[p.name] * bits, bits, p.rounding == "half_even")
                elif p.model == "cif":
                    v = s_["v"] + cur
                    cap = min(min(t + 1, wake), p.levels)
                    q = v / s_["th"]
                    s = lib.clip(lib.floor(q), -1, 1)
                    if p.rounding == "half_even":  # ties (q = 1 or 0) move only from an odd count (evsnn.models)
                        odd = (s_["S"] % 2) == 1
                        s = lib.where(((q == 1) | (q == 0)) & ~odd, 0 * s, lib.where((q == 0) & odd, 0 * s - 1, s))
                    s = lib.where((s < 0) & (s_["S"] <= 0), 0 * s, s)
                    s = lib.where((s > 0) & (s_["S"] >= cap), 0 * s, s)
                    s_["v"] = v - s_["th"] * s
                    s_["S"] = s_["S"] + s
                    sig = s
                else:
                    v = s_["v"] + cur
                    s = (v >= s_["th"]) * 1.0
                    s_["v"] = v - s_["th"] * s
                    s_["S"] = s_["S"] + s
                    sig = s
                now[p.name] = sig
            cur = 0
            for pr in inc[net.readout.name]:
                if pr.pre == S.INPUT:
                    if on:
                        cur = cur + self.ops[id(pr)](xin)
                else:
                    cur = cur + self.ops[id(pr)](now[pr.pre])
            out = out + cur + (rb if on else 0)
        conv = (lambda a: a.numpy()) if torch is not None else (lambda a: a)
        return conv(out), {p.name: conv(st[p.name]["S"]) for p in pops}

    @staticmethod
    def _emit(s_, k, bits, half_even=False):
        lib = torch if torch is not None else np
        if not 0 <= k < bits:
            return lib.zeros_like(s_["v"])
        w = float(2 ** (bits - 1 - k))
        s = ((s_["v"] > s_["th"] * w) if half_even and k == bits - 1 else (s_["v"] >= s_["th"] * w)) * 1.0
        s_["v"] = s_["v"] - s_["th"] * w * s
        s_["S"] = s_["S"] + s
        return s * w
