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
    onnx_seeds()
    put("keras", "clip_cnn.keras", open(os.path.join(FIX, "keras", "clip_cnn.keras"), "rb").read())
    put("keras_h5", "clip_cnn.h5", open(os.path.join(FIX, "keras", "clip_cnn.h5"), "rb").read())
    shutil.rmtree(tmp)


def const_folding_model() -> bytes:
    """A small ONNX model whose bias and flatten target are computed by shape-making constant ops
    (ConstantOfShape, Range, Expand, Tile, Shape → Gather → Concat → Reshape), so mutations reach
    the frontend's constant evaluation."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(size=(3, 8)).astype(np.float32), "fc")
    i64 = lambda name, v: numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)  # noqa: E731
    f32 = lambda name, v: numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node("ConstantOfShape", ["two"], ["ones2"], value=f32("v", [0.25])),
        helper.make_node("Range", ["r0", "r1", "r2"], ["ramp"]),
        helper.make_node("Tile", ["ones2", "one"], ["tiled"]),
        helper.make_node("Mul", ["tiled", "ramp"], ["cbias"]),
        helper.make_node("Conv", ["x", "w", "cbias"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["p"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"]),
        helper.make_node("Expand", ["b3", "three"], ["fcb"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["y"], transB=1),
    ]
    inits = [w, fc, i64("two", [2]), f32("r0", 1.0), f32("r1", 3.0), f32("r2", 1.0), i64("one", [1]),
             i64("zero", 0), i64("zero1", [0]), i64("minus1", [-1]), f32("b3", [0.5]), i64("three", [3])]
    graph = helper.make_graph(nodes, "consts", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_seeds():
    put("onnx", "qcfs.onnx", open(os.path.join(FIX, "onnx", "qcfs_legacy.onnx"), "rb").read())
    put("onnx", "consts.onnx", const_folding_model())
    put("onnx", "ort_qdq.onnx", open(os.path.join(FIX, "onnx_quant", "ort_qdq.onnx"), "rb").read())
    put("onnx", "brevitas_qcdq.onnx", open(os.path.join(FIX, "onnx_quant", "brevitas_qcdq_legacy.onnx"), "rb").read())


if __name__ == "__main__":
    main()
