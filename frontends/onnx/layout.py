"""Channels-last (NHWC) layout transposes, as Keras' ONNX export and tf2onnx write them, folded away.

Such exporters keep activations NHWC and wrap every convolution and pooling
in ``Transpose(perm=[0, 3, 1, 2])`` → Conv/MaxPool → ``Transpose(perm=[0, 2, 3, 1])``;
biases are added on the NHWC tensor (a constant of shape (C,) on the last
axis) and ``Flatten``/``Reshape`` flatten in (H, W, C) order.

evsnn keeps every tensor NCHW. A data tensor carries a ``layout`` tag
(:class:`~.convert.Value`): ``None`` when the ONNX tensor is the NCHW value
itself, ``"NHWC"`` when it is its (0, 2, 3, 1) transpose, and for a vector an
index array ``perm`` (ONNX element i is evsnn element ``perm[i]``) when it was
flattened from an NHWC tensor. Then:

- ``Transpose`` between the two layouts only changes the tag (no node);
- elementwise ops pass the tag on; a per-channel constant is read along the
  last axis of an NHWC tensor and through ``perm`` on a vector;
- flattening an NHWC tensor emits the NCHW ``Flatten`` and the tag ``perm``;
  the ``Gemm``/``MatMul`` reading it gets its weight columns permuted, so the
  transposes end up folded into the weights;
- a graph input whose every reader is ``Transpose(perm=[0, 3, 1, 2])`` is
  channels-last: the AnnGraph input is NCHW and ``meta["input_layout"] =
  "NHWC"`` tells :func:`evsnn.ir.ann.check_input` (and the simulators'
  input check) to transpose (N, H, W, C) data;
- any other op reading a tagged tensor, and any other permutation, is a
  ConversionError naming the node.
"""

from __future__ import annotations

import numpy as np

from evsnn.frontends.onnx.ops import attrs, converter

TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]
# ops that accept a tagged tensor (their converters read ``Value.layout``)
LAYOUT_AWARE = {"Transpose", "Relu", "Clip", "Cast", "Identity", "Dropout", "Floor", "Round", "Neg", "Max", "Min",
                "Add", "Sub", "Mul", "Div", "Sum", "QuantizeLinear", "DequantizeLinear", "Quant", "Flatten",
                "Reshape", "Gemm", "MatMul", "Shape"}


def flatten_perm(shape: tuple) -> np.ndarray:
    """For an NCHW per-sample ``shape`` (C, H, W): evsnn's flat index of each (H, W, C)-ordered element."""
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def onnx_shape(v) -> tuple:
    """Per-sample shape of the ONNX tensor a Value stands for."""
    if isinstance(v.layout, str) and v.layout == "NHWC":
        c, h, w = v.shape
        return (h, w, c)
    return tuple(v.shape)


def channel_axis_value(c: np.ndarray, v):
    """A per-channel constant of an NHWC tensor or a permuted vector, in evsnn's order; None if not one."""
    if isinstance(v.layout, str) and v.layout == "NHWC":
        ch = v.shape[0]
        if c.size == ch and c.shape[-1] == ch and all(d == 1 for d in c.shape[:-1]) and c.ndim <= 4:
            return c.reshape(-1)
        return None
    if isinstance(v.layout, np.ndarray):
        n = v.shape[0]
        if c.size == n and c.shape[-1] == n and all(d == 1 for d in c.shape[:-1]) and c.ndim <= 2:
            out = np.empty(n)
            out[v.layout] = c.reshape(-1)
            return out
    return None


@converter("Transpose")
def transpose(ctx, node) -> None:
    """NCHW ↔ NHWC transposes of image tensors only change the layout tag (see the module docstring)."""
    v = ctx.data(node, 0)
    perm = [int(p) for p in attrs(node).get("perm", [])]
    if len(v.shape) == 3 and perm == TO_NHWC and v.layout is None:
        return ctx.extend(node, node.input[0], [], layout="NHWC")
    if len(v.shape) == 3 and perm == TO_NCHW and isinstance(v.layout, str) and v.layout == "NHWC":
        return ctx.extend(node, node.input[0], [], layout=None)
    raise ctx.fail(node, f"Transpose perm={perm} of a tensor of shape (N, {', '.join(map(str, onnx_shape(v)))}) "
                         "is not supported; only the channels-last pairs perm=[0, 2, 3, 1] (NCHW → NHWC) and "
                         "perm=[0, 3, 1, 2] (NHWC → NCHW) around convolutions and pooling are folded")
