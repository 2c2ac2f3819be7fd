"""Network files: every field typed and ranged, every array against the structure it declares.

:func:`read_fields` turns one HDF5 group into the keyword arguments of an :mod:`evsnn.ir.snn`
dataclass, checking each attribute's type (no JSON, bytes or arrays where a number belongs) and
each dataset's rank and dtype. :func:`check_network` then checks what the engine relies on, so
a file that passes cannot crash the Numba kernels or be mis-simulated silently:

- preset and input mode from their registries; population models consistent with the preset;
  ``levels``/``bits``/``default_wake`` in range (bitserial: L = 2^K − 1);
- shapes 1-D or 3-D (C, H, W) of positive sizes; thresholds finite and > 0, biases finite,
  one value per neuron; ``v0`` finite; resets from their registry;
- projections: delay 0..:data:`MAX_DELAY`; dense CSR invariants (indptr starts at 0, never
  decreases, ends at nnz; indices inside the target); conv and pooling geometry (kernel
  channels × groups = input channels, output channels divisible by groups, strides ≥ 1,
  pads smaller than the window, output size = floor((in + pads − k)/stride) + 1); pooling
  weights one per output position; identity only between equal sizes; every ``maxpool``
  population fed by exactly one max projection and max projections only into them.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np

from evsnn.errors import ConversionError, FormatError
from evsnn.ir import snn as S
from evsnn.validate.hdf5 import read_array

INPUT_MODES = ("analog", "rate", "events")
RESETS = ("subtract", "zero")
MAX_DELAY = 1024
MAX_NEURONS = 1 << 31
MAX_LEVELS = 1 << 24
MAX_STEPS = 1 << 31
_NONE = -1

# field name → kind; a field missing here is read as its dataclass default
_KINDS = {
    "name": "str", "model": "str", "reset": "str", "pre": "str", "post": "str",
    "shape": "shape", "pre_shape": "shape", "post_shape": "shape",
    "threshold": ("array", 1, "f"), "bias": ("array", 1, "f"), "data": ("array", 1, "f"),
    "indptr": ("array", 1, "i"), "indices": ("array", 1, "i"), "kernel": ("array", 4, "f"),
    "v0": "float", "scale": "float", "drive_scale": "float?", "rounding": "str", "levels": "int?",
    "shift": "bool", "delay": "int", "groups": "int",
    "stride": ("ints", 2), "window": ("ints", 2), "pads": ("ints", 4),
}


def _plain_str(v, where):
    if isinstance(v, (bytes, np.bytes_)):
        try:
            return bytes(v).decode()
        except UnicodeDecodeError:
            raise FormatError(f"{where} is not valid UTF-8 text") from None
    if isinstance(v, str):
        return str(v)
    raise FormatError(f"{where} must be text, got {type(v).__name__}")


def _int(v, where, lo=-(1 << 62), hi=1 << 62):
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise FormatError(f"{where} must be an integer, got {type(v).__name__}")
    v = int(v)
    if not lo <= v <= hi:
        raise FormatError(f"{where} = {v} is out of range {lo}..{hi}")
    return v


def _float(v, where):
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise FormatError(f"{where} must be a number, got {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v):
        raise FormatError(f"{where} must be finite, got {v}")
    return v


def _ints(v, where, n=None, lo=0):
    a = np.asarray(v)
    if a.ndim != 1 or a.dtype.kind not in "iu" or (n is not None and a.shape[0] != n):
        raise FormatError(f"{where} must be {n or 'a list of'} integers, got {a.dtype} {a.shape}")
    if len(a) and (a.min() < lo or a.max() > (1 << 31)):
        raise FormatError(f"{where} = {tuple(int(i) for i in a)} has values out of range {lo}..2^31")
    return tuple(int(i) for i in a)


def shape_of(v, where) -> tuple[int, ...]:
    s = _ints(v, where, lo=1)
    if len(s) not in (1, 3):
        raise FormatError(f"{where} must be (features,) or (C, H, W), got {s}")
    if int(np.prod(s, dtype=object)) > MAX_NEURONS:
        raise FormatError(f"{where} = {s} has more than 2^31 neurons")
    return s


def read_fields(group, cls, source: str, none_fields=()) -> dict:
    """Keyword arguments of ``cls`` read from ``group`` with every type checked."""
    kw = {}
    for f in dataclasses.fields(cls):
        where = f"{source}: {group.name}/{f.name}"
        kind = _KINDS.get(f.name)
        if f.name == "weight":  # identity: a number; pool: a 2-D array
            kind = ("array", 2, "f") if cls is S.PoolProjection else "float"
        present_ds, present_attr = f.name in group, f.name in group.attrs
        if not (present_ds or present_attr):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
                    or (isinstance(kind, tuple) and kind[0] == "array"):
                raise FormatError(f"{source}: {group.name} lacks {f.name!r}")
            continue
        if isinstance(kind, tuple) and kind[0] == "array":
            if not present_ds:
                raise FormatError(f"{where} must be a dataset")
            a = read_array(group[f.name], source, kind[1], "biuf" if kind[2] == "f" else "iu")
            kw[f.name] = np.asarray(a, dtype=np.float64 if kind[2] == "f" else np.int64)
            continue
        if present_ds:
            raise FormatError(f"{where} must be an attribute, not a dataset")
        v = group.attrs[f.name]
        if kind == "str":
            kw[f.name] = _plain_str(v, where)
        elif kind == "shape":
            kw[f.name] = shape_of(v, where)
        elif kind == "float":
            kw[f.name] = _float(v, where)
        elif kind == "bool":
            if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and int(v) in (0, 1)):
                kw[f.name] = bool(v)
            else:
                raise FormatError(f"{where} must be true or false, got {v!r:.40}")
        elif kind == "float?":  # a number, or the integer _NONE for None
            if f.name in none_fields and isinstance(v, (int, np.integer)) and int(v) == _NONE:
                kw[f.name] = None
            else:
                kw[f.name] = _float(v, where)
        elif kind == "int?":
            i = _int(v, where)
            kw[f.name] = None if (f.name in none_fields and i == _NONE) else i
        elif kind == "int":
            kw[f.name] = _int(v, where)
        elif isinstance(kind, tuple) and kind[0] == "ints":
            kw[f.name] = _ints(v, where, kind[1])
        else:
            raise FormatError(f"{where}: unexpected field")
    return kw


def root_attr(f: h5py.File, name: str, source: str, kind: str):
    if name not in f.attrs:
        raise FormatError(f"{source}: root attribute {name!r} is missing")
    v, where = f.attrs[name], f"{source}: root attribute {name}"
    if kind == "str":
        return _plain_str(v, where)
    if kind == "shape":
        return shape_of(v, where)
    i = _int(v, where)
    return None if i == _NONE else i


# ---------------------------------------------------------------------------------------------- semantics

def _geometry(pr, src: str, k, stride, pads) -> None:
    if len(pr.pre_shape) != 3 or len(pr.post_shape) != 3:
        raise FormatError(f"{src}: {pr.kind} projections need (C, H, W) shapes, got {pr.pre_shape} → {pr.post_shape}")
    if min(stride) < 1:
        raise FormatError(f"{src}: stride {stride} must be ≥ 1")
    if min(k) < 1:
        raise FormatError(f"{src}: window {k} must be ≥ 1")
    pt, pl, pb, pr_ = pads
    if min(pads) < 0 or max(pt, pb) >= k[0] or max(pl, pr_) >= k[1]:
        raise FormatError(f"{src}: pads {pads} must be ≥ 0 and smaller than the window {k}")
    _, h, w = pr.pre_shape
    for axis, n, kk, s, p0, p1, got in (("height", h, k[0], stride[0], pt, pb, pr.post_shape[1]),
                                        ("width", w, k[1], stride[1], pl, pr_, pr.post_shape[2])):
        if n + p0 + p1 < kk:
            raise FormatError(f"{src}: window {kk} larger than the padded {axis} {n + p0 + p1}")
        want = (n + p0 + p1 - kk) // s + 1
        if want != got:
            raise FormatError(f"{src}: output {axis} {got} does not match input {n}, window {kk}, stride {s}, "
                              f"pads {p0}+{p1} (expected {want})")


def _finite(a, src, what, positive=False):
    if not np.all(np.isfinite(a)):
        raise FormatError(f"{src}: {what} holds NaN or infinite values")
    if positive and a.size and not np.all(a > 0):
        raise FormatError(f"{src}: {what} must be > 0 (found {float(a.min()):g})")


def check_projection(pr: S.Projection, pops: dict, source: str) -> None:
    src = f"{source}: projection {pr.pre!r}→{pr.post!r}"
    if not 0 <= pr.delay <= MAX_DELAY:
        raise FormatError(f"{src}: delay {pr.delay} out of range 0..{MAX_DELAY}")
    n_pre, n_post = int(np.prod(pr.pre_shape)), int(np.prod(pr.post_shape))
    post = pops.get(pr.post)
    if isinstance(pr, S.DenseProjection):
        ip, ix, d = pr.indptr, pr.indices, pr.data
        if ip.shape != (n_pre + 1,):
            raise FormatError(f"{src}: indptr has shape {ip.shape}, expected ({n_pre + 1},) for {n_pre} sources")
        if ip[0] != 0 or np.any(np.diff(ip) < 0) or ip[-1] != len(ix) or len(ix) != len(d):
            raise FormatError(f"{src}: CSR arrays are inconsistent (indptr must start at 0, never decrease and "
                              f"end at len(indices) = len(data); got {int(ip[-1])}, {len(ix)}, {len(d)})")
        if len(ix) and (ix.min() < 0 or ix.max() >= n_post):
            raise FormatError(f"{src}: CSR indices outside 0..{n_post - 1}")
        _finite(d, src, "weights")
    elif isinstance(pr, S.ConvProjection):
        kh, kw, cig, cout = pr.kernel.shape
        _geometry(pr, src, (kh, kw), pr.stride, pr.pads)
        g = pr.groups
        if g < 1 or cout % g or pr.pre_shape[0] % g or cig * g != pr.pre_shape[0]:
            raise FormatError(f"{src}: kernel {pr.kernel.shape} with groups {g} does not fit {pr.pre_shape[0]} "
                              "input channels")
        if cout != pr.post_shape[0]:
            raise FormatError(f"{src}: kernel has {cout} output channels, the target {pr.post_shape[0]}")
        _finite(pr.kernel, src, "kernel")
    elif isinstance(pr, (S.PoolProjection, S.MaxProjection)):
        _geometry(pr, src, pr.window, pr.stride, pr.pads)
        if pr.pre_shape[0] != pr.post_shape[0]:
            raise FormatError(f"{src}: pooling keeps channels, got {pr.pre_shape[0]} → {pr.post_shape[0]}")
        if isinstance(pr, S.PoolProjection):
            if pr.weight.shape != tuple(pr.post_shape[1:]):
                raise FormatError(f"{src}: pool weight has shape {pr.weight.shape}, expected {pr.post_shape[1:]}")
            _finite(pr.weight, src, "pool weight")
        elif post is None or post.model != "maxpool":
            raise FormatError(f"{src}: a max projection must feed a maxpool population")
    elif isinstance(pr, S.IdentityProjection):
        if n_pre != n_post:
            raise FormatError(f"{src}: identity between {n_pre} and {n_post} neurons")
        _finite(np.asarray(pr.weight), src, "weight")
    else:
        raise FormatError(f"{src}: unknown projection kind {type(pr).__name__}")


def check_network(net: S.Network, source: str) -> None:
    """Semantic checks of a network read from ``source`` (see the module docstring)."""
    from evsnn.convert.presets import PRESETS

    if net.preset not in PRESETS:
        raise FormatError(f"{source}: unknown preset {net.preset!r}; known: {', '.join(PRESETS)}")
    if net.input_mode not in INPUT_MODES:
        raise FormatError(f"{source}: unknown input mode {net.input_mode!r}; known: {', '.join(INPUT_MODES)}")
    if not isinstance(net.meta, dict):
        raise FormatError(f"{source}: meta must be a JSON object")
    for k, hi in (("levels", MAX_LEVELS), ("bits", 24), ("default_wake", MAX_STEPS)):
        v = getattr(net, k)
        if v is not None and not 1 <= v <= hi:
            raise FormatError(f"{source}: {k} = {v} out of range 1..{hi}")
    ds = net.default_sleep
    if ds is not None and ds != "auto" and not (isinstance(ds, int) and 0 <= ds <= MAX_STEPS):
        raise FormatError(f"{source}: default_sleep must be 'auto' or 0..{MAX_STEPS} steps, got {ds!r:.40}")
    if net.preset in ("casc", "bitserial") and net.levels is None:
        raise FormatError(f"{source}: preset {net.preset} needs levels")
    if net.preset == "bitserial":
        if net.bits is None or net.levels != (1 << net.bits) - 1 or net.default_wake is None:
            raise FormatError(f"{source}: bitserial needs bits K, levels L = 2^K − 1 and default_wake "
                              f"(got K = {net.bits}, L = {net.levels}, wake = {net.default_wake})")
    want_model = PRESETS[net.preset].model
    total = net.input_size
    for p in net.populations:
        src = f"{source}: population {p.name!r}"
        if p.model not in (want_model, "maxpool"):
            raise FormatError(f"{src}: model {p.model!r} does not belong to preset {net.preset} "
                              f"(expected {want_model} or maxpool)")
        for what, a in (("threshold", p.threshold), ("bias", p.bias)):
            if a.shape != (p.size,):
                raise FormatError(f"{src}: {what} has shape {a.shape}, expected ({p.size},)")
        _finite(p.threshold, src, "threshold", positive=True)
        _finite(p.bias, src, "bias")
        _finite(np.asarray([p.v0, p.scale]), src, "v0/scale")
        if p.drive_scale is not None:
            _finite(np.asarray([p.drive_scale]), src, "drive_scale", positive=True)
        if p.rounding not in S.ROUNDINGS:
            raise FormatError(f"{src}: unknown rounding {p.rounding!r}; known: {', '.join(S.ROUNDINGS)}")
        if p.levels is not None and not 1 <= p.levels <= MAX_LEVELS:
            raise FormatError(f"{src}: levels {p.levels} out of range 1..{MAX_LEVELS}")
        if p.reset not in RESETS:
            raise FormatError(f"{src}: unknown reset {p.reset!r}; known: {', '.join(RESETS)}")
        total += p.size
    if total > MAX_NEURONS:
        raise FormatError(f"{source}: more than 2^31 neurons in all")
    ro = net.readout
    if ro.bias.shape != (ro.size,):
        raise FormatError(f"{source}: readout bias has shape {ro.bias.shape}, expected ({ro.size},)")
    _finite(ro.bias, f"{source}: readout", "bias")
    try:
        net.validate()
    except ConversionError as e:
        raise FormatError(f"{source}: {e}") from None
    pops = {p.name: p for p in net.populations}
    for pr in net.projections:
        check_projection(pr, pops, source)
    for p in net.populations:
        if p.model == "maxpool":
            n = sum(isinstance(pr, S.MaxProjection) for pr in net.incoming(p.name))
            if n != 1:
                raise FormatError(f"{source}: maxpool population {p.name!r} needs exactly one max projection, has {n}")
