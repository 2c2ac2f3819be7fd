"""The wake drive: the constant current of every population over the wake phase, delivered exactly.

Shared by both executors (the NumPy reference and the Numba engine) and by the
verification oracle, so all three see the same numbers.

Definition (populations with ``drive_scale`` set, i.e. the exact presets):

    D = (Σ analog input projections(x) + bias) · drive_scale        (level units)

with x in float64, the projections in ANN units (the converter leaves them
unscaled) and ``drive_scale`` = L/λ computed as ``levels / scale``. This is the
one expression :func:`evsnn.ir.ops.quantize_levels` applies to the ANN's
pre-activation z, so an input whose z lies exactly on a level boundary
(k·λ/L) or a round-half tie ((k + ½)·λ/L) gives exactly the ANN's level.
Hidden populations get D = bias · drive_scale (no input term).

Delivery. Summing L rounded per-step currents would move such a boundary (1/7
added 7 times is 0.9999999999999998), so the total is put on a fixed-point grid
2^-F instead (:func:`grid`): Q = floor(D·2^F) exactly (power-of-two scaling),
and casc wake step t (0 ≤ t < T) receives

    (floor((t+1)·Q/T) − floor(t·Q/T)) · 2^-F

computed from Q = q·T + r (so nothing overflows). Every partial sum is a
multiple of 2^-F below 2^52·2^-F, hence exact in float64, and so is the
membrane of a neuron driven only by its drive (v0 = φ and the integer spike
count are on the grid too). The grid is taken of the value the ANN rounds,
rounding included (φ ∈ {0, ½}, so φ·2^F is an integer):

- ``rounding="floor"``: y = fl(D + φ); the delivered total Q·2^-F satisfies
  Q·2^-F + φ = ⌊y⌋_F (y floored on the grid), so floor(Q·2^-F + φ) = floor(y);
- ``rounding="half_even"``: the ANN computes rint(y) with y = fl(D + (φ − ½))
  (:func:`evsnn.ir.ops.quantize_levels`; y = D for φ = ½), so the grid is taken
  of that y: Q·2^-F + φ − ½ = G with G = ⌊y⌋_F, plus one unit 2^-F where G is
  a half-integer and y is not. Then G is a half-integer ⇔ y is (an exact tie of
  the ANN ⇔ the neuron sees X + φ an exact integer, the tie its rule resolves to
  even), floor(G) = floor(y) (F ≥ 2: one unit above k + ½ stays below k + 1),
  and G lies on the same side of k + ½ as y, so rint(G) = rint(y). Taking the
  grid of fl(D + φ) instead would not do: D = ½ + 2^-53 rounds to fl(D + ½) = 1,
  a false tie (the ANN's rint(D) is 1, the tie rule would give 0).

So the first layer's level is exactly the ANN's. F is chosen per neuron as large as
the bound allows (F = 52 − bitlength(⌈|D|⌉ + L + 2), at least 2), so for hidden
neurons the grid moves D by less than 2^-F ≈ |D|·2^-52: float64 accuracy.
|D| is clamped to 2^49 first (a neuron driven that hard saturates at 0 or L
unless its spike input is as large, which no converted model comes near; the
clamp keeps F ≥ 2 for any L < 2^48).
bitserial takes its whole drive at step 0: the same grid with T = 1.

Work counted: the executors compute W·x once per sample, but ``input_macs``
still charges the analog input projections' MACs at every wake step (bitserial:
step 0), as design.md defines them, so energy estimates do not change with this
implementation detail (hardware that streams the input every step pays them).
Rate presets keep their per-step input and bias current (no drive).
"""

from __future__ import annotations

import numpy as np

from evsnn.ir import ops
from evsnn.ir import snn as S

CLAMP = 2.0 ** 49


def dense_matrix(pr: S.DenseProjection):
    """The (pre, post) ``scipy.sparse.csr_matrix`` whose row i holds neuron i's outgoing weights."""
    import scipy.sparse as sp  # lazy: SciPy's import is a large part of a short run's fixed cost

    n_pre, n_post = int(np.prod(pr.pre_shape)), int(np.prod(pr.post_shape))
    return sp.csr_matrix((pr.data, pr.indices, pr.indptr), shape=(n_pre, n_post))


ACCUMULATE_ELEMENTS = 1 << 22  # dense_project sums by accumulation up to this (samples, post, entries) array
ACCUMULATE_SAMPLES = 64  # ... and this many samples (beyond, its row loop is faster)


