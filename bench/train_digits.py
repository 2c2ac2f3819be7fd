"""Train the bundled quantized CNN on the bundled 8×8 digits and export it to ONNX and Keras.

    python bench/train_digits.py                      # writes evsnn/data/digits_cnn.{onnx,keras,json}
    python bench/train_digits.py --out-dir /tmp/m --epochs 2 --max-batches 3

Needs the ``torch`` extra (``pip install torch==2.13.0``) and, for the Keras
file, ``keras>=3`` (run with the torch backend; this script sets
``KERAS_BACKEND=torch`` unless it is already set).

Model (input 1×8×8, L = 7 levels, floor quantizer, so the same file serves
casc and bitserial with K = 3 bits)::

    Conv(1→16, 3×3, pad 1, no bias) + BN + QuantReLU(L)
    Conv(16→32, 3×3, stride 2, pad 1, no bias) + BN + QuantReLU(L)
    Flatten (32·4·4 = 512) → Dense(512→10)

Training: Adam (lr 3e-3, cosine decay), batch 64, 20 epochs over the 1,198
training images, cross-entropy (+ β·mean popcount when ``--beta`` > 0), λ of
each QuantReLU trained from 4.0 (QCFS). Deterministic: the seed fixes the
initial weights and the batch order, ``torch.use_deterministic_algorithms``
is on and torch runs on one thread (float sums then do not depend on the
machine's core count). Takes a few seconds on one CPU core.

Exports (model in eval mode): ONNX with the legacy exporter (``dynamo=False``,
opset 17, dynamic batch axis; BN folded by the exporter) and a Keras 3
``.keras`` file with the same layers (``evsnn.keras.QuantReLU``, BN kept as
``BatchNormalization``, ``ZeroPadding2D`` + ``valid`` for the stride-2 conv so
its padding matches PyTorch's, the Dense rows permuted from NCHW to NHWC
flattening order). Both files are checked against PyTorch; the JSON file
records the seed, the recipe, λ and the accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "evsnn" / "data"
IN_SHAPE = (1, 8, 8)
DEFAULTS = dict(levels=7, epochs=20, batch_size=64, lr=3e-3, threshold=4.0, seed=0, beta=0.0,
                widths=(16, 32), round_half=False)


def _torch():
    try:
        import torch
    except ImportError:
        sys.exit("bench/train_digits.py needs PyTorch: pip install 'evsnn[torch]' (torch==2.13.0)")
    return torch


def build_model(levels: int = 7, in_shape=IN_SHAPE, classes: int = 10, widths=(16, 32), threshold: float = 4.0,
                round_half: bool = False):
    """The small quantized CNN as an ``nn.Sequential`` (see the module docstring)."""
    _torch()
    from torch import nn

    from evsnn.torch import QuantReLU

    c, h, w = in_shape
    w1, w2 = widths
    ho, wo = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    return nn.Sequential(
        nn.Conv2d(c, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), QuantReLU(levels, threshold, round_half),
        nn.Conv2d(w1, w2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w2),
        QuantReLU(levels, threshold, round_half),
        nn.Flatten(), nn.Linear(w2 * ho * wo, classes),
    )


def train_model(model, x: np.ndarray, y: np.ndarray, epochs: int = 20, batch_size: int = 64, lr: float = 3e-3,
                seed: int = 0, beta: float = 0.0, max_batches: int | None = None, log=None) -> dict:
    """Train ``model`` in place on float32 ``x`` (N, C, H, W), int64 ``y``; returns a small history dict.

    ``beta`` > 0 adds the popcount regularizer β·mean popcount
    (:func:`evsnn.torch.popcount_penalty`). ``max_batches`` stops after that
    many optimizer steps in total (for tests). Deterministic for a given seed.
    """
    torch = _torch()
    from torch import nn

    from evsnn.torch import popcount_penalty

    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(seed)
    X, Y = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    steps_per_epoch = (len(X) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch if max_batches is None else min(max_batches, epochs * steps_per_epoch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(total, 1))
    hist = {"loss": [], "penalty": [], "steps": 0}
    step = 0
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(X), generator=gen)
        run_loss, run_pen, nb = 0.0, 0.0, 0
        for i in range(0, len(X), batch_size):
            if step >= total:
                break
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
            pen = popcount_penalty(model, beta) if beta > 0 else None
            full = loss + pen if pen is not None else loss
            opt.zero_grad()
            full.backward()
            opt.step()
            sched.step()
            step += 1
            nb += 1
            run_loss += float(loss.detach())
            run_pen += float(pen.detach()) if pen is not None else 0.0
        if nb:
            hist["loss"].append(run_loss / nb)
            hist["penalty"].append(run_pen / nb)
            if log:
                pen_txt = f", penalty {run_pen / nb:.4f}" if beta else ""
                log(f"epoch {ep + 1}/{epochs}: loss {run_loss / nb:.4f}{pen_txt}")
        if step >= total:
            break
    hist["steps"] = step
    model.eval()
    return hist


def predict(model, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Logits (N, classes) of ``model`` in eval mode, float32."""
    torch = _torch()
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))).numpy())
    return np.concatenate(out) if out else np.zeros((0,))


