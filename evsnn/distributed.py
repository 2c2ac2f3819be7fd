"""Batches of a run as Dask tasks on a ``distributed`` cluster (the optional ``dask`` extra).

:func:`connect` turns ``--scheduler`` into a ``distributed.Client``: ``local`` or
``local:N`` starts a ``LocalCluster`` of N single-threaded worker processes (N
defaults to the usable cores), anything else is the address of a running
scheduler (``tcp://host:8786``, started with ``dask scheduler``). An unreachable
scheduler (after ``--scheduler-timeout`` seconds) or a bad spec is a
:class:`SchedulerError` (one line) raised before anything is written.

:func:`map_batches` is what :func:`evsnn.runner.run_to_file` runs with a client.
Decisions:

- The network travels once per worker, in a worker plugin (:class:`NetworkPlugin`,
  registered for the run, unregistered at its end): every worker has it, workers that
  join or restart later get it from the scheduler when they register, and no
  shared filesystem is needed. It is not a scattered Dask key on purpose: a task
  depending on a key only goes to workers holding it, and the active memory manager
  drops the copies of a broadcast key that no waiting task uses, so batches
  would pile up on one worker. Each worker packs the network once for the engine
  (:func:`evsnn.engine.prepare`, kept per network digest and dtype in the worker
  process) and first runs a warm-up task (one sample) that loads or compiles the
  Numba kernels, so compilation happens once per worker, not per batch.
- At most one batch per worker thread is in flight (the cluster's threads, looked up
  again at most every ``WINDOW_REFRESH_S`` so workers that join get work). Tasks have
  no dependencies and no worker restrictions, so the scheduler gives each new one to
  an idle worker; none waits in a busy worker's queue behind a slow batch (dask's
  work stealing does not move short tasks queued behind a long one), and neither
  the scheduler nor the client holds more than that whatever the number of samples.
  The client submits the next batch before it fetches a finished batch's result.
- Data batches travel inside their tasks (the client holds the data, as a local run
  does). A task's data lives with the task, so the scheduler can rerun it anywhere.
- Every batch keeps its index ``b`` (rate input is seeded ``SeedSequence([seed, b])``),
  so results equal a single-process run's; the client writes them as they complete,
  in any order (:class:`evsnn.store.results.ResultsWriter` keeps a done map).
- Threads: a task runs the engine with ``threads`` (``--threads``) or 1, and BLAS
  limited to that many threads (:func:`evsnn.threads.limit_blas`; the nanny already
  sets ``OMP/MKL/OPENBLAS_NUM_THREADS=1``; inside the engine call BLAS runs on one
  thread): give workers one thread per process and start as many worker processes as cores.
- Faults: tasks of a worker that dies are rerun on the others by the scheduler
  (``distributed.scheduler.allowed-failures`` times, default 3); a batch the cluster
  cancels is submitted again (at most ``MAX_RESUBMIT`` times in a run). A stopped
  client (Ctrl-C) cancels its tasks; the partial file is resumable. While the client
  waits for batches it wakes on each completion (or every ``POLL_S``) instead of
  blocking in dask's ``as_completed``, and SIGINT only sets a flag there: a
  KeyboardInterrupt raised inside dask's waiting loop tends to land in a weakref
  callback, where Python prints and ignores it. Elsewhere (writing a batch) SIGINT
  raises as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
from concurrent.futures import CancelledError
import logging
import os
import signal
import threading
import time

import numpy as np

from evsnn.errors import EvsnnError

try:  # the dask extra is optional: without it, connect() raises SchedulerError
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover
    _WorkerPlugin = object

#: Batches the cluster may cancel in one run (each is submitted again) before the run gives up.
MAX_RESUBMIT = 8
#: Longest wait (s) between two looks at the completed batches while the client waits (and checks for Ctrl-C).
POLL_S = 0.02
#: Seconds between two looks at the cluster's thread count (the number of batches in flight).
WINDOW_REFRESH_S = 1.0
#: Default seconds to wait for a scheduler given by address (``--scheduler-timeout``).
CONNECT_TIMEOUT_S = 10.0
_CACHE_SIZE = 4
_prepared_cache: dict = {}  # worker side: (digest, engine, dtype) → prepared network
_networks: dict = {}  # worker side: plugin name → Network, installed by NetworkPlugin


class SchedulerError(EvsnnError):
    """The Dask scheduler cannot be reached, or ``--scheduler`` is not a scheduler spec."""


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_scheduler(spec: str) -> tuple[str, int | None]:
    """``("local", N)`` for ``local[:N]``, else ``("address", None)``; SchedulerError on a bad spec."""
    spec = spec.strip()
    if spec == "local":
        return "local", default_workers()
    if spec.startswith("local:"):
        n = spec[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise SchedulerError(f"--scheduler local:N needs a worker count N ≥ 1, got {spec!r}")
        return "local", int(n)
    if not spec or any(c.isspace() for c in spec):
        raise SchedulerError(f"--scheduler takes local, local:N or a scheduler address such as "
                             f"tcp://host:8786, got {spec!r}")
    return "address", None


def _distributed():
    try:
        import distributed
    except ImportError:
        raise SchedulerError("--scheduler needs dask.distributed: pip install 'evsnn[dask]'") from None
    return distributed


@contextlib.contextmanager
def connect(spec: str, timeout: float = CONNECT_TIMEOUT_S):
    """A ``distributed.Client`` for ``spec`` (see :func:`parse_scheduler`), closed at the end.

    ``local[:N]``: a LocalCluster of N single-threaded worker processes, shut down on exit.
    An address: the client waits at most ``timeout`` seconds for the scheduler, then raises SchedulerError.
    """
    kind, n = parse_scheduler(spec)
    if not timeout > 0:
        raise SchedulerError(f"--scheduler-timeout must be > 0 seconds, got {timeout}")
    distributed = _distributed()
    if kind == "local":
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                      silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(spec, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SchedulerError(f"cannot reach the Dask scheduler at {spec} within {timeout:g} s: {msg}") from None
    except Exception as e:  # something answered, but not as a Dask scheduler (its bytes made no message)
        raise SchedulerError(f"{spec} did not answer as a Dask scheduler: {type(e).__name__}") from None
    with client:
        yield client


def cluster_config(client) -> dict:
    """``/config`` entries of a distributed run: ``scheduler`` (address, or ``local`` for a LocalCluster)
    and ``workers`` (worker processes when the run started)."""
    cluster = getattr(client, "cluster", None)
    local = type(cluster).__name__ == "LocalCluster"
    return {"scheduler": "local" if local else str(client.scheduler.address), "workers": len(_workers(client))}


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


# ---------------------------------------------------------------------------------------------- worker side

class NetworkPlugin(_WorkerPlugin):
    """Worker plugin holding a run's network: every worker (also one that joins later) keeps it under the
    plugin's name until the run unregisters the plugin."""

    def __init__(self, net, name: str):
        self.net, self.name = net, name

    def setup(self, worker=None):
        _networks[self.name] = self.net

    def teardown(self, worker=None):
        _networks.pop(self.name, None)


