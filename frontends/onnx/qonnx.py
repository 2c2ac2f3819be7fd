"""QONNX quantizers ``Quant``, ``BipolarQuant``, ``Trunc`` (domains ``qonnx.custom_op.general``, ``onnx.brevitas``).

Semantics (QONNX spec / ``qonnx.custom_op.general``):

- ``Quant(x, scale, zeropt, bitwidth)``, attributes ``signed`` (default 1),
  ``narrow`` (default 0), ``rounding_mode`` (default ``ROUND`` = half to
  even): y = (round(clamp(x/s + zp, qmin, qmax)) − zp)·s, with
  [qmin, qmax] = [−2^(b−1) (+1 if narrow), 2^(b−1) − 1] signed and
  [0, 2^b − 1 (−1 if narrow)] unsigned. A 1-bit signed Quant is bipolar.
  On constants any of ROUND, HALF_UP, FLOOR, CEIL; on a data tensor
  (per-tensor, integer zero point) ROUND, HALF_UP or FLOOR: it becomes the
  same chain tokens as a QDQ pair, hence a ``QuantAct``.
- ``BipolarQuant(x, scale)``: y = s·(x ≥ 0 ? 1 : −1); constants only (a ±1
  activation is not a quantized ReLU).
- ``Trunc(x, scale, zeropt, in_bits, out_scale, out_zeropt, out_bits)``:
  y = (rnd(clamp(round(x/s + zp)/2^k, qmin, qmax)) − zp/2^k)·out_scale with
  2^k = 2^round(log2(out_scale/s)); constants only (on data it rounds twice).

Constants are computed in float32 as QONNX's NumPy executor does.
"""

from __future__ import annotations

import numpy as np

from evsnn.frontends.onnx import quantizers as Q
from evsnn.frontends.onnx.ops import attrs, const_evaluator, converter

DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas")
_ROUND = {"ROUND": np.rint, "HALF_EVEN": np.rint, "FLOOR": np.floor, "CEIL": np.ceil,
          "HALF_UP": lambda y: np.floor(y + np.float32(0.5))}


def int_range(signed: bool, narrow: bool, bits: int) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1 - int(narrow)


def _const(ctx, node, idx: int, what: str) -> np.ndarray:
    name = node.input[idx] if idx < len(node.input) else ""
    c = ctx.const(name) if name else None
    if c is None:
        raise ctx.fail(node, f"{what} ({name!r}) must be a constant initializer")
    return c


def _mode(ctx, node, default: str = "ROUND") -> str:
    mode = str(attrs(node).get("rounding_mode", default)).upper()
    if mode not in _ROUND:
        raise ctx.fail(node, f"rounding_mode {mode!r} is not supported ({', '.join(_ROUND)})")
    return mode


def _quant_params(ctx, node):
    at = attrs(node)
    signed, narrow = bool(at.get("signed", 1)), bool(at.get("narrow", 0))
    bits = _const(ctx, node, 3, "bitwidth")
    try:
        if bits.size != 1 or float(bits.reshape(())) != int(bits.reshape(())) or not 1 <= int(bits.reshape(())) <= 32:
            raise Q.QuantError(f"bitwidth {bits.reshape(-1)[:3].tolist()} must be one integer in [1, 32]")
        b = int(bits.reshape(()))
        scale = Q.check_scale(_const(ctx, node, 1, "scale"))
        lo, hi = int_range(signed, narrow, b)
        zp = np.asarray(_const(ctx, node, 2, "zeropt"), dtype=np.float32)
        if not np.all(np.isfinite(zp)):
            raise Q.QuantError(f"zero point {zp.reshape(-1)[:3].tolist()} must be finite")
    except Q.QuantError as e:
        raise ctx.fail(node, str(e)) from None
    return scale, zp, lo, hi, b, signed


