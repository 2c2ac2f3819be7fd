"""Turn a :class:`~evsnn.ir.snn.Network` into the flat arrays the compiled step loop reads.

Internal layout: every image-shaped population (C, H, W) is stored channels-last,
internal index ``(y·W + x)·C + c``, so a conv event's fan-out is a contiguous run
of output channels at each covered position, matching the channels-last kernel.
Flat populations keep their order. ``perm[q]`` is the external (flattened NCHW)
index of internal neuron ``q``; records are permuted back before they are
returned. Neurons are grouped in *blocks* (the C channels of one position, or a
single neuron for flat populations): the sleep phase tracks touched blocks.

Tables (int64 unless noted):

- ``pi[p]`` per target (populations, then the readout at index P), columns ``PI_*``;
- ``ji[m]`` per projection, columns ``J_*`` and the kind's own columns (``DN_*`` CSR, ``CV_*`` conv,
  ``PL_*`` pool and max, ``ID_*`` identity; all from ``J_A`` on);
- ``jf[m]`` (float64) identity weight;
- ``wbuf`` (engine dtype) all weights; ``ibuf`` (int64) CSR indptr and index maps;
  ``idx32`` (uint32) CSR column indices.

Drives (:mod:`evsnn.ir.drive`): ``sq``/``su`` hold the grid (Q, 2^-F) of every
drive that does not depend on the sample (internal order); populations fed by
the analog input get theirs per sample, from the batch's totals (:func:`input_drive`,
population p's at ``PI_DOFF`` in a (N, total) array). Their analog input projections
are no-ops in the kernels (their current is in the drive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from evsnn.ir import drive as DR
from evsnn.ir import snn as S

# population table columns
PI_SIZE, PI_OFF, PI_MODEL, PI_RESET, PI_SHIFT, PI_LEVELS, PI_SLOT, PI_NBLK, PI_BS, PI_BOFF, \
    PI_ACCSZ, PI_ACCOFF, PI_GATE, PI_COFF, PI_TRACK, PI_OUT0, PI_OUT1, PI_DRIVE, PI_DOFF, PI_HALF_EVEN, \
    PI_DPER = range(21)
NPI = 21  # PI_HALF_EVEN: 1 for a population whose ties round to even (Population.rounding)
# PI_DPER: the drive's period in internal order: neuron k takes entry k % PI_DPER of the drive state (the
# channels of an image population whose drive is its per-channel bias: one increment per channel and step;
# else its size)
# PI_DRIVE: how the population gets its constant current (evsnn.ir.drive)
D_NONE, D_STATIC, D_INPUT = range(3)  # per-step bias (+ input); a drive fixed by the network; one fed by x
M_IF, M_CIF, M_BIT, M_MAX, M_READOUT = range(5)
MODEL_CODES = {"if": M_IF, "cif": M_CIF, "bitserial": M_BIT, "maxpool": M_MAX}

# projection table columns
J_KIND, J_PRE, J_POST, J_DELAY, J_FAN, J_NPRE, J_NPOST, J_A = range(8)
NJI = J_A + 17
K_DENSE, K_CONV, K_POOL, K_IDENT, K_MAX, K_NOOP = range(6)
# kind-specific columns (from J_A on; module constants, so Numba folds them like literals):
# dense (CSR): indptr off (ibuf), indices off (idx32), data off (wbuf), dense copy off (wbuf, −1 none)
DN_INDPTR, DN_INDICES, DN_DATA, DN_DENSE = range(J_A, J_A + 4)
# conv: weight off (kh, kw, cig, cout; −1 when stored narrow), kernel, group and geometry sizes, strides,
#       top/left pads, dense-layout weight off (groups, kh·kw·cig, cog), narrow (float32) weight off (−1 none;
#       see narrow_weights)
CV_WOFF, CV_KH, CV_KW, CV_CIG, CV_COUT, CV_GROUPS, CV_H, CV_W, CV_CIN, CV_HO, CV_WO, CV_SH, CV_SW, CV_PT, CV_PL, \
    CV_WDOFF, CV_W32 = range(J_A, J_A + 17)
# pool / max: weight off (pool: (Ho, Wo); max: −1), window, channels, geometry, strides, top/left pads
PL_WOFF, PL_KH, PL_KW, PL_C, PL_H, PL_W, PL_HO, PL_WO, PL_SH, PL_SW, PL_PT, PL_PL = range(J_A, J_A + 12)
# identity: map off (ibuf; −1 direct), weight off (wbuf)
ID_MAP, ID_WOFF = range(J_A, J_A + 2)

DENSE_COPY_MAX_BYTES = 64 << 20  # CSR projections denser than 1/2 and smaller than this get a dense copy


def narrow_weights(kernel: np.ndarray, dtype) -> np.ndarray | None:
    """The conv kernel as float32 for the float64 engine's event scatter, when every weight is a float32
    number (weights trained and exported in float32, dyadic ones), else None. The scatter converts each
    back to float64 as it reads it, exactly, so the sums are bit for bit those of the float64 kernel,
    from half the bytes (the deep layers' weights stream from L3 or memory: bench/gsops.py)."""
    if np.dtype(dtype) != np.float64:
        return None
    k = np.asarray(kernel, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore"):
        k32 = k.astype(np.float32)
    return k32 if np.array_equal(k32.astype(np.float64), k) else None


def drive_period(q: np.ndarray, u: np.ndarray, bs: int) -> int:
    """``bs`` when the drive grid (q, u) of a population (internal order) repeats every ``bs`` neurons (the
    channels of one position: a conv layer's per-channel bias), else its size."""
    n = len(q)
    if 1 < bs < n and n % bs == 0:
        qs, us = q.reshape(-1, bs), u.reshape(-1, bs)
        if (qs == qs[0]).all() and (us == us[0]).all():
            return bs
    return n


def _perm(shape) -> np.ndarray:
    """Internal (channels-last) → external (NCHW) index map."""
    n = int(np.prod(shape))
    if len(shape) != 3:
        return np.arange(n, dtype=np.int64)
    c, h, w = shape
    return np.arange(n, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).reshape(-1).copy()


def _inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm), dtype=perm.dtype)
    return inv


