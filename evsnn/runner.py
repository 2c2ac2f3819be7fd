"""Run logic shared by the CLI and the demo: inputs, on-the-fly conversion, batched runs into a results file.

- :func:`load_data` resolves ``--data`` (an ``.npz`` or a dataset name of
  :mod:`evsnn.datasets`), :func:`prepare_network` a network file or a model
  file plus a preset (converted on the fly, optionally calibrated).
- :func:`run_to_file` streams the samples through the simulator in batches of
  ``batch_size`` and writes each batch to the results file as it completes
  (:class:`evsnn.store.results.ResultsWriter`), so memory for records is
  bounded by one batch whatever the number of samples. The input array itself
  is held in memory (an ``.npz`` cannot be memory-mapped).
- Seeds: batch b runs with ``SeedSequence([seed, b])`` (only rate-coded input
  draws random numbers), so results depend on the batch size, which is part
  of the recorded configuration.
- Sleep default: ``"auto"`` (until quiet, capped) for casc, 0 for the other presets
  (bitserial has no sleep phase; rate presets are read after T wake steps).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, fields, is_dataclass, replace

import numpy as np

import evsnn
from evsnn import energy as E
from evsnn.errors import ConversionError, EvsnnError, FormatError, ShapeError
from evsnn.ir import snn as S
from evsnn.ir.records import check_batch, make_plan
from evsnn.store.results import Layer, Layout, ResultsWriter
from evsnn.validate.limits import check_run_memory

ENGINES = ("auto", "event", "reference")
#: Seconds the event engine costs before its first sample in a fresh process: importing Numba and
#: loading its cached kernels (bench/fixed_cost.py --phases: 0.6–0.75 s CPU on a 2-core VM).
ENGINE_START_S = 0.6
#: The NumPy reference's cost model: dense MACs per second of its convolutions and sparse products, and
#: the Python overhead per population and step. bench/fixed_cost.py --engines compares its predictions
#: with measured times (2–4× above them on the digits network): a misjudged job runs on the reference
#: for at most ~ENGINE_START_S.
REFERENCE_MAC_RATE = 1e9
REFERENCE_STEP_S = 5e-4
#: Config keys that may differ when a run is resumed (they do not change the results).
RESUME_IGNORE = ("threads", "network_file", "source_file", "data", "calibrate", "evsnn_version", "scheduler",
                 "workers")


# ---------------------------------------------------------------------------------------------- inputs

def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def network_digest(net: S.Network) -> str:
    """sha256 of everything in a network that affects a simulation (``meta`` excluded)."""
    h = hashlib.sha256()

    def feed(obj):
        if isinstance(obj, np.ndarray):
            a = np.ascontiguousarray(obj)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        elif is_dataclass(obj):
            h.update(type(obj).__name__.encode())
            for f in fields(obj):
                if f.name != "meta":
                    h.update(f.name.encode())
                    feed(getattr(obj, f.name))
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for i in obj:
                feed(i)
            h.update(b"]")
        elif isinstance(obj, np.generic):
            feed(obj.item())
        else:
            h.update(repr(obj).encode())

    feed(net)
    return h.hexdigest()


def load_data(spec: str, limit: int | None = None):
    """``(x, y, info)`` for ``--data``: ``y`` may be None; ``info`` has data, data_samples, data_sha256."""
    from evsnn.datasets import load_dataset

    x, y = load_dataset(spec)
    if limit is not None:
        if limit < 1:
            raise EvsnnError(f"--limit must be ≥ 1, got {limit}")
        x = x[:limit]
        y = None if y is None else y[:limit]
    if len(x) == 0:
        raise FormatError(f"{spec}: the data has no samples")
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    h.update(f"{x.dtype.str}{x.shape}".encode())
    if y is not None:
        h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return x, y, {"data": os.fspath(spec), "data_samples": int(len(x)), "data_sha256": h.hexdigest()}


def convert_model(path: str, preset: str, levels: int | None = None, calibrate: str | None = None,
                  percentile: float = 99.99, input_mode: str = "analog", calibrate_samples: int = 1000,
                  stage=None):
    """Model file → (network, graph). ``stage(name)`` is called before each step (for a progress bar).

    The network's meta gets ``source_file`` ({path, sha256}), ``ann_ops``
    (:func:`evsnn.energy.ann_ops` of the source graph) and the conversion options.
    """
    from evsnn.convert import calibrate as run_calibration
    from evsnn.convert import convert, get_preset
    from evsnn.frontends import load_model

    stage = stage or (lambda name: None)
    get_preset(preset)
    stage("load model")
    graph = load_model(path)
    if calibrate:
        stage("load calibration data")
        xc, _, _ = load_data(calibrate, calibrate_samples)
        if not np.isfinite(xc).all():
            raise FormatError(f"{calibrate}: calibration data holds NaN or infinite values; "
                              "activation percentiles of it would be meaningless")
        stage("calibrate")
        graph = run_calibration(graph, xc, percentile)
    stage("convert")
    net = convert(graph, preset, levels, input_mode)
    net.meta["source_file"] = {"path": os.path.abspath(path), "sha256": sha256_file(path)}
    net.meta["ann_ops"] = E.ann_ops(graph)
    net.meta["conversion"] = {"preset": preset, "levels": levels, "calibrate": calibrate or None,
                              "percentile": percentile if calibrate else None, "input_mode": input_mode}
    return net, graph


def prepare_network(path: str, preset: str | None = None, levels: int | None = None, calibrate: str | None = None,
                    percentile: float = 99.99, input_mode: str = "analog", stage=None):
    """A network file, or a model file converted with ``preset``; returns (network, info for /config)."""
    from evsnn.store import existing_file, file_format, load_network

    path = existing_file(path, "a network or model file")
    fmt = file_format(path)
    info = {"network_file": "", "network_sha256": "", "converted": False}
    if fmt == "evsnn-network":
        if levels is not None or calibrate:
            raise ConversionError(f"{path} is already converted: --levels and --calibrate apply to model files only")
        net = load_network(path)
        if preset is not None and preset != net.preset:
            raise ConversionError(f"{path} was converted with preset {net.preset!r}, not {preset!r}; "
                                  "convert the model again to change the preset")
        info.update(network_file=os.path.abspath(path), network_sha256=sha256_file(path))
    elif fmt is not None and fmt.startswith("evsnn-"):
        raise FormatError(f"{path} is an {fmt} file, not a network or model file")
    else:
        if preset is None:
            raise ConversionError(f"{path} is a model file: give --preset to convert it on the fly "
                                  "(or convert it first with `evsnn convert`)")
        net, _ = convert_model(path, preset, levels, calibrate, percentile, input_mode, stage=stage)
        info.update(converted=True, convert_levels=levels, calibrate=calibrate or "",
                    percentile=percentile if calibrate else "")
    src = net.meta.get("source_file") or {}
    info.update(source_file=src.get("path", ""), source_sha256=src.get("sha256", ""))
    return net, info


# ---------------------------------------------------------------------------------------------- running

@dataclass
class RunOptions:
    """Options of a run; ``record`` lists what the file keeps (counts, raster)."""

    wake: int | None = None
    sleep: int | str | None = None  # None: "auto" for casc, 0 otherwise
    max_sleep: int | None = None
    record: tuple = ()
    seed: int = 0
    batch_size: int = 64
    engine: str = "event"  # "auto": see choose_engine
    threads: int | None = None
    allow_inexact: bool = False
    profiles: tuple = ()  # Profile objects; empty: the built-in ones
    dtype: str | None = None  # event engine arithmetic; None: float64 for casc/bitserial, float32 else
    verify: bool = False  # compare every sample with the quantized ANN (evsnn.verify) and write /verify
    allow_nonfinite: bool = False  # run inputs holding NaN/inf (refused by default)
    memory_budget: int | None = None  # bytes for one batch's records; None: evsnn.validate.limits.memory_budget()


def default_sleep(net: S.Network, sleep):
    """``sleep``, or the network's own default (casc: "auto")."""
    return sleep if sleep is not None else net.schedule_defaults()[1]


