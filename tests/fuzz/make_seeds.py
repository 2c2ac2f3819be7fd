"""Write the seed corpus (``tests/fuzz/corpus/<harness>/``): small valid files of every kind.

Run once from the repository root (``python -m tests.fuzz.make_seeds``); the output is committed.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(__file__)
CORPUS = os.path.join(HERE, "corpus")
FIX = os.path.join(HERE, "..", "fixtures")


def put(harness, name, data: bytes):
    os.makedirs(os.path.join(CORPUS, harness), exist_ok=True)
    with open(os.path.join(CORPUS, harness, name), "wb") as fh:
        fh.write(data)


def main():
    sys.path.insert(0, os.path.join(HERE, ".."))
    from test_results import small_data, small_graph

    from evsnn.convert import convert
    from evsnn.runner import RunOptions, run_to_file
    from evsnn.store import save_network

    shutil.rmtree(CORPUS, ignore_errors=True)
    tmp = tempfile.mkdtemp()
    net = convert(small_graph(), "casc")
    save_network(net, os.path.join(tmp, "net.h5"))
    put("network", "casc.h5", open(os.path.join(tmp, "net.h5"), "rb").read())
    x, y = small_data(3)
    run_to_file(net, x, y, os.path.join(tmp, "res.h5"), RunOptions(engine="reference", batch_size=2))
    put("results", "casc.h5", open(os.path.join(tmp, "res.h5"), "rb").read())
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((2, 1, 4, 4), np.float32), y=np.array([0, 1]))
    put("npz", "xy.npz", buf.getvalue())
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.ones((2, 3), np.float32))
    put("npz", "x_compressed.npz", buf.getvalue())
    put("idx", "images", b"\0\0\x08\x03" + struct.pack(">III", 2, 4, 4) + bytes(range(32)))
    put("idx", "labels", b"\0\0\x08\x01" + struct.pack(">I", 3) + bytes([1, 2, 3]))
    data = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 48)
    put("cifar", "batch_p2", pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2))
    put("cifar", "batch_p5", pickle.dumps({"data": data, "fine_labels": [3, 4]}, protocol=5))
    put("events", "nmnist.bin", bytes([1, 2, 0x80, 0, 5, 3, 4, 0, 1, 0]))
    buf = io.BytesIO()
    np.savez(buf, t=np.array([1, 2]), x=np.array([0, 1]), y=np.array([1, 0]), polarity=np.array([1, 0]))
    put("events", "events.npz", buf.getvalue())
    put("profile", "p.json", b'{"name": "x", "mac": 4.6, "ac": 0.9, "mem_sop": 10}')
    put("profile", "p.toml", b'mac = 4.6\nac = 0.9\nname = "x"\n')
    put("onnx", "qcfs.onnx", open(os.path.join(FIX, "onnx", "qcfs_legacy.onnx"), "rb").read())
    put("keras", "clip_cnn.keras", open(os.path.join(FIX, "keras", "clip_cnn.keras"), "rb").read())
    put("keras_h5", "clip_cnn.h5", open(os.path.join(FIX, "keras", "clip_cnn.h5"), "rb").read())
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