@dataclass
class Packed:
    names: list
    sizes: list
    perms: list            # per population, internal → external
    out_perm: np.ndarray
    in_perm: np.ndarray
    pi: np.ndarray
    v0: np.ndarray         # (P+1,) float64
    theta: np.ndarray      # (Ntot + out,) dtype
    bias: np.ndarray       # (Ntot + out,) dtype
    ji: np.ndarray
    jf: np.ndarray
    wbuf: np.ndarray
    ibuf: np.ndarray
    idx32: np.ndarray
    out_ptr: np.ndarray    # (P+2,) CSR over sources (populations, then input at index P) of projection ids
    out_list: np.ndarray
    fan: np.ndarray        # (Ntot,) int64 SOPs per spike, internal order
    fan_in: np.ndarray     # (input size,) int64
    ntot: int
    acc_tot: int
    c_tot: int
    blk_tot: int
    max_delay: int
    macs_on: int           # MACs of the analog input projections per "on" step
    max_cols: int          # scratch elements of a dense step: a conv's im2col rows and product, a CSR copy's product
    sq: np.ndarray         # (Ntot,) int64 drive grid Q of static drives (0 elsewhere)
    su: np.ndarray         # (Ntot,) float64 grid unit 2^-F of static drives
    ndyn: int              # neurons whose drive depends on the input (sum of their populations' sizes)
    dperm: np.ndarray      # (max(ndyn, 1),) int64: input-fed neuron at PI_DOFF + i takes column dperm[PI_DOFF + i]
    #                        of input_drive's totals (internal → external order, offset by PI_DOFF)
    dgrid: np.ndarray      # (P, 2) float64: the grid's levels and φ (v0, or v0 − ½ for half_even) per population
    layered: bool          # feed-forward without delays: every projection 0-delay, to a later population
    #                        or the readout (the engine may then run it layer-major, evsnn.engine.layers)


