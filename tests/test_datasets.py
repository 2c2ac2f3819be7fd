"""Loaders of evsnn.datasets, checked on small files written in the real formats."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from evsnn.datasets import (
    EVENT_DTYPE,
    digits_split_indices,
    events_to_frames,
    known_names,
    load_cifar,
    load_dataset,
    load_digits,
    load_events_npz,
    load_idx,
    load_mnist,
    load_nmnist,
    load_npz,
    make_events,
    read_cifar_batch,
    read_idx,
    read_nmnist_bin,
    write_nmnist_bin,
)
from evsnn.errors import FormatError

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- IDX writers

def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Encode an array as IDX by hand: 0, 0, type, ndim, big-endian sizes, big-endian data."""
    be = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + arr.astype(be).tobytes()


def write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def mnist_arrays():
    imgs = RNG.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labs = RNG.integers(0, 10, size=7, dtype=np.uint8)
    return imgs, labs


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_roundtrip(tmp_path, mnist_arrays, gz):
    imgs, labs = mnist_arrays
    ip = write(tmp_path / "im", idx_bytes(imgs), gz)
    lp = write(tmp_path / "lb", idx_bytes(labs), gz)
    x, y = load_idx(ip, lp)
    assert x.dtype == np.float32 and x.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0], imgs.astype(np.float32) / 255)
    assert x.min() >= 0 and x.max() <= 1
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labs)
    x2, y2 = load_idx(ip)
    assert y2 is None and np.array_equal(x2, x)


def test_read_idx_big_endian_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "a", idx_bytes(a, 0x0B))), a)
    f = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    out = read_idx(write(tmp_path / "f", idx_bytes(f, 0x0D)))
    assert out.dtype == np.float32 and np.array_equal(out, f)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dot", [False, True])
def test_load_mnist_folder(tmp_path, mnist_arrays, gz, dot):
    imgs, labs = mnist_arrays
    sep = "." if dot else "-"
    sfx = ".gz" if gz else ""
    write(tmp_path / f"t10k-images{sep}idx3-ubyte{sfx}", idx_bytes(imgs), gz)
    write(tmp_path / f"t10k-labels{sep}idx1-ubyte{sfx}", idx_bytes(labs), gz)
    write(tmp_path / f"train-images{sep}idx3-ubyte{sfx}", idx_bytes(imgs[:3]), gz)
    write(tmp_path / f"train-labels{sep}idx1-ubyte{sfx}", idx_bytes(labs[:3]), gz)
    x, y = load_mnist(tmp_path)
    assert x.shape == (7, 1, 28, 28) and np.array_equal(y, labs)
    xt, yt = load_mnist(tmp_path, split="train")
    assert xt.shape == (3, 1, 28, 28) and np.array_equal(yt, labs[:3])
    xs, ys = load_dataset(f"mnist:{tmp_path}")
    assert np.array_equal(xs, x) and np.array_equal(ys, y)
    xs, _ = load_dataset(f"fashion-mnist-train:{tmp_path}")
    assert np.array_equal(xs, xt)


def test_load_mnist_raw_subfolder(tmp_path, mnist_arrays):
    imgs, labs = mnist_arrays
    raw = tmp_path / "raw"
    raw.mkdir()
    write(raw / "t10k-images-idx3-ubyte", idx_bytes(imgs))
    write(raw / "t10k-labels-idx1-ubyte", idx_bytes(labs))
    assert load_mnist(tmp_path)[0].shape == (7, 1, 28, 28)


