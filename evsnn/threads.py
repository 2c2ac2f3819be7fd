"""Thread pools of a run: the engine's Numba threads and the BLAS threads beneath them.

Decisions:

- Engine threads default to the usable cores: the CPUs this process may run on
  (``os.sched_getaffinity``, so a ``taskset`` or container limit counts), at most
  ``NUMBA_NUM_THREADS`` (Numba's pool size, fixed when Numba starts; set that
  variable to cap the default for every run).
- Inside the engine, BLAS (the dense steps) runs on one thread: the engine already
  runs one sample per core, and a multi-threaded OpenBLAS inside each worker
  oversubscribes the cores (measured for issue #14: 2 engine threads took 3.03 s with
  OpenBLAS at 2 threads against 1.86 s with it pinned to 1). :func:`one_blas_thread`
  sets the limit around the engine call and restores the previous one after it, also
  when several Python threads run the engine at once (the first in sets it, the last
  out restores it).
- The limit is set through threadpoolctl on the BLAS libraries loaded in this process
  (NumPy's and SciPy's OpenBLAS, the second being the one Numba calls); they are found
  once, on first use.
"""

from __future__ import annotations

import contextlib
import os
import threading

_lock = threading.Lock()
_depth = 0
_limiter = None
_ctl = None


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_engine_threads() -> int:
    """The engine's thread count when none is given: usable cores, at most ``NUMBA_NUM_THREADS``."""
    import numba

    return max(1, min(usable_cores(), numba.config.NUMBA_NUM_THREADS))


def engine_threads(threads: int | None = None) -> int:
    """Threads for one engine call: ``threads`` (≥ 1; ConversionError otherwise) or
    :func:`default_engine_threads`, at most ``NUMBA_NUM_THREADS``."""
    import numba

    from evsnn.errors import ConversionError

    n = default_engine_threads() if threads is None else int(threads)
    if n < 1:
        raise ConversionError(f"threads must be ≥ 1, got {threads}")
    return min(n, numba.config.NUMBA_NUM_THREADS)


@contextlib.contextmanager
def engine_pools(nthreads: int):
    """Context of one engine call: Numba's pool at ``nthreads`` threads and BLAS at one
    (:func:`one_blas_thread`); both restored after."""
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        with one_blas_thread():
            yield
    finally:
        numba.set_num_threads(old)


def _controller():
    """threadpoolctl's view of the BLAS libraries, built once (after SciPy's BLAS, which Numba calls, is loaded)."""
    global _ctl
    if _ctl is None:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS Numba's np.dot binds to)
        from threadpoolctl import ThreadpoolController

        _ctl = ThreadpoolController().select(user_api="blas")
    return _ctl


@contextlib.contextmanager
def one_blas_thread():
    """Context: every BLAS library of the process limited to one thread; the previous limits restored after."""
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            _limiter = _controller().limit(limits=1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None


def limit_blas(threads: int) -> None:
    """Limit BLAS to ``threads`` threads for the rest of the process (a Dask worker running single-threaded tasks)."""
    _controller().limit(limits=int(threads))


def blas_threads() -> list[int]:
    """Current thread count of each BLAS library of the process (for tests and reports)."""
    return [int(d["num_threads"]) for d in _controller().info()]