def dense_project(pr: S.DenseProjection, s: np.ndarray) -> np.ndarray:
    """(N, pre size) signal → (N, post size): ``out[:, indices[k]] += s[:, i]·data[k]`` for the entries k of
    row i, rows in ascending order and each row's entries in stored order (duplicates added one by one),
    starting from +0.

    That is the order of SciPy's ``csr.T.dot`` (its CSC mat-vecs), which this replaces bit for bit: SciPy's
    import alone (≈ 0.2 s on a slow machine) was a third of a one-sample ``evsnn run``. Rows whose signal is
    zero in every sample are left out (adding ±0 to a sum from +0 changes no bit). Two ways, both in that
    order:

    - few samples: each target's products are laid out in order along the last axis of a
      (N, post, 1 + most entries) array, after a +0, and summed by ``np.add.accumulate`` (one after
      another, unlike ``sum``'s pairwise reduction); the padding after them is +0 too, which changes no
      bit of a sum that starts at +0;
    - else row by row, the sums kept transposed (post, N) so that each row adds contiguous rows of
      samples."""
    n, n_post = s.shape[0], int(np.prod(pr.post_shape))
    dt = np.result_type(s.dtype, pr.data.dtype)
    ip = pr.indptr
    st = np.ascontiguousarray(s.T)  # (pre, N): gathering a pre neuron copies a contiguous row
    active = np.any(st != 0, axis=1)
    rows = np.repeat(np.arange(len(ip) - 1), np.diff(ip))  # each entry's pre neuron
    keep = active[rows]
    rows, ix, d = rows[keep], pr.indices[keep], pr.data[keep]
    per_target = np.bincount(ix, minlength=n_post)
    width = 1 + int(per_target.max(initial=0))
    if n <= ACCUMULATE_SAMPLES and n * n_post * width <= ACCUMULATE_ELEMENTS:
        order = np.argsort(ix, kind="stable")  # each target's entries in CSR order
        cols = ix[order]
        slot = 1 + np.arange(len(ix)) - (np.cumsum(per_target) - per_target)[cols]
        buf = np.zeros((n, n_post, width), dt)
        buf[:, cols, slot] = (st[rows[order]] * d[order][:, None]).T
        return np.add.accumulate(buf, axis=2)[:, :, -1].copy()
    out = np.zeros((n_post, n), dt)
    unique = len(np.unique(rows * n_post + ix)) == len(ix)  # no target twice in a row: fancy += is exact
    ends = np.cumsum(np.bincount(rows, minlength=len(ip) - 1))  # kept entries' row ends
    for i in np.flatnonzero(active):
        a, b = ends[i] - (ip[i + 1] - ip[i]), ends[i]
        if unique:
            out[ix[a:b]] += d[a:b, None] * st[i]
        else:
            np.add.at(out, ix[a:b], d[a:b, None] * st[i])
    return np.ascontiguousarray(out.T)


def project(pr: S.Projection, s: np.ndarray) -> np.ndarray:
    """(N, pre size) signal ``s`` (spikes × their weight factor, or x) → (N, post size) current into ``post``."""
    n = s.shape[0]
    if isinstance(pr, S.DenseProjection):
        return dense_project(pr, s)
    if isinstance(pr, S.ConvProjection):
        w = pr.kernel.transpose(3, 2, 0, 1)  # → (Cout, Cin/g, kh, kw)
        y = ops.conv2d(s.reshape((n,) + tuple(pr.pre_shape)), w, pr.stride, pr.pads, pr.groups)
        return y.reshape(n, -1)
    if isinstance(pr, S.PoolProjection):
        win = ops.windows(s.reshape((n,) + tuple(pr.pre_shape)), pr.window, pr.stride, pr.pads)
        return (win.sum(axis=(-1, -2)) * pr.weight).reshape(n, -1)
    if isinstance(pr, S.IdentityProjection):
        return s * pr.weight
    raise TypeError(f"projection kind {pr.kind!r} does not deliver currents")


def has_drive(pop: S.Population) -> bool:
    return pop.drive_scale is not None


def input_in_drive(net: S.Network, pr: S.Projection) -> bool:
    """Whether projection ``pr`` is an analog input projection folded into its target's drive."""
    if pr.pre != S.INPUT or net.input_mode != "analog":
        return False
    post = next((p for p in net.populations if p.name == pr.post), None)
    return post is not None and has_drive(post)