@const_evaluator("Quant", domains=DOMAINS)
def quant_const(ctx, node) -> list[np.ndarray]:
    x = np.asarray(ctx.const(node.input[0]), dtype=np.float32)
    scale, zp, lo, hi, bits, signed = _quant_params(ctx, node)
    try:
        np.broadcast_shapes(x.shape, scale.shape, zp.shape)
    except ValueError:
        raise ctx.fail(node, f"scale {scale.shape} / zeropt {zp.shape} do not broadcast to {x.shape}") from None
    y = x / scale + zp
    if bits == 1 and signed:
        y = np.where(y >= 0, np.float32(1), np.float32(-1))
    else:
        y = _ROUND[_mode(ctx, node)](np.clip(y, np.float32(lo), np.float32(hi)))
    return [((y - zp) * scale).astype(np.float64)]


@converter("Quant", since=1, domains=DOMAINS)
def quant(ctx, node) -> None:
    """Quant on a data tensor (per tensor) → the same tokens as Q → DQ."""
    scale, zp, lo, hi, bits, signed = _quant_params(ctx, node)
    mode = _mode(ctx, node)
    ctx.data(node, 0)
    if bits == 1 and signed:
        raise ctx.fail(node, "a 1-bit signed (bipolar) activation is not supported; evsnn converts quantized "
                             "ReLUs (unsigned, or signed after a ReLU)")
    if scale.size != 1 or zp.size != 1:
        raise ctx.fail(node, "per-channel quantization of an activation is not supported (per-tensor only)")
    z = float(zp.reshape(()))
    if z != round(z):
        raise ctx.fail(node, f"zero point {z} of an activation must be an integer")
    if not lo <= z <= hi:
        raise ctx.fail(node, f"zero point {z:g} is outside the {bits}-bit range [{lo}, {hi}]")
    rounding = {"ROUND": "half_even", "HALF_EVEN": "half_even", "HALF_UP": "half_up", "FLOOR": "floor"}.get(mode)
    if rounding is None:
        raise ctx.fail(node, f"rounding_mode {mode} on an activation is not supported (ROUND, HALF_UP or FLOOR)")
    s = float(scale.reshape(()))
    name = ctx.onnx_name(node)
    toks = Q.data_tokens(name, node.output[0], s, z, lo, hi, rounding, zp_in=z)
    toks += Q.dequant_tokens(name, node.output[0], s, z, None)
    ctx.extend(node, node.input[0], toks)


@const_evaluator("BipolarQuant", domains=DOMAINS)
def bipolar_const(ctx, node) -> list[np.ndarray]:
    x = np.asarray(ctx.const(node.input[0]), dtype=np.float32)
    try:
        scale = Q.check_scale(_const(ctx, node, 1, "scale"))
    except Q.QuantError as e:
        raise ctx.fail(node, str(e)) from None
    return [(np.where(x >= 0, np.float32(1), np.float32(-1)) * scale).astype(np.float64)]


@converter("BipolarQuant", since=1, domains=DOMAINS)
def bipolar(ctx, node) -> None:
    raise ctx.fail(node, "BipolarQuant on an activation (±1 outputs) is not supported; only on constant weights")


@const_evaluator("Trunc", domains=DOMAINS)
def trunc_const(ctx, node) -> list[np.ndarray]:
    x = np.asarray(ctx.const(node.input[0]), dtype=np.float32)
    at = attrs(node)
    try:
        scale = Q.check_scale(_const(ctx, node, 1, "scale"))
        out_scale = Q.check_scale(_const(ctx, node, 4, "output scale"))
    except Q.QuantError as e:
        raise ctx.fail(node, str(e)) from None
    zp = np.asarray(_const(ctx, node, 2, "zeropt"), dtype=np.float32)
    out_bits = int(np.asarray(_const(ctx, node, 6, "output bitwidth")).reshape(()))
    lo, hi = int_range(bool(at.get("signed", 1)), bool(at.get("narrow", 0)), out_bits)
    y = np.rint(x / scale + zp)
    k = np.float32(2.0) ** np.rint(np.log2(out_scale / scale))
    y = _ROUND[_mode(ctx, node, "FLOOR")](np.clip(y / k, np.float32(lo), np.float32(hi)))
    return [((y - zp / k) * out_scale).astype(np.float64)]


@converter("Trunc", since=1, domains=DOMAINS)
def trunc(ctx, node) -> None:
    raise ctx.fail(node, "Trunc on an activation (a second rounding of already rounded values) is not supported; "
                         "only on constants")