def pack(net: S.Network, dtype=np.float32) -> Packed:
    """Flatten ``net`` (validated first) into tables and buffers in the engine dtype."""
    net.validate()
    dtype = np.dtype(dtype)
    pops = net.populations
    P = len(pops)
    index = {p.name: i for i, p in enumerate(pops)}
    index[net.readout.name] = P
    index[S.INPUT] = -1
    shapes = [tuple(p.shape) for p in pops] + [tuple(net.readout.shape)]
    perms = [_perm(s) for s in shapes]
    invs = [_inverse(q) for q in perms]
    in_perm = _perm(tuple(net.input_shape))
    in_inv = _inverse(in_perm)

    def perm_of(i):
        return in_perm if i < 0 else perms[i]

    def inv_of(i):
        return in_inv if i < 0 else invs[i]

    gates = {}
    for m, pr in enumerate(net.projections):
        if isinstance(pr, S.MaxProjection) and index[pr.post] < P and pops[index[pr.post]].model == "maxpool":
            gates.setdefault(index[pr.post], m)

    pi = np.zeros((P + 1, NPI), dtype=np.int64)
    v0 = np.zeros(P + 1)
    off = acc = coff = boff = 0
    for i, shp in enumerate(shapes):
        size = int(np.prod(shp))
        pi[i, PI_SIZE], pi[i, PI_OFF] = size, off
        if i < P:
            p = pops[i]
            pi[i, PI_MODEL] = MODEL_CODES[p.model]
            pi[i, PI_RESET] = 1 if p.reset == "zero" else 0
            pi[i, PI_SHIFT] = int(bool(p.shift))
            pi[i, PI_HALF_EVEN] = int(p.rounding == "half_even")
            pi[i, PI_LEVELS] = p.levels if p.levels is not None else (1 << 62)
            v0[i] = p.v0
            pi[i, PI_TRACK] = 1
        else:
            pi[i, PI_MODEL] = M_READOUT
        bs = shp[0] if len(shp) == 3 else 1
        pi[i, PI_BS], pi[i, PI_NBLK], pi[i, PI_BOFF] = bs, size // bs, boff
        boff += size // bs
        g = gates.get(i, -1)
        pi[i, PI_GATE] = g
        accsz = int(np.prod(net.projections[g].pre_shape)) if g >= 0 else size
        pi[i, PI_ACCSZ], pi[i, PI_ACCOFF] = accsz, acc
        acc += accsz
        if g >= 0:
            pi[i, PI_COFF] = coff
            coff += accsz
        off += size
    ntot = off - int(np.prod(shapes[-1]))
    sq = np.zeros(max(ntot, 1), dtype=np.int64)
    su = np.zeros(max(ntot, 1))
    ndyn = 0
    dperms = []
    dgrid = np.zeros((P, 2))
    for i, p in enumerate(pops):
        if not DR.has_drive(p):
            continue
        o = pi[i, PI_OFF]
        pi[i, PI_DPER] = p.size
        if DR.depends_on_input(net, p):
            pi[i, PI_DRIVE], pi[i, PI_DOFF] = D_INPUT, ndyn
            dperms.append(perms[i] + ndyn)
            dgrid[i] = p.levels, (p.v0 - 0.5 if p.rounding == "half_even" else p.v0)  # as DR.grid's φ
            ndyn += p.size
        else:
            pi[i, PI_DRIVE] = D_STATIC
            q, u = DR.grid(DR.drive_total(net, p, None), p.levels, p.v0, p.rounding)
            sq[o:o + p.size], su[o:o + p.size] = q[perms[i]], u[perms[i]]
            pi[i, PI_DPER] = drive_period(sq[o:o + p.size], su[o:o + p.size], int(pi[i, PI_BS]))
    theta = np.ones(off, dtype=dtype)
    bias = np.zeros(off, dtype=dtype)
    for i, p in enumerate(pops):
        o = pi[i, PI_OFF]
        theta[o:o + p.size] = np.asarray(p.threshold, dtype=np.float64).reshape(-1)[perms[i]]
        bias[o:o + p.size] = np.asarray(p.bias, dtype=np.float64).reshape(-1)[perms[i]]
    ro = pi[P, PI_OFF]
    bias[ro:] = np.asarray(net.readout.bias, dtype=np.float64).reshape(-1)[perms[P]]
    if net.preset == "bitserial":
        st = net.stages()
        for i, p in enumerate(pops):
            pi[i, PI_SLOT] = st[p.name]

    wparts, iparts, jparts = [], [], []
    wlen = [0]
    ilen = [0]
    jlen = [0]

    def wput(a):
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64).reshape(-1)).astype(dtype)
        o = wlen[0]
        wparts.append(a)
        wlen[0] += len(a)
        return o

    def iput(a, parts=iparts, ln=ilen, dt=np.int64):
        a = np.asarray(a).reshape(-1).astype(dt)
        o = ln[0]
        parts.append(a)
        ln[0] += len(a)
        return o

    M = len(net.projections)
    ji = np.zeros((M, NJI), dtype=np.int64)
    jf = np.zeros(M)
    fan = np.zeros(ntot, dtype=np.int64)
    fan_in = np.zeros(int(np.prod(net.input_shape)), dtype=np.int64)
    macs_on = 0
    max_cols = 1
    for m, pr in enumerate(net.projections):
        a, b = index[pr.pre], index[pr.post]
        f = S.fanout(pr).astype(np.int64)[perm_of(a)]
        if a < 0:
            fan_in += f
        else:
            o = pi[a, PI_OFF]
            fan[o:o + len(f)] += f
        row = ji[m]
        row[J_PRE], row[J_POST], row[J_DELAY] = a, b, pr.delay
        row[J_FAN] = int(f.sum())
        row[J_NPRE], row[J_NPOST] = int(np.prod(pr.pre_shape)), int(np.prod(pr.post_shape))
        if a < 0 and net.input_mode == "analog" and not isinstance(pr, S.MaxProjection):
            macs_on += int(f.sum())
        post_is_gate = b < P and pops[b].model == "maxpool"
        if DR.input_in_drive(net, pr):
            row[J_KIND] = K_NOOP  # its current is part of the target's drive
        elif isinstance(pr, S.MaxProjection):
            row[J_KIND] = K_MAX if gates.get(b) == m else K_NOOP
        elif post_is_gate:
            row[J_KIND] = K_NOOP  # a gate ignores currents (as the reference does)
        if isinstance(pr, S.DenseProjection):
            if row[J_KIND] != K_NOOP:
                row[J_KIND] = K_DENSE
            n_pre, n_post = row[J_NPRE], row[J_NPOST]
            mat = DR.dense_matrix(pr)[perm_of(a)]
            mat = sp.csr_matrix((mat.data, inv_of(b)[mat.indices], mat.indptr), shape=(n_pre, n_post))
            mat.sort_indices()
            row[DN_INDPTR] = iput(mat.indptr)
            row[DN_INDICES] = iput(mat.indices, jparts, jlen, np.uint32)
            row[DN_DATA] = wput(mat.data)
            row[DN_DENSE] = -1
            if mat.nnz * 2 >= n_pre * n_post and n_pre * n_post * dtype.itemsize <= DENSE_COPY_MAX_BYTES:
                row[DN_DENSE] = wput(mat.toarray())
                max_cols = max(max_cols, n_post)  # kernels.csr_dense's product
        elif isinstance(pr, S.ConvProjection):
            if row[J_KIND] != K_NOOP:
                row[J_KIND] = K_CONV
            kh, kw, cig, cout = pr.kernel.shape
            cin, h, w = pr.pre_shape
            _, ho, wo = pr.post_shape
            g = pr.groups
            cog = cout // g
            # the event scatter's kernel: float32 words in wbuf where every weight is a float32 number
            # (CV_W32; wput copies a float64 array's words as they are in the float64 engine, the only one
            # narrow_weights answers), else the engine dtype's (CV_WOFF); the other column is −1
            k32 = narrow_weights(pr.kernel, dtype)
            row[CV_WOFF] = wput(pr.kernel) if k32 is None else -1
            row[CV_W32] = -1 if k32 is None else wput(
                np.concatenate([k32, np.zeros(len(k32) % 2, np.float32)]).view(np.float64))
            row[CV_KH], row[CV_KW], row[CV_CIG], row[CV_COUT], row[CV_GROUPS] = kh, kw, cig, cout, g
            row[CV_H], row[CV_W], row[CV_CIN], row[CV_HO], row[CV_WO] = h, w, cin, ho, wo
            row[CV_SH], row[CV_SW], row[CV_PT], row[CV_PL] = pr.stride[0], pr.stride[1], pr.pads[0], pr.pads[1]
            row[CV_WDOFF] = wput(np.asarray(pr.kernel, dtype=np.float64).reshape(kh * kw * cig, g, cog)
                                 .transpose(1, 0, 2))
            max_cols = max(max_cols, ho * wo * kh * kw * cig + ho * wo * cog)
        elif isinstance(pr, (S.PoolProjection, S.MaxProjection)):
            if isinstance(pr, S.PoolProjection) and row[J_KIND] != K_NOOP:
                row[J_KIND] = K_POOL
            c, h, w = pr.pre_shape
            _, ho, wo = pr.post_shape
            wo_ = wput(pr.weight) if isinstance(pr, S.PoolProjection) else -1
            row[PL_WOFF], row[PL_KH], row[PL_KW] = wo_, pr.window[0], pr.window[1]
            row[PL_C], row[PL_H], row[PL_W], row[PL_HO], row[PL_WO] = c, h, w, ho, wo
            row[PL_SH], row[PL_SW], row[PL_PT], row[PL_PL] = pr.stride[0], pr.stride[1], pr.pads[0], pr.pads[1]
        elif isinstance(pr, S.IdentityProjection):
            if row[J_KIND] != K_NOOP:
                row[J_KIND] = K_IDENT
            jf[m] = pr.weight
            mp = inv_of(b)[perm_of(a)]
            row[ID_MAP] = -1 if np.array_equal(mp, np.arange(len(mp))) else iput(mp)
            row[ID_WOFF] = wput([pr.weight])
        else:
            raise TypeError(f"unknown projection kind {type(pr).__name__}")
    srcs = [index[pr.pre] if index[pr.pre] >= 0 else P for pr in net.projections]
    order = np.argsort(np.asarray(srcs, dtype=np.int64), kind="stable")
    out_ptr = np.zeros(P + 2, dtype=np.int64)
    np.add.at(out_ptr, np.asarray(srcs, dtype=np.int64) + 1, 1)
    out_ptr = np.cumsum(out_ptr)
    # same-dtype concatenation copies the words as they are (CV_W32's float32 pairs stay intact)
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt, copy=False) if parts else np.zeros(1, dt))
    return Packed(
        names=[p.name for p in pops], sizes=[p.size for p in pops], perms=perms[:P], out_perm=perms[P],
        in_perm=in_perm, pi=pi, v0=v0, theta=theta, bias=bias, ji=ji, jf=jf,
        wbuf=cat(wparts, dtype), ibuf=cat(iparts, np.int64), idx32=cat(jparts, np.uint32),
        out_ptr=out_ptr, out_list=order.astype(np.int64), fan=fan, fan_in=fan_in, ntot=ntot, acc_tot=acc,
        c_tot=max(coff, 1), blk_tot=boff, max_delay=max((pr.delay for pr in net.projections), default=0),
        macs_on=macs_on, max_cols=max_cols, sq=sq, su=su, ndyn=ndyn,
        dperm=np.concatenate(dperms).astype(np.int64) if dperms else np.zeros(1, dtype=np.int64), dgrid=dgrid,
        layered=all(pr.delay == 0 and index[pr.post] > index[pr.pre] for pr in net.projections))


def input_drive(net: S.Network, pk: Packed, x: np.ndarray) -> np.ndarray:
    """(N, max(ndyn, 1)) float64: the drive totals D (:func:`evsnn.ir.drive.drive_total`) of the
    input-fed populations for samples ``x`` (N, input size, external order), population p's at PI_DOFF in
    its external order; the engine puts each sample's on the grid (:func:`evsnn.engine.neurons.grid_row`,
    gathered through ``pk.dperm``) when the sample starts. One population (the usual case): its totals
    as :func:`~evsnn.ir.drive.drive_total` returns them, no copy."""
    fed = [i for i in range(len(net.populations)) if pk.pi[i, PI_DRIVE] == D_INPUT]
    if len(fed) == 1:
        return np.ascontiguousarray(DR.drive_total(net, net.populations[fed[0]], x), dtype=np.float64)
    d = np.zeros((len(x), max(pk.ndyn, 1)))
    for i in fed:
        o = int(pk.pi[i, PI_DOFF])
        d[:, o:o + pk.sizes[i]] = DR.drive_total(net, net.populations[i], x)
    return d
