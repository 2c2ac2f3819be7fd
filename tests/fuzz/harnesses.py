"""One harness per reader: write the fuzzed bytes to a file with the reader's suffix and read it.

The evsnn-owned readers (network, results, npz, IDX, CIFAR, N-MNIST, event npz, energy
profiles) must raise nothing but EvsnnError; the frontends (ONNX, Keras .keras and .h5) are
fuzzed the same way, their current escapes listed in ``tests/test_fuzz.py`` as known failures.
"""

from __future__ import annotations

import os
import tempfile

_DIR = tempfile.mkdtemp(prefix="evsnn-fuzz-")


def _file(data: bytes, name: str) -> str:
    path = os.path.join(_DIR, name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def network(data: bytes) -> None:
    from evsnn.store import load_network

    load_network(_file(data, "net.h5"))


def results(data: bytes) -> None:
    from evsnn.cli_inspect import describe

    describe(_file(data, "res.h5"))  # the results layout check, read_summary and the report summary


def npz(data: bytes) -> None:
    from evsnn.datasets import load_npz

    load_npz(_file(data, "d.npz"))


def idx(data: bytes) -> None:
    from evsnn.datasets import read_idx

    read_idx(_file(data, "images-idx3-ubyte"))


def cifar(data: bytes) -> None:
    from evsnn.datasets import read_cifar_batch

    read_cifar_batch(_file(data, "test_batch"))


def events(data: bytes) -> None:
    from evsnn.datasets import load_events_npz, read_nmnist_bin

    read_nmnist_bin(_file(data, "e.bin"))
    load_events_npz(_file(data, "e.npz"))


def profile(data: bytes) -> None:
    from evsnn.energy import load_profile

    load_profile(_file(data, "p.toml" if data[:1] in (b"[", b"m", b"a", b"#") else "p.json"))


def onnx(data: bytes) -> None:
    from evsnn.frontends import load_model

    load_model(_file(data, "m.onnx"))


def keras(data: bytes) -> None:
    from evsnn.frontends import load_model

    load_model(_file(data, "m.keras"))


def keras_h5(data: bytes) -> None:
    from evsnn.frontends import load_model

    load_model(_file(data, "m.h5"))


OWN = {"network": network, "results": results, "npz": npz, "idx": idx, "cifar": cifar, "events": events,
       "profile": profile}
FRONTENDS = {"onnx": onnx, "keras": keras, "keras_h5": keras_h5}
ALL = {**OWN, **FRONTENDS}
