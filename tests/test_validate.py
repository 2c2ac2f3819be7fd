"""Unit tests of evsnn.validate's helpers (the corpus in test_bad_inputs exercises them end to end)."""

from __future__ import annotations

import gzip
import io
import os
import zipfile

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from evsnn.errors import FormatError, ShapeError
from evsnn.paths import check_not_input, existing_file, same_file
from evsnn.store.files import lock_exclusive
from evsnn.validate import files as VF
from evsnn.validate import hdf5 as VH
from evsnn.validate import limits as VL


def test_gunzip_capped_stops_at_the_limit():
    data = gzip.compress(bytes(1 << 20)) + gzip.compress(b"tail")
    assert VF.gunzip_capped(data, "x", 2 << 20) == bytes(1 << 20) + b"tail"  # several members
    with pytest.raises(FormatError, match="decompresses to more than"):
        VF.gunzip_capped(data, "x", 1000)
    with pytest.raises(FormatError, match="truncated"):
        VF.gunzip_capped(data[:30], "x", 1 << 30)


def _zip(**members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in members.items():
            z.writestr(k, v)
    buf.seek(0)
    return zipfile.ZipFile(buf)


def test_zip_member_caps():
    zf = _zip(**{"config.json": b"{}" + b" " * 5000, "small": b"abc"})
    assert VF.read_zip_member(zf, "small", "m.keras", 10) == b"abc"
    with pytest.raises(FormatError, match="config.json.*declares"):
        VF.read_zip_member(zf, "config.json", "m.keras", 1000)
    with pytest.raises(FormatError, match="no member"):
        VF.read_zip_member(zf, "nope", "m.keras")
    VF.check_zip_members(zf, "m.keras", 10_000)
    with pytest.raises(FormatError, match="declares"):
        VF.check_zip_members(zf, "m.keras", 1000)
    with pytest.raises(FormatError, match="together"):
        VF.check_zip_members(zf, "m.keras", 10_000, total_limit=5001)


def test_regular_files_only_and_same_inode(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="FIFO"):
        existing_file(fifo)
    with pytest.raises(FormatError, match="device"):
        existing_file("/dev/null")
    a = tmp_path / "a"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "b")
    os.symlink(a, tmp_path / "c")
    assert same_file(a, tmp_path / "b") and same_file(a, tmp_path / "c")
    with pytest.raises(FormatError, match="is the input file"):
        check_not_input(tmp_path / "c", None, tmp_path / "b")
    check_not_input(tmp_path / "new", a)  # a new output is fine


def test_lock_is_exclusive_and_released(tmp_path):
    p = tmp_path / ".x.partial"
    fd = lock_exclusive(p)
    with pytest.raises(FormatError, match="another evsnn run"):
        lock_exclusive(p)
    os.close(fd)
    os.close(lock_exclusive(p))


def test_hdf5_checks(tmp_path):
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f["a"] = np.arange(10.0)
        f.create_dataset("z", data=np.zeros(100_000), compression="gzip")
        f.attrs["s"] = "x"
    VH.check_h5_file(good)
    bad = tmp_path / "filter.h5"
    with h5py.File(bad, "w") as f:  # a plugin filter, optional so HDF5 writes without it
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4,))
        dcpl.set_filter(307, h5py.h5z.FLAG_OPTIONAL)
        sid = h5py.h5s.create_simple((8,))
        h5py.h5d.create(f.id, b"d", h5py.h5t.NATIVE_DOUBLE, sid, dcpl=dcpl)
    with pytest.raises(FormatError, match="filter 307"):
        VH.check_h5_file(bad)
    big = tmp_path / "big.h5"
    with h5py.File(big, "w") as f:
        f.create_dataset("d", shape=(1000,), dtype="f8")
    with pytest.raises(FormatError, match="declares .* but the file stores"):
        VH.check_h5_file(big)
    VH.check_h5_file(big, check_sizes=False)  # unfinished files: sizes not checked, the rest is
    os.environ["EVSNN_MAX_ARRAY_BYTES"] = "1K"
    try:
        with pytest.raises(FormatError, match="EVSNN_MAX_ARRAY_BYTES"):
            VH.check_h5_file(good)
    finally:
        del os.environ["EVSNN_MAX_ARRAY_BYTES"]