def get_simulator(engine: str):
    """(simulate function, engine name) for "event", "reference" or "auto" (event if importable)."""
    if engine == "reference":
        from evsnn.reference import simulate
        return simulate, "reference"
    if engine in ("event", "auto"):
        try:
            from evsnn.engine import simulate
        except ImportError as e:
            if engine == "auto":
                from evsnn.reference import simulate
                return simulate, "reference"
            raise EvsnnError(f"the event engine is not available ({e}); use --engine reference") from None
        return simulate, "event"
    raise EvsnnError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")


def reference_seconds(net: S.Network, n: int, plan) -> float:
    """Predicted seconds of the NumPy reference on ``n`` samples: every step evaluates every projection
    densely (MACs = the total fan-out of every source, :func:`evsnn.ir.snn.source_fanouts`) plus a
    Python overhead per population. A sleep-"auto" run is counted as wake + 2 × (populations + 1)
    steps (casc settles within a few steps of its depth; the cap is far above)."""
    fan = S.source_fanouts(net)
    macs = sum(int(f.sum()) for f in fan.values())
    pops = len(net.populations) + 1
    steps = plan.wake + (min(plan.sleep, 2 * pops) if plan.auto else plan.sleep)
    return steps * (n * macs / REFERENCE_MAC_RATE + pops * REFERENCE_STEP_S)


