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

import h5py
import numpy as np

from evsnn.errors import FormatError
from evsnn.ir import snn as S
from evsnn.store.files import atomic_h5, open_h5
from evsnn.validate import network as V
from evsnn.validate.hdf5 import check_tree

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
    """Read a network file; FormatError for anything that is not a valid evsnn-network file.

    The file is checked as untrusted HDF5 (:mod:`evsnn.validate.hdf5`), every field's type on
    reading and the whole network against its declared structure
    (:func:`evsnn.validate.network.check_network`) before anything simulates it.
    """
    path = os.fspath(path)
    with open_h5(path, FORMAT, (VERSION,)) as f:
        check_tree(f, path)
        try:
            for g in ("populations", "projections", "readout"):
                if not isinstance(f.get(g), h5py.Group):
                    raise FormatError(f"{path}: damaged evsnn-network file (no group /{g})")
            # drive_scale, rounding: absent in older files (per-step bias currents; floor rounding)
            pops = [S.Population(**V.read_fields(f["populations"][k], S.Population, path, ("levels", "drive_scale")))
                    for k in _in_order(f["populations"])]
            prs = []
            for k in _in_order(f["projections"]):
                g = f["projections"][k]
                kind = V.root_attr(g, "kind", path, "str") if "kind" in g.attrs else None
                if kind not in PROJECTION_KINDS:
                    raise FormatError(f"{path}: {g.name}: unknown projection kind {kind!r}; "
                                      f"known: {', '.join(PROJECTION_KINDS)}")
                prs.append(PROJECTION_KINDS[kind](**V.read_fields(g, PROJECTION_KINDS[kind], path)))
            readout = S.Readout(**V.read_fields(f["readout"], S.Readout, path))
            attrs = {k: V.root_attr(f, k, path, "int?") for k in ("levels", "bits", "default_wake")}
            meta_text = V.root_attr(f, "meta", path, "str")
            try:
                meta = json.loads(meta_text)
            except (ValueError, RecursionError) as e:
                raise FormatError(f"{path}: root attribute meta is not valid JSON ({str(e)[:60]})") from None
            net = S.Network(V.root_attr(f, "input_shape", path, "shape"), pops, prs, readout,
                            V.root_attr(f, "preset", path, "str"), V.root_attr(f, "input_mode", path, "str"),
                            attrs["levels"], attrs["bits"], attrs["default_wake"], meta)
            if "default_sleep" in f.attrs:  # absent in older files: the preset's default
                ds = f.attrs["default_sleep"]
                if isinstance(ds, (bytes, str, np.bytes_)):
                    net.default_sleep = V.root_attr(f, "default_sleep", path, "str")
                else:
                    net.default_sleep = V.root_attr(f, "default_sleep", path, "int?")
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError, OSError, RuntimeError) as e:
            raise FormatError(f"{path}: damaged evsnn-network file ({type(e).__name__}: {str(e)[:80]})") from None
    V.check_network(net, path)
    return net
