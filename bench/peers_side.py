"""One side of bench/peers.py: a worker process that loads a case and times runs of it on request.

    python bench/peers_side.py SIDE        (SIDE: evsnn, dense, spikingjelly, sinabs, torch-if)

Protocol (JSON lines): the driver writes ``{"case": DIR}`` (DIR holds ``spec.npz``, the network
as plain arrays, and for evsnn/dense ``net.h5``), the worker builds the case, runs it once
(warm-up: Numba cache load, oneDNN primitives) and answers ``{"ready": true}``; then each
``{"run": true}`` is answered ``{"time": seconds}`` for one full run of all samples; ``{"counts":
PATH}`` writes the per-population spike counts of the last run to PATH (.npz). Errors are
answered ``{"error": message}``.

The spikingjelly and sinabs sides import neither evsnn nor anything outside torch, numpy and
their library (they run in their own venv). They build each population's input from its
incoming projections (torch conv2d / matmul / pooling, all timesteps of a layer in one
batched call: the libraries' multi-step mode) and integrate it with the library's own
integrate-and-fire neuron (SpikingJelly ``IFNode(v_reset=None)``, sinabs ``IAF`` with
``SingleSpike`` and ``MembraneSubtract``): v += I, spike when v ≥ θ, v −= θ. Populations
of model ``maxpool`` (the converter's gate that tracks the window maximum of spike counts)
have no library counterpart and are computed in torch as in bench/dense_baseline.py;
``cif`` populations (casc) are run with the library's plain IF neuron (no cap, no negative
spikes), so casc counts agree only where those rules never act. The analog input's projection
is computed once per sample in float32, in the timed run, and added with the bias every wake step
(as the dense baseline does); the exact presets' drive D = (input projection(x) + bias)·scale is
computed the same way and arrives divided evenly over its delivery steps (float32, without evsnn's
fixed-point grid); a drive that does not depend on the input arrives precomputed.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

CHUNK = 16  # samples simulated together by the layer-wise sides (bounds (T, chunk, neurons) tensors)


def load_spec(folder: str) -> tuple[dict, dict]:
    z = np.load(os.path.join(folder, "spec.npz"))
    meta = json.loads(str(z["meta"]))
    return meta, {k: z[k] for k in z.files if k != "meta"}


# --------------------------------------------------------------------------------------------- evsnn, dense

class EvsnnSide:
    def __init__(self, folder: str, meta: dict, arrays: dict):
        from evsnn import engine
        from evsnn.store import load_network

        self.engine = engine
        self.prep = engine.prepare(load_network(os.path.join(folder, "net.h5")))
        self.x = arrays["x"]
        self.kw = dict(wake=meta["wake"], sleep=meta["sleep"], threads=1, allow_inexact=True)

    def run(self):
        res = self.engine.simulate(self.prep, self.x, **self.kw)
        return {k: v for k, v in res.counts.items()}


class DenseSide:
    def __init__(self, folder: str, meta: dict, arrays: dict):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from dense_baseline import DenseSim
        from evsnn.store import load_network

        self.sim = DenseSim(load_network(os.path.join(folder, "net.h5")), threads=1)
        self.x, self.steps, self.wake = arrays["x"], meta["steps"], meta["wake"]

    def run(self):
        return self.sim.run(self.x, self.steps, self.wake)[1]


# ------------------------------------------------------------------------------------- layer-wise torch sides

class LayerwiseSide:
    """Populations in order; each one's input for all T steps from its sources' spike trains, then its neurons."""

    def __init__(self, folder: str, meta: dict, arrays: dict):
        import torch

        torch.set_num_threads(1)
        self.torch, self.meta, self.a = torch, meta, arrays
        self.T, self.wake, self.dsteps = meta["steps"], meta["wake"], meta["dsteps"]
        self.pops = meta["populations"]
        self.t = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in arrays.items() if k != "x"}
        self.x = torch.as_tensor(np.asarray(arrays["x"], dtype=np.float32).reshape(len(arrays["x"]), -1))

    def _op(self, pr, s):
        """Projection ``pr`` applied to ``s`` (B, pre size) → (B, post size)."""
        F = self.torch.nn.functional
        kind = pr["kind"]
        w = self.t.get(f"w/{pr['id']}")
        if kind == "dense":
            return s @ w
        if kind == "identity":
            return s * pr["weight"]
        shp = tuple(pr["pre_shape"])
        t, l, b, r = pr["pads"]
        x = F.pad(s.view((-1,) + shp), (l, r, t, b))
        if kind == "conv":
            return F.conv2d(x, w, stride=tuple(pr["stride"]), groups=pr["groups"]).flatten(1)
        if kind == "pool":
            return (F.avg_pool2d(x, pr["window"], pr["stride"], divisor_override=1) * w).flatten(1)
        raise ValueError(kind)

    def _input(self, p, spikes, lo, hi):
        """(T, B, size) current into ``p`` for samples lo..hi."""
        torch = self.torch
        B = hi - lo
        cur = torch.zeros((self.T, B, p["size"]))
        drive = None
        for pr in p["incoming"]:
            if pr["kind"] == "maxpool":
                continue
            if pr["pre"] == self.meta["input"] and pr.get("drive"):  # part of the drive D
                y = self._op(pr, self.x[lo:hi])
                drive = y if drive is None else drive + y
                continue
            if pr["pre"] == self.meta["input"]:  # analog input: the same current every wake step
                cur[:self.wake] += self._op(pr, self.x[lo:hi])
                continue
            s = spikes[pr["pre"]]
            cur += self._op(pr, s.reshape(self.T * B, -1)).reshape(self.T, B, -1)
        if drive is not None:
            cur[:self.dsteps] += (drive + self.t[f"dbias/{p['name']}"]) * self.t[f"dscale/{p['name']}"]
        for key, steps in (("bias", self.wake), ("drive", self.dsteps)):
            c = self.t.get(f"{key}/{p['name']}")
            if c is not None:
                cur[:steps] += c[lo:hi] if c.dim() == 2 else c
        v0 = self.t[f"v0/{p['name']}"]
        cur[0] += v0 * self.t[f"th/{p['name']}"]  # the membrane starts at v0·θ
        return cur

    def _maxpool(self, p, spikes, B):
        """The converter's max gate: S follows max over the window of the sources' net counts, ±1 per step."""
        torch, F = self.torch, self.torch.nn.functional
        pr = next(q for q in p["incoming"] if q["kind"] == "maxpool")
        shp = tuple(pr["pre_shape"])
        t_, l, b, r = pr["pads"]
        c = torch.cumsum(spikes[pr["pre"]], 0)
        m = F.max_pool2d(F.pad(c.reshape((-1,) + shp), (l, r, t_, b), value=-np.inf), pr["window"],
                         pr["stride"]).reshape(self.T, B, -1)
        S = torch.zeros((B, p["size"]))
        out = torch.empty((self.T, B, p["size"]))
        for t in range(self.T):
            s = torch.clamp(m[t] - S, -1, 1)
            S += s
            out[t] = s
        return out

    def run(self):
        x = self.a["x"]
        n = len(x)
        counts = {p["name"]: np.zeros((n, p["size"]), dtype=np.int64) for p in self.pops}
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            spikes = {}
            for p in self.pops:
                if p["model"] == "maxpool":
                    s = self._maxpool(p, spikes, hi - lo)
                else:
                    cur = self._input(p, spikes, lo, hi) / self.t[f"th/{p['name']}"]  # θ = 1 for the neuron
                    s = self.neurons(cur)
                spikes[p["name"]] = s
                counts[p["name"]][lo:hi] = s.sum(0).numpy().astype(np.int64)
        return counts


class SpikingJellySide(LayerwiseSide):
    def __init__(self, *a):
        super().__init__(*a)
        from spikingjelly.activation_based import functional, neuron

        self.node = neuron.IFNode(v_threshold=1.0, v_reset=None, step_mode="m")
        self.reset = functional.reset_net

    def neurons(self, cur):  # (T, B, size) → spikes (T, B, size)
        with self.torch.no_grad():
            s = self.node(cur)
        self.reset(self.node)
        return s


class SinabsSide(LayerwiseSide):
    def __init__(self, *a):
        super().__init__(*a)
        import sinabs.activation as sa
        import sinabs.layers as sl

        self.node = sl.IAF(spike_threshold=1.0, spike_fn=sa.SingleSpike, reset_fn=sa.MembraneSubtract(),
                           min_v_mem=None)

    def neurons(self, cur):  # sinabs takes (B, T, ...)
        with self.torch.no_grad():
            self.node.reset_states()
            s = self.node(cur.transpose(0, 1).contiguous())
        self.node.reset_states()
        return s.transpose(0, 1)


class TorchIFSide(LayerwiseSide):
    """The same layer-wise runner with a plain torch IF loop (no SNN library): checks the hand-off in tests."""

    def neurons(self, cur):
        v = self.torch.zeros_like(cur[0])
        out = self.torch.empty_like(cur)
        for t in range(len(cur)):
            v += cur[t]
            out[t] = (v >= 1.0).to(cur.dtype)
            v -= out[t]
        return out


SIDES = {"evsnn": EvsnnSide, "dense": DenseSide, "spikingjelly": SpikingJellySide, "sinabs": SinabsSide,
         "torch-if": TorchIFSide}


def main() -> None:
    side = sys.argv[1]
    obj, last = None, None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if "case" in msg:
                meta, arrays = load_spec(msg["case"])
                obj = SIDES[side](msg["case"], meta, arrays)
                last = obj.run()  # warm-up
                reply = {"ready": True}
            elif "run" in msg:
                t = time.perf_counter()
                last = obj.run()
                reply = {"time": time.perf_counter() - t}
            elif "counts" in msg:
                np.savez(msg["counts"], **{k: np.asarray(v) for k, v in last.items()})
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown message {msg}"}
        except Exception as e:  # the driver prints it and drops this side
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
