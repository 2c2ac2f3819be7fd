"""Guard against stale Numba caches.

Numba keys a cached function on its own source file's timestamp only: when
``kernels.py`` changes but ``batch.py`` does not, ``run_batch`` (cached under
``batch.py``) would keep running the old inlined kernels. So at import we hash
all engine sources and, when the hash differs from the one stored beside the
cache, delete the engine's cached ``.nbi``/``.nbc`` files before anything is
compiled or loaded.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))
STAMP = "evsnn-engine-sources.sha256"


def sources_digest(folder: str = HERE) -> str:
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(folder, "*.py"))):
        with open(path, "rb") as fh:
            h.update(os.path.basename(path).encode() + b"\0" + fh.read())
    return h.hexdigest()


def invalidate_stale_cache(folder: str = HERE) -> bool:
    """Remove the engine's Numba cache files if the sources changed since they were written; True if removed."""
    cache = os.path.join(folder, "__pycache__")
    digest = sources_digest(folder)
    stamp = os.path.join(cache, STAMP)
    with contextlib.suppress(OSError):
        with open(stamp) as fh:
            if fh.read().strip() == digest:
                return False
    removed = False
    for path in glob.glob(os.path.join(cache, "*.nb[ic]")):
        with contextlib.suppress(OSError):
            os.remove(path)
            removed = True
    with contextlib.suppress(OSError):  # a read-only install: Numba then uses its user-wide cache
        os.makedirs(cache, exist_ok=True)
        with open(stamp, "w") as fh:
            fh.write(digest + "\n")
    return removed