def choose_engine(net: S.Network, n: int, plan, opts: RunOptions, distributed: bool = False) -> str:
    """The engine ``opts.engine`` names; for "auto" the NumPy reference when the run is float64 (the
    reference's arithmetic, so both give the same counts), local, and predicted to take less than half the
    event engine's start-up (:data:`ENGINE_START_S`), else the event engine (the reference if Numba is
    missing). A function of the network, the sample count and the options only, so a resumed run
    chooses as its first part did.

    The two engines agree spike for spike (counts, events and SOPs bit for bit, tests/test_engine.py);
    the readout is a float64 sum in another order and may differ in its last bits (≤ 1e-12 relative).
    The chosen engine is stored in ``/config/engine``."""
    if opts.engine != "auto":
        return opts.engine
    if (not distributed and opts.dtype == "float64"
            and reference_seconds(net, n, plan) < ENGINE_START_S / 2):
        return "reference"
    return get_simulator("auto")[1]


def batch_seed(seed: int, b: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(b)]).generate_state(1)[0])


def batch_network(engine: str, net, opts: RunOptions):
    """What ``simulate_batch`` passes as ``net``: for the event engine the network packed once
    (:func:`evsnn.engine.prepare`, reused by every batch), else the network itself."""
    if engine == "event":
        from evsnn.engine import prepare
        return prepare(net, np.dtype(opts.dtype))
    return net


def simulate_batch(sim, engine: str, net, x, opts: RunOptions, sleep, b: int):
    """One batch; ``net`` is the Network or, for the event engine, optionally its ``batch_network``."""
    kw = dict(wake=opts.wake, sleep=sleep, max_sleep=opts.max_sleep, record=tuple(opts.record),
              seed=batch_seed(opts.seed, b), allow_inexact=opts.allow_inexact, verify=opts.verify)
    if engine == "event":
        kw.update(threads=opts.threads, dtype=np.dtype(opts.dtype), memory_budget=opts.memory_budget)
    return sim(net, x, **kw)


def recorded_only(res, opts: RunOptions):
    """``res`` without the per-neuron counts and values when the file will not keep them (record has no
    "counts"): what a Dask worker sends back. The engine always fills the counts (2 MB a sample on a
    VGG-sized network, 30 MB a batch of 16; the values are made from them, except for bitserial), and the
    client would receive and drop them."""
    if "counts" in opts.record:
        return res
    return replace(res, counts={}, values={})


def local_batches(sim, engine: str, net, x, todo, opts: RunOptions, sleep):
    """Yield ``(b, result)`` for the batches ``todo``, simulated one after the other in this process."""
    prepared = batch_network(engine, net, opts) if todo else net
    for b in todo:
        xb = np.asarray(x[b * opts.batch_size:(b + 1) * opts.batch_size])
        yield b, simulate_batch(sim, engine, prepared, xb, opts, sleep, b)


