"""Results files (``format = "evsnn-results"``, ``format_version`` 1), written batch by batch.

Layout (N samples, S steps, C = readout size, every name fixed so other tools can rely on it):

- ``/readout`` float64 (N, S, C): the readout accumulator after each step.
- ``/predictions`` int64 (N,): argmax of the readout after the last step (ties: lowest class); for a
  model that quantizes its logits, of the quantized logits (:attr:`evsnn.ir.records.SimResult.predictions`).
- ``/labels`` int64 (N,): when the data has labels; then ``/accuracy`` float64 (S,) is the
  fraction of samples whose argmax after step t equals the label.
- ``/sleep_steps`` int64 (N,), ``/quiescent`` uint8 (N,): sleep steps each sample ran, and
  whether it was quiet at its end.
- ``/input_macs`` int64 (S,): analog input MACs per step, summed over samples.
- ``/layers/<name>/spikes``, ``spikes_pos``, ``spikes_neg``, ``sops`` int64 (S,): spikes
  (positive + negative events), their two parts and the synaptic operations they caused,
  per step, summed over samples. The rate-coded input, if any, is the layer ``input``.
- ``/layers/<name>/count`` int64 (N, size) and ``value`` float64 (N, size): net spike
  count and transmitted value in level units at the end (only with record ``counts``).
- ``/layers/<name>/events/{sample, step, neuron, polarity}``: the spike raster as AER
  arrays (only with record ``raster``), sorted by sample, step, neuron.
- ``/verify`` (runs with ``--verify``, see :mod:`evsnn.verify`): exact presets
  ``exact`` bool (N,), every hidden neuron equal to the quantized ANN level, and
  ``mismatches/<name>`` int64 (N,), neurons that differ per layer; rate presets
  ``rate_error_mean/<name>`` and ``rate_error_max/<name>`` float64 (N,),
  |count/T − a| per sample. The group's ``kind`` attribute says which. Optional:
  files without it are still version 1.
- ``/config`` attributes: preset, wake, sleep, seed, source and network files and their
  sha256, data, options (``""`` stands for "not set").
- ``/energy`` attributes: per-sample counts; ``/energy/<profile>`` (groups in creation
  order, the layers too) attributes: the
  profile's pJ constants, ``snn_pj``, ``ann_pj`` and ``ratio`` (E_SNN/E_ANN);
  ``/energy/ann_nodes``, ``ann_macs``, ``ann_adds``, ``ann_outputs``: the ANN's counts.

Layer names: ``<name>`` is the source node name with ``%`` written ``%25`` and ``/``
written ``%2F`` (percent-encoding, so ONNX names like ``/act1/Floor`` are one group);
the original name is the group's ``name`` attribute. Neurons are in flattened NCHW order.

Step axis: with ``sleep="auto"`` batches can end at different steps. The file has
S = the largest step count of any batch; for a batch that ended earlier the readout
is padded by repeating its last value (a quiet network no longer changes) and the
per-step spikes/SOPs/MACs are zero beyond its end.

Writing: everything goes into ``.<file>.partial`` beside the output, renamed to the
final name only when complete, so an interrupted run never leaves a truncated file
under the final name. Each completed batch is committed (its flag in the done map
``/_batches/done``, then the ``batches_done``/``samples_done`` counts, then a flush);
``resume=True`` reopens the partial file, checks the configuration is the same, and
runs the batches whose flag is not set. Batches may be written in any order (a
distributed run writes them as they complete): every batch has fixed rows, and its
raster events, appended in completion order, are put back in batch order when the
file is finished (``/_batches/ev_start`` records where each batch's events start).
Per-batch step sums live in ``/_batches`` until the end, so a resumed or out-of-order
file has the same content as an uninterrupted in-order one. A partial file of an
earlier evsnn (no done map) resumes too: its first ``batches_done`` batches are done.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from urllib.parse import unquote

import h5py
import numpy as np

from evsnn.errors import EvsnnError, FormatError
from evsnn.store.files import check_writable, lock_exclusive, note_write_failure, open_h5
from evsnn.validate.hdf5 import DAMAGE, check_tree
from evsnn.validate.results import check_results

FORMAT = "evsnn-results"
PARTIAL_FORMAT = "evsnn-results-partial"
VERSION = 1
_CHUNK_BYTES = 1 << 20


def escape_name(name: str) -> str:
    """Group name of a layer: ``%`` → ``%25``, ``/`` → ``%2F`` (and ``.``/``..``/empty encoded whole)."""
    s = name.replace("%", "%25").replace("/", "%2F")
    if s in ("", ".", ".."):
        s = "".join(f"%{ord(c):02X}" for c in s) or "%00"
    return s


def unescape_name(s: str) -> str:
    """Inverse of :func:`escape_name`."""
    return "" if s == "%00" else unquote(s)


def partial_path(path: str | os.PathLike) -> str:
    """Where the unfinished file of ``path`` lives: ``.<basename>.partial`` in the same folder."""
    path = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".partial")


def _plain(v):
    """Attribute value → plain Python (bytes → str, NumPy scalars → int/float/bool)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [_plain(i) for i in v.tolist()]
    if isinstance(v, np.generic):
        return v.item()
    return v


