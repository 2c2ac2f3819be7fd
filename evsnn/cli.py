"""The ``evsnn`` command line: convert, run, report, inspect, demo.

Every error a user can cause (a missing or unreadable file, a wrong format,
data of the wrong shape, an unknown preset, an unwritable output, a results
file of a newer format version, a bad option) prints one line
``error: ...`` on stderr and exits with code 2; an interrupted ``run`` exits
with 130 and leaves its unfinished file for ``--resume``. Anything else is a
bug and shows its traceback. Heavy modules (NumPy, h5py, the engine) are
imported inside the commands so ``evsnn --help`` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import sys
import threading
import time

import click

PRESET_HELP = "conversion preset: if, deng-gu, qcfs, casc, bitserial"
#: Ranges of the numeric options (click checks them: an out-of-range value is one `error:` line).
STEPS = click.IntRange(1, 2**31 - 1)
SLEEP_STEPS = click.IntRange(0, 2**31 - 1)
LEVELS = click.IntRange(1, 2**24)
SEED = click.IntRange(0, 2**63 - 1)
BATCH = click.IntRange(1, 2**20)
THREADS = click.IntRange(1, 4096)
COUNT = click.IntRange(1, 2**62)
PERCENT = click.FloatRange(0, 100, min_open=True)
SECONDS = click.FloatRange(0, 86400, min_open=True)

DATA_HELP = ("input data: an .npz with x (samples × C × H × W or samples × features) and optional y labels, "
             "or a dataset name such as digits, digits-train, mnist:DIR, cifar10:DIR")


_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


class UserError(click.ClickException):
    """One-line error caused by the user's input; exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Group(click.Group):
    """A click group whose usage errors are one line (``error: ...``) instead of usage + hint + message."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS as e:  # bare `evsnn`: the help, as a successful command
            click.echo(e.ctx.get_help() if e.ctx is not None else e.format_message())
            sys.exit(0)
        except click.UsageError as e:
            where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def user_errors(fn):
    """Turn evsnn's user-facing errors (EvsnnError, OSError) into one-line exit-code-2 errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from evsnn.errors import EvsnnError

        try:
            return fn(*args, **kwargs)
        except EvsnnError as e:
            raise UserError(one_line(e)) from None
        except OSError as e:
            msg = f"{e.strerror}: {e.filename}" if getattr(e, "strerror", None) and e.filename else str(e)
            raise UserError(one_line(msg) or type(e).__name__) from None
        except MemoryError:
            raise UserError("not enough memory for this input (lower --batch-size or use smaller data)") from None

    return wrapper


def one_line(msg: str) -> str:
    """The first non-empty line of ``msg`` (HDF5 and OS messages can span several)."""
    return next((ln.strip() for ln in str(msg).splitlines() if ln.strip()), "")


def data_file(spec):
    """The file a --data/--calibrate spec names, if it is one (an .npz path), else None."""
    return spec if spec and os.path.isfile(spec) else None


class _NoBar:
    def update(self, n):
        pass


@contextlib.contextmanager
def progress_bar(length: int, label: str, show: bool = True):
    """click.progressbar on stderr when it is a terminal (and ``show``), else a no-op with ``update``."""
    if show and sys.stderr.isatty():
        with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
            yield bar
    else:
        yield _NoBar()


def parse_sleep(value):
    if value is None or value == "auto":
        return value
    try:
        v = int(value)
    except ValueError:
        raise UserError(f"--sleep must be a number of steps or 'auto', got {value!r}") from None
    if not 0 <= v <= 2**31 - 1:
        raise UserError(f"--sleep must be between 0 and 2^31 - 1, got {v}")
    return v