def run_layout(net: S.Network, n: int, opts: RunOptions, labels: bool) -> Layout:
    layers = [Layer(p.name, p.size, tuple(p.shape), p.model) for p in net.populations]
    if net.input_mode in ("rate", "events"):
        layers.append(Layer(S.INPUT, net.input_size, tuple(net.input_shape), "input", has_state=False))
    return Layout(n, opts.batch_size, tuple(net.readout.shape), layers, counts="counts" in opts.record,
                  raster="raster" in opts.record, labels=labels,
                  verify=("exact" if net.exact else "rate") if opts.verify else "")


def ann_ops_of(net: S.Network) -> tuple[dict, str]:
    """The ANN's per-node op counts stored at conversion, else the network-based fallback."""
    ops = net.meta.get("ann_ops")
    if ops:
        return {k: {kk: int(vv) for kk, vv in v.items()} for k, v in ops.items()}, "graph"
    return E.network_ann_ops(net), "network"


def energy_summary(net: S.Network, totals: dict, n: int, wake: int, profiles) -> dict:
    """The ``/energy`` content of a results file from the run's totals (see :mod:`evsnn.energy`)."""
    ann, source = ann_ops_of(net)
    sops = {name: float(t["sops"].sum()) / n for name, t in totals["layers"].items()}
    spikes = {name: float(t["spikes_pos"].sum() + t["spikes_neg"].sum()) / n for name, t in totals["layers"].items()}
    in_macs = float(totals["input_macs"].sum()) / n
    upd = E.snn_updates(net, wake)
    attrs = {"units": "pJ per sample", "samples": n, "spikes_per_sample": sum(spikes.values()),
             "sops_per_sample": sum(sops.values()), "input_macs_per_sample": in_macs,
             "snn_updates_per_sample": upd, "ann_macs_per_sample": sum(o["macs"] for o in ann.values()),
             "ann_adds_per_sample": sum(o["adds"] for o in ann.values()),
             "ann_outputs_per_sample": sum(o["outputs"] for o in ann.values()), "ann_ops_source": source}
    profs = {}
    for p in profiles or [E.PROFILES[k] for k in E.DEFAULT_PROFILES]:
        est = E.estimate(p, sops, in_macs, upd, ann)
        d = {k: v for k, v in p.as_dict().items() if k != "name"}
        d.update(snn_pj=est["snn_pj"], ann_pj=est["ann_pj"], ratio=est["ratio"])
        profs[p.name] = d
    return {"attrs": attrs, "profiles": profs, "ann": ann}


def run_config(net: S.Network, plan, sleep, opts: RunOptions, engine: str, info: dict) -> dict:
    cfg = {"evsnn_version": evsnn.__version__, "preset": net.preset, "input_mode": net.input_mode,
           "levels": net.levels, "bits": net.bits, "wake": plan.wake, "sleep": "auto" if plan.auto else plan.sleep,
           "max_sleep": plan.sleep if plan.auto else "", "seed": int(opts.seed), "record": ",".join(opts.record),
           "batch_size": int(opts.batch_size), "engine": engine, "threads": opts.threads,
           "dtype": opts.dtype if engine == "event" else "float64",
           "allow_inexact": bool(opts.allow_inexact), "verify": bool(opts.verify),
           "network_digest": network_digest(net),
           "profiles": json.dumps([p.as_dict() for p in opts.profiles]) if opts.profiles else "built-in"}
    cfg.update(info)
    return cfg


