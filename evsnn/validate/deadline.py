"""Run a reader of an untrusted file in a forked child with a time limit.

Some damage makes HDF5's C library loop without end (a fuzzed legacy Keras ``.h5`` whose
global heap has one flipped byte spins in ``H5Aread`` of a string attribute). C code cannot be
interrupted from Python (SIGALRM is only seen between bytecodes), so the reader runs in a
forked child and the parent waits at most :func:`seconds` (``EVSNN_HDF5_SECONDS``, default 120;
0 reads in-process). The child's result or exception comes back pickled; a child that dies
or runs out of time is a one-line :class:`~evsnn.errors.FormatError`.

Only on Linux (``fork`` start method, no re-import of the caller); elsewhere the reader runs
in-process. The child touches only h5py and NumPy and leaves with ``os._exit`` (no exit
handlers of the parent's copy run).
"""

from __future__ import annotations

import os
import sys

from evsnn.errors import FormatError

DEFAULT_SECONDS = 120.0


def seconds() -> float:
    text = os.environ.get("EVSNN_HDF5_SECONDS", "")
    try:
        return float(text) if text else DEFAULT_SECONDS
    except ValueError:
        raise FormatError(f"EVSNN_HDF5_SECONDS must be a number of seconds, got {text!r}") from None


def _child(conn, fn, args) -> None:
    try:
        try:
            out = (True, fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the parent, which re-raises it
            out = (False, e)
        try:
            conn.send(out)
        except Exception as e:  # noqa: BLE001 - an unpicklable result or exception
            conn.send((False, FormatError(f"reader result could not be returned ({type(e).__name__}: {e})")))
        conn.close()
    finally:
        os._exit(0)


def call(fn, *args, what: str):
    """``fn(*args)`` in a forked child, at most :func:`seconds` long; its exception is re-raised here."""
    limit = seconds()
    if limit <= 0 or not sys.platform.startswith("linux"):
        return fn(*args)
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(limit):
            proc.kill()
            raise FormatError(f"{what}: reading it did not finish within {limit:g} s (a damaged or crafted "
                              "file makes the HDF5 library loop; EVSNN_HDF5_SECONDS sets the limit)")
        try:
            ok, value = recv.recv()
        except (EOFError, OSError):
            proc.join(5)
            raise FormatError(f"{what}: the HDF5 reader died on it (exit code {proc.exitcode})") from None
    finally:
        recv.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if ok:
        return value
    raise value
