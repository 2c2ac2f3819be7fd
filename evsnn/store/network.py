"""Network files: an :class:`~evsnn.ir.Network` in HDF5 (``format = "evsnn-network"``).

Layout (version 1): root attributes describe the network (preset, input_shape,
input_mode, levels, bits, default_wake, default_sleep (optional), meta as JSON); ``/populations/pNNNN``
and ``/projections/pNNNN`` hold one item each in order, their fields as
attributes (small values) or datasets (arrays); ``/readout`` the readout.
Names are attributes, not group names, since source names may contain "/".
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from evsnn.errors import FormatError
from evsnn.ir import snn as S
from evsnn.store.files import atomic_h5, open_h5

FORMAT = "evsnn-network"
VERSION = 1
PROJECTION_KINDS = {c.kind: c for c in (S.DenseProjection, S.ConvProjection, S.PoolProjection,
                                        S.IdentityProjection, S.MaxProjection)}
_NONE = -1  # stands for None in integer attributes


def _put(group, obj) -> None:
    for f in dataclasses.fields(obj):
        val = getattr(obj, f.name)
        if isinstance(val, np.ndarray):
            group.create_dataset(f.name, data=val, compression="gzip" if val.size > 4096 else None)
        elif val is None:
            group.attrs[f.name] = _NONE
        else:
            group.attrs[f.name] = val


def _get(group, cls, none_fields=()):
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in group:
            kw[f.name] = group[f.name][()]
        elif f.name in group.attrs:
            v = group.attrs[f.name]
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, np.ndarray):
                v = tuple(int(i) for i in v)
            elif isinstance(v, np.integer):
                v = None if (f.name in none_fields and v == _NONE) else int(v)
            elif isinstance(v, np.floating):
                v = float(v)
            elif isinstance(v, np.bool_):
                v = bool(v)
            kw[f.name] = v
    return cls(**kw)


def _in_order(group) -> list[str]:
    """Member names pNNNN in numeric order (plain string order breaks past p9999: "p10000" < "p1001")."""
    try:
        return sorted(group, key=lambda k: int(k[1:]))
    except ValueError:
        raise FormatError(f"unexpected item names in {group.name}: {sorted(group)[:5]}") from None


def save_network(net: S.Network, path: str | os.PathLike, source: dict | None = None) -> None:
    """Write ``net`` to ``path`` atomically; ``source`` (e.g. file name and sha256) goes into meta."""
    net.validate()
    meta = dict(net.meta)
    if source:
        meta["source_file"] = source
    with atomic_h5(path, FORMAT, VERSION) as f:
        f.attrs["preset"] = net.preset
        f.attrs["input_shape"] = np.asarray(net.input_shape, dtype=np.int64)
        f.attrs["input_mode"] = net.input_mode
        for k in ("levels", "bits", "default_wake"):
            v = getattr(net, k)
            f.attrs[k] = _NONE if v is None else int(v)
        f.attrs["meta"] = json.dumps(meta)
        if net.default_sleep is not None:  # "auto" or steps; absent in older files (then the preset's default)
            f.attrs["default_sleep"] = net.default_sleep if isinstance(net.default_sleep, str) else int(net.default_sleep)
        pops = f.create_group("populations")
        for i, p in enumerate(net.populations):
            _put(pops.create_group(f"p{i:04d}"), p)
        prs = f.create_group("projections")
        for i, pr in enumerate(net.projections):
            g = prs.create_group(f"p{i:04d}")
            g.attrs["kind"] = pr.kind
            _put(g, pr)
        _put(f.create_group("readout"), net.readout)


def load_network(path: str | os.PathLike) -> S.Network:
    """Read a network file; FormatError for anything that is not a readable evsnn-network file."""
    with open_h5(path, FORMAT, (VERSION,)) as f:
        try:
            # drive_scale: absent in files older than drives (their biases are per-step currents)
            pops = [_get(f["populations"][k], S.Population, ("levels", "drive_scale"))
                    for k in _in_order(f["populations"])]
            prs = []
            for k in _in_order(f["projections"]):
                g = f["projections"][k]
                kind = g.attrs["kind"]
                kind = kind.decode() if isinstance(kind, bytes) else kind
                if kind not in PROJECTION_KINDS:
                    raise FormatError(f"{path}: unknown projection kind {kind!r}")
                prs.append(_get(g, PROJECTION_KINDS[kind]))
            readout = _get(f["readout"], S.Readout)
            attrs = {k: (int(f.attrs[k]) if int(f.attrs[k]) != _NONE else None)
                     for k in ("levels", "bits", "default_wake")}
            net = S.Network(tuple(int(i) for i in f.attrs["input_shape"]), pops, prs, readout,
                            str(f.attrs["preset"]), str(f.attrs["input_mode"]), attrs["levels"], attrs["bits"],
                            attrs["default_wake"], json.loads(f.attrs["meta"]))
            if "default_sleep" in f.attrs:
                ds = f.attrs["default_sleep"]
                net.default_sleep = ds.decode() if isinstance(ds, bytes) else (
                    str(ds) if isinstance(ds, str) else int(ds))
        except (KeyError, TypeError) as e:
            raise FormatError(f"{path}: damaged evsnn-network file ({e})") from None
    for p in net.populations:
        p.shape = tuple(p.shape)
    net.validate()
    return net
