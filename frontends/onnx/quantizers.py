"""Every integer quantizer form of an ONNX file turned into the same chain tokens (and so the same ``QuantAct``).

Forms read (the op converters live in :mod:`.qdq` and :mod:`.qonnx`):

- ONNX ``QuantizeLinear`` (Q) / ``DequantizeLinear`` (DQ), every opset evsnn reads (11+):
  q = saturate(rint(x / s) + zp) to the integer type's range, x̂ = (q − zp)·s;
  ``rint`` rounds half to even (the ONNX spec). A ``Clip`` on the integers
  between Q and DQ narrows the range (Brevitas' ``export_onnx_qcdq``).
- QONNX ``Quant`` (domains ``qonnx.custom_op.general`` and ``onnx.brevitas``):
  y = (round(clamp(x / s + zp, qmin, qmax)) − zp)·s, the range from
  ``bitwidth``, ``signed`` and ``narrow``, ``round`` from ``rounding_mode``.
  Clamping before or after rounding is the same (integer bounds).
- The float-arithmetic spelling (Mul → Floor/Round → Clip → Mul) is read by
  :mod:`.ops` into the same tokens.

As tokens (see :mod:`.chain`), a quantizer on a data tensor is
``A(1/s, zp′) [A(1, ½)] F(rounding) A(1, zp″) C(qmin, qmax) … A(1, −zp) A(s, 0)``,
which :func:`~.chain.plan_chain` rewrites into ``QuantAct(L, λ = s·L, φ)``
with L the integer range actually reachable after the ReLU or clip in front
of it (uint8 zp 0 → L = 255; Brevitas ``Clip(0, 7)`` → L = 7; int8 zp 0
after a ReLU → L = 127). Round-half-even becomes ``rounding="half_even"``
(φ = ½): the ANN oracle reproduces the file's ties exactly, and so do casc
and bitserial (their populations take the quantizer's rounding).

Constant tensors (weights, biases) are folded with :func:`quantize_linear`
and :func:`dequantize_linear` in float32 exactly as onnxruntime computes them
(x / s in float32, rint, + zp, saturate; (q − zp)·s in float32).

Quantizer tokens carry ``quant`` (a dict: ``node``, ``role`` "q" or "dq",
``scale``, ``zero_point``, ``qmin``, ``qmax``, ``rounding``, and for DQ the
integer ``tensor`` it reads) so that the frontend can lift a quantizer on the
graph input (applied to the data) or on the logits (a readout quantization)
out of the network; see :func:`split_input` and :func:`split_readout`.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from evsnn.frontends.onnx.chain import Token
from evsnn.validate.onnx_model import dtype_name

# integer element types of QuantizeLinear/DequantizeLinear: range and the opset that introduced them
INT_TYPES = {
    onnx.TensorProto.UINT8: (0, 255, 10), onnx.TensorProto.INT8: (-128, 127, 10),
    onnx.TensorProto.UINT16: (0, 65535, 21), onnx.TensorProto.INT16: (-32768, 32767, 21),
    onnx.TensorProto.UINT4: (0, 15, 21), onnx.TensorProto.INT4: (-8, 7, 21),
    onnx.TensorProto.INT32: (-(2 ** 31), 2 ** 31 - 1, 10),  # DequantizeLinear of int32 biases
}
NP_TYPES = {np.dtype(np.uint8): onnx.TensorProto.UINT8, np.dtype(np.int8): onnx.TensorProto.INT8,
            np.dtype(np.uint16): onnx.TensorProto.UINT16, np.dtype(np.int16): onnx.TensorProto.INT16,
            np.dtype(np.int32): onnx.TensorProto.INT32}
try:  # onnx reads int4/uint4 tensors as ml_dtypes' int4/uint4
    import ml_dtypes

    NP_TYPES.update({np.dtype(ml_dtypes.int4): onnx.TensorProto.INT4,
                     np.dtype(ml_dtypes.uint4): onnx.TensorProto.UINT4})
except ImportError:  # pragma: no cover
    pass
ROUNDINGS = {"ROUND": "half_even", "HALF_EVEN": "half_even", "HALF_UP": "half_up", "FLOOR": "floor"}
SUPPORTED_HELP = ("supported quantizers: QuantizeLinear/DequantizeLinear (opsets 11 and newer; per-tensor on "
                  "activations, per-tensor or per-axis on constants; uint8/int8/uint16/int16/uint4/int4; "
                  "no block_size), "
                  "QONNX Quant (rounding_mode ROUND, HALF_UP or FLOOR on activations; any on constants), "
                  "BipolarQuant and Trunc on constants")


class QuantError(Exception):
    """A quantizer's parameters are unusable; the converter adds the node name."""


