"""Linear chains between spiking populations, and their composition into one projection.

Between two activations an ANN may apply several linear operators (a pooling
then a convolution, a flatten then a dense layer). A spike must reach its
targets through their composition, so each chain is folded into a single
operator when that is exact (conv∘pool → one larger strided conv; anything →
dense → one dense matrix); otherwise the chain's matrix is built explicitly
(dense fallback, bounded in size). Every composed conv is checked numerically
against the chain before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evsnn.errors import ConversionError
from evsnn.ir import ann as A
from evsnn.ir import ops

MAX_DENSE_ENTRIES = 64_000_000  # a fallback matrix larger than this (512 MB float64) is refused


@dataclass(eq=False)
class LinOp:
    """One bias-free linear operator of a chain. ``kind``: conv | pool | dense | reshape."""

    kind: str
    in_shape: tuple
    out_shape: tuple
    weight: np.ndarray | None = None  # conv: (Cout, Cin/g, kh, kw); dense: (out, in)
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    groups: int = 1
    kernel: tuple = (1, 1)  # pool window
    include_pad: bool = False

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x: (N, *in_shape) → (N, *out_shape)."""
        n = x.shape[0]
        if self.kind == "conv":
            return ops.conv2d(x, self.weight, self.stride, self.pads, self.groups)
        if self.kind == "pool":
            return ops.avgpool2d(x, self.kernel, self.stride, self.pads, self.include_pad)
        if self.kind == "dense":
            return x.reshape(n, -1) @ self.weight.T
        return x.reshape((n,) + tuple(self.out_shape))


def linop_of(node: A.Node, in_shape: tuple, out_shape: tuple) -> LinOp:
    """The bias-free linear part of a Conv, Dense, AvgPool, Flatten or Identity node."""
    if isinstance(node, A.Conv):
        return LinOp("conv", in_shape, out_shape, node.weight, tuple(node.stride), tuple(node.pads), node.groups)
    if isinstance(node, A.Dense):
        return LinOp("dense", in_shape, out_shape, node.weight)
    if isinstance(node, A.AvgPool):
        return LinOp("pool", in_shape, out_shape, stride=tuple(node.stride), pads=tuple(node.pads),
                     kernel=tuple(node.kernel), include_pad=node.count_include_pad)
    if isinstance(node, (A.Flatten, A.Identity)):
        return LinOp("reshape", in_shape, out_shape)
    raise ConversionError(f"node {node.name!r} ({node.kind}) is not a linear operator")


def apply_chain(chain: list[LinOp], x: np.ndarray) -> np.ndarray:
    for op in chain:
        x = op.apply(x)
    return x


def _as_conv(op: LinOp) -> LinOp | None:
    """A pool with a uniform divisor as a depthwise conv; a conv as itself; else None."""
    if op.kind == "conv":
        return op
    if op.kind == "pool" and (op.include_pad or not any(op.pads)):
        c = op.in_shape[0]
        kh, kw = op.kernel
        w = np.full((c, 1, kh, kw), 1.0 / (kh * kw))
        return LinOp("conv", op.in_shape, op.out_shape, w, op.stride, op.pads, c)
    return None


def _full_kernel(op: LinOp) -> np.ndarray:
    """Grouped (Cout, Cin/g, kh, kw) kernel expanded to the block-diagonal (Cout, Cin, kh, kw)."""
    co, cig, kh, kw = op.weight.shape
    g = op.groups
    full = np.zeros((co, cig * g, kh, kw))
    cog = co // g
    for i in range(g):
        full[i * cog:(i + 1) * cog, i * cig:(i + 1) * cig] = op.weight[i * cog:(i + 1) * cog]
    return full


def _compose_convs(a: LinOp, b: LinOp) -> LinOp | None:
    """b∘a as one conv, or None when b's zero padding would not line up with a's."""
    sa = a.stride
    exact_pad = not any(b.pads) or (
        not any(a.pads) and tuple(a.weight.shape[2:]) == tuple(sa)
        and a.in_shape[1] == a.out_shape[1] * sa[0] and a.in_shape[2] == a.out_shape[2] * sa[1])
    if not exact_pad:
        return None
    ka, kb = _full_kernel(a), _full_kernel(b)
    kha, kwa = ka.shape[2:]
    khb, kwb = kb.shape[2:]
    k = np.zeros((kb.shape[0], ka.shape[1], kha + (khb - 1) * sa[0], kwa + (kwb - 1) * sa[1]))
    for u in range(khb):
        for v in range(kwb):
            k[:, :, u * sa[0]:u * sa[0] + kha, v * sa[1]:v * sa[1] + kwa] += np.einsum(
                "om,mihw->oihw", kb[:, :, u, v], ka)
    pads = tuple(a.pads[i] + b.pads[i] * sa[i % 2] for i in range(4))
    stride = (sa[0] * b.stride[0], sa[1] * b.stride[1])
    k, groups = _regroup(k, (a.groups, b.groups))
    return LinOp("conv", a.in_shape, b.out_shape, k, stride, pads, groups)


