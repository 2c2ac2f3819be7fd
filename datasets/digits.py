"""The bundled dataset: UCI optical recognition of handwritten digits (8×8, 1,797 images).

Stored in ``data/digits.npz`` (see ``data/DIGITS_LICENSE.txt``: CC BY 4.0,
Alpaydin & Kaynak 1998, via scikit-learn's ``digits.csv.gz``) as:

- ``images`` uint8 ``(1797, 8, 8)``, values 0..16 (count of set pixels in a
  4×4 block of the 32×32 bitmap);
- ``labels`` uint8 ``(1797,)``, digits 0..9;
- ``train_idx`` (1198) / ``test_idx`` (599) uint16: a fixed stratified split,
  one third of each class to test (rounded), drawn once with
  ``numpy.random.default_rng(0)`` by ``_make_digits.py`` and stored so it
  never changes. Index arrays are sorted.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from ._common import check_split

N_TOTAL = 1797


@lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    ref = resources.files(__package__).joinpath("data", "digits.npz")
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def digits_split_indices(split: str = "test") -> np.ndarray:
    """Sorted int64 indices (into the 1,797 images) of ``"train"``, ``"test"`` or ``"all"``."""
    check_split(split, ("test", "train", "all"))
    if split == "all":
        return np.arange(N_TOTAL, dtype=np.int64)
    return _arrays()[f"{split}_idx"].astype(np.int64)


def load_digits(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The bundled 8×8 digits: ``split`` is ``"test"`` (599), ``"train"`` (1198) or ``"all"`` (1797).

    Returns ``x`` float32 ``(n, 1, 8, 8)`` = raw value / 16, in [0, 1], and
    ``y`` int64 ``(n,)`` in 0..9, in the order of the original file.
    """
    idx = digits_split_indices(split)
    a = _arrays()
    x = (a["images"][idx].astype(np.float32) / np.float32(16.0))[:, None, :, :]
    return np.ascontiguousarray(x), a["labels"][idx].astype(np.int64)
