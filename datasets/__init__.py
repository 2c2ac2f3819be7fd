"""Dataset loaders for files the user already has, plus the bundled digits set.

Every loader returns ``(x, y)``: ``x`` float32 in the model's layout, samples
first (images ``(n, C, H, W)`` scaled to [0, 1]), ``y`` int64 ``(n,)`` labels
or None. Nothing here downloads anything; a missing file is a
:class:`evsnn.errors.FormatError` naming the path and, for the public
datasets, where to get it. Event streams (N-MNIST ``.bin``, event ``.npz``)
are read by :mod:`evsnn.datasets.events` into structured arrays.

``load_dataset(spec)`` resolves what the CLI's ``--data`` accepts:

==============================  ==============================================
spec                            data
==============================  ==============================================
``path/to/file.npz``            ``x`` and optional ``y`` (:func:`load_npz`)
``digits`` / ``digits-test``    bundled 8×8 digits, fixed test split (599)
``digits-train``                bundled digits, train split (1198)
``digits-all``                  all 1797 bundled digits
``mnist:DIR``                   MNIST IDX files in DIR, test split (10,000)
``mnist-train:DIR``             MNIST train split (60,000)
``fashion-mnist:DIR``           Fashion-MNIST (same IDX layout), test split
``fashion-mnist-train:DIR``     Fashion-MNIST train split
``cifar10:DIR``                 CIFAR-10 python batches, test split
``cifar10-train:DIR``           CIFAR-10 train split (data_batch_1..5)
``cifar100:DIR``                CIFAR-100 python files, test split, fine labels
``cifar100-train:DIR``          CIFAR-100 train split, fine labels
==============================  ==============================================
"""

from __future__ import annotations

import os
from functools import partial

from evsnn.errors import FormatError

from .cifar import load_cifar, read_cifar_batch
from .digits import digits_split_indices, load_digits
from .events import (
    EVENT_DTYPE,
    events_to_frames,
    load_events_npz,
    load_nmnist,
    make_events,
    read_nmnist_bin,
    write_nmnist_bin,
)
from .idx import load_idx, load_mnist, read_idx
from .npz import load_npz

__all__ = [
    "EVENT_DTYPE", "FormatError", "NAMED", "FOLDER_NAMED", "known_names",
    "digits_split_indices", "events_to_frames", "load_cifar", "load_dataset",
    "load_digits", "load_events_npz", "load_idx", "load_mnist", "load_nmnist",
    "load_npz", "make_events", "read_cifar_batch", "read_idx", "read_nmnist_bin",
    "write_nmnist_bin",
]

#: Names that need no argument.
NAMED = {
    "digits": partial(load_digits, "test"),
    "digits-test": partial(load_digits, "test"),
    "digits-train": partial(load_digits, "train"),
    "digits-all": partial(load_digits, "all"),
}

#: ``name:FOLDER`` specs.
FOLDER_NAMED = {
    "mnist": partial(load_mnist, split="test"),
    "mnist-train": partial(load_mnist, split="train"),
    "fashion-mnist": partial(load_mnist, split="test"),
    "fashion-mnist-train": partial(load_mnist, split="train"),
    "cifar10": partial(load_cifar, split="test", variant="cifar10"),
    "cifar10-train": partial(load_cifar, split="train", variant="cifar10"),
    "cifar100": partial(load_cifar, split="test", variant="cifar100"),
    "cifar100-train": partial(load_cifar, split="train", variant="cifar100"),
}


def known_names() -> list[str]:
    """The dataset specs :func:`load_dataset` knows, as shown in error messages and ``--help``."""
    return list(NAMED) + [f"{k}:<folder>" for k in FOLDER_NAMED]


def load_dataset(spec: str | os.PathLike):
    """Resolve a dataset spec (see the module table) to ``(x, y)``.

    A ``name:FOLDER`` prefix is matched first (case-insensitive name), then a
    path ending in ``.npz``, then a bare name. Anything else is a
    FormatError listing the known names; a missing file or folder is a
    FormatError naming it.
    """
    s = os.fspath(spec)
    name, sep, arg = s.partition(":")
    if sep and name.lower() in FOLDER_NAMED:
        if not arg:
            raise FormatError(f"dataset {s!r} needs a folder after the colon, e.g. {name}:/data/{name}")
        return FOLDER_NAMED[name.lower()](arg)
    if s.lower().endswith(".npz"):
        return load_npz(s)
    if s.lower() in NAMED:
        return NAMED[s.lower()]()
    raise FormatError(
        f"unknown dataset {s!r}; known: {', '.join(known_names())}, or a path to an .npz with x (and optional y)"
    )
