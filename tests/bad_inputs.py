"""Generated bad-input corpus (like the fixtures, built from the bundled model at test time).

Each case builds its files in a scratch folder from two valid bases (a casc network converted
from the bundled digits model, a 4-sample results file of it) and returns the ``evsnn``
arguments that must fail with one ``error:`` line and exit code 2. Categories: network files,
results files, untrusted HDF5 (external storage, links, virtual datasets, unwritten data),
datasets (npz, IDX, CIFAR pickles), options, paths, model files.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import zipfile
from dataclasses import dataclass, field

import h5py
import numpy as np

BUNDLED_MODEL = os.path.join(os.path.dirname(__file__), "..", "evsnn", "data", "digits_cnn.onnx")


@dataclass
class Ctx:
    dir: str
    net: str
    res: str
    model: str
    env: dict = field(default_factory=dict)

    def p(self, name):
        return os.path.join(self.dir, name)

    def copy(self, src, name):
        dst = self.p(name)
        shutil.copyfile(src, dst)
        return dst


def run(ctx, net, data="digits", out="out.h5", *more):
    return ["run", net, "--data", data, "-o", ctx.p(out), "--engine", "reference", "--limit", "2", *more]


def _proj(f, kind):
    for k in f["projections"]:
        if f["projections"][k].attrs["kind"] in (kind, kind.encode()):
            return f["projections"][k]
    raise LookupError(kind)


def net_case(fn):
    """A network-file case: ``fn(h5 file)`` damages a copy of the base network, then `run` it."""
    def build(ctx):
        path = ctx.copy(ctx.net, "bad_net.h5")
        with h5py.File(path, "r+") as f:
            fn(f, ctx)
        return run(ctx, path)
    return build


def res_case(fn, cmd=("report", "--no-plots")):
    def build(ctx):
        path = ctx.copy(ctx.res, "bad_res.h5")
        with h5py.File(path, "r+") as f:
            fn(f, ctx)
        return [*cmd, path]
    return build


def _replace(g, name, **kw):
    del g[name]
    g.create_dataset(name, **kw)


def _secret(ctx):
    path = ctx.p("secret.txt")
    with open(path, "wb") as fh:
        fh.write(b"root:x:0:0:root:/root:/bin/bash\n" * 4096)
    return path


def _set(path_in_file, value):
    def fn(f, ctx):
        grp, _, attr = path_in_file.rpartition("@")
        (f[grp] if grp else f).attrs[attr] = value
    return fn


def _external_bias(f, ctx):
    g = f["populations/p0000"]
    n = g["bias"].shape[0]
    _replace(g, "bias", shape=(n,), dtype="f8", external=[(_secret(ctx), 0, n * 8)])


def _virtual_bias(f, ctx):
    g = f["populations/p0000"]
    n = g["bias"].shape[0]
    src = ctx.p("vsrc.h5")
    with h5py.File(src, "w") as s:
        s["x"] = np.ones(n)
    lay = h5py.VirtualLayout(shape=(n,), dtype="f8")
    lay[:] = h5py.VirtualSource(src, "x", shape=(n,))
    del g["bias"]
    g.create_virtual_dataset("bias", lay)


def _unwritten_threshold(f, ctx):
    g = f["populations/p0000"]
    _replace(g, "threshold", shape=g["threshold"].shape, dtype="f8")  # declared, never written


def _crash_kernel(f, ctx):
    g = _proj(f, "conv")
    k = g["kernel"][()]
    _replace(g, "kernel", data=np.ones(k.shape[:3] + (k.shape[3] + 1,)))


def _zero_samples(f, ctx):
    ro = f["readout"]
    _replace(f, "readout", shape=(0,) + ro.shape[1:], dtype="f8")


def _huge_readout(f, ctx):
    _replace(f, "readout", shape=(2 ** 24, 11, 10), dtype="f8", chunks=(1024, 11, 10), compression="gzip")
    for k in ("accuracy", "predictions", "labels"):
        del f[k]
    f.create_dataset("predictions", shape=(2 ** 24,), dtype="i8", chunks=(4096,), compression="gzip")
    f.create_dataset("labels", shape=(2 ** 24,), dtype="i8", chunks=(4096,), compression="gzip")


def _external_readout(f, ctx):
    n, s, c = f["readout"].shape
    _replace(f, "readout", shape=(n, s, c), dtype="f8", external=[(_secret(ctx), 0, n * s * c * 8)])


def npz_case(**arrays):
    def build(ctx):
        path = ctx.p("bad.npz")
        np.savez(path, **arrays)
        return run(ctx, ctx.net, path)
    return build


def _npz_huge_header(ctx):
    path = ctx.p("huge.npz")
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (200_000_000, 64)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 64)
    return run(ctx, ctx.net, path)


def _npz_bytes(data):
    def build(ctx):
        path = ctx.p("broken.npz")
        with open(path, "wb") as fh:
            fh.write(data)
        return run(ctx, ctx.net, path)
    return build


def _npz_truncated(ctx):
    path = ctx.p("trunc.npz")
    np.savez(path, x=np.zeros((4, 1, 8, 8), np.float32))
    raw = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(raw[: len(raw) // 2])
    return run(ctx, ctx.net, path)


def cifar_case(blob):
    def build(ctx):
        folder = ctx.p("cifar")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "test_batch"), "wb") as fh:
            fh.write(blob)
        return run(ctx, ctx.net, f"cifar10:{folder}")
    return build


def _idx_gzip_bomb(ctx):
    folder = ctx.p("mnist")
    os.makedirs(folder, exist_ok=True)
    header = b"\0\0\x08\x03" + struct.pack(">III", 100_000, 28, 28)
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), "wb", compresslevel=9) as fh:
        fh.write(header)
        for _ in range(100_000 * 784 // (1 << 20)):
            fh.write(bytes(1 << 20))
    with open(os.path.join(folder, "t10k-labels-idx1-ubyte"), "wb") as fh:
        fh.write(b"\0\0\x08\x01" + struct.pack(">I", 100_000) + bytes(100_000))
    ctx.env["EVSNN_MAX_DECOMPRESSED_BYTES"] = "16M"
    return run(ctx, ctx.net, f"mnist:{folder}")


def _idx_truncated(ctx):
    folder = ctx.p("mnist2")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "t10k-images-idx3-ubyte"), "wb") as fh:
        fh.write(b"\0\0\x08\x03" + struct.pack(">III", 2 ** 31, 2 ** 31, 28) + bytes(100))
    with open(os.path.join(folder, "t10k-labels-idx1-ubyte"), "wb") as fh:
        fh.write(b"\0\0\x08\x01" + struct.pack(">I", 10) + bytes(10))
    return run(ctx, ctx.net, f"mnist:{folder}")


def _profile(text, name="p.json"):
    def build(ctx):
        path = ctx.p(name)
        with open(path, "w") as fh:
            fh.write(text)
        return run(ctx, ctx.net, "digits", "out.h5", "--energy-profile", path)
    return build


def _same(cmd):
    def build(ctx):
        if cmd == "convert":
            m = ctx.copy(ctx.model, "m.onnx")
            return ["convert", m, "-o", m]
        if cmd == "run-net":
            n = ctx.copy(ctx.net, "n.h5")
            return run(ctx, n, "digits", "n.h5")
        if cmd == "run-data":
            d = ctx.p("d.npz")
            np.savez(d, x=np.zeros((2, 1, 8, 8), np.float32))
            return run(ctx, ctx.net, d, "d.npz")
        if cmd == "export-nir":
            n = ctx.copy(ctx.net, "n.h5")
            return ["export-nir", n, "-o", n]
        if cmd == "hardlink":
            n = ctx.copy(ctx.net, "n.h5")
            os.link(n, ctx.p("alias.h5"))
            return run(ctx, n, "digits", "alias.h5")
        raise ValueError(cmd)
    return build


def _fifo(ctx):
    path = ctx.p("fifo.onnx")
    os.mkfifo(path)
    return ["convert", path, "-o", ctx.p("out.h5")]


def _model_bytes(name, data):
    def build(ctx):
        path = ctx.p(name)
        with open(path, "wb") as fh:
            fh.write(data)
        return ["convert", path, "-o", ctx.p("out.h5")]
    return build


def _truncated_model(ctx):
    raw = open(ctx.model, "rb").read()
    return _model_bytes("trunc.onnx", raw[: len(raw) // 3])(ctx)


def onnx_case(fn, cmd="convert"):
    """An ONNX-model case: ``fn(model proto, ctx)`` damages the bundled model, then `convert` or
    `inspect` it."""
    def build(ctx):
        import onnx

        model = onnx.load(ctx.model)
        fn(model, ctx)
        path = ctx.p("bad.onnx")
        with open(path, "wb") as fh:
            fh.write(model.SerializeToString())
        return ["convert", path, "-o", ctx.p("out.h5")] if cmd == "convert" else ["inspect", path]
    return build


def _external_weight(location):
    """The first initializer's data moved to ``location`` (a name in the model's folder, or a path)."""
    def fn(model, ctx):
        import onnx

        t = model.graph.initializer[0]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", location
        if location == "fifo.bin":
            os.mkfifo(ctx.p(location))
    return fn


def _huge_dims(model, ctx):
    model.graph.initializer[1].dims[:] = [2 ** 20, 2 ** 20, 64]


def _unknown_dtype(model, ctx):
    model.graph.initializer[1].data_type = 99


def _constant_of_shape(model, ctx):
    """The first Constant (a scalar Mul operand) becomes ConstantOfShape([40000, 40000]): 6.4 GB."""
    from onnx import helper, numpy_helper

    k, node = next((k, n) for k, n in enumerate(model.graph.node) if n.op_type == "Constant")
    model.graph.initializer.append(numpy_helper.from_array(np.array([40000, 40000], np.int64), "huge_shape"))
    new = helper.make_node("ConstantOfShape", ["huge_shape"], list(node.output), name="filler",
                           value=numpy_helper.from_array(np.array([2.0], np.float32)))
    model.graph.node.remove(node)
    model.graph.node.insert(k, new)


def _conv_pads_huge(model, ctx):
    """pads of 2^15 on the first Conv: a 65538 × 65538 map per channel (64 GiB per sample)."""
    from onnx import helper

    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    for a in list(conv.attribute):
        if a.name == "pads":
            conv.attribute.remove(a)
    conv.attribute.append(helper.make_attribute("pads", [2 ** 15] * 4))


def _input_dims_huge(model, ctx):
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_value = 2 ** 31


def _truncated_inspect(ctx):
    return ["inspect", _truncated_model(ctx)[1]]


def _nan_calibration(ctx):
    path = ctx.p("nan.npz")
    np.savez(path, x=np.full((4, 1, 8, 8), np.nan, np.float32))
    return ["convert", ctx.model, "-o", ctx.p("out.h5"), "--calibrate", path]


#: id → builder(ctx) → argv. Every case must end in exit code 2 with one `error:` line.
CASES = {
    # network files
    "net-threshold-zero": net_case(lambda f, c: f["populations/p0000/threshold"].__setitem__(0, 0.0)),
    "net-threshold-nan": net_case(lambda f, c: f["populations/p0000/threshold"].__setitem__(0, np.nan)),
    "net-bias-inf": net_case(lambda f, c: f["populations/p0000/bias"].__setitem__(0, np.inf)),
    "net-csr-index-out-of-range": net_case(lambda f, c: _proj(f, "dense")["indices"].__setitem__(0, 10 ** 6)),
    "net-csr-indptr-inconsistent": net_case(lambda f, c: _proj(f, "dense")["indptr"].__setitem__(-1, 10 ** 6)),
    "net-conv-groups-zero": net_case(lambda f, c: _proj(f, "conv").attrs.__setitem__("groups", 0)),
    "net-conv-stride-zero": net_case(lambda f, c: _proj(f, "conv").attrs.__setitem__("stride", np.array([0, 0]))),
    "net-conv-pads-huge": net_case(lambda f, c: _proj(f, "conv").attrs.__setitem__("pads", np.array([10 ** 6] * 4))),
    "net-conv-kernel-wrong-shape": net_case(_crash_kernel),
    "net-delay-huge": net_case(lambda f, c: _proj(f, "conv").attrs.__setitem__("delay", 10 ** 9)),
    "net-preset-bogus": net_case(_set("@preset", "bogus")),
    "net-input-mode-psychic": net_case(_set("@input_mode", "psychic")),
    "net-meta-not-json": net_case(_set("@meta", "{not json")),
    "net-levels-text": net_case(_set("@levels", "seven")),
    "net-shape-text": net_case(_set("populations/p0000@shape", "abc")),
    "net-model-unknown": net_case(_set("populations/p0000@model", "psychic")),
    "net-projection-kind-unknown": net_case(_set("projections/p0000@kind", "teleport")),
    "net-missing-readout": net_case(lambda f, c: f.__delitem__("readout")),
    "net-format-version-text": net_case(_set("@format_version", "one")),
    "net-external-storage": net_case(_external_bias),
    "net-external-link": net_case(lambda f, c: (f["populations/p0000"].__delitem__("bias"),
                                                f["populations/p0000"].__setitem__(
                                                    "bias", h5py.ExternalLink(c.p("other.h5"), "/x")))),
    "net-soft-link": net_case(lambda f, c: (f["populations/p0000"].__delitem__("bias"),
                                            f["populations/p0000"].__setitem__(
                                                "bias", h5py.SoftLink("/populations/p0000/threshold")))),
    "net-virtual-dataset": net_case(_virtual_bias),
    "net-declared-unwritten": net_case(_unwritten_threshold),
    "net-truncated": lambda c: run(c, _truncate(c, c.net, "t.h5")),
    # results files
    "res-zero-samples": res_case(_zero_samples),
    "res-missing-readout": res_case(lambda f, c: f.__delitem__("readout")),
    "res-missing-layers": res_case(lambda f, c: f.__delitem__("layers")),
    "res-missing-ann-nodes": res_case(lambda f, c: f["energy"].__delitem__("ann_nodes")),
    "res-declared-huge-no-accuracy": res_case(_huge_readout),
    "res-external-storage-inspect": res_case(_external_readout, ("inspect",)),
    "res-labels-out-of-range": res_case(lambda f, c: f["labels"].__setitem__(0, 99)),
    "res-profile-mac-text": res_case(lambda f, c: f["energy/45nm-fp32"].attrs.__setitem__("mac", "lots")),
    "res-truncated": lambda c: ["report", "--no-plots", _truncate(c, c.res, "tr.h5")],
    # datasets
    "npz-truncated": _npz_truncated,
    "npz-not-a-zip": _npz_bytes(b"PK\x03\x04" + bytes(60)),
    "npz-declared-shape-huge": _npz_huge_header,
    "npz-nan-inputs": npz_case(x=np.full((2, 1, 8, 8), np.nan, np.float32)),
    "npz-inf-inputs": npz_case(x=np.full((2, 1, 8, 8), np.inf, np.float32)),
    "npz-labels-out-of-range": npz_case(x=np.zeros((2, 1, 8, 8), np.float32), y=np.array([3, 99])),
    "npz-object-array": _npz_bytes(b"garbage, not a zip at all"),
    "cifar-memo-bomb": cifar_case(b"\x80\x02Nr\xff\xff\xff\x7f."),
    "cifar-binbytes8-huge": cifar_case(b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 40) + b"x."),
    "cifar-array-huge": cifar_case(b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\n"
                                   b"q\x01J\x00\xe1\xf5\x05\x85q\x02C\x01bq\x03\x87q\x04Rq\x05."),
    "cifar-global-os-system": cifar_case(b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."),
    "idx-gzip-bomb": _idx_gzip_bomb,
    "idx-declared-huge": _idx_truncated,
    "calibrate-all-nan": _nan_calibration,
    # options
    "opt-seed-negative": lambda c: run(c, c.net, "digits", "out.h5", "--seed", "-1"),
    "opt-seed-2**70": lambda c: run(c, c.net, "digits", "out.h5", "--seed", str(2 ** 70)),
    "opt-levels-2**64": lambda c: ["convert", c.model, "-o", c.p("out.h5"), "--levels", str(2 ** 64)],
    "opt-wake-zero": lambda c: run(c, c.net, "digits", "out.h5", "--wake", "0"),
    "opt-batch-size-zero": lambda c: run(c, c.net, "digits", "out.h5", "--batch-size", "0"),
    "opt-sleep-2**40": lambda c: run(c, c.net, "digits", "out.h5", "--sleep", str(2 ** 40)),
    "opt-percentile-zero": lambda c: ["convert", c.model, "-o", c.p("out.h5"), "--percentile", "0"],
    "opt-wake-memory-budget": lambda c: run(c, c.net, "digits", "out.h5", "--wake", "3000000",
                                            "--allow-inexact", "--memory-budget", "64M"),
    "opt-memory-budget-text": lambda c: run(c, c.net, "digits", "out.h5", "--memory-budget", "lots"),
    "opt-profile-400-digits": _profile('{"mac": ' + "9" * 400 + ', "ac": 1}'),
    "opt-profile-nan": _profile('{"mac": NaN, "ac": 1}'),
    "opt-profile-not-json": _profile("{{{"),
    "opt-report-profile-unknown": lambda c: ["report", c.res, "--no-plots", "--profile", "nope"],
    "opt-demo-presets-empty": lambda c: ["demo", "--presets", "", "--out", c.p("demo")],
    "opt-demo-presets-commas": lambda c: ["demo", "--presets", " , ,", "--out", c.p("demo")],
    # paths
    "path-convert-onto-model": _same("convert"),
    "path-run-onto-network": _same("run-net"),
    "path-run-onto-data": _same("run-data"),
    "path-export-nir-onto-network": _same("export-nir"),
    "path-output-hard-link-of-input": _same("hardlink"),
    "path-fifo-as-model": _fifo,
    "path-dev-zero-as-model": lambda c: ["convert", "/dev/zero", "-o", c.p("out.h5")],
    "path-folder-as-network": lambda c: run(c, c.dir),
    "path-output-folder-missing": lambda c: run(c, c.net, "digits", "nowhere/out.h5"),
    # model files (frontends)
    "model-onnx-truncated": _truncated_model,
    "model-onnx-garbage": _model_bytes("garbage.onnx", b"\x08\x07" + bytes(range(256)) * 4),
    "model-onnx-truncated-inspect": _truncated_inspect,
    "model-onnx-external-etc-passwd": onnx_case(_external_weight("../../etc/passwd")),
    "model-onnx-external-etc-passwd-inspect": onnx_case(_external_weight("../../etc/passwd"), "inspect"),
    "model-onnx-external-absolute": onnx_case(_external_weight("/etc/passwd")),
    "model-onnx-external-fifo": onnx_case(_external_weight("fifo.bin")),
    "model-onnx-external-fifo-inspect": onnx_case(_external_weight("fifo.bin"), "inspect"),
    "model-onnx-external-missing": onnx_case(_external_weight("weights.bin")),
    "model-onnx-declared-dims-huge": onnx_case(_huge_dims),
    "model-onnx-declared-dims-huge-inspect": onnx_case(_huge_dims, "inspect"),
    "model-onnx-constant-of-shape-huge": onnx_case(_constant_of_shape),
    "model-onnx-constant-of-shape-huge-inspect": onnx_case(_constant_of_shape, "inspect"),
    "model-onnx-conv-pads-huge": onnx_case(_conv_pads_huge),
    "model-onnx-input-dims-huge-inspect": onnx_case(_input_dims_huge, "inspect"),
    "model-onnx-unknown-dtype": onnx_case(_unknown_dtype),
    "model-onnx-unknown-dtype-inspect": onnx_case(_unknown_dtype, "inspect"),
    "model-keras-not-a-zip": _model_bytes("garbage.keras", b"not a zip file"),
    "model-h5-garbage": _model_bytes("garbage.h5", b"\x89HDF\r\n\x1a\n" + bytes(200)),
}


def _truncate(ctx, src, name):
    raw = open(src, "rb").read()
    path = ctx.p(name)
    with open(path, "wb") as fh:
        fh.write(raw[: len(raw) // 2])
    return path