def _regroup(k: np.ndarray, hints) -> tuple[np.ndarray, int]:
    """(Cout, Cin, kh, kw) kernel → its grouped form with the most groups it is block-diagonal for.

    Keeping the grouping keeps zero blocks out of the synapse (SOP) count, not only out of the arithmetic.
    """
    co, ci = k.shape[:2]
    for g in sorted({co if co == ci else 1, *hints}, reverse=True):
        if g <= 1 or co % g or ci % g:
            continue
        cog, cig = co // g, ci // g
        blocks = np.zeros((co, ci), dtype=bool)
        for i in range(g):
            blocks[i * cog:(i + 1) * cog, i * cig:(i + 1) * cig] = True
        if not k[~blocks].any():
            return np.concatenate([k[i * cog:(i + 1) * cog, i * cig:(i + 1) * cig] for i in range(g)]), g
    return k, 1


def chain_matrix(chain: list[LinOp], in_shape: tuple, chunk: int = 512) -> np.ndarray:
    """(out size, in size) matrix of a chain, built by applying it to unit vectors."""
    n_in = int(np.prod(in_shape))
    n_out = int(np.prod(chain[-1].out_shape)) if chain else n_in
    if n_in * n_out > MAX_DENSE_ENTRIES:
        raise ConversionError(
            f"a linear chain {[op.kind for op in chain]} from shape {in_shape} cannot be composed exactly and "
            f"its matrix ({n_out}×{n_in}) is too large; put an activation between these layers")
    m = np.empty((n_out, n_in))
    for s in range(0, n_in, chunk):
        e = min(n_in, s + chunk)
        basis = np.zeros((e - s, n_in))
        basis[np.arange(e - s), np.arange(s, e)] = 1.0
        m[:, s:e] = apply_chain(chain, basis.reshape((e - s,) + tuple(in_shape))).reshape(e - s, -1).T
    return m


def compose(chain: list[LinOp], in_shape: tuple) -> LinOp:
    """Fold a chain into one LinOp of kind conv, pool, dense or reshape (identity)."""
    core = [op for op in chain if op.kind != "reshape"]
    out_shape = chain[-1].out_shape if chain else in_shape
    if not core:
        return LinOp("reshape", in_shape, out_shape)
    if core[-1].kind == "dense":
        pre = chain[:next(i for i, op in enumerate(chain) if op is core[-1])]
        # Flatten/Identity keep the C-order neuron index: only real operators need the chain's matrix
        w = core[-1].weight if len(core) == 1 else core[-1].weight @ chain_matrix(pre, in_shape)
        return LinOp("dense", in_shape, out_shape, w)
    if len(out_shape) != 3:
        # a conv/pool chain ending in a Flatten: the target population is a vector, which a
        # windowed projection cannot address (its post shape must be (C, H, W)); use the matrix
        return LinOp("dense", in_shape, out_shape, chain_matrix(chain, in_shape))
    if len(core) == 1:
        return core[0]
    convs = [_as_conv(op) for op in core]
    if all(c is not None for c in convs):
        acc = convs[0]
        for nxt in convs[1:]:
            acc = _compose_convs(acc, nxt) if acc is not None else None
        if acc is not None and tuple(acc.out_shape) == tuple(core[-1].out_shape):
            acc = LinOp("conv", in_shape, out_shape, acc.weight, acc.stride, acc.pads, acc.groups)
            probe = np.random.default_rng(0).standard_normal((1,) + tuple(in_shape))
            want = apply_chain(chain, probe).reshape(-1)
            got = acc.apply(probe).reshape(-1)
            if got.shape == want.shape and np.allclose(got, want, rtol=1e-9, atol=1e-9 * (1 + np.abs(want).max())):
                return acc
    return LinOp("dense", in_shape, out_shape, chain_matrix(chain, in_shape))