def test_idx_errors(tmp_path, mnist_arrays):
    imgs, labs = mnist_arrays
    good = idx_bytes(imgs)
    with pytest.raises(FormatError, match="no such file"):
        load_idx(tmp_path / "missing")
    with pytest.raises(FormatError, match="bad magic"):
        read_idx(write(tmp_path / "magic", b"\x12\x34" + good[2:]))
    with pytest.raises(FormatError, match="unknown type byte"):
        read_idx(write(tmp_path / "type", good[:2] + b"\x42" + good[3:]))
    with pytest.raises(FormatError, match="truncated"):
        read_idx(write(tmp_path / "short", good[:-10]))
    with pytest.raises(FormatError, match="truncated"):
        read_idx(write(tmp_path / "short.gz", good[:-10], gz=True))
    with pytest.raises(FormatError, match="gzip"):
        read_idx(write(tmp_path / "cut.gz", gzip.compress(good)[:-20]))
    with pytest.raises(FormatError, match="after the data"):
        read_idx(write(tmp_path / "long", good + b"\0"))
    with pytest.raises(FormatError, match="5 labels for 7 samples"):
        load_idx(write(tmp_path / "i", good), write(tmp_path / "l", idx_bytes(labs[:5])))
    with pytest.raises(FormatError, match="no t10k-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FormatError, match="no such folder"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(FormatError, match="unknown split"):
        load_mnist(tmp_path, split="validation")


# ---------------------------------------------------------------- CIFAR

def cifar_batch(n, labels_key=b"labels", protocol=2):
    data = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    d = {b"batch_label": b"testing batch", b"data": data, b"filenames": [b"f%d" % i for i in range(n)]}
    if labels_key == b"fine_labels":
        d[b"fine_labels"] = list(RNG.integers(0, 100, n).tolist())
        d[b"coarse_labels"] = list(RNG.integers(0, 20, n).tolist())
    else:
        d[labels_key] = list(RNG.integers(0, 10, n).tolist())
    return d, pickle.dumps(d, protocol=protocol)


def expect_images(data):
    # channel-major: R plane, G plane, B plane, each row-major 32x32
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_folder(tmp_path, protocol):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = {}
    for name, n in [("test_batch", 4)] + [(f"data_batch_{i}", i) for i in range(1, 6)]:
        d, blob = cifar_batch(n, protocol=protocol)
        (root / name).write_bytes(blob)
        batches[name] = d
    x, y = load_cifar(tmp_path)  # parent folder is found too
    assert x.dtype == np.float32 and x.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(x, expect_images(batches["test_batch"][b"data"]))
    assert y.dtype == np.int64 and y.tolist() == batches["test_batch"][b"labels"]
    # pixel layout: value of channel c, row r, col k is data[c*1024 + r*32 + k]
    assert x[1, 2, 5, 7] == batches["test_batch"][b"data"][1, 2 * 1024 + 5 * 32 + 7] / np.float32(255)
    xt, yt = load_cifar(root, split="train")
    assert xt.shape == (15, 3, 32, 32)
    order = [f"data_batch_{i}" for i in range(1, 6)]
    np.testing.assert_array_equal(xt, np.concatenate([expect_images(batches[k][b"data"]) for k in order]))
    assert yt.tolist() == sum((batches[k][b"labels"] for k in order), [])
    xs, ys = load_dataset(f"cifar10:{root}")
    assert np.array_equal(xs, x) and np.array_equal(ys, y)
    xf, yf = load_cifar(root / "data_batch_3")
    assert xf.shape == (3, 3, 32, 32) and yf.tolist() == batches["data_batch_3"][b"labels"]


def test_cifar_python2_numpy_core_names(tmp_path):
    """Files pickled by old NumPy name numpy.core.multiarray._reconstruct; they must load."""
    d, blob = cifar_batch(3, protocol=2)
    old = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != blob
    (tmp_path / "old").write_bytes(old)
    x, y = read_cifar_batch(tmp_path / "old")
    np.testing.assert_array_equal(x, expect_images(d[b"data"]))
    assert y.tolist() == d[b"labels"]


def test_cifar100_folder(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    dt, blob = cifar_batch(6, b"fine_labels")
    (root / "test").write_bytes(blob)
    dtr, blob = cifar_batch(5, b"fine_labels")
    (root / "train").write_bytes(blob)
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"apple"]}, protocol=2))
    x, y = load_cifar(tmp_path)
    np.testing.assert_array_equal(x, expect_images(dt[b"data"]))
    assert y.tolist() == dt[b"fine_labels"]
    _, yc = load_cifar(root, labels="coarse")
    assert yc.tolist() == dt[b"coarse_labels"]
    xt, yt = load_dataset(f"cifar100-train:{root}")
    assert xt.shape == (5, 3, 32, 32) and yt.tolist() == dtr[b"fine_labels"]