@click.group(name="evsnn", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evsnn", message="evsnn %(version)s")
def cli():
    """evsnn: convert quantized ANNs to spiking networks and simulate them event by event."""


def conversion_options(fn):
    opts = [
        click.option("--levels", type=LEVELS, default=None,
                     help="quantization levels L (threshold-ReLU models; must match a quantized model's L)"),
        click.option("--calibrate", "calibrate", metavar="DATA", default=None,
                     help="calibrate plain ReLUs on this data (percentile of activations); " + DATA_HELP),
        click.option("--percentile", type=PERCENT, default=99.99, show_default=True,
                     help="activation percentile used as the ReLU scale λ when calibrating"),
        click.option("--calibrate-samples", type=COUNT, default=1000, show_default=True,
                     help="use at most this many samples (the first ones) for calibration"),
        click.option("--input-mode", type=click.Choice(["analog", "rate", "events"]), default="analog",
                     show_default=True,
                     help="analog: the first layer receives x each wake step (MACs); rate: Bernoulli spikes; "
                          "events: binned address events, data x of shape (samples, bins, C, H, W)"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option("-o", "--output", required=True, metavar="NET.h5", help="network file to write (HDF5)")
@click.option("--preset", default="casc", show_default=True, help=PRESET_HELP)
@conversion_options
@user_errors
def convert(model, output, preset, levels, calibrate, percentile, calibrate_samples, input_mode):
    """Convert MODEL (ONNX or Keras file) into a spiking network file."""
    from evsnn import runner
    from evsnn.convert import get_preset
    from evsnn.store import save_network
    from evsnn.paths import check_not_input, check_writable, existing_file

    get_preset(preset)
    check_writable(output)
    existing_file(model, "a model file")
    check_not_input(output, model, data_file(calibrate))
    stages = ["load model"] + (["load calibration data", "calibrate"] if calibrate else []) + ["convert", "save"]
    with progress_bar(len(stages), "converting", show=bool(calibrate)) as bar:
        seen = []

        def stage(name):
            if seen:
                bar.update(1)
            seen.append(name)

        net, _ = runner.convert_model(model, preset, levels, calibrate, percentile, input_mode, calibrate_samples,
                                      stage=stage)
        stage("save")
        save_network(net, output)
        bar.update(1)
    click.echo(f"wrote {output}: preset {net.preset}, {len(net.populations)} populations, "
               f"L = {net.levels}, default wake {net.default_wake} steps")


@cli.command()
@click.argument("network", metavar="NETWORK")
@click.option("--data", required=True, metavar="DATA", help=DATA_HELP)
@click.option("-o", "--output", required=True, metavar="RESULTS.h5", help="results file to write (HDF5)")
@click.option("--preset", default=None, help=PRESET_HELP + " (when NETWORK is a model file, converted on the fly)")
@conversion_options
@click.option("--wake", type=STEPS, default=None, help="wake steps T_w (default: the network's, L for casc)")
@click.option("--sleep", default=None, metavar="N|auto",
              help="sleep steps, or auto: until no neuron can fire (default: auto for casc, 0 otherwise)")
@click.option("--max-sleep", type=SLEEP_STEPS, default=None, help="cap on sleep steps with --sleep auto (default 1000)")
@click.option("--record", type=click.Choice(["counts", "raster"]), multiple=True,
              help="also write per-neuron counts/values (counts) or the spike raster as AER arrays (raster); "
                   "repeatable")
@click.option("--batch-size", type=BATCH, default=64, show_default=True, help="samples simulated and written at a time")
@click.option("--engine", type=click.Choice(["auto", "event", "reference"]), default="auto", show_default=True,
              help="event: the Numba event engine; reference: the NumPy clock-driven simulator (same spike "
                   "counts); auto: the reference for float64 runs so small that the event engine's start-up "
                   "(~0.6 s: loading Numba and its compiled kernels) would dominate, else the event engine. "
                   "The engine used is stored in /config/engine")
@click.option("--threads", type=THREADS, default=None, help="threads of the event engine, one sample per thread (default: the usable cores, at most "
                   "NUMBA_NUM_THREADS); BLAS runs on one thread inside the engine")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
              help="arithmetic of the event engine (default: float64 for casc and bitserial, which then match "
                   "the quantized ANN exactly, float32 for the rate presets); float64 agrees with the reference "
                   "spike for spike")
@click.option("--seed", type=SEED, default=0, show_default=True, help="seed of the rate-coded input spikes")
@click.option("--limit", type=COUNT, default=None, help="run only the first N samples")
@click.option("--allow-inexact", is_flag=True, help="allow casc with a wake length other than L (ablations)")
@click.option("--energy-profile", "profiles", multiple=True, metavar="NAME|FILE",
              help="energy profile: 45nm-fp32, 45nm-int32, 45nm-int8, 45nm-fp32-sram or a .json/.toml file; "
                   "repeatable (default: all built-in)")
@click.option("--resume", is_flag=True, help="continue an interrupted run of the same command from its last batch")
@click.option("--verify", is_flag=True,
              help="compare every hidden neuron with the quantized ANN (float64) and write /verify: exact "
                   "samples and mismatches per layer (rate presets: |count/T - a| statistics)")
@click.option("--allow-nonfinite", is_flag=True, help="run inputs holding NaN or infinity (refused by default)")
@click.option("--memory-budget", default=None, metavar="BYTES",
              help="most memory one batch's records may take, e.g. 2G (default: EVSNN_MEMORY_BUDGET or half "
                   "the machine's memory, at most 16G)")
@click.option("--scheduler", default=None, metavar="ADDRESS|local[:N]",
              help="run the batches as Dask tasks (needs the dask extra): ADDRESS of a running `dask scheduler` "
                   "(tcp://host:8786), or local[:N] for N single-threaded worker processes on this machine "
                   "(default N: the cores). The network is broadcast to every worker once and each batch's data "
                   "travels with its task (no shared filesystem needed); results are written as batches complete "
                   "and equal a single-process run's")
@click.option("--scheduler-timeout", type=SECONDS, default=10.0, show_default=True, metavar="SECONDS",
              help="how long to wait for the scheduler at ADDRESS before giving up with an error")
@user_errors
def run(network, data, output, preset, levels, calibrate, percentile, calibrate_samples, input_mode, wake, sleep,
        max_sleep, record, batch_size, engine, threads, dtype, seed, limit, allow_inexact, profiles, resume, verify,
        allow_nonfinite, memory_budget, scheduler, scheduler_timeout):
    """Simulate NETWORK (a network file, or a model file with --preset) on DATA and write RESULTS.h5."""
    from evsnn import energy, runner
    from evsnn.paths import check_not_input, check_writable
    from evsnn.validate.limits import parse_bytes

    check_writable(output)
    check_not_input(output, network, data_file(data), data_file(calibrate), *profiles)
    budget = parse_bytes(memory_budget, "--memory-budget") if memory_budget is not None else None
    if scheduler is not None:
        from evsnn.distributed import parse_scheduler
        parse_scheduler(scheduler)
    sleep = parse_sleep(sleep)
    profs = tuple(energy.get_profile(p) for p in profiles)
    if preset is not None:
        from evsnn.convert import get_preset
        get_preset(preset)
    x, y, data_info = runner.load_data(data, limit)
    with progress_bar(4, "converting", show=bool(calibrate)) as bar:
        net, info = runner.prepare_network(network, preset, levels, calibrate, percentile, input_mode,
                                           stage=lambda name: bar.update(1))
    info.update(data_info)
    opts = runner.RunOptions(wake=wake, sleep=sleep, max_sleep=max_sleep, record=tuple(dict.fromkeys(record)),
                             seed=seed, batch_size=batch_size, engine=engine, threads=threads,
                             allow_inexact=allow_inexact, profiles=profs, dtype=dtype, verify=verify,
                             allow_nonfinite=allow_nonfinite, memory_budget=budget)
    client = None
    if scheduler is not None:  # closed (a local cluster shut down) when the command ends
        from evsnn.distributed import connect
        client = click.get_current_context().with_resource(connect(scheduler, scheduler_timeout))
    state = {}
    t0 = time.perf_counter()
    try:
        with progress_bar(len(x), f"{net.preset} ({engine})", show=len(x) > batch_size) as bar:
            path = runner.run_to_file(net, x, y, output, opts, info, resume=resume, progress=bar.update,
                                      on_start=lambda w, e: state.update(writer=w), client=client)
    except KeyboardInterrupt:
        w = state.get("writer")
        done = w.samples_done if w is not None else 0
        click.echo(f"error: interrupted after {done} of {len(x)} samples; run the same command with --resume "
                   "to continue", err=True)
        sys.exit(130)
    from evsnn.report import summarize
    s = summarize(path, trusted=True)  # the file run_to_file has just written and closed
    acc = "" if s["final_accuracy"] is None else f", final accuracy {100 * s['final_accuracy']:.2f}%"
    where = "" if client is None else f", {state['writer'].config.get('workers')} Dask workers"
    click.echo(f"wrote {path}: {s['samples']} samples, {s['steps']} steps{acc} "
               f"({s['engine']} engine{where}, {time.perf_counter() - t0:.1f} s)")
    from evsnn.report import verify_line
    if verify_line(s):
        click.echo(verify_line(s))


@cli.command()
@click.argument("results", nargs=-1, required=True, metavar="RESULTS.h5...")
@click.option("--at", default="1,2,4,8,16", show_default=True, help="time steps T at which to show accuracy")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON instead of a table")
@click.option("--plots", "plot_dir", default=None, metavar="DIR",
              help="folder for the PNG plots (default: the first results file's folder)")
@click.option("--no-plots", is_flag=True, help="do not write PNG plots")
@click.option("--profile", default=None, help="energy profile shown in the energy plot (default: the first stored)")
@user_errors
def report(results, at, as_json, plot_dir, no_plots, profile):
    """Summarise one or more results files: table (or JSON) and PNG plots.

    Plots (with matplotlib, the `plot` extra): STEM_accuracy_vs_T.png (one line per
    results file), STEM_spikes_per_step.png and STEM_energy_per_layer.png, where STEM
    is the results file's name, or "report" for several files.
    """
    import json

    from evsnn import report as rep

    try:
        ts = tuple(int(t) for t in at.split(",") if t.strip())
    except ValueError:
        raise UserError(f"--at takes comma-separated step counts, got {at!r}") from None
    if not ts or min(ts) < 1:
        raise UserError(f"--at steps must be ≥ 1, got {at!r}")
    summaries = [rep.summarize(p, ts) for p in results]
    if profile is not None:
        known = sorted({k for s in summaries for k in s["energy"]})
        if profile not in known:
            raise UserError(f"--profile {profile!r} is not stored in the results; stored: {', '.join(known) or 'none'}")
    written = []
    if not no_plots:
        if rep.have_matplotlib():
            folder = plot_dir or os.path.dirname(os.path.abspath(results[0]))
            if not os.path.isdir(folder):
                raise UserError(f"plot folder {folder} does not exist")
            stem = os.path.splitext(os.path.basename(results[0]))[0] if len(results) == 1 else "report"
            written = rep.write_plots(summaries, folder, stem, profile)
        elif not as_json:
            click.echo("note: install matplotlib (pip install 'evsnn[plot]') for plots", err=True)
    if as_json:
        click.echo(json.dumps({"results": summaries, "plots": written}, indent=2))
    else:
        click.echo(rep.format_table(summaries, ts))
        for p in written:
            click.echo(f"wrote {p}")


@cli.command()
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="print the description as JSON")
@user_errors
def inspect(file, as_json):
    """Describe a model, network or results FILE: layers, shapes, thresholds, levels, preset, format version."""
    from evsnn.cli_inspect import describe, to_json

    info, text = describe(file)
    click.echo(to_json(info) if as_json else text)


@cli.command()
@click.option("--model", default=None, metavar="MODEL",
              help="model file to use instead of the bundled evsnn/data/digits_cnn.onnx")
@click.option("--data", default="digits", show_default=True, metavar="DATA",
              help="data to run on (default: the bundled digits test split); " + DATA_HELP)
@click.option("--out", "out_dir", default="evsnn-demo", show_default=True, metavar="DIR",
              help="folder for the results files (one per preset) and accuracy_vs_T.png")
@click.option("--presets", default="if,deng-gu,qcfs,casc,bitserial", show_default=True,
              help="comma-separated presets to run")
@click.option("--rate-steps", type=STEPS, default=32, show_default=True,
              help="wake steps T of the rate presets (if, deng-gu, qcfs)")
@click.option("--levels", type=LEVELS, default=None, help="L for threshold-ReLU models (default 7)")
@click.option("--engine", type=click.Choice(["auto", "event", "reference"]), default="auto", show_default=True,
              help="auto: the event engine if available, else the NumPy reference")
@click.option("--batch-size", type=BATCH, default=128, show_default=True, help="samples simulated at a time")
@click.option("--threads", type=THREADS, default=None, help="threads of the event engine, one sample per thread (default: the usable cores, at most "
                   "NUMBA_NUM_THREADS); BLAS runs on one thread inside the engine")
@click.option("--seed", type=SEED, default=0, show_default=True, help="seed of rate-coded input spikes")
@click.option("--limit", type=COUNT, default=None, help="run only the first N samples")
@user_errors
def demo(model, data, out_dir, presets, rate_steps, levels, engine, batch_size, threads, seed, limit):
    """Run every preset on the bundled digits model and data and print one table."""
    from evsnn import demo as dm
    from evsnn import runner
    from evsnn.convert import get_preset
    from evsnn.frontends import load_model

    names = [p.strip() for p in presets.split(",") if p.strip()]
    if not names:
        raise UserError("--presets is empty; give at least one of if, deng-gu, qcfs, casc, bitserial")
    for p in names:
        get_preset(p)
    path = model or dm.bundled_model()
    graph = load_model(path)
    x, y, data_info = runner.load_data(data, limit)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} exists and is not a folder")

    @contextlib.contextmanager
    def progress(label, n):
        with progress_bar(n, label, show=n > batch_size) as bar:
            yield bar.update

    dm.run_demo(graph, x, y, out_dir, names, engine, rate_steps, levels, batch_size, threads, seed,
                echo=click.echo, progress=progress,
                source={"path": os.path.abspath(path), "sha256": runner.sha256_file(path)}, data_info=data_info)


