"""Address-event streams: N-MNIST / N-Caltech101 binary files, event ``.npz`` files, binning.

An event stream is a 1-D NumPy structured array of dtype :data:`EVENT_DTYPE`:

- ``t``  int64, timestamp in microseconds (µs), as recorded (not shifted to 0);
- ``x``  uint16, pixel column, 0 = left;
- ``y``  uint16, pixel row, 0 = top;
- ``p``  int8, polarity: 1 = ON (brightness increase), 0 = OFF.

Events keep the order of the file. Nothing is downloaded: N-MNIST is at
https://www.garrickorchard.com/datasets/n-mnist.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from evsnn.errors import FormatError

from ._common import check_split, read_npz, require_dir, require_file

#: dtype of an event stream (see module docstring for units).
EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "i1")])

#: y address the ATIS readers use to mark a timestamp-overflow record (not an event).
NMNIST_OVERFLOW_Y = 240
#: time added to every later event after an overflow record, as in the reference reader.
NMNIST_OVERFLOW_US = 2**13


def make_events(t, x, y, p) -> np.ndarray:
    """Build an :data:`EVENT_DTYPE` array from equal-length 1-D sequences.

    Polarity may be {0, 1}, {−1, +1} or bool; anything > 0 becomes 1 (ON),
    the rest 0 (OFF). Raises FormatError on unequal lengths, negative or
    out-of-range coordinates, or non-integral timestamps.
    """
    cols = [np.asarray(v) for v in (t, x, y, p)]
    n = cols[0].shape[0] if cols[0].ndim == 1 else -1
    if any(c.ndim != 1 or c.shape[0] != n for c in cols):
        raise FormatError(f"event fields t, x, y, p must be 1-D of equal length, got {[c.shape for c in cols]}")
    t, x, y, p = cols
    if t.dtype.kind == "f" and not np.all(t == np.round(t)):
        raise FormatError("event timestamps must be integer microseconds")
    for name, c in (("x", x), ("y", y)):
        if c.dtype.kind not in "iu" and not (c.dtype.kind == "f" and np.all(c == np.round(c))):
            raise FormatError(f"event {name} addresses must be integers, got {c.dtype}")
        if n and (c.min() < 0 or c.max() > np.iinfo(np.uint16).max):
            raise FormatError(f"event {name} addresses must lie in 0..65535")
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"] = t, x, y
    ev["p"] = np.asarray(p) > 0
    return ev


def read_nmnist_bin(path: str | os.PathLike) -> np.ndarray:
    """Read one N-MNIST / N-Caltech101 ``.bin`` file (Orchard et al. 2015 format).

    Each event is 40 bits in 5 bytes: byte 0 = x (8 bits), byte 1 = y
    (8 bits), byte 2 bit 7 = polarity (1 ON, 0 OFF), then a 23-bit timestamp
    in µs: byte 2 bits 6..0 (high bits), byte 3, byte 4 (low bits).
    A record with y = 240 is a timestamp-overflow marker, as in Orchard's
    reference reader (gorchard/event-Python ``eventvision.py``, also used by
    tonic): it is dropped and 2**13 µs is added to every later timestamp.
    The published N-MNIST recordings (≈ 300 ms each) contain no such record.
    Returns an :data:`EVENT_DTYPE` array; FormatError if the size is not a
    multiple of 5 bytes (truncated file).
    """
    p = require_file(path)
    raw = np.fromfile(p, dtype=np.uint8)
    if raw.size % 5:
        raise FormatError(f"{p}: N-MNIST event file of {raw.size} bytes is not a whole number of 5-byte events (truncated?)")
    rec = raw.reshape(-1, 5).astype(np.int64)
    t = ((rec[:, 2] & 0x7F) << 16) | (rec[:, 3] << 8) | rec[:, 4]
    overflow = rec[:, 1] == NMNIST_OVERFLOW_Y
    if overflow.any():
        t = t + NMNIST_OVERFLOW_US * np.cumsum(overflow)
    keep = ~overflow
    return make_events(t[keep], rec[keep, 0], rec[keep, 1], rec[keep, 2] >> 7)


def write_nmnist_bin(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write events in the N-MNIST 40-bit format (inverse of :func:`read_nmnist_bin`).

    Needs 0 ≤ x, y ≤ 255, y ≠ 240 and 0 ≤ t < 2**23 µs; FormatError otherwise.
    """
    ev = as_events(events)
    if ev.size and (ev["x"].max() > 255 or ev["y"].max() > 255 or np.any(ev["y"] == NMNIST_OVERFLOW_Y)):
        raise FormatError("N-MNIST format holds x, y in 0..255 (y = 240 is reserved)")
    if ev.size and (ev["t"].min() < 0 or ev["t"].max() >= 2**23):
        raise FormatError("N-MNIST format holds timestamps in 0..2**23-1 µs")
    t = ev["t"].astype(np.int64)
    rec = np.empty((ev.size, 5), dtype=np.uint8)
    rec[:, 0], rec[:, 1] = ev["x"], ev["y"]
    rec[:, 2] = ((ev["p"].astype(np.int64) & 1) << 7) | (t >> 16)
    rec[:, 3], rec[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    Path(path).write_bytes(rec.tobytes())


def load_events_npz(path: str | os.PathLike) -> np.ndarray:
    """Read an event ``.npz`` with arrays ``t`` (µs), ``x``, ``y`` and ``polarity`` (or ``p``).

    Returns an :data:`EVENT_DTYPE` array (see :func:`make_events` for the
    polarity convention). Opened with ``allow_pickle=False``.
    """
    p = require_file(path)
    d = read_npz(p)
    pol = "polarity" if "polarity" in d else "p"
    missing = [k for k in ("t", "x", "y") if k not in d] + ([] if pol in d else ["polarity"])
    if missing:
        raise FormatError(f"{p}: event .npz lacks {', '.join(missing)} (needs t, x, y, polarity)")
    try:
        return make_events(d["t"], d["x"], d["y"], d[pol])
    except FormatError as exc:
        raise FormatError(f"{p}: {exc}") from None


def as_events(events) -> np.ndarray:
    """Accept an :data:`EVENT_DTYPE`-like structured array or a mapping with t, x, y, p/polarity."""
    if isinstance(events, np.ndarray) and events.dtype.names:
        names = events.dtype.names
        pol = "p" if "p" in names else "polarity"
        if not {"t", "x", "y", pol} <= set(names):
            raise FormatError(f"event array needs fields t, x, y, p, got {names}")
        return make_events(events["t"], events["x"], events["y"], events[pol])
    if isinstance(events, dict):
        pol = "p" if "p" in events else "polarity"
        if not {"t", "x", "y", pol} <= set(events):
            raise FormatError(f"event mapping needs keys t, x, y, p, got {sorted(events)}")
        return make_events(events["t"], events["x"], events["y"], events[pol])
    raise FormatError(f"expected an event structured array or dict, got {type(events).__name__}")


def events_to_frames(
    events,
    shape: tuple[int, int],
    n_bins: int,
    t_start: int | None = None,
    t_end: int | None = None,
) -> np.ndarray:
    """Count events per time bin, polarity and pixel.

    The window ``[t_start, t_end)`` (default: first timestamp to last
    timestamp + 1 µs) is split into ``n_bins`` equal bins; event at time t
    goes to bin ``(t − t_start) · n_bins // (t_end − t_start)`` (integer
    arithmetic, so no event is lost to rounding). Events outside the window
    are left out. Returns float32 ``(n_bins, 2, H, W)`` counts for
    ``shape = (H, W)``: channel 0 = OFF, channel 1 = ON; each frame can be
    fed as a 2-channel image. An event with x ≥ W or y ≥ H is a FormatError,
    not silently dropped. An empty stream gives all zeros.
    """
    ev = as_events(events)
    h, w = (int(s) for s in shape)
    if n_bins < 1 or h < 1 or w < 1:
        raise FormatError(f"events_to_frames needs n_bins ≥ 1 and a positive (H, W), got {n_bins}, {shape}")
    frames = np.zeros((n_bins, 2, h, w), dtype=np.float32)
    if ev.size == 0:
        return frames
    if ev["x"].max() >= w or ev["y"].max() >= h:
        raise FormatError(
            f"event address (x ≤ {ev['x'].max()}, y ≤ {ev['y'].max()}) outside frame shape (H, W) = ({h}, {w})"
        )
    t = ev["t"]
    t0 = int(t.min()) if t_start is None else int(t_start)
    t1 = int(t.max()) + 1 if t_end is None else int(t_end)
    if t1 <= t0:
        raise FormatError(f"empty time window [{t0}, {t1}) µs")
    inside = (t >= t0) & (t < t1)
    ev, t = ev[inside], t[inside]
    b = (t - t0) * n_bins // (t1 - t0)
    np.add.at(frames, (b, ev["p"].astype(np.intp), ev["y"].astype(np.intp), ev["x"].astype(np.intp)), 1.0)
    return frames


def load_nmnist(folder: str | os.PathLike, split: str = "test") -> tuple[list[np.ndarray], np.ndarray]:
    """Read an unpacked N-MNIST folder: ``Test/<digit>/*.bin`` or ``Train/<digit>/*.bin``.

    ``folder`` is the one holding ``Test`` and ``Train`` (or the split folder
    itself). Returns a list of :data:`EVENT_DTYPE` streams (digit folders in
    order 0..9, files sorted by name) and their int64 labels. Sensor size is
    34 × 34; bin with ``events_to_frames(ev, (34, 34), n_bins)``.
    """
    check_split(split, ("test", "train"))
    root = require_dir(folder)
    sub = root / split.capitalize()
    base = sub if sub.is_dir() else root
    digits = sorted((d for d in base.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    if not digits:
        raise FormatError(f"{root}: no {split.capitalize()}/<digit>/*.bin files found (N-MNIST layout)")
    streams, labels = [], []
    for d in digits:
        for f in sorted(d.glob("*.bin")):
            streams.append(read_nmnist_bin(f))
            labels.append(int(d.name))
    return streams, np.asarray(labels, dtype=np.int64)
