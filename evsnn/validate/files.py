"""Plain-file checks: regular files only, outputs that are not inputs, capped decompression.

The regular-file check itself lives in :func:`evsnn.paths.existing_file` (every reader goes
through it); here are the helpers readers of compressed containers need.
"""

from __future__ import annotations

import os
import zipfile
import zlib

from evsnn.errors import FormatError
from evsnn.paths import existing_file, same_file  # noqa: F401  (re-exported)
from evsnn.validate.limits import fmt_bytes, max_decompressed_bytes


def gunzip_capped(raw: bytes, source: str, limit: int | None = None) -> bytes:
    """Decompress a gzip stream (one or more members) refusing more than ``limit`` bytes of output."""
    limit = max_decompressed_bytes() if limit is None else limit
    out, pos = [], 0
    total = 0
    data = raw
    try:
        while data:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while True:
                chunk = d.decompress(data, min(1 << 24, limit - total + 1))
                total += len(chunk)
                if total > limit:
                    raise FormatError(f"{source}: gzip data decompresses to more than {fmt_bytes(limit)} "
                                      "(set EVSNN_MAX_DECOMPRESSED_BYTES to allow more)")
                out.append(chunk)
                data = d.unconsumed_tail
                if d.eof or not data:
                    break
            if not d.eof:
                raise FormatError(f"{source}: damaged or truncated gzip data (stream ends early)")
            data = d.unused_data
            pos += 1
            if data[:2] != b"\x1f\x8b":
                break  # trailing garbage after the last member is ignored, as gzip does
    except zlib.error as exc:
        raise FormatError(f"{source}: damaged or truncated gzip data ({exc})") from None
    return b"".join(out)


def check_zip_members(zf: zipfile.ZipFile, source: str, limit: int | None = None,
                      total_limit: int | None = None) -> None:
    """Refuse an archive whose members declare more than ``limit`` bytes each or ``total_limit`` together.

    :mod:`zipfile` never returns more than a member's declared ``file_size`` (it raises on a
    mismatch), so checking the declared sizes caps what reading the archive can allocate.
    """
    limit = max_decompressed_bytes() if limit is None else limit
    total_limit = limit if total_limit is None else total_limit
    total = 0
    for info in zf.infolist():
        if info.file_size > limit:
            raise FormatError(f"{source}: archive member {info.filename!r} declares {fmt_bytes(info.file_size)}, "
                              f"more than the {fmt_bytes(limit)} allowed (EVSNN_MAX_DECOMPRESSED_BYTES)")
        total += info.file_size
    if total > total_limit:
        raise FormatError(f"{source}: archive members declare {fmt_bytes(total)} together, more than the "
                          f"{fmt_bytes(total_limit)} allowed (EVSNN_MAX_DECOMPRESSED_BYTES)")


def read_zip_member(zf: zipfile.ZipFile, name: str, source: str, limit: int | None = None) -> bytes:
    """Bytes of one archive member, at most ``limit`` (FormatError beyond, or if damaged)."""
    limit = max_decompressed_bytes() if limit is None else limit
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise FormatError(f"{source}: archive has no member {name!r}") from None
    if info.file_size > limit:
        raise FormatError(f"{source}: archive member {name!r} declares {fmt_bytes(info.file_size)}, more than "
                          f"the {fmt_bytes(limit)} allowed (EVSNN_MAX_DECOMPRESSED_BYTES)")
    try:
        with zf.open(info) as fh:  # read(n) allocates n bytes up front: ask for the declared size
            data = fh.read(min(info.file_size, limit) + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise FormatError(f"{source}: damaged archive member {name!r} ({exc})") from None
    if len(data) > info.file_size:
        raise FormatError(f"{source}: damaged archive member {name!r} (longer than it declares)")
    if len(data) > limit:
        raise FormatError(f"{source}: archive member {name!r} is larger than {fmt_bytes(limit)}")
    return data


def file_size(path: str | os.PathLike) -> int:
    return os.stat(path).st_size


def contained_path(folder: str | os.PathLike, relative: str, source: str) -> str:
    """``folder/relative`` resolved, refusing a path that leaves ``folder`` (``..``, absolute paths,
    symbolic links out of it) or that is not a regular file: for data files a model names itself,
    such as ONNX external tensor data."""
    base = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(base, relative))
    if os.path.isabs(relative) or os.path.commonpath([base, path]) != base:
        raise FormatError(f"{source}: refers to {relative!r} outside its folder {base}; evsnn refuses it")
    return existing_file(path, "a data file")