def depends_on_input(net: S.Network, pop: S.Population) -> bool:
    """Whether ``pop``'s drive depends on the sample (it has an analog input projection)."""
    return has_drive(pop) and any(input_in_drive(net, pr) for pr in net.incoming(pop.name))


def drive_total(net: S.Network, pop: S.Population, x: np.ndarray | None) -> np.ndarray:
    """D of ``pop``: (N, size) float64 for an input-fed population (x: (N, input size) or (N, *input_shape)),
    else (size,) float64 (the same for every sample)."""
    bias = np.asarray(pop.bias, dtype=np.float64).reshape(-1)
    if not depends_on_input(net, pop):
        return bias * pop.drive_scale
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    z = None
    for pr in net.incoming(pop.name):
        if input_in_drive(net, pr):
            y = project(pr, x)
            z = y if z is None else z + y
    # ANN order: the linear op, then its bias, then one scaling to level units (as ops.quantize_levels)
    return (z + bias) * pop.drive_scale


def grid(d: np.ndarray, levels: int, phase: float = 0.0, rounding: str = "floor") -> tuple[np.ndarray, np.ndarray]:
    """(Q int64, unit = 2^-F float64) of drive totals ``d`` (any shape) for a population of ``levels``
    whose neurons start at v0 = ``phase`` (0 or ½) and round ties as ``rounding`` (see the module docstring).

    "floor": the ANN floors fl(D + φ), which rounds (0.49999999999999994 + ½ = 1.0 in float64), so the
    grid is taken of y = fl(D + φ): Q = floor(y·2^F) − φ·2^F, and floor(Q·2^-F + φ) = floor(y), the
    ANN's level whenever D is its scaled pre-activation. "half_even": the ANN takes rint(y) of
    y = fl(D + (φ − ½)); Q = floor(y·2^F) (+1 where that lands on a half-integer y is not) − (φ − ½)·2^F.
    """
    d = np.clip(np.asarray(d, dtype=np.float64), -CLAMP, CLAMP)
    mag = np.ceil(np.abs(d)) + float(levels) + 2.0  # an integer below 2^51: exact
    f = np.maximum(52 - np.frexp(mag)[1], 2)
    off = phase - 0.5 if rounding == "half_even" else phase  # 0, ½ or −½: off·2^F is an integer
    y = np.ldexp(d + off, f)  # exact: a power-of-two scaling
    q = np.floor(y).astype(np.int64)
    if rounding == "half_even":
        one = np.ones_like(q)
        false_tie = (q & ((one << f) - 1)) == (one << (f - 1))  # q·2^-F = k + ½ ...
        q = q + (false_tie & (y != q)).astype(np.int64)  # ... but y is not: one unit up, same side of k + ½
    return q - np.ldexp(off, f).astype(np.int64), np.ldexp(1.0, -f)


def grid_split(q: np.ndarray, unit: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step delivery of Q·unit over ``steps`` steps: (base float64, unit float64, rem int64) with
    Q = q·steps + rem, base = q·unit; step t gets base + unit·(⌊(t+1)·rem/steps⌋ − ⌊t·rem/steps⌋)."""
    qt = np.floor_divide(q, steps)
    return qt.astype(np.float64) * unit, unit, q - qt * steps


def grid_increment(split, t: int, steps: int) -> np.ndarray:
    """The current step t (0 ≤ t < steps) receives, from :func:`grid_split`'s result."""
    base, unit, rem = split
    extra = ((t + 1) * rem) // steps - (t * rem) // steps
    return base + unit * extra


def delivery_steps(net: S.Network, wake: int) -> int:
    """Steps the drive is spread over: the wake phase (casc), or 1 (bitserial, at step 0)."""
    return 1 if net.preset == "bitserial" else int(wake)


def delivered_totals(net: S.Network, x: np.ndarray | None) -> dict[str, np.ndarray]:
    """name → total drive the executors deliver, Q·2^-F (level units), for every population with a drive;
    (N, size) for input-fed populations, else (size,)."""
    out = {}
    for p in net.populations:
        if has_drive(p):
            q, unit = grid(drive_total(net, p, x), p.levels, p.v0, p.rounding)
            out[p.name] = q.astype(np.float64) * unit
    return out