@cli.command("export-nir")
@click.argument("network", metavar="NETWORK")
@click.option("-o", "--output", required=True, metavar="MODEL.nir", help="NIR file to write (HDF5, read by nir.read)")
@click.option("--preset", default=None,
              help="if, deng-gu or qcfs (when NETWORK is a model file, converted on the fly); casc and bitserial "
                   "networks have no NIR equivalent")
@conversion_options
@user_errors
def export_nir(network, output, preset, levels, calibrate, percentile, calibrate_samples, input_mode):
    """Export NETWORK (a network file, or a model file with --preset) as a NIR graph (needs the nir package).

    IF populations become nir.IF nodes, the readout a nir.I integrator; evsnn's
    subtractive reset, v >= threshold, initial membrane, bias and wake steps are
    stated in the graph's metadata (see evsnn.nir_export).
    """
    from evsnn import runner
    from evsnn.nir_export import write_nir
    from evsnn.paths import check_not_input, check_writable

    check_writable(output)
    check_not_input(output, network, data_file(calibrate))
    if preset is not None:
        from evsnn.convert import get_preset
        get_preset(preset)
    with progress_bar(4, "converting", show=bool(calibrate)) as bar:
        net, _ = runner.prepare_network(network, preset, levels, calibrate, percentile, input_mode,
                                        stage=lambda name: bar.update(1))
    graph = write_nir(net, output)
    click.echo(f"wrote {output}: NIR graph of {len(graph.nodes)} nodes, {len(graph.edges)} edges "
               f"(preset {net.preset}, {len(net.populations)} IF populations; evsnn's semantics in its metadata)")