def test_parse_bytes_and_memory_estimate():
    assert VL.parse_bytes("512M") == 512 << 20 and VL.parse_bytes("2GiB") == 2 << 30 and VL.parse_bytes("100") == 100
    for bad in ("lots", "-1", "0", "1e30"):
        with pytest.raises(FormatError):
            VL.parse_bytes(bad)
    from evsnn.convert import convert
    from test_results import small_graph

    net = convert(small_graph(), "casc")
    one = VL.run_record_bytes(net, 100, 8)
    assert VL.run_record_bytes(net, 200, 8) > 1.9 * one - 8 * 16 * sum(p.size for p in net.populations)
    assert VL.run_record_bytes(net, 100, 8, ("raster",)) > one
    with pytest.raises(FormatError, match="memory budget"):
        VL.check_run_memory(net, 10 ** 6, 64, budget=1 << 20)


def test_check_data_labels_and_nonfinite():
    from evsnn.runner import check_data

    x = np.zeros((3, 4))
    check_data(x, np.array([0, 1, 2]), 3)
    with pytest.raises(ShapeError, match="labels 0..3"):
        check_data(x, np.array([0, 1, 3]), 3)
    x[2, 1] = np.nan
    with pytest.raises(ShapeError, match="sample 2"):
        check_data(x, None, 3)
    check_data(x, None, 3, allow_nonfinite=True)


def test_allow_nonfinite_runs(tmp_path):
    from evsnn.cli import cli

    model = os.path.join(os.path.dirname(__file__), "..", "evsnn", "data", "digits_cnn.onnx")
    d = tmp_path / "d.npz"
    x = np.zeros((2, 1, 8, 8), np.float32)
    x[0, 0, 0, 0] = np.nan
    np.savez(d, x=x)
    out = tmp_path / "r.h5"
    args = ["run", model, "--preset", "if", "--data", str(d), "-o", str(out), "--engine", "reference", "--wake", "2"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and "NaN" in r.stderr
    r = CliRunner().invoke(cli, args + ["--allow-nonfinite"])
    assert r.exit_code == 0, r.output
    assert out.exists()


def test_contained_path_and_array_size(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"1234")
    assert VF.contained_path(tmp_path, "w.bin", "m.onnx").endswith("w.bin")
    for bad in ("../etc/passwd", "/etc/passwd"):
        with pytest.raises(FormatError, match="outside its folder"):
            VF.contained_path(tmp_path, bad, "m.onnx")
    os.symlink("/etc/hostname", tmp_path / "link")
    with pytest.raises(FormatError, match="outside"):
        VF.contained_path(tmp_path, "link", "m.onnx")
    assert VL.check_array_size((3, 4), 8, "c") == 96
    with pytest.raises(FormatError, match="EVSNN_MAX_ARRAY_BYTES"):
        VL.check_array_size((40000, 40000, 4000), 4, "ConstantOfShape")
    with pytest.raises(FormatError, match="negative"):
        VL.check_array_size((3, -1), 4, "c")


def _sleep_forever():
    import time
    while True:
        time.sleep(1)


def _boom(text):
    raise KeyError(text)


def test_deadline_returns_reraises_and_stops_a_reader_that_does_not_finish(monkeypatch):
    import sys

    from evsnn.validate import deadline

    monkeypatch.setenv("EVSNN_HDF5_SECONDS", "2")
    assert deadline.call(sum, [1, 2, 3], what="x") == 6
    assert deadline.call(np.arange, 4, what="x").tolist() == [0, 1, 2, 3]
    with pytest.raises(KeyError, match="gone"):
        deadline.call(_boom, "gone", what="x")
    if sys.platform.startswith("linux"):
        with pytest.raises(FormatError, match="did not finish within 2 s"):
            deadline.call(_sleep_forever, what="f.h5")
    monkeypatch.setenv("EVSNN_HDF5_SECONDS", "soon")
    with pytest.raises(FormatError, match="EVSNN_HDF5_SECONDS"):
        deadline.call(sum, [1], what="x")


def test_a_legacy_h5_that_makes_hdf5_loop_is_one_error_line(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from evsnn.cli import cli

    monkeypatch.setenv("EVSNN_HDF5_SECONDS", "3")
    bad = os.path.join(os.path.dirname(__file__), "fuzz", "known", "keras_h5", "hdf5-loops-on-a-global-heap-byte.h5")
    r = CliRunner().invoke(cli, ["convert", bad, "-o", str(tmp_path / "n.h5")])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "did not finish within 3 s" in r.stderr and not (tmp_path / "n.h5").exists()
