"""ONNX ``QuantizeLinear`` / ``DequantizeLinear`` (QDQ), opsets 11 and newer: see :mod:`.quantizers` for the semantics.

On constants (weights ``Q → [Clip] → DQ`` of Brevitas, ``DQ(int8 initializer)``
and ``DQ(int32 bias)`` of onnxruntime) both ops are evaluated as onnxruntime
computes them, per tensor or per axis. On a data tensor they queue chain
tokens: per tensor only (a per-channel activation quantizer has no single λ).

Attributes: ``axis`` (default 1), ``saturate`` (float8 only; integer types
always saturate), ``block_size`` (opset 21+: blocked quantization, refused),
``output_dtype`` (opset 21+: the integer type when no zero point is given),
``precision`` (opset 25: the float type of the computation; float32 or
absent only).
"""

from __future__ import annotations

import numpy as np
import onnx

from evsnn.frontends.onnx import quantizers as Q
from evsnn.frontends.onnx.ops import attrs, const_evaluator, converter

_OPS = ("QuantizeLinear", "DequantizeLinear")


def _params(ctx, node, rank: int | None, shape: tuple | None):
    """(scale, zero point, qmin, qmax, axis, type) of a QDQ node; ConversionError on malformed ones."""
    at = attrs(node)
    if int(at.get("block_size", 0) or 0):
        raise ctx.fail(node, f"block_size={at['block_size']}: blocked quantization is not supported "
                             "(per-tensor or per-axis only)")
    prec = at.get("precision", 0)
    if prec not in (0, onnx.TensorProto.FLOAT):
        raise ctx.fail(node, f"precision={Q.type_name(prec)} is not supported (float32)")
    s_name = node.input[1] if len(node.input) > 1 else ""
    if not s_name or ctx.const(s_name) is None:
        raise ctx.fail(node, "the scale must be a constant initializer")
    z_name = node.input[2] if len(node.input) > 2 else ""
    zp = ctx.const(z_name) if z_name else None
    if z_name and zp is None:
        raise ctx.fail(node, "the zero point must be a constant initializer")
    try:
        if zp is not None:
            if zp.dtype not in Q.NP_TYPES:
                raise Q.QuantError(f"zero point of type {zp.dtype} is not supported "
                                   "(uint8, int8, uint16, int16, and int32 for DequantizeLinear)")
            t = Q.NP_TYPES[zp.dtype]
        elif node.op_type == "QuantizeLinear":
            t = int(at.get("output_dtype", 0) or onnx.TensorProto.UINT8)
        else:
            x = ctx.const(node.input[0])
            t = Q.NP_TYPES.get(x.dtype, onnx.TensorProto.INT32) if x is not None else onnx.TensorProto.INT32
        if node.op_type == "QuantizeLinear" and t == onnx.TensorProto.INT32:
            raise Q.QuantError("QuantizeLinear to int32 is not supported")
        lo, hi = Q.type_range(t, ctx.opset)
        scale = Q.check_scale(ctx.const(s_name))
        zp = Q.check_zero_point(np.zeros(scale.shape) if zp is None else zp, lo, hi)
        if zp.shape != scale.shape and zp.size != 1:
            raise Q.QuantError(f"zero point of shape {zp.shape} does not match the scale's {scale.shape}")
        axis = int(at.get("axis", 1))
        if shape is not None:
            Q.broadcast_axis(scale, shape, axis)
        elif scale.size > 1:
            raise Q.QuantError("per-axis (per-channel) quantization of an activation is not supported; "
                               "only constants (weights) may be quantized per axis")
    except Q.QuantError as e:
        raise ctx.fail(node, str(e)) from None
    return scale, zp, lo, hi, axis, t


@const_evaluator(*_OPS)
def qdq_const(ctx, node) -> list[np.ndarray]:
    """Fold QuantizeLinear/DequantizeLinear of a constant (float32 arithmetic as onnxruntime)."""
    x = ctx.const(node.input[0])
    scale, zp, lo, hi, axis, t = _params(ctx, node, x.ndim, x.shape)
    if node.op_type == "QuantizeLinear":
        return [Q.quantize_linear(x, scale, zp, lo, hi, axis)]
    return [Q.dequantize_linear(x, scale, zp, axis)]


@converter("QuantizeLinear", since=10)
def quantize_linear(ctx, node) -> None:
    """Q on a data tensor: ``A(1/s) A(1, ½) F(half_even) A(1, zp) C(qmin, qmax)`` tokens."""
    scale, zp, lo, hi, _, _ = _params(ctx, node, None, None)
    ctx.data(node, 0)
    toks = Q.data_tokens(ctx.onnx_name(node), node.output[0], float(scale.reshape(-1)[0]),
                         float(zp.reshape(-1)[0]), lo, hi, "half_even")
    ctx.extend(node, node.input[0], toks)


@converter("DequantizeLinear", since=10)
def dequantize_linear(ctx, node) -> None:
    """DQ on a data tensor: ``A(1, −zp) A(s)`` tokens; the integer input is the file's level tensor."""
    scale, zp, _, _, _, _ = _params(ctx, node, None, None)
    ctx.data(node, 0)
    toks = Q.dequant_tokens(ctx.onnx_name(node), node.output[0], float(scale.reshape(-1)[0]),
                            float(zp.reshape(-1)[0]), node.input[0])
    ctx.extend(node, node.input[0], toks)