def test_cifar_errors(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(FormatError, match="refusing to load global"):
        read_cifar_batch(tmp_path / "evil")
    (tmp_path / "nodata").write_bytes(pickle.dumps({b"labels": [1, 2]}))
    with pytest.raises(FormatError, match="no b'data'"):
        read_cifar_batch(tmp_path / "nodata")
    (tmp_path / "list").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(FormatError, match="not a dict"):
        read_cifar_batch(tmp_path / "list")
    _, blob = cifar_batch(3)
    (tmp_path / "trunc").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FormatError, match="not a readable CIFAR"):
        read_cifar_batch(tmp_path / "trunc")
    (tmp_path / "junk").write_bytes(b"hello world, not a pickle")
    with pytest.raises(FormatError):
        read_cifar_batch(tmp_path / "junk")
    (tmp_path / "badshape").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8)}))
    with pytest.raises(FormatError, match="square planes"):
        read_cifar_batch(tmp_path / "badshape")
    with pytest.raises(FormatError, match="no CIFAR batches found"):
        load_cifar(tmp_path / "..")
    with pytest.raises(FormatError, match="no CIFAR-10 test_batch"):
        load_dataset(f"cifar10:{tmp_path}")
    with pytest.raises(FormatError, match="no such folder"):
        load_dataset(f"cifar100:{tmp_path / 'absent'}")
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    (root / "test_batch").write_bytes(cifar_batch(2)[1])
    with pytest.raises(FormatError, match="data_batch_1: no such file"):
        load_cifar(root, split="train")


# ---------------------------------------------------------------- npz