def thresholds(model) -> list[float]:
    from evsnn.torch import quant_modules

    return [float(m.threshold.detach()) for m in quant_modules(model)]


def graph_of(model, in_shape=IN_SHAPE, name: str = "digits_cnn"):
    """AnnGraph of the trained model built directly from the torch weights (BN folded, float64)."""
    from evsnn.torch import to_graph

    return to_graph(model, in_shape, name)


# ---------------------------------------------------------------- Keras export

def keras_model(model, in_shape=IN_SHAPE):
    """The same network in Keras 3 (NHWC) with the trained weights copied in."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    from evsnn.keras import QuantReLU as KQuantReLU
    from evsnn.torch import QuantReLU

    c, h, w = in_shape
    mods = list(model)
    conv1, bn1, q1, conv2, bn2, q2, _flat, fc = mods
    assert isinstance(q1, QuantReLU) and isinstance(q2, QuantReLU)

    def bn_layer(bn, name):
        return keras.layers.BatchNormalization(epsilon=bn.eps, momentum=1.0 - bn.momentum, name=name)

    km = keras.Sequential([
        keras.Input((h, w, c), name="input"),
        keras.layers.Conv2D(conv1.out_channels, 3, padding="same", use_bias=False, name="conv1"),
        bn_layer(bn1, "bn1"),
        KQuantReLU(q1.levels, float(q1.threshold.detach()), q1.round_half, name="act1"),
        keras.layers.ZeroPadding2D(1, name="pad2"),
        keras.layers.Conv2D(conv2.out_channels, 3, strides=2, padding="valid", use_bias=False, name="conv2"),
        bn_layer(bn2, "bn2"),
        KQuantReLU(q2.levels, float(q2.threshold.detach()), q2.round_half, name="act2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(fc.out_features, name="fc"),
    ], name="digits_cnn")

    def npf(t):
        return t.detach().cpu().numpy().astype(np.float32)

    km.get_layer("conv1").set_weights([npf(conv1.weight).transpose(2, 3, 1, 0)])
    km.get_layer("conv2").set_weights([npf(conv2.weight).transpose(2, 3, 1, 0)])
    for bn, nm in ((bn1, "bn1"), (bn2, "bn2")):
        km.get_layer(nm).set_weights([npf(bn.weight), npf(bn.bias), npf(bn.running_mean), npf(bn.running_var)])
    c2 = conv2.out_channels
    ho, wo = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    wfc = npf(fc.weight).reshape(fc.out_features, c2, ho, wo).transpose(2, 3, 1, 0).reshape(-1, fc.out_features)
    km.get_layer("fc").set_weights([wfc, npf(fc.bias)])
    return km


def keras_predict(km, x: np.ndarray) -> np.ndarray:
    """Keras logits for NCHW ``x`` (transposed to the model's NHWC)."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(km(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), training=False)))


# ---------------------------------------------------------------- main

def onnx_predict(path, x: np.ndarray) -> np.ndarray | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def ann_accuracy(graph, x, y) -> float:
    from evsnn.reference import ann_forward

    return float((ann_forward(graph, x).reshape(len(x), -1).argmax(1) == y).mean())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default=str(DATA_DIR), help="where to write digits_cnn.{onnx,keras,json} "
                   "(default: the bundled evsnn/data)")
    p.add_argument("--name", default="digits_cnn", help="file stem (default digits_cnn)")
    p.add_argument("--levels", type=int, default=DEFAULTS["levels"], help="quantization levels L (default 7)")
    p.add_argument("--round-half", action="store_true", help="round-half (QCFS) quantizer instead of floor")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--threshold", type=float, default=DEFAULTS["threshold"], help="initial λ of every QuantReLU")
    p.add_argument("--beta", type=float, default=DEFAULTS["beta"], help="popcount regularizer weight β (default 0)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many optimizer steps (tests)")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras file")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX file")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    log = (lambda *s: None) if a.quiet else (lambda *s: print(*s, file=sys.stderr))

    torch = _torch()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    from evsnn.datasets import load_digits

    x, y = load_digits("train")
    xt, yt = load_digits("test")
    model = build_model(a.levels, threshold=a.threshold, round_half=a.round_half)
    t0 = time.perf_counter()
    hist = train_model(model, x, y, a.epochs, a.batch_size, a.lr, a.seed, a.beta, a.max_batches, log)
    secs = time.perf_counter() - t0
    logits = predict(model, xt)
    acc_torch = float((logits.argmax(1) == yt).mean())
    acc_train = float((predict(model, x).argmax(1) == y).mean())
    graph = graph_of(model)
    acc_ann = ann_accuracy(graph, xt, yt)
    log(f"trained {hist['steps']} steps in {secs:.1f} s: test accuracy torch {acc_torch:.4f}, "
        f"quantized ANN (float64 graph) {acc_ann:.4f}, train {acc_train:.4f}; λ = {thresholds(model)}")

    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": a.name, "dataset": "evsnn bundled digits (1198 train / 599 test)", "input_shape": list(IN_SHAPE),
        "architecture": "Conv(1-16,3,p1)+BN+QuantReLU, Conv(16-32,3,s2,p1)+BN+QuantReLU, Flatten, Dense(512-10)",
        "levels": a.levels, "quantizer": "round-half" if a.round_half else "floor", "thresholds": thresholds(model),
        "seed": a.seed, "epochs": a.epochs, "steps": hist["steps"], "batch_size": a.batch_size, "lr": a.lr,
        "optimizer": "Adam, cosine decay", "threshold_init": a.threshold, "beta": a.beta,
        "torch_version": torch.__version__,
        "accuracy": {"train_torch": acc_train, "test_torch": acc_torch, "test_ann": acc_ann},
    }
    files = {}
    if not a.no_onnx:
        from evsnn.torch import export_onnx

        path = out / f"{a.name}.onnx"
        export_onnx(model, path, IN_SHAPE)
        ort_logits = onnx_predict(path, xt)
        if ort_logits is not None:
            meta["accuracy"]["test_onnxruntime"] = float((ort_logits.argmax(1) == yt).mean())
            meta["onnx_max_abs_diff"] = float(np.abs(ort_logits - logits).max())
            log(f"onnx: {path} ({path.stat().st_size} bytes), onnxruntime accuracy "
                f"{meta['accuracy']['test_onnxruntime']:.4f}, max |Δ logits| vs torch {meta['onnx_max_abs_diff']:.2e}")
        files["onnx"] = str(path)
    if not a.no_keras:
        path = out / f"{a.name}.keras"
        with warnings.catch_warnings():  # keras' torch backend: NumPy 2 __array__(copy=) deprecation noise
            warnings.simplefilter("ignore", DeprecationWarning)
            km = keras_model(model)
            km.save(path)
            kl = keras_predict(km, xt)
        meta["accuracy"]["test_keras"] = float((kl.argmax(1) == yt).mean())
        meta["keras_max_abs_diff"] = float(np.abs(kl - logits).max())
        meta["keras_argmax_agree"] = float((kl.argmax(1) == logits.argmax(1)).mean())
        log(f"keras: {path} ({path.stat().st_size} bytes), accuracy {meta['accuracy']['test_keras']:.4f}, "
            f"max |Δ logits| vs torch {meta['keras_max_abs_diff']:.2e}")
        files["keras"] = str(path)
    with open(out / f"{a.name}.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    files["json"] = str(out / f"{a.name}.json")
    meta["files"] = files
    return meta


if __name__ == "__main__":
    main()
