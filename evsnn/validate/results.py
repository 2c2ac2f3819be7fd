"""Results files: the layout report and inspect rely on, checked before they read anything.

- ``/readout`` a float (N, S, C) dataset with N, S, C ≥ 1 (a file of 0 samples is refused);
- ``/predictions`` int (N,); ``/labels`` int (N,) within 0..C−1 when present; ``/accuracy``
  float (S,) and ``/input_macs`` (S,) when present;
- ``/layers`` a group of groups, each with an integer ``size`` ≥ 0 and 1-D per-step arrays
  (``spikes``, ``spikes_pos``, ``spikes_neg``, ``sops``) of length S;
- ``/energy`` when present: ``ann_nodes`` (text), ``ann_macs``, ``ann_adds``, ``ann_outputs``
  1-D of one length, profile groups whose pJ constants are finite numbers ≥ 0.

The untrusted-HDF5 checks (:mod:`evsnn.validate.hdf5`) run first, so every size here is
one the file really stores.
"""

from __future__ import annotations

import h5py
import numpy as np

from evsnn.errors import FormatError

PER_STEP = ("spikes", "spikes_pos", "spikes_neg", "sops")
PROFILE_KEYS = ("mac", "ac", "mem_mac", "mem_sop", "mem_add", "mem_update", "mem_output")


def _ds(f, name, source, ndim, kinds, required=True):
    obj = f.get(name)
    if obj is None:
        if required:
            raise FormatError(f"{source}: damaged evsnn-results file (no /{name})")
        return None
    if not isinstance(obj, h5py.Dataset) or obj.ndim != ndim or obj.dtype.kind not in kinds:
        what = "a dataset" if not isinstance(obj, h5py.Dataset) else f"{obj.dtype} {obj.shape}"
        raise FormatError(f"{source}: /{name} must be a {ndim}-D numeric dataset, got {what}")
    return obj


def _number(v, where, nonneg=False):
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise FormatError(f"{where} must be a number, got {type(v).__name__}")
    if not np.isfinite(float(v)) or (nonneg and float(v) < 0):
        raise FormatError(f"{where} must be a finite number{' ≥ 0' if nonneg else ''}, got {v}")


def check_results(f: h5py.File, source: str) -> None:
    """FormatError (one line) unless ``f`` has the layout of a complete results file."""
    ro = _ds(f, "readout", source, 3, "f")
    n, steps, c = ro.shape
    if n < 1 or steps < 1 or c < 1:
        raise FormatError(f"{source}: results with {n} samples, {steps} steps, {c} classes; nothing to report")
    for name, shape, kinds, req in (("predictions", (n,), "iu", True), ("labels", (n,), "iu", False),
                                    ("accuracy", (steps,), "f", False), ("input_macs", (steps,), "iuf", False),
                                    ("sleep_steps", (n,), "iu", False)):
        ds = _ds(f, name, source, 1, kinds, req)
        if ds is not None and ds.shape != shape:
            raise FormatError(f"{source}: /{name} has shape {ds.shape}, expected {shape}")
    if "labels" in f:
        y = f["labels"][()]
        if y.size and (y.min() < 0 or y.max() >= c):
            raise FormatError(f"{source}: /labels outside 0..{c - 1} (the readout has {c} classes)")
    layers = f.get("layers")
    if not isinstance(layers, h5py.Group):
        raise FormatError(f"{source}: damaged evsnn-results file (no /layers group)")
    for key in layers:
        g = layers[key]
        if not isinstance(g, h5py.Group):
            raise FormatError(f"{source}: /layers/{key} must be a group")
        if "size" in g.attrs:
            _number(g.attrs["size"], f"{source}: /layers/{key} size", nonneg=True)
        name = g.attrs.get("name", "")
        if not isinstance(name, (str, bytes)):
            raise FormatError(f"{source}: /layers/{key} name must be text")
        for k in PER_STEP:
            if k in g:
                ds = g[k]
                if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "iuf" \
                        or ds.shape[0] != steps:
                    raise FormatError(f"{source}: /layers/{key}/{k} must be a numeric ({steps},) array")
    if "config" in f and not isinstance(f["config"], h5py.Group):
        raise FormatError(f"{source}: /config must be a group")
    if "energy" in f:
        _check_energy(f["energy"], source)


def _check_energy(eg, source: str) -> None:
    if not isinstance(eg, h5py.Group):
        raise FormatError(f"{source}: /energy must be a group")
    lens = set()
    for k in ("ann_nodes", "ann_macs", "ann_adds", "ann_outputs"):
        ds = eg.get(k)
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
            raise FormatError(f"{source}: /energy/{k} is missing or not a 1-D dataset")
        if k == "ann_nodes":
            if h5py.check_string_dtype(ds.dtype) is None:
                raise FormatError(f"{source}: /energy/ann_nodes must hold text")
        elif ds.dtype.kind not in "iu":
            raise FormatError(f"{source}: /energy/{k} must hold integers")
        lens.add(ds.shape[0])
    if len(lens) > 1:
        raise FormatError(f"{source}: /energy/ann_* arrays differ in length")
    for k in ("snn_updates_per_sample",):
        if k in eg.attrs:
            _number(eg.attrs[k], f"{source}: /energy {k}", nonneg=True)
    for key in eg:
        g = eg[key]
        if isinstance(g, h5py.Group):
            for k in PROFILE_KEYS:
                if k in g.attrs:
                    _number(g.attrs[k], f"{source}: /energy/{key} {k}", nonneg=True)