def test_load_npz(tmp_path):
    x = RNG.random((5, 2, 3, 3))
    y = np.array([0, 3, 1, 1, 2], dtype=np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    xl, yl = load_npz(tmp_path / "d.npz")
    assert xl.dtype == np.float32 and yl.dtype == np.int64
    np.testing.assert_array_equal(xl, x.astype(np.float32))
    np.testing.assert_array_equal(yl, y)
    np.savez_compressed(tmp_path / "nolabels.npz", x=np.ones((4, 10), np.uint8))
    xl, yl = load_dataset(str(tmp_path / "nolabels.npz"))
    assert yl is None and xl.shape == (4, 10) and xl.max() == 1.0  # no rescaling


def test_npz_errors(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        load_dataset(str(tmp_path / "absent.npz"))
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 2)))
    with pytest.raises(FormatError, match="no array 'x'.*images"):
        load_npz(tmp_path / "nox.npz")
    np.savez(tmp_path / "bady.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(FormatError, match="2 labels for 3 samples"):
        load_npz(tmp_path / "bady.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FormatError, match="not a readable"):
        load_npz(tmp_path / "obj.npz")
    np.save(tmp_path / "single.npy", np.zeros((2, 2)))
    (tmp_path / "single.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    with pytest.raises(FormatError, match="single .npy"):
        load_npz(tmp_path / "single.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(FormatError):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "ev.npz", t=[1, 2], x=[0, 1], y=[0, 1], polarity=[0, 1])
    with pytest.raises(FormatError, match="event stream"):
        load_npz(tmp_path / "ev.npz")


# ---------------------------------------------------------------- events

def nmnist_record(x, y, p, t):
    """One 40-bit N-MNIST event, encoded by hand from the spec."""
    return bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])


def test_read_nmnist_bin(tmp_path):
    evs = [(0, 0, 0, 0), (33, 12, 1, 255), (5, 33, 1, 256), (17, 3, 0, 70_000), (1, 2, 1, 2**23 - 1)]
    (tmp_path / "00001.bin").write_bytes(b"".join(nmnist_record(*e) for e in evs))
    ev = read_nmnist_bin(tmp_path / "00001.bin")
    assert ev.dtype == EVENT_DTYPE and ev.shape == (5,)
    assert ev["x"].tolist() == [e[0] for e in evs]
    assert ev["y"].tolist() == [e[1] for e in evs]
    assert ev["p"].tolist() == [e[2] for e in evs]
    assert ev["t"].tolist() == [e[3] for e in evs]
    # writer is the exact inverse
    write_nmnist_bin(tmp_path / "copy.bin", ev)
    assert (tmp_path / "copy.bin").read_bytes() == (tmp_path / "00001.bin").read_bytes()


def test_nmnist_overflow_marker_and_errors(tmp_path):
    blob = nmnist_record(1, 1, 1, 100) + nmnist_record(0, 240, 0, 0) + nmnist_record(2, 2, 0, 50)
    (tmp_path / "o.bin").write_bytes(blob)
    ev = read_nmnist_bin(tmp_path / "o.bin")
    assert ev["t"].tolist() == [100, 50 + 2**13] and ev["x"].tolist() == [1, 2]
    (tmp_path / "cut.bin").write_bytes(blob[:-2])
    with pytest.raises(FormatError, match="5-byte"):
        read_nmnist_bin(tmp_path / "cut.bin")
    with pytest.raises(FormatError, match="no such file"):
        read_nmnist_bin(tmp_path / "absent.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    assert read_nmnist_bin(tmp_path / "empty.bin").shape == (0,)


def test_load_nmnist_folder(tmp_path):
    for digit, n in [(0, 2), (3, 1), (10, 1)]:
        d = tmp_path / "Test" / str(digit)
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"{i:05d}.bin").write_bytes(nmnist_record(i, digit, 1, 10 * i))
    streams, y = load_nmnist(tmp_path)
    assert y.tolist() == [0, 0, 3, 10] and len(streams) == 4
    assert streams[1]["t"].tolist() == [10] and streams[2]["y"].tolist() == [3]
    with pytest.raises(FormatError, match="Train"):
        load_nmnist(tmp_path, split="train")


def test_load_events_npz(tmp_path):
    t = np.array([5, 9, 12, 40], dtype=np.int64)
    x = np.array([0, 300, 7, 7])
    y = np.array([1, 2, 200, 3])
    pol = np.array([-1, 1, 1, -1])
    np.savez(tmp_path / "ev.npz", t=t, x=x, y=y, polarity=pol)
    ev = load_events_npz(tmp_path / "ev.npz")
    assert ev.dtype == EVENT_DTYPE
    assert ev["t"].tolist() == t.tolist() and ev["x"].tolist() == x.tolist() and ev["y"].tolist() == y.tolist()
    assert ev["p"].tolist() == [0, 1, 1, 0]
    np.savez(tmp_path / "p.npz", t=t, x=x, y=y, p=np.array([0, 1, 1, 0], np.uint8))
    assert np.array_equal(load_events_npz(tmp_path / "p.npz"), ev)
    np.savez(tmp_path / "bad.npz", t=t, x=x, y=y)
    with pytest.raises(FormatError, match="lacks polarity"):
        load_events_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "len.npz", t=t, x=x[:3], y=y, polarity=pol)
    with pytest.raises(FormatError, match="equal length"):
        load_events_npz(tmp_path / "len.npz")
    np.savez(tmp_path / "neg.npz", t=t, x=-x, y=y, polarity=pol)
    with pytest.raises(FormatError, match="0..65535"):
        load_events_npz(tmp_path / "neg.npz")


def test_events_to_frames():
    ev = make_events(
        t=[100, 100, 149, 150, 199, 199],
        x=[0, 0, 2, 1, 3, 3],
        y=[0, 0, 1, 2, 0, 0],
        p=[1, 1, 0, 1, 0, 1],
    )
    fr = events_to_frames(ev, (3, 4), n_bins=2)  # window [100, 200): bins [100,150), [150,200)
    assert fr.shape == (2, 2, 3, 4) and fr.dtype == np.float32
    assert fr.sum() == 6
    assert fr[0, 1, 0, 0] == 2 and fr[0, 0, 1, 2] == 1
    assert fr[1, 1, 2, 1] == 1 and fr[1, 0, 0, 3] == 1 and fr[1, 1, 0, 3] == 1
    # one bin = the whole stream
    np.testing.assert_array_equal(events_to_frames(ev, (3, 4), 1)[0], fr.sum(axis=0))
    # explicit window leaves out events outside it
    part = events_to_frames(ev, (3, 4), 1, t_start=150, t_end=200)
    assert part.sum() == 3
    # dict input works the same
    as_dict = {k: ev[k] for k in ("t", "x", "y", "p")}
    np.testing.assert_array_equal(events_to_frames(as_dict, (3, 4), 2), fr)
    # random streams: every event counted once, for any n_bins
    n = 500
    rnd = make_events(RNG.integers(0, 10_000, n), RNG.integers(0, 34, n), RNG.integers(0, 34, n), RNG.integers(0, 2, n))
    for bins in (1, 3, 7, 64):
        f = events_to_frames(rnd, (34, 34), bins)
        assert f.sum() == n
        np.testing.assert_array_equal(f.sum(axis=(0, 1)), np.histogram2d(rnd["y"], rnd["x"], bins=34, range=[[0, 34], [0, 34]])[0])
    assert events_to_frames(rnd[:0], (34, 34), 4).sum() == 0
    with pytest.raises(FormatError, match="outside frame shape"):
        events_to_frames(ev, (3, 3), 2)


# ---------------------------------------------------------------- bundled digits and resolver

def test_digits_shapes_and_split():
    xa, ya = load_digits("all")
    assert xa.shape == (1797, 1, 8, 8) and xa.dtype == np.float32 and ya.dtype == np.int64
    assert xa.min() == 0.0 and xa.max() == 1.0
    assert np.array_equal(xa * 16, np.round(xa * 16))  # values k/16
    assert set(np.unique(ya)) == set(range(10))
    tr, te = digits_split_indices("train"), digits_split_indices("test")
    assert len(te) == 599 and len(tr) == 1198
    assert np.intersect1d(tr, te).size == 0
    assert np.array_equal(np.union1d(tr, te), np.arange(1797))
    xt, yt = load_digits("test")
    assert xt.shape == (599, 1, 8, 8)
    np.testing.assert_array_equal(xt, xa[te])
    np.testing.assert_array_equal(yt, ya[te])
    # stratified: each class has one third (rounded) of its images in test
    per_all, per_test = np.bincount(ya, minlength=10), np.bincount(yt, minlength=10)
    assert np.all(np.abs(per_test - per_all / 3) <= 0.5 + 1e-9)
    # first image of the source file is a 0
    assert ya[0] == 0 and xa[0, 0, 0, 2] == 5 / 16


def test_digits_reproduces_stored_split():
    from evsnn.datasets._make_digits import stratified_split

    _, ya = load_digits("all")
    tr, te = stratified_split(ya.astype(np.uint8))
    assert np.array_equal(te, digits_split_indices("test"))
    assert np.array_equal(tr, digits_split_indices("train"))


def test_load_dataset_names():
    for spec, n in [("digits", 599), ("DIGITS-TEST", 599), ("digits-train", 1198), ("digits-all", 1797)]:
        x, y = load_dataset(spec)
        assert x.shape == (n, 1, 8, 8) and y.shape == (n,)
    assert "digits" in known_names() and "mnist:<folder>" in known_names()
    with pytest.raises(FormatError) as err:
        load_dataset("imagenet")
    msg = str(err.value)
    assert "\n" not in msg and "digits" in msg and "cifar10:<folder>" in msg
    assert isinstance(err.value, ValueError)
    with pytest.raises(FormatError, match="needs a folder"):
        load_dataset("mnist:")
    with pytest.raises(FormatError, match="unknown split"):
        load_digits("val")
