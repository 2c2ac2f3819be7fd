"""Rebuild ``data/digits.npz`` from scikit-learn's ``digits.csv.gz`` (maintainers only).

Usage: ``python -m evsnn.datasets._make_digits PATH/TO/digits.csv.gz``
(the file is ``sklearn/datasets/data/digits.csv.gz`` inside a scikit-learn
wheel, e.g. from ``pip download --no-deps scikit-learn``). Rebuilding gives the
same arrays every time: same images, labels and split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 0
TEST_FRACTION = 1 / 3


def stratified_split(labels: np.ndarray, seed: int = SEED, frac: float = TEST_FRACTION):
    """Per class, a seeded permutation; the first round(frac · n_class) go to test."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test.append(rng.permutation(members)[: int(round(frac * members.size))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
    return train_idx.astype(np.uint16), test_idx.astype(np.uint16)


def build(csv_gz: str, out: str) -> None:
    table = np.loadtxt(csv_gz, delimiter=",")
    if table.shape != (1797, 65) or not np.all(table == np.round(table)):
        raise SystemExit(f"unexpected digits table {table.shape}")
    images = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)
    labels = table[:, 64].astype(np.uint8)
    train_idx, test_idx = stratified_split(labels)
    np.savez_compressed(out, images=images, labels=labels, train_idx=train_idx, test_idx=test_idx)


if __name__ == "__main__":
    build(sys.argv[1], str(Path(__file__).with_name("data") / "digits.npz"))