def _network(name: str):
    try:
        return _networks[name]
    except KeyError:
        raise RuntimeError(f"this worker has no network {name!r}: the run's worker plugin is not installed "
                           "(the run ended, or the worker could not unpickle it)") from None


def _prepared(net, digest: str, engine: str, dtype: str, threads: int):
    """The network packed for ``engine`` in this worker process, once per (digest, engine, dtype)."""
    key = (digest, engine, dtype)
    prep = _prepared_cache.get(key)
    if prep is None:
        from evsnn.runner import RunOptions, batch_network
        from evsnn.threads import limit_blas

        limit_blas(threads)  # the Python side of the worker (the engine call itself runs BLAS on one thread)
        prep = batch_network(engine, net, RunOptions(dtype=dtype))
        while len(_prepared_cache) >= _CACHE_SIZE:
            _prepared_cache.pop(next(iter(_prepared_cache)))
        _prepared_cache[key] = prep
    return prep


def run_batch(name: str, digest: str, b: int, xb, opts, sleep, engine: str):
    """Task: simulate batch ``b`` (its samples ``xb``) of the network of plugin ``name`` on this worker;
    returns ``(b, SimResult)`` with only what the file records (:func:`evsnn.runner.recorded_only`)."""
    from evsnn.runner import get_simulator, recorded_only, simulate_batch

    sim, engine = get_simulator(engine)
    prep = _prepared(_network(name), digest, engine, opts.dtype, opts.threads)
    return b, recorded_only(simulate_batch(sim, engine, prep, np.asarray(xb), opts, sleep, b), opts)


def warm_up(name: str, digest: str, x1, opts, sleep, engine: str) -> float:
    """Task: pack the network and run one sample (loads or compiles the kernels); returns the seconds taken
    (0 when this worker has already prepared the network: it is warm)."""
    from evsnn.runner import get_simulator

    if (digest, get_simulator(engine)[1], opts.dtype) in _prepared_cache:
        return 0.0
    t0 = time.perf_counter()
    run_batch(name, digest, 0, x1, opts, sleep, engine)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- client side