def check_data(x, y, classes: int, allow_nonfinite: bool = False, what: str = "the data") -> None:
    """ShapeError for labels outside 0..classes−1 (they would count as wrong, silently) and, unless
    ``allow_nonfinite``, for inputs holding NaN or infinity (checked in chunks, no full-size copy)."""
    if y is not None and len(y):
        y = np.asarray(y)
        if y.min() < 0 or y.max() >= classes:
            raise ShapeError(f"{what} has labels {int(y.min())}..{int(y.max())}, the network has {classes} classes "
                             f"(0..{classes - 1})")
    if not allow_nonfinite:
        xs = np.asarray(x)
        rows = max(1, (8 << 20) // max(1, xs[:1].nbytes))
        for s in range(0, len(xs), rows):
            ok = np.isfinite(xs[s:s + rows].reshape(len(xs[s:s + rows]), -1)).all(axis=1)
            if not ok.all():
                raise ShapeError(f"{what} holds NaN or infinite inputs (first in sample {s + int(np.argmin(ok))}); "
                                 "fix the data or pass --allow-nonfinite")


def run_to_file(net: S.Network, x, y, out: str, opts: RunOptions, info: dict | None = None, resume: bool = False,
                progress=None, on_batch=None, on_start=None, client=None) -> str:
    """Simulate ``x`` (N, *input_shape) in batches and write the results file ``out``; returns its path.

    ``info``: extra ``/config`` entries (files, sha256, data). ``progress(k)``
    is called with the number of samples each finished batch adds (and once
    with the samples already done when resuming); ``on_batch(start, result, y)``
    after each batch; ``on_start(writer, engine)`` before the first.

    ``client``: a ``distributed.Client``; the batches then run as Dask tasks on its workers and are
    written as they complete, in any order (see :mod:`evsnn.distributed`); the file is the same.
    """
    if opts.batch_size < 1:
        raise EvsnnError(f"--batch-size must be ≥ 1, got {opts.batch_size}")
    if opts.threads is not None and opts.threads < 1:
        raise EvsnnError(f"--threads must be ≥ 1, got {opts.threads}")
    if opts.dtype is None:  # the engine's default: exact presets compute in float64
        opts = replace(opts, dtype="float64" if net.exact else "float32")
    if opts.dtype not in ("float32", "float64"):
        raise EvsnnError(f"--dtype must be float32 or float64, got {opts.dtype!r}")
    sleep = default_sleep(net, opts.sleep)
    # make_plan checks the record kinds and the schedule before anything is written
    plan = make_plan(net, opts.wake, sleep, opts.max_sleep, opts.record, opts.seed, opts.allow_inexact)
    n = len(x)
    if n == 0:
        raise ShapeError("the data has no samples")
    sim, engine = get_simulator(choose_engine(net, n, plan, opts, client is not None))
    check_batch(net, np.asarray(x[:1]))
    if y is not None and len(y) != n:
        raise ShapeError(f"{len(y)} labels for {n} samples")
    check_data(x, y, net.readout.size, opts.allow_nonfinite)
    # the event engine records sleep-"auto" runs in growing rounds (it checks the budget as it grows)
    steps = plan.max_steps
    if engine == "event":
        from evsnn.engine.run import first_round_steps
        steps = first_round_steps(plan)
    check_run_memory(net, steps, min(opts.batch_size, n), plan.record, plan.wake, opts.memory_budget)
    layout = run_layout(net, n, opts, y is not None)
    cfg = run_config(net, plan, sleep, opts, engine, info or {})
    if client is not None:
        from evsnn import distributed
        cfg.update(distributed.cluster_config(client))
    writer = ResultsWriter(out, layout, cfg, resume=resume, ignore=RESUME_IGNORE)
    try:
        if on_start:
            on_start(writer, engine)
        if progress and writer.samples_done:
            progress(writer.samples_done)
        todo = writer.todo()
        if client is not None:
            results = distributed.map_batches(client, net, x, todo, opts, sleep, engine,
                                                digest=cfg["network_digest"])
        else:
            results = local_batches(sim, engine, net, x, todo, opts, sleep)
        with contextlib.closing(results):  # a distributed run cancels its tasks when stopped
            for b, res in results:
                s, e = b * opts.batch_size, min(n, (b + 1) * opts.batch_size)
                yb = None if y is None else np.asarray(y[s:e])
                writer.write_batch(b, res, yb)
                if on_batch:
                    on_batch(s, res, yb)
                if progress:
                    progress(e - s)
        totals = writer.totals()
        return writer.finish(None if totals is None else energy_summary(net, totals, n, plan.wake, opts.profiles))
    finally:
        writer.close()