def attrs_dict(obj) -> dict:
    """All attributes of an h5py object as plain Python values."""
    return {k: _plain(v) for k, v in obj.attrs.items()}


@dataclass
class Layer:
    """A spiking layer of the run: population name, size, shape and neuron model."""

    name: str
    size: int
    shape: tuple = ()
    model: str = ""
    has_state: bool = True  # False for the rate-coded input (no count/value)


@dataclass
class Layout:
    """Shape of a run: N samples in batches of ``batch_size``, the readout size, the layers."""

    n_samples: int
    batch_size: int
    readout_shape: tuple
    layers: list[Layer]
    counts: bool = False
    raster: bool = False
    labels: bool = False
    verify: str = ""  # "exact" / "rate": write /verify (see the module docstring); "": no verification

    @property
    def n_batches(self) -> int:
        return -(-self.n_samples // self.batch_size)

    @property
    def classes(self) -> int:
        return int(np.prod(self.readout_shape))


def _replace(group, name: str, data) -> None:
    """(Re)create dataset ``name``: finishing is idempotent, so a run stopped while finishing can resume."""
    if name in group:
        del group[name]
    group.create_dataset(name, data=data)


def _set_attrs(obj, d: dict) -> None:
    for k, v in d.items():
        obj.attrs[k] = "" if v is None else v


@contextlib.contextmanager
def _quiet_h5():
    """Keep h5py's reports of objects it cannot release after a failed write (one per object,
    printed to sys.stderr while the error unwinds) off the terminal: the error is one line."""
    import io
    import sys

    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        yield
    finally:
        sys.stderr = saved


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:120]


def _write_failure(e: BaseException) -> bool:
    msg = str(e)
    return "No space" in msg or "errno = 28" in msg or "errno = 27" in msg or "too large" in msg.lower()


def _hint(partial: str, batches: int) -> str:
    """What to do after a failed write of ``partial`` with ``batches`` batches committed."""
    kept = f"the {batches} batches committed so far are kept in {partial}" if batches else \
        f"the unfinished file {partial} is kept"
    return (f"{kept}: free space and run the same command with --resume to continue (or, if --resume then "
            f"reports it damaged, delete it: rm '{partial}')")