def type_name(t: int) -> str:
    return dtype_name(t)


def type_range(t: int, opset: int) -> tuple[int, int]:
    """(qmin, qmax) of integer element type ``t``; QuantError for float8/other types or too old an opset."""
    if t not in INT_TYPES:
        raise QuantError(f"integer type {type_name(t)} is not supported (uint8, int8, uint16, int16, uint4, int4)")
    lo, hi, since = INT_TYPES[t]
    if opset < since:
        raise QuantError(f"type {type_name(t)} needs opset ≥ {since}, the model has opset {opset}")
    return lo, hi


def check_scale(scale: np.ndarray) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float32)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        bad = s.reshape(-1)[~(np.isfinite(s.reshape(-1)) & (s.reshape(-1) > 0))][:3].tolist() if s.size else "empty"
        raise QuantError(f"scale must be finite and > 0, got {bad}")
    return s


def check_zero_point(zp: np.ndarray, lo: int, hi: int) -> np.ndarray:
    z = np.asarray(zp, dtype=np.float64)
    if not np.all(np.isfinite(z)) or np.any(z != np.round(z)) or np.any(z < lo) or np.any(z > hi):
        raise QuantError(f"zero point {z.reshape(-1)[:3].tolist()} is not an integer in [{lo}, {hi}]")
    return z


def broadcast_axis(p: np.ndarray, shape: tuple, axis: int | None) -> np.ndarray:
    """Scale/zero point ``p`` (scalar or 1-D along ``axis``) shaped to broadcast against ``shape``."""
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    if p.ndim != 1 or axis is None:
        raise QuantError(f"scale/zero point of shape {p.shape} must be a scalar or 1-D along axis")
    ax = axis + len(shape) if axis < 0 else axis
    if not 0 <= ax < len(shape) or shape[ax] != p.shape[0]:
        raise QuantError(f"per-axis scale/zero point of length {p.shape[0]} does not match axis {axis} "
                         f"of a tensor of shape {tuple(shape)}")
    return p.reshape([-1 if i == ax else 1 for i in range(len(shape))])


def quantize_linear(x, scale, zp, lo: int, hi: int, axis: int | None, rounding: str = "half_even") -> np.ndarray:
    """Integer levels of x as onnxruntime computes them (float32 division, rint, + zp, saturate), as float64."""
    x = np.asarray(x, dtype=np.float32)
    s = broadcast_axis(np.asarray(scale, dtype=np.float32), x.shape, axis)
    z = broadcast_axis(np.asarray(zp, dtype=np.float32), x.shape, axis)
    y = x / s
    y = np.rint(y) if rounding == "half_even" else np.floor(y + np.float32(0.5)) if rounding == "half_up" \
        else np.floor(y) if rounding == "floor" else np.ceil(y)
    return np.clip(y + z, lo, hi).astype(np.float64)


def dequantize_linear(q, scale, zp, axis: int | None) -> np.ndarray:
    """(q − zp)·s in float32 (onnxruntime), as float64."""
    q = np.asarray(q, dtype=np.float64)
    s = broadcast_axis(np.asarray(scale, dtype=np.float32), q.shape, axis)
    z = broadcast_axis(np.asarray(zp, dtype=np.float64), q.shape, axis)
    return ((q - z).astype(np.float32) * s).astype(np.float64)


