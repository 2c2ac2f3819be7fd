"""Batches of a run as Dask tasks on a ``distributed`` cluster (the optional ``dask`` extra).

:func:`connect` turns ``--scheduler`` into a ``distributed.Client``: ``local`` or
``local:N`` starts a ``LocalCluster`` of N single-threaded worker processes (N
defaults to the usable cores), anything else is the address of a running
scheduler (``tcp://host:8786``, started with ``dask scheduler``). An unreachable
scheduler or a bad spec is a :class:`SchedulerError` (one line) raised before
anything is written.

:func:`map_batches` is what :func:`evsnn.runner.run_to_file` runs with a client.
Decisions:

- The network is scattered once with ``broadcast=True`` (sent by the client to
  every worker; workers that join later copy it from a peer): no shared
  filesystem is needed. Each worker packs it once for the engine
  (:func:`evsnn.engine.prepare`, kept per network digest and dtype in the worker
  process) and first runs a warm-up task (one sample) that loads or compiles the
  Numba kernels, so compilation happens once per worker, not per batch.
- Data batches travel inside their tasks (the client holds the data, as a local
  run does); at most ``window`` batches are in flight (default: twice the
  cluster's threads), so neither the scheduler nor the client holds more than
  that whatever the number of samples. A task's data lives with the task, so the
  scheduler can rerun it anywhere.
- Every batch keeps its index ``b`` (rate input is seeded ``SeedSequence([seed, b])``),
  so results equal a single-process run's; the client writes them as they complete,
  in any order (:class:`evsnn.store.results.ResultsWriter` keeps a done map).
- Threads: a task runs the engine with ``threads`` (``--threads``) or 1, and BLAS
  limited to that many threads (:func:`evsnn.threads.limit_blas`; the nanny already
  sets ``OMP/MKL/OPENBLAS_NUM_THREADS=1``; inside the engine call BLAS runs on one
  thread): give workers one thread per process and start as many worker processes as cores.
- Faults: tasks of a worker that dies are rerun on the others by the scheduler
  (``distributed.scheduler.allowed-failures`` times, default 3); if every copy of
  the scattered network is lost (all workers died at once), it is scattered again
  (at most ``MAX_RESCATTER`` times). A stopped client (Ctrl-C) cancels its tasks;
  the partial file is resumable. While the client waits for batches it polls (every
  ``POLL_S``) instead of blocking in dask's ``as_completed``, and SIGINT only sets a flag there:
  a KeyboardInterrupt raised inside dask's waiting loop tends to land in a weakref callback,
  where Python prints and ignores it. Elsewhere (writing a batch) SIGINT raises as usual.
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

#: How often a run scatters its network again after every copy of it was lost.
MAX_RESCATTER = 3
#: Seconds between two looks at the completed batches while the client waits (and checks for Ctrl-C).
POLL_S = 0.02
_CACHE_SIZE = 4
_prepared_cache: dict = {}  # worker side: (digest, engine, dtype) → prepared network


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
def connect(spec: str, timeout: float | None = None):
    """A ``distributed.Client`` for ``spec`` (see :func:`parse_scheduler`), closed at the end.

    ``local[:N]``: a LocalCluster of N single-threaded worker processes, shut down on exit.
    An address: the client waits ``timeout`` seconds (default: dask's
    ``distributed.comm.timeouts.connect``, 30 s) for the scheduler, then raises SchedulerError.
    """
    kind, n = parse_scheduler(spec)
    distributed = _distributed()
    if kind == "local":
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                      silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(spec, timeout=timeout if timeout is not None else
                                    _config_timeout(), set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SchedulerError(f"cannot reach the Dask scheduler at {spec}: {msg}") from None
    with client:
        yield client


def _config_timeout():
    import dask
    from dask.utils import parse_timedelta

    return parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))


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


def run_batch(net, digest: str, b: int, xb, opts, sleep, engine: str):
    """Task: simulate batch ``b`` (its samples ``xb``) on this worker; returns ``(b, SimResult)``."""
    from evsnn.runner import get_simulator, simulate_batch

    sim, engine = get_simulator(engine)
    prep = _prepared(net, digest, engine, opts.dtype, opts.threads)
    return b, simulate_batch(sim, engine, prep, np.asarray(xb), opts, sleep, b)


def warm_up(net, digest: str, x1, opts, sleep, engine: str) -> float:
    """Task: pack the network and run one sample (loads or compiles the kernels); returns the seconds taken
    (0 when this worker has already prepared the network: it is warm)."""
    from evsnn.runner import get_simulator

    if (digest, get_simulator(engine)[1], opts.dtype) in _prepared_cache:
        return 0.0
    t0 = time.perf_counter()
    run_batch(net, digest, 0, x1, opts, sleep, engine)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- client side

def _workers(client) -> dict:
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    return info["workers"]


def map_batches(client, net, x, todo, opts, sleep, engine: str, window: int | None = None):
    """Yield ``(b, SimResult)`` for the batches ``todo`` of ``x``, run as tasks on ``client``'s cluster,
    in completion order. Closing the generator cancels the tasks still running.

    ``window``: batches in flight at most (default: 2 × the cluster's worker threads, at least 4).
    """
    distributed = _distributed()
    from evsnn.runner import network_digest

    todo = list(todo)
    if not todo:
        return
    bs = opts.batch_size
    wopts = dataclasses.replace(opts, threads=opts.threads or 1, profiles=())
    digest = network_digest(net)
    workers = _workers(client)
    if not workers:
        raise SchedulerError(f"the Dask scheduler at {client.scheduler.address} has no workers")
    if window is None:
        window = max(4, 2 * sum(int(w.get("nthreads", 1)) for w in workers.values()))
    net_f = client.scatter(net, broadcast=True, hash=False)
    rescattered = 0
    warm = [client.submit(warm_up, net_f, digest, np.asarray(x[:1]), wopts, sleep, engine, workers=[addr],
                          allow_other_workers=True, pure=False, priority=100, key=f"evsnn-warm-up-{addr}-{digest[:8]}"
                          f"-{time.time_ns()}") for addr in workers]
    pending = iter(todo)
    inflight: dict = {}
    done = distributed.as_completed(warm, loop=client.loop)  # this client's loop, not the default client's

    def submit(b):
        xb = np.asarray(x[b * bs:(b + 1) * bs])
        f = client.submit(run_batch, net_f, digest, b, xb, wopts, sleep, engine, pure=False, priority=-b)
        inflight[f.key] = (f, b, net_f)
        done.add(f)

    interrupted, waiting = [], [False]

    def on_sigint(signum, frame):
        interrupted.append(signum)
        if not waiting[0]:
            raise KeyboardInterrupt

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
            elif done.is_empty():
                return
            else:
                waiting[0] = True
                try:
                    time.sleep(POLL_S)
                finally:
                    waiting[0] = False

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        for b in pending:
            submit(b)
            if len(inflight) >= window:
                break
        for f in completed():
            if f.key not in inflight:  # a warm-up task (a failure shows again in the batches)
                f.release()
                continue
            _, b, used = inflight.pop(f.key)
            try:
                rb, res = f.result()  # re-raises the task's exception
            except CancelledError:
                # its network was lost (every worker holding a copy died; the client may learn it after the
                # batch's cancellation) or the cluster dropped the task: scatter the network again, once per loss
                if used is net_f:
                    if rescattered == MAX_RESCATTER:
                        raise SchedulerError(f"the cluster cancelled this run's batches {MAX_RESCATTER + 1} times "
                                             "(workers lost with every copy of the network); run again with --resume")
                    rescattered += 1
                    net_f = client.scatter(net, broadcast=True, hash=False)
                submit(b)
                continue
            f.release()
            nxt = next(pending, None)
            if nxt is not None:
                submit(nxt)
            yield rb, res
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
        left = [f for f, _, _ in inflight.values()] + [f for f in warm if f.status == "pending"]
        if left:
            with contextlib.suppress(Exception):
                client.cancel(left)