class ResultsWriter:
    """Writes one results file batch by batch into its partial file (see the module docstring).

    ``config``: flat dict of scalars for ``/config``; on resume every key except
    those in ``ignore`` must equal the stored one. After construction,
    :meth:`todo` lists the batches still to run (:attr:`start_batch` is the first of them).
    """

    def __init__(self, path, layout: Layout, config: dict, resume: bool = False, ignore=()):
        self.path = check_writable(path)
        self.partial = partial_path(self.path)
        self.layout = layout
        self.config = {k: ("" if v is None else v) for k, v in config.items()}
        self.resumed = self.done = False
        self.f = None
        self._lock = lock_exclusive(self.partial, self.path)  # a second writer to the same -o fails here
        try:
            if resume and os.fstat(self._lock).st_size > 0:
                self._reopen(ignore)
            else:
                self._create()
        except (OSError, RuntimeError) as e:
            self.close()
            raise self._failed(e) from None
        except BaseException:
            self.close()
            raise
        nl = len(layout.layers)
        self._ev_off = np.zeros(nl, dtype=np.int64)
        if self.done or not layout.raster or not self._done.any():
            return
        # events are appended in completion order; an interrupted batch's events can only be at the end
        cnt, start = self.f["_batches/events"][()], self.f["_batches/ev_start"][()]
        self._ev_off = (start + cnt)[self._done].max(axis=0).astype(np.int64)

    # -- opening
    def _create(self) -> None:
        lo = self.layout
        # truncate the locked file in place (removing it would drop the lock); HDF5's own
        # file locking is off since our flock on this inode already excludes other writers
        f = self.f = h5py.File(self.partial, "w", locking=False)
        f.attrs["format"] = PARTIAL_FORMAT
        f.attrs["format_version"] = VERSION
        f.attrs["batches_done"] = 0
        f.attrs["samples_done"] = 0
        _set_attrs(f.create_group("config"), self.config)
        n, c = lo.n_samples, lo.classes
        sc = 64
        rows = int(max(1, min(n, _CHUNK_BYTES // (sc * c * 8))))
        f.create_dataset("readout", shape=(n, 0, c), maxshape=(n, None, c), dtype="f8", chunks=(rows, sc, c),
                         compression="gzip", compression_opts=1)
        f["readout"].attrs["readout_shape"] = np.asarray(lo.readout_shape, dtype=np.int64)
        f.create_dataset("predictions", shape=(n,), dtype="i8")
        if lo.labels:
            f.create_dataset("labels", shape=(n,), dtype="i8")
        f.create_dataset("sleep_steps", shape=(n,), dtype="i8")
        f.create_dataset("quiescent", shape=(n,), dtype="u1")
        layers = f.create_group("layers", track_order=True)
        for ly in lo.layers:
            g = layers.create_group(escape_name(ly.name))
            g.attrs["name"] = ly.name
            g.attrs["size"] = ly.size
            g.attrs["shape"] = np.asarray(ly.shape, dtype=np.int64)
            g.attrs["model"] = ly.model
            rows = int(max(1, min(n, _CHUNK_BYTES // (8 * max(ly.size, 1)))))
            if lo.counts and ly.has_state:
                g.create_dataset("count", shape=(n, ly.size), dtype="i8", chunks=(rows, ly.size),
                                 compression="gzip", compression_opts=1)
                g.create_dataset("value", shape=(n, ly.size), dtype="f8", chunks=(rows, ly.size),
                                 compression="gzip", compression_opts=1)
            if lo.raster:
                ev = g.create_group("events")
                for k, dt in (("sample", "i8"), ("step", "i4"), ("neuron", "i8"), ("polarity", "i1")):
                    ev.create_dataset(k, shape=(0,), maxshape=(None,), dtype=dt, chunks=(65536,),
                                      compression="gzip", compression_opts=1)
        if lo.verify:
            vg = f.create_group("verify")
            vg.attrs["kind"] = lo.verify
            if lo.verify == "exact":
                vg.create_dataset("exact", shape=(n,), dtype=bool)
            kinds = ("mismatches",) if lo.verify == "exact" else ("rate_error_mean", "rate_error_max")
            for k in kinds:
                sub = vg.create_group(k, track_order=True)
                for ly in lo.layers:
                    if ly.has_state:
                        d = sub.create_dataset(escape_name(ly.name), shape=(n,), dtype="i8" if k == "mismatches" else "f8")
                        d.attrs["name"] = ly.name
        b = f.create_group("_batches")
        nb, nl = lo.n_batches, len(lo.layers)
        b.create_dataset("steps", shape=(nb,), dtype="i8")
        for k in ("spikes_pos", "spikes_neg", "sops"):
            b.create_dataset(k, shape=(nb, nl, 0), maxshape=(nb, nl, None), dtype="i8", chunks=(1, max(nl, 1), 256))
        b.create_dataset("input_macs", shape=(nb, 0), maxshape=(nb, None), dtype="i8", chunks=(1, 256))
        if lo.raster:
            b.create_dataset("events", shape=(nb, nl), dtype="i8")
            b.create_dataset("ev_start", shape=(nb, nl), dtype="i8")
        b.create_dataset("done", shape=(nb,), dtype="u1")
        f.flush()
        self._done = np.zeros(nb, dtype=bool)

    def _damaged(self, why: str) -> FormatError:
        """The partial file cannot be resumed (typically left by a write that failed on a full disk)."""
        return FormatError(f"{self.partial}: the unfinished run's file is damaged ({why}), as a write that failed "
                           f"(e.g. on a full disk) can leave it; it cannot be resumed: delete it (rm '{self.partial}') "
                           "or run the same command without --resume to start over")

    def _reopen(self, ignore) -> None:
        try:
            f = h5py.File(self.partial, "r+", locking=False)
        except (OSError, RuntimeError, ValueError) as e:
            raise self._damaged(_first_line(e) or "not readable as HDF5") from None
        self.f = f
        try:
            check_tree(f, self.partial, check_sizes=False)
        except FormatError as e:
            f.close()
            raise self._damaged(str(e).removeprefix(self.partial + ": ")) from None
        try:
            self._reopen_checked(f, ignore)
        except FormatError:
            f.close()
            raise
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
            f.close()
            if _write_failure(e):  # the disk is still full: reported by the caller as a failed write
                raise
            raise self._damaged(f"{type(e).__name__}: {_first_line(e)}") from None

    def _reopen_checked(self, f, ignore) -> None:
        fmt = _plain(f.attrs.get("format"))
        complete = fmt == FORMAT and int(f.attrs.get("format_version", -1)) == VERSION
        if not complete and (fmt != PARTIAL_FORMAT or int(f.attrs.get("format_version", -1)) != VERSION
                             or "_batches" not in f):
            f.close()
            raise FormatError(f"{self.partial} is not an unfinished evsnn run this version can resume; "
                              "run again without --resume")
        old = attrs_dict(f["config"])
        for k in sorted(set(old) | set(self.config)):
            if k in ignore:
                continue
            a, b = old.get(k, "<unset>"), _plain(self.config.get(k, "<unset>"))
            if a != b:
                f.close()
                raise FormatError(f"cannot resume: the unfinished run used {k} = {a!r}, this one {b!r}; "
                                  "run again without --resume to start over")
        if complete:  # stopped between finishing and renaming: only the rename is left
            f.close()
            self._done = np.ones(self.layout.n_batches, dtype=bool)
            self.done = self.resumed = True
            return
        _set_attrs(f["config"], {k: v for k, v in self.config.items() if k in ignore})
        bt, nb = f["_batches"], self.layout.n_batches
        if "done" not in bt:  # written by an evsnn without the done map: batches were written in order
            bt.create_dataset("done", data=(np.arange(nb) < int(f.attrs["batches_done"])).astype(np.uint8))
            if self.layout.raster:
                cnt = np.where(bt["done"][()][:, None] > 0, bt["events"][()], 0)
                bt.create_dataset("ev_start", data=np.cumsum(cnt, axis=0) - cnt)
        self._done = bt["done"][()] > 0
        self.resumed = True

    # -- write errors
    def _failed(self, exc: BaseException) -> FormatError:
        """A write to the partial file failed (disk full, I/O error, file size limit): one line.

        Nothing is renamed to the final name; the partial file stays (``--resume`` reuses it if
        its last committed batch survived, else asks to start over). HDF5 is left alone
        afterwards: the CLI exits without its shutdown (see ``store.files.WRITE_FAILED``).
        """
        note_write_failure(exc)
        msg = str(exc)
        reason = ("disk full" if "No space" in msg or "errno = 28" in msg else
                  "file size limit reached" if "errno = 27" in msg or "too large" in msg.lower() else
                  msg.splitlines()[0].split(" (")[0] if msg else type(exc).__name__)
        return FormatError(f"cannot write {self.partial}: {reason}; nothing was written to {self.path}; "
                           f"{_hint(self.partial, self.done_count())}")

    def done_count(self) -> int:
        done = getattr(self, "_done", None)
        return int(done.sum()) if done is not None else 0

    # -- writing
    def todo(self) -> list[int]:
        """Indices of the batches not written yet, in increasing order."""
        return [int(b) for b in np.flatnonzero(~self._done)]

    @property
    def start_batch(self) -> int:
        """The first batch not written yet (``n_batches`` when all are)."""
        todo = np.flatnonzero(~self._done)
        return int(todo[0]) if len(todo) else self.layout.n_batches

    @property
    def samples_done(self) -> int:
        """Samples in the batches written so far."""
        lo = self.layout
        if not len(self._done):
            return 0
        short = lo.n_batches * lo.batch_size - lo.n_samples  # the last batch has this many fewer rows
        return int(self._done.sum()) * lo.batch_size - (short if self._done[-1] else 0)

    def write_batch(self, b: int, res, y=None) -> None:
        """Write batch ``b`` (samples b·batch_size …) from a SimResult and commit it."""
        try:
            with _quiet_h5():
                self._write_batch(b, res, y)
        except (OSError, RuntimeError) as e:
            raise self._failed(e) from None

    def _write_batch(self, b: int, res, y=None) -> None:
        lo, f = self.layout, self.f
        start = b * lo.batch_size
        n, steps = res.readout.shape[0], res.readout.shape[1]
        rows = slice(start, start + n)
        ds = f["readout"]
        if steps > ds.shape[1]:
            ds.resize(steps, axis=1)
        ds[rows, :steps] = res.readout.reshape(n, steps, -1)
        f["predictions"][rows] = res.predictions
        if lo.labels:
            f["labels"][rows] = np.asarray(y, dtype=np.int64)
        f["sleep_steps"][rows] = np.asarray(res.sleep_steps, dtype=np.int64)
        f["quiescent"][rows] = np.asarray(res.quiescent, dtype=np.uint8)
        bt = f["_batches"]
        width = max(steps, bt["sops"].shape[2])
        for k in ("spikes_pos", "spikes_neg", "sops"):
            if bt[k].shape[2] < width:
                bt[k].resize(width, axis=2)
        if bt["input_macs"].shape[1] < width:
            bt["input_macs"].resize(width, axis=1)
        zeros = np.zeros(steps, dtype=np.int64)
        for k, rec in (("spikes_pos", res.spikes_pos), ("spikes_neg", res.spikes_neg), ("sops", res.sops)):
            row = np.zeros((len(lo.layers), width), dtype=np.int64)
            for i, ly in enumerate(lo.layers):
                row[i, :steps] = np.asarray(rec.get(ly.name, zeros)).sum(axis=0)
            bt[k][b] = row
        row = np.zeros(width, dtype=np.int64)
        if res.input_macs is not None:
            row[:steps] = np.asarray(res.input_macs).sum(axis=0)
        bt["input_macs"][b] = row
        bt["steps"][b] = steps
        for i, ly in enumerate(lo.layers):
            g = f["layers"][escape_name(ly.name)]
            if lo.counts and ly.has_state:
                g["count"][rows] = res.counts[ly.name]
                g["value"][rows] = res.values[ly.name]
            if lo.raster:
                self._write_events(g["events"], i, b, start, res.raster.get(ly.name))
        if lo.verify:
            self._write_verify(rows, res.verify)
        f["_batches/done"][b] = 1
        self._done[b] = True
        f.attrs["batches_done"] = int(self._done.sum())
        f.attrs["samples_done"] = self.samples_done
        f.flush()

    def _write_verify(self, rows: slice, rep) -> None:
        vg = self.f["verify"]
        if rep is None:
            raise FormatError("this results file verifies every batch, but a batch came without a verify report")
        if self.layout.verify == "exact":
            vg["exact"][rows] = np.asarray(rep.exact, dtype=bool)
            parts = {"mismatches": rep.mismatches}
        else:
            parts = {"rate_error_mean": rep.rate_error_mean, "rate_error_max": rep.rate_error_max}
        for k, per_layer in parts.items():
            for ly in self.layout.layers:
                if ly.has_state:
                    vg[k][escape_name(ly.name)][rows] = per_layer[ly.name]

    def _write_events(self, ev, i: int, b: int, start: int, raster) -> None:
        if raster is None:
            cnt = 0
        else:
            smp, stp, nrn = np.nonzero(raster)
            cnt = len(smp)
            off = int(self._ev_off[i])
            cols = (("sample", smp + start), ("step", stp), ("neuron", nrn), ("polarity", raster[smp, stp, nrn]))
            for k, arr in cols:
                ev[k].resize(off + cnt, axis=0)
                ev[k][off:off + cnt] = arr
        self.f["_batches/events"][b, i] = cnt
        self.f["_batches/ev_start"][b, i] = self._ev_off[i]
        self._ev_off[i] += cnt

    def _events_in_batch_order(self, i: int, ev) -> None:
        """Put layer ``i``'s events in batch order (they were appended as batches completed), resumably.

        Sorted copies (``<column>.sorted``) are made first; once all are written, ``ev_start`` is set to the
        in-order offsets (the commit), then each copy replaces its column. A rerun after a stop at any
        point redoes the copy if it was not committed, else only the replacements left.
        """
        bt = self.f["_batches"]
        cnt, start = bt["events"][:, i], bt["ev_start"][:, i]
        total = int(cnt.sum())
        in_order = np.cumsum(cnt) - cnt
        keys = sorted({k.removesuffix(".sorted") for k in ev})
        if not (np.array_equal(start, in_order) and int(self._ev_off[i]) == total):
            for k in keys:
                old = ev[k]
                if k + ".sorted" in ev:
                    del ev[k + ".sorted"]
                new = ev.create_dataset(k + ".sorted", shape=(total,), maxshape=(None,), dtype=old.dtype,
                                        chunks=(65536,), compression="gzip", compression_opts=1)
                for b in np.flatnonzero(cnt):
                    new[in_order[b]:in_order[b] + cnt[b]] = old[start[b]:start[b] + cnt[b]]
            bt["ev_start"][:, i] = in_order
            self._ev_off[i] = total
            self.f.flush()
        for k in keys:
            if k + ".sorted" in ev:
                if k in ev:
                    del ev[k]
                ev.move(k + ".sorted", k)
            ev[k].resize(total, axis=0)

    # -- finishing
    def _batch_sums(self, k: str, steps: int) -> np.ndarray:
        ds = self.f["_batches"][k]
        nb = self.layout.n_batches
        out = np.zeros(ds.shape[1:-1] + (steps,), dtype=np.int64)
        for s in range(0, nb, 1024):
            out += ds[s:min(nb, s + 1024), ..., :steps].sum(axis=0)
        return out

    def totals(self) -> dict | None:
        """Sums over all samples once every batch is written: per layer spikes_pos/neg, sops (S,); input_macs (S,).

        None when the file is already complete (a resumed run that only had its rename left).
        """
        if self.done:
            return None
        nb = self.layout.n_batches
        steps = int(self.f["_batches/steps"][:nb].max()) if nb else 0
        out = {"steps": steps, "input_macs": self._batch_sums("input_macs", steps), "layers": {}}
        sums = {k: self._batch_sums(k, steps) for k in ("spikes_pos", "spikes_neg", "sops")}
        for i, ly in enumerate(self.layout.layers):
            out["layers"][ly.name] = {k: sums[k][i] for k in sums}
        return out

    def finish(self, energy: dict | None = None) -> str:
        """Pad, sum, write accuracy and energy, drop the scratch data and rename to the final path.

        ``energy``: {"attrs": {...}, "profiles": {name: {...}}, "ann": {node: {macs, adds, outputs}}}.
        """
        try:
            with _quiet_h5():
                return self._finish(energy)
        except (OSError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and "before every batch" in str(e):
                raise
            raise self._failed(e) from None

    def _finish(self, energy: dict | None = None) -> str:
        if self.done:
            os.replace(self.partial, self.path)
            return self.path
        lo, f = self.layout, self.f
        nb = lo.n_batches
        if not self._done.all():
            raise RuntimeError("finish() called before every batch was written")
        tot = self.totals()
        steps = tot["steps"]
        bsteps = f["_batches/steps"][:nb]
        ro = f["readout"]
        ro.resize(steps, axis=1)
        for b in np.flatnonzero(bsteps < steps):
            rows = slice(b * lo.batch_size, min((b + 1) * lo.batch_size, lo.n_samples))
            last = ro[rows, bsteps[b] - 1]
            ro[rows, bsteps[b]:steps] = np.repeat(last[:, None, :], steps - bsteps[b], axis=1)
        _replace(f, "input_macs", tot["input_macs"])
        for i, ly in enumerate(lo.layers):
            g = f["layers"][escape_name(ly.name)]
            t = tot["layers"][ly.name]
            _replace(g, "spikes", t["spikes_pos"] + t["spikes_neg"])
            for k in ("spikes_pos", "spikes_neg", "sops"):
                _replace(g, k, t[k])
            if lo.raster:
                self._events_in_batch_order(i, g["events"])
        if lo.labels:
            _replace(f, "accuracy", accuracy_curve(f))
        if energy is not None:
            if "energy" in f:
                del f["energy"]
            eg = f.create_group("energy", track_order=True)
            _set_attrs(eg, energy.get("attrs", {}))
            for name, d in energy.get("profiles", {}).items():
                _set_attrs(eg.create_group(escape_name(name)), {"name": name, **d})
            ann = energy.get("ann", {})
            eg.create_dataset("ann_nodes", data=np.array(list(ann), dtype=h5py.string_dtype()), shape=(len(ann),))
            for k in ("macs", "adds", "outputs"):
                eg.create_dataset(f"ann_{k}", data=np.array([o.get(k, 0) for o in ann.values()], dtype=np.int64))
        f.flush()
        del f["_batches"]
        f.attrs["samples"] = lo.n_samples
        f.attrs["steps"] = steps
        for k in ("batches_done", "samples_done"):
            del f.attrs[k]
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = VERSION
        f.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        """Close the partial file (kept for ``resume``) and release its lock."""
        with contextlib.suppress(Exception):
            if self.f is not None:
                self.f.close()
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            with contextlib.suppress(OSError):
                os.close(lock)


def accuracy_curve(f: h5py.File, chunk_rows: int | None = None) -> np.ndarray:
    """(S,) fraction of samples whose readout argmax after each step equals the label (streamed)."""
    ro, y = f["readout"], f["labels"]
    n, steps, c = ro.shape
    correct = np.zeros(steps, dtype=np.int64)
    rows = chunk_rows or max(1, (16 << 20) // max(1, steps * c * 8))
    for s in range(0, n, rows):
        e = min(n, s + rows)
        pred = ro[s:e].argmax(axis=2)
        correct += (pred == y[s:e][:, None]).sum(axis=0)
    return correct / max(n, 1)


def open_results(path: str | os.PathLike, trusted: bool = False) -> h5py.File:
    """Open a results file for reading; FormatError if it is not one this version reads.

    The file is checked as untrusted HDF5 and against the results layout
    (:mod:`evsnn.validate.results`) before the caller reads anything, unless ``trusted``: a file this
    process has just written and closed (``evsnn run`` summarizing its own output; the two walks were
    35 ms of a 0.5 s one-sample run on a slow machine). The format and version are checked always.
    """
    f = open_h5(path, FORMAT, (VERSION,))
    if trusted:
        return f
    try:
        check_tree(f, os.fspath(path))
        check_results(f, os.fspath(path))
    except DAMAGE as e:  # HDF5 errors met reading damaged metadata (e.g. a global heap object's size)
        f.close()
        if isinstance(e, EvsnnError):
            raise
        raise FormatError(f"{os.fspath(path)}: damaged evsnn-results file ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    except BaseException:
        f.close()
        raise
    return f


def layer_groups(f: h5py.File):
    """(original name, group) of every layer in the file, in file order."""
    for key in f["layers"]:
        g = f["layers"][key]
        yield _plain(g.attrs.get("name", unescape_name(key))), g


def read_verify(vg: h5py.Group) -> dict:
    """Summary of ``/verify``: kind; exact presets: samples exact, percent, mismatching neurons per layer
    (summed over samples); rate presets: mean and max |count/T − a| per layer."""
    kind = _plain(vg.attrs.get("kind", ""))
    out = {"kind": kind, "layers": {}}
    if kind == "exact":
        ex = vg["exact"][()]
        out.update(samples=int(len(ex)), exact_samples=int(ex.sum()),
                   percent_exact=100.0 * float(ex.mean()) if len(ex) else 100.0)
        for key in vg["mismatches"]:
            d = vg["mismatches"][key]
            out["layers"][_plain(d.attrs.get("name", unescape_name(key)))] = {"mismatches": int(d[()].sum())}
    else:
        for key in vg.get("rate_error_mean", {}):
            m, x = vg["rate_error_mean"][key], vg["rate_error_max"][key]
            out["layers"][_plain(m.attrs.get("name", unescape_name(key)))] = {
                "rate_error_mean": float(m[()].mean()) if m.size else 0.0,
                "rate_error_max": float(x[()].max()) if x.size else 0.0}
    return out


def read_summary(path: str | os.PathLike, trusted: bool = False) -> dict:
    """Small parts of a results file as plain Python/NumPy: config, per-step sums, accuracy, energy.

    The large arrays (readout, counts, events) are not read, except that the
    accuracy is computed by streaming the readout when the file has labels but
    no ``/accuracy``. ``trusted``: as :func:`open_results`.
    """
    with open_results(path, trusted) as f:
        out = {"file": os.fspath(path), "format_version": int(f.attrs["format_version"]),
               "config": attrs_dict(f["config"]) if "config" in f else {},
               "samples": int(f["readout"].shape[0]), "steps": int(f["readout"].shape[1]),
               "classes": int(f["readout"].shape[2]), "input_macs": f["input_macs"][()] if "input_macs" in f else None,
               "layers": {}, "energy": {}, "accuracy": None, "has_labels": "labels" in f}
        if "labels" in f:
            out["accuracy"] = f["accuracy"][()] if "accuracy" in f else accuracy_curve(f)
        for name, g in layer_groups(f):
            d = {k: g[k][()] for k in ("spikes", "spikes_pos", "spikes_neg", "sops") if k in g}
            d.update({"size": int(g.attrs.get("size", 0)), "model": _plain(g.attrs.get("model", "")),
                      "shape": tuple(_plain(g.attrs.get("shape", [])))})
            out["layers"][name] = d
        if "verify" in f:
            out["verify"] = read_verify(f["verify"])
        if "energy" in f:
            eg = f["energy"]
            out["energy_counts"] = attrs_dict(eg)
            out["ann"] = {(k.decode() if isinstance(k, bytes) else k):
                          {"macs": int(m), "adds": int(a), "outputs": int(o)}
                          for k, m, a, o in zip(eg["ann_nodes"][()], eg["ann_macs"][()], eg["ann_adds"][()],
                                                eg["ann_outputs"][()])}
            for key in eg:
                if isinstance(eg[key], h5py.Group):
                    d = attrs_dict(eg[key])
                    out["energy"][d.pop("name", unescape_name(key))] = d
    return out