def data_tokens(node: str, tensor: str, scale: float, zp: float, lo: int, hi: int, rounding: str,
                zp_in: float | None = None) -> list[Token]:
    """Tokens of a per-tensor quantizer x ↦ clip(round(x/s + zp_in) + zp − zp_in, lo, hi) on a data tensor.

    ``zp_in`` (QONNX adds the zero point before rounding) defaults to 0 (ONNX adds it after).
    """
    if rounding not in ("half_even", "half_up", "floor"):
        raise QuantError(f"rounding {rounding!r} of an activation is not supported (ROUND, HALF_UP or FLOOR)")
    info = {"node": node, "role": "q", "scale": float(scale), "zero_point": float(zp), "qmin": int(lo),
            "qmax": int(hi), "rounding": rounding}
    zin = 0.0 if zp_in is None else float(zp_in)
    toks = [Token("affine", node, tensor, a=1.0 / float(scale), b=zin, quant=info)]
    if rounding != "floor":
        toks.append(Token("affine", node, tensor, a=1.0, b=0.5, quant=info))
    toks.append(Token("floor", node, tensor, rounding="half_even" if rounding == "half_even" else "floor", quant=info))
    toks += [Token("affine", node, tensor, a=1.0, b=float(zp) - zin, quant=info),
             Token("clip", node, tensor, lo=float(lo), hi=float(hi), quant=info)]
    return toks


def dequant_tokens(node: str, tensor: str, scale: float, zp: float, levels_tensor: str | None) -> list[Token]:
    """Tokens of x̂ = (q − zp)·s on a data tensor (per-tensor)."""
    info = {"node": node, "role": "dq", "scale": float(scale), "zero_point": float(zp), "tensor": levels_tensor}
    return [Token("affine", node, tensor, a=1.0, b=-float(zp), quant=info),
            Token("affine", node, tensor, a=float(scale), b=0.0, quant=info)]


def _group(tokens: list[Token]) -> dict | None:
    """The quantizer spec of ``tokens`` if they are exactly one Q [integer Clips] DQ group, else None."""
    if not tokens or (tokens[0].quant or {}).get("role") != "q" or (tokens[-1].quant or {}).get("role") != "dq":
        return None
    q, dq = tokens[0].quant, tokens[-1].quant
    lo, hi = q["qmin"], q["qmax"]
    for t in tokens:
        if t.quant is None:
            if t.kind != "clip":
                return None
            lo = max(lo, math.ceil(t.lo)) if t.lo > -math.inf else lo
            hi = min(hi, math.floor(t.hi)) if t.hi < math.inf else hi
        elif t.quant is not q and t.quant is not dq:
            return None
    if np.float32(q["scale"]) != np.float32(dq["scale"]) or q["zero_point"] != dq["zero_point"]:
        raise QuantError(f"quantizer {q['node']!r} (scale {q['scale']}, zero point {q['zero_point']}) is "
                         f"dequantized by {dq['node']!r} with scale {dq['scale']}, zero point {dq['zero_point']}; "
                         "they must match")
    if lo > hi:
        raise QuantError(f"quantizer {q['node']!r}: its clips leave no integer range ([{lo}, {hi}])")
    return {"scale": q["scale"], "zero_point": q["zero_point"], "qmin": int(lo), "qmax": int(hi),
            "rounding": q["rounding"], "node": q["node"], "dequantize": dq["node"]}


def split_input(chain: list[Token]) -> tuple[dict | None, list[Token]]:
    """(input quantizer spec, rest) when ``chain`` (on the graph input) starts with a Q…DQ group."""
    for end in range(len(chain), 0, -1):
        spec = _group(chain[:end])
        if spec is not None:
            return spec, chain[end:]
    return None, chain


def split_readout(chain: list[Token]) -> tuple[dict | None, list[Token]]:
    """(readout quantizer spec, rest) when ``chain`` (on the graph output) ends with a Q…DQ group."""
    for start in range(len(chain)):
        spec = _group(chain[start:])
        if spec is not None:
            return spec, chain[:start]
    return None, chain


def levels_tensor(chain: list[Token]) -> tuple[str, float] | None:
    """(integer tensor, zero point) of the last DQ in ``chain`` that reads one: the file's own levels."""
    for t in reversed(chain):
        if t.quant and t.quant.get("role") == "dq" and t.quant.get("tensor"):
            return t.quant["tensor"], t.quant["zero_point"]
    return None
