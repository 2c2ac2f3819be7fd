"""Size caps applied to untrusted files and to runs; each can be changed by an environment variable.

- ``EVSNN_MAX_ARRAY_BYTES``: largest array read from any file (default 4 GiB).
- ``EVSNN_MAX_DECOMPRESSED_BYTES``: largest decompressed stream (gzip IDX, zip members; default 2 GiB).
- ``EVSNN_MEMORY_BUDGET``: bytes a run may allocate for one batch's records (default: half the
  machine's memory, at most 16 GiB). ``evsnn run --memory-budget`` overrides it.

Values are byte counts, optionally with a K/M/G/T suffix (powers of 1024).
"""

from __future__ import annotations

import os

from evsnn.errors import FormatError

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
GZIP_MAX_RATIO = 1100  # deflate cannot compress better than about 1032:1


def parse_bytes(text: str, what: str = "size") -> int:
    """'512M' → 536870912; FormatError (one line) for anything that is not a positive size."""
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = s[-1:] if s[-1:] in _SUFFIX and s[-1:] else ""
    num = s[:-1] if unit else s
    try:
        v = float(num)
    except ValueError:
        raise FormatError(f"{what} must be a byte count such as 512M or 4G, got {text!r}") from None
    if not (v > 0 and v < 2 ** 62):
        raise FormatError(f"{what} must be a positive byte count below 2^62, got {text!r}")
    return int(v * _SUFFIX[unit])


def _env(name: str, default: int) -> int:
    v = os.environ.get(name)
    return default if not v else parse_bytes(v, name)


def max_array_bytes() -> int:
    return _env("EVSNN_MAX_ARRAY_BYTES", 4 << 30)


def max_decompressed_bytes() -> int:
    return _env("EVSNN_MAX_DECOMPRESSED_BYTES", 2 << 30)


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory_budget() -> int:
    return _env("EVSNN_MEMORY_BUDGET", min(16 << 30, physical_memory() // 2))


def fmt_bytes(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run_record_bytes(net, steps: int, batch: int, record=(), wake: int | None = None) -> int:
    """Bytes the simulators allocate for one batch's records over ``steps`` (= wake + max sleep) steps.

    Readout (float64 per class), spikes ±, SOPs per layer (int64), input MACs, the input spikes of
    rate/event input (uint8 per wake step and input), per-neuron counts/values and the raster.
    """
    layers = len(net.populations) + 1
    neurons = sum(p.size for p in net.populations)
    per_step = net.readout.size * 8 + layers * 3 * 8 + 8
    if "raster" in record:
        per_step += neurons + net.input_size
    total = batch * steps * per_step
    if net.input_mode in ("rate", "events"):
        total += batch * (wake or steps) * net.input_size
    total += batch * neurons * 16 * (2 if "counts" in record else 1)  # state + counts/values
    return int(total)


def check_run_memory(net, steps: int, batch: int, record=(), wake: int | None = None,
                     budget: int | None = None) -> None:
    """FormatError when one batch's records would exceed ``budget`` (default :func:`memory_budget`)."""
    budget = memory_budget() if budget is None else budget
    need = run_record_bytes(net, steps, batch, record, wake)
    if need > budget:
        raise FormatError(f"a batch of {batch} samples × {steps} steps needs about {fmt_bytes(need)} for its "
                          f"records, more than the memory budget of {fmt_bytes(budget)}; lower --batch-size, "
                          "--wake or --max-sleep, or raise --memory-budget (EVSNN_MEMORY_BUDGET)")


def check_array_size(shape, itemsize: int, what: str) -> int:
    """Bytes of an array of ``shape`` about to be allocated from a file's declaration (e.g. an ONNX
    ``ConstantOfShape`` or a declared tensor); FormatError beyond :func:`max_array_bytes` or for a
    negative dimension. Python integers: no overflow however many dimensions."""
    n = int(itemsize)
    for d in shape:
        d = int(d)
        if d < 0:
            raise FormatError(f"{what}: negative dimension in shape {tuple(shape)}")
        n *= d
    cap = max_array_bytes()
    if n > cap:
        raise FormatError(f"{what}: shape {tuple(shape)} needs {fmt_bytes(n)}, more than the {fmt_bytes(cap)} "
                          "evsnn allocates for one array (EVSNN_MAX_ARRAY_BYTES)")
    return n