def _workers(client) -> dict:
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    return info["workers"]


def _threads(client) -> int:
    """The worker threads of ``client``'s cluster now (at least 1: batches in flight wait for a worker)."""
    info = client.scheduler_info(n_workers=0) if _takes_n_workers(client) else client.scheduler_info()
    n = info.get("total_threads")
    if n is None:
        n = sum(int(w.get("nthreads", 1)) for w in info["workers"].values())
    return max(1, int(n))


def map_batches(client, net, x, todo, opts, sleep, engine: str, window: int | None = None,
                digest: str | None = None):
    """Yield ``(b, SimResult)`` for the batches ``todo`` of ``x``, run as tasks on ``client``'s cluster,
    in completion order. Closing the generator cancels the tasks still running.

    ``window``: batches in flight at most (default: the cluster's worker threads, followed as workers come
    and go). ``digest``: :func:`evsnn.runner.network_digest` of ``net`` when the caller has it.
    """
    distributed = _distributed()
    from evsnn.runner import network_digest

    todo = list(todo)
    if not todo:
        return
    bs = opts.batch_size
    wopts = dataclasses.replace(opts, threads=opts.threads or 1, profiles=())
    digest = digest or network_digest(net)
    workers = _workers(client)
    if not workers:
        raise SchedulerError(f"the Dask scheduler at {client.scheduler.address} has no workers")
    fixed = window is not None
    if not fixed:
        window, looked = _threads(client), time.monotonic()
    name = f"evsnn-network-{digest[:12]}-{time.time_ns()}"
    client.register_plugin(NetworkPlugin(net, name), name=name)
    warm = [client.submit(warm_up, name, digest, np.asarray(x[:1]), wopts, sleep, engine, workers=[addr],
                          allow_other_workers=True, pure=False, priority=100, key=f"evsnn-warm-up-{addr}-{name}")
            for addr in workers]
    pending = iter(todo)
    inflight: dict = {}
    resubmitted = 0
    done = distributed.as_completed(warm, loop=client.loop)  # this client's loop, not the default client's

    def submit(b):
        xb = np.asarray(x[b * bs:(b + 1) * bs])
        f = client.submit(run_batch, name, digest, b, xb, wopts, sleep, engine, pure=False, priority=-b)
        inflight[f.key] = (f, b)
        done.add(f)

    def refill():
        nonlocal window, looked
        if not fixed and time.monotonic() - looked > WINDOW_REFRESH_S:
            window, looked = _threads(client), time.monotonic()
        while len(inflight) < window:
            b = next(pending, None)
            if b is None:
                return
            submit(b)

    interrupted, waiting = [], [False]

    def on_sigint(signum, frame):
        interrupted.append(signum)
        if not waiting[0]:
            raise KeyboardInterrupt

    cond = getattr(done, "thread_condition", None)  # notified by as_completed on each completion

    def wait():
        waiting[0] = True
        try:
            if cond is None:
                time.sleep(POLL_S)
            else:
                with cond:
                    if not done.has_ready():
                        cond.wait(POLL_S)
        finally:
            waiting[0] = False

    def completed():
        while True:
            if interrupted:
                raise KeyboardInterrupt
            ready = done.next_batch(block=False) if done.has_ready() else []
            if ready:
                for f in ready:
                    if interrupted:  # (a terminal's Ctrl-C also stops the local workers: their tasks fail)
                        raise KeyboardInterrupt
                    yield f
            elif not inflight:  # (not done.is_empty(): a warm-up task of a worker killed early may never end)
                return
            else:
                wait()

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        refill()
        for f in completed():
            if f.key not in inflight:  # a warm-up task (a failure shows again in the batches)
                f.release()
                continue
            _, b = inflight.pop(f.key)
            refill()  # before fetching the result: the freed worker gets its next batch at once
            try:
                rb, res = f.result()  # re-raises the task's exception
            except CancelledError:
                # the cluster dropped the task (a scheduler restart, another client's cancel): run it again
                if resubmitted == MAX_RESUBMIT:
                    raise SchedulerError(f"the cluster cancelled more than {MAX_RESUBMIT} of this run's batches; "
                                         "run again with --resume") from None
                resubmitted += 1
                submit(b)
                continue
            f.release()
            yield rb, res
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
        left = [f for f, _ in inflight.values()] + [f for f in warm if f.status == "pending"]
        with contextlib.suppress(Exception):
            if left:
                client.cancel(left)
        with contextlib.suppress(Exception):
            client.unregister_worker_plugin(name)
