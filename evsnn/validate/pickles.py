"""A static scan of a pickle before a restricted unpickler loads it (CIFAR python batches).

A restricted ``find_class`` stops code execution but not allocation: a 28-byte pickle whose
``LONG_BINPUT`` names memo slot 2^31 makes CPython's unpickler grow its memo table to that
size, and a ``BINBYTES8`` that declares 2^40 bytes makes it try to read them. The scan walks the
opcodes with :mod:`pickletools` (pure parsing, nothing built) over the bytes already in memory
and refuses memo indices beyond :data:`MAX_MEMO`, declared lengths beyond the data, protocol
extension opcodes and anything :mod:`pickletools` cannot parse.
"""

from __future__ import annotations

import io
import pickletools
import warnings

from evsnn.errors import FormatError

MAX_MEMO = 1 << 16
MAX_OPS = 1 << 22
_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}
_REFUSED = {"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "INST", "OBJ", "NEWOBJ_EX"}


def scan_pickle(data: bytes, source: str, what: str = "pickle") -> None:
    """FormatError (one line) unless ``data`` is a well-formed pickle within the limits above."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickletools warns about odd escapes in STRING opcodes
            _scan(data, source)
    except FormatError:
        raise
    except Exception as exc:  # pickletools only parses: any failure means a malformed stream
        raise FormatError(f"{source}: not a readable {what} ({type(exc).__name__}: {str(exc)[:60]})") from None


def _scan(data: bytes, source: str) -> None:
    for n, (op, arg, _pos) in enumerate(pickletools.genops(io.BytesIO(data))):
        if n >= MAX_OPS:
            raise FormatError(f"{source}: pickle has more than {MAX_OPS} opcodes")
        if op.name in _REFUSED:
            raise FormatError(f"{source}: pickle uses opcode {op.name}, which a data file never needs")
        if op.name in _MEMO_OPS and (not isinstance(arg, int) or not 0 <= arg < MAX_MEMO):
            raise FormatError(f"{source}: pickle memo index {arg!r:.30} out of range 0..{MAX_MEMO - 1}")
        if op.name == "STOP":
            break