def _quiet_hdf5_dealloc(unraisable) -> None:
    """After a failed HDF5 write, h5py reports every object it can no longer release; one
    ``error:`` line has said it already."""
    from evsnn.store.files import WRITE_FAILED

    where = getattr(unraisable, "err_msg", "") or ""
    if WRITE_FAILED or "h5py" in where or "h5py" in repr(getattr(unraisable, "object", "")) \
            or "file write failed" in str(getattr(unraisable, "exc_value", "")):
        return
    sys.__unraisablehook__(unraisable)


def main() -> None:
    """Console-script entry point.

    After an HDF5 write failure (disk full) the library may crash while shutting down (SIGSEGV),
    so the process then ends with ``os._exit`` once its one ``error:`` line is printed. Otherwise
    it ends through :func:`_leave` (atexit handlers, streams flushed, then ``os._exit``): the
    interpreter's teardown of the objects still alive (Numba's and LLVM's, hundreds of thousands)
    took ~0.3 s of CPU after a one-sample run with the collector on, 0.2 s with it off, and frees
    nothing the OS does not. With a non-daemon thread still running the interpreter shuts down as
    usual, the collector switched off.
    """
    sys.unraisablehook = _quiet_hdf5_dealloc
    try:
        cli()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        files = sys.modules.get("evsnn.store.files")
        if files is not None and files.WRITE_FAILED:
            # leave before the exception (and the h5py objects its frames hold) is released
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        if _only_daemon_threads():
            _leave(code)
        gc.disable()
        gc.freeze()
        raise


def _only_daemon_threads() -> bool:
    main_thread = threading.main_thread()
    return all(t is main_thread or t.daemon for t in threading.enumerate())


def _leave(code: int) -> None:
    """End the process now: the interpreter's own shutdown is skipped, its atexit handlers are not.

    Tearing down the modules of a Numba program (LLVM's and Numba's objects, hundreds of thousands) took
    0.2–0.25 s of a one-sample run's ~1 s, with the collector already off, and frees nothing the OS does not.
    What a shutdown must still do is done here first: the atexit handlers (logging, multiprocessing,
    Dask's client and cluster closing) and the standard streams' buffers. Files are closed before a command
    returns (results are written under a temporary name and renamed). Only taken when no non-daemon thread is
    left, which the interpreter would have waited for.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
