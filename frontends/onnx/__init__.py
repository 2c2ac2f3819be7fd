"""ONNX frontend: read an ``.onnx`` file into an :class:`evsnn.ir.AnnGraph`.

Needs only the ``onnx`` package and NumPy (no runtime). Opsets 11 to the
newest the installed ``onnx`` knows (``onnx.defs.onnx_opset_version()``) are
read; converters are registered per domain, op type and opset, one module
per op family: :mod:`.ops` (layers, elementwise, structure), :mod:`.qdq`
(QuantizeLinear/DequantizeLinear), :mod:`.qonnx` (QONNX ``Quant``,
``BipolarQuant``, ``Trunc`` in domains ``qonnx.custom_op.general`` and
``onnx.brevitas``) and :mod:`.layout` (channels-last ``Transpose`` pairs);
:mod:`.quantizers` turns every integer quantizer form into the same chain
tokens (hence the same ``QuantAct``) and :mod:`.convert` holds the state.

How a model is read:

1. The file is checked at the edge by :mod:`evsnn.validate.onnx_model` (regular
   file within a size cap; parsed from bytes; names are text, nodes in
   topological order, every tensor of a known type declaring at most
   ``EVSNN_MAX_ARRAY_BYTES`` and holding the bytes its dims say; external data
   only from regular files inside the model's folder; a non-ONNX, truncated or
   unsound file is a :class:`FormatError` naming it), its opset and IR version are checked (outside the supported range: a
   :class:`ConversionError` naming the model's opset and the supported range),
   local functions are inlined, ``onnx.checker`` validates it (invalid:
   FormatError) and ``onnx.shape_inference`` (with data propagation) annotates
   tensor shapes, used for Reshape targets computed at run time and to
   cross-check the shapes evsnn derives.
2. Exactly one graph input (N, C, H, W) or (N, F) with a free or fixed batch
   axis; every other axis must be fixed (a dynamic spatial axis is a
   ConversionError). Exactly one graph output.
3. Nodes the output needs are converted in order. Initializers, ``Constant``
   nodes and any node whose inputs are all constant are evaluated with
   ``onnx.reference``, except quantizers (QDQ, QONNX), which are folded in
   float32 exactly as onnxruntime / QONNX compute them (weights written as
   ``DQ(int8)``, ``Q → Clip → DQ`` of float weights, ``DQ(int32 bias)``);
   the bytes a constant node would allocate (ConstantOfShape, Expand, Tile,
   Range, ...) are checked against ``EVSNN_MAX_ARRAY_BYTES`` first;
   ``Shape`` of a data tensor gives a constant whose batch
   entry is a marker, so exporters' ``Shape → Gather → Concat → Reshape``
   flattening resolves (arithmetic on the batch size is refused).
4. Elementwise nodes (Mul, Div, Add/Sub with a constant, Neg, Relu, Clip,
   Max/Min with a constant, Floor, Round, BatchNormalization, Identity,
   Dropout, Cast to float) are queued on their input and resolved when a
   structural node reads them (:mod:`evsnn.frontends.onnx.chain`): per-channel
   affines (BN, bias Add after MatMul) fold into the preceding Conv/Dense when
   it has no other reader, else become a depthwise 1×1 ``Conv`` (groups=C;
   a diagonal ``Dense`` on vectors); the rest must form one of ``Relu``,
   ``ClipAct(λ)`` = clip(z, 0, λ) or ``QuantAct(L, λ, φ)`` =
   λ/L·clip(⌊z·L/λ + φ⌋, 0, L), in any order exporters produce (clip before or
   after the floor, Clip or Max/Min, Mul or Div).
5. Integer quantizers on data tensors (``Q [→ Clip] → DQ``, QONNX ``Quant``)
   become the same tokens: a ``QuantAct`` with L = the integer range
   reachable after the ReLU/clip before it (uint8 zp 0 → 255, Brevitas'
   ``Clip(0, 7)`` → 7, int8 after a ReLU → 127), λ = s·L and
   ``rounding="half_even"`` (see :mod:`.quantizers` for how the SNN realises
   ties). A QDQ pair after AveragePool/Add is a quantized activation too; one
   after a MaxPool/Flatten that re-applies the quantizer its input already
   carries (onnxruntime writes those) emits nothing. A Q…DQ group on the graph
   input is ``meta["input_quant"]`` (applied to the data by
   :func:`evsnn.ir.ann.check_input` and the simulators' input check); one on
   the logits is ``meta["readout_quant"]``: the readout is simulated analog
   (noted, shown by ``evsnn inspect``). A zero point ≠ 0 or a signed range on
   a hidden activation is refused unless a ReLU in front makes [0, L] the
   reachable range.

Decisions:

- ``Round`` (ONNX: half to even) becomes the same ``rounding="half_even"``
  quantizer as ``QuantizeLinear``'s rounding, so float-arithmetic quantizers
  with ``Round`` convert exactly, ties included; an integer offset before it
  (``Round(x + k)``) is moved into the preceding bias, inside the rounding, so
  odd k keeps the file's ties too.
- Constants are folded in float64; quantizer bounds within 1e-6 (relative) of
  an integer are snapped to it, a composed scale within 1e-9 of 1 is taken as 1
  and an offset within 1e-9 of an integer as that integer (float32 constants
  make λ/L·L/λ ≠ 1 by an ulp); nothing else is approximated.
- Identity, Dropout and float Casts emit no node. An affine that has no
  Conv/Dense to fold into (e.g. input normalisation ``(x − μ)/σ``, BN after a
  pooling or an Add) becomes its own depthwise 1×1 Conv / diagonal Dense.
- A zero ``Pad`` that feeds only Conv nodes is folded into their pads
  (asymmetric pads are supported). ``ceil_mode=1`` is accepted only where it
  gives the floor-mode size. Dilation ≠ 1 is a ConversionError.
- ``Reshape``/``Flatten``/``Squeeze`` must keep the batch axis and flatten
  (C, H, W) to C·H·W (or change nothing). ``ReduceMean`` over axes [2, 3] is
  global average pooling.
- A newer opset than supported is a ConversionError (the file is fine; this
  evsnn/onnx cannot interpret its operators).
- Channels-last exports (Keras ``model.export(format="onnx")``, tf2onnx):
  ``Transpose`` pairs NCHW ↔ NHWC are folded (see :mod:`.layout`); an NHWC
  model input is recorded as ``meta["input_layout"] = "NHWC"`` and takes
  (N, H, W, C) data.
- Not supported (ConversionError naming node, op, domain and the supported
  list): every other op (Sigmoid, LSTM, Concat of data tensors, other
  Transposes, Resize, ...), tensor × tensor products, BN in training mode or
  with non-constant statistics, per-element (non per-channel) constants, a Pad
  feeding anything but Conv, other domains (com.microsoft, ai.onnx.ml),
  per-channel or blocked quantization of activations, float8 QDQ.

Names: each AnnGraph node is named after the ONNX node producing its output
(its first output tensor's name when the node name is empty); a multi-node
pattern (quantizer, MatMul+Add, Conv+BN) is named after its last ONNX node.
The input node is named after the graph input. ``graph.meta`` holds
``tensors`` ({activation node name: ONNX tensor name} for every
QuantAct/ClipAct/Relu/MaxPool, to fetch intermediate values from a runtime),
``opset``, ``producer``, ``input_tensor``, ``output_tensor``, ``batch`` (the
fixed batch size or None), ``notes``, ``levels`` ({QuantAct/MaxPool name:
{"tensor": the file's integer tensor, "zero_point"}} for QDQ activations: the
tool's own quantized levels, e.g. to fetch from onnxruntime) and, when
present, ``input_quant``, ``readout_quant``, ``input_layout`` and
``tensor_layouts``.
"""

from __future__ import annotations

import os
import warnings

import onnx
import onnx.checker
import onnx.inliner
import onnx.numpy_helper
import onnx.shape_inference

from evsnn.errors import ConversionError, FormatError
from evsnn.paths import existing_file
from evsnn.frontends.onnx import ops
from evsnn.frontends.onnx.convert import Converter, first_line
from evsnn.ir import ann as A
from evsnn.validate import onnx_model

MIN_OPSET = ops.MIN_OPSET
_MAGIC = (b"PK\x03\x04", b"\x89HDF\r\n\x1a\n", b"\x93NUMPY", b"%PDF")


def max_opset() -> int:
    """Newest default-domain opset the installed ``onnx`` knows."""
    return int(onnx.defs.onnx_opset_version())


# ---------------------------------------------------------------- files


def can_open(path: str | os.PathLike) -> bool:
    """True if ``path`` parses as an ONNX model with a graph; never raises."""
    try:
        path = os.fspath(path)
        path = existing_file(path, "a model file")
        if os.path.getsize(path) > onnx_model.max_model_bytes():
            return False
        with open(path, "rb") as f:
            data = f.read()
        if not data or any(data.startswith(m) for m in _MAGIC):
            return False
        onnx_model.parse_model(data, path)
        return True
    except Exception:
        return False


def read(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse ``path`` (with external data) through :func:`evsnn.validate.onnx_model.read_model`:
    FormatError with one line if it is not a sound ONNX model (see that module for the checks)."""
    path = os.fspath(path)
    if not os.path.lexists(path) or os.path.isdir(path):
        raise FormatError(f"{path}: {'is a directory, not a model file' if os.path.isdir(path) else 'no such file'}")
    return onnx_model.read_model(path)


def load(path: str | os.PathLike) -> A.AnnGraph:
    """Read an ONNX file into an AnnGraph (see the module docstring for what is supported)."""
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0] or "model"
    return from_model(read(path), name=name, source=os.fspath(path))


def from_model(model: onnx.ModelProto, name: str = "model", source: str = "<model>") -> A.AnnGraph:
    """Convert an in-memory ``onnx.ModelProto`` (same rules as :func:`load`)."""
    onnx_model.check_model(model, source)
    opset = _check_versions(model)
    if len(model.functions):
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as e:  # noqa: BLE001 - onnx's C++ inliner on a malformed function
            raise FormatError(f"{source}: cannot inline the model's local functions ({first_line(e)})") from None
    _check_model(model, source)
    graph = Converter(model, opset, _infer_shapes(model), source=source).run(name)
    for note in graph.meta["notes"]:
        warnings.warn(note, UserWarning, stacklevel=2)
    return graph


def _check_model(model: onnx.ModelProto, source: str) -> None:
    """onnx.checker; FormatError if the model is malformed.

    Graph outputs declared without a shape (which onnxruntime accepts, and
    which evsnn does not need) are tolerated: the check runs on a copy where
    they get an empty shape.
    """
    if any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
        model = onnx.ModelProto.FromString(model.SerializeToString())
        for o in model.graph.output:
            if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape"):
                o.type.tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise FormatError(f"{source}: invalid ONNX model ({first_line(e)})") from None


def _check_versions(model: onnx.ModelProto) -> int:
    """The model's default-domain opset; ConversionError if outside [MIN_OPSET, max_opset()]."""
    found = [imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")]
    top = max_opset()
    supported = (f"evsnn supports ONNX opsets {MIN_OPSET} to {top} "
                 f"(the newest the installed onnx {onnx.__version__} knows)")
    if not found:
        raise ConversionError(f"model imports no default-domain ONNX opset; {supported}")
    if not MIN_OPSET <= found[0] <= top:
        hint = "upgrade the onnx package" if found[0] > top else "re-export with a newer opset"
        raise ConversionError(f"model uses ONNX opset {found[0]}; {supported}; {hint}")
    if model.ir_version > onnx.IR_VERSION:
        raise ConversionError(f"model has ONNX IR version {model.ir_version}; the installed onnx "
                              f"{onnx.__version__} reads up to {onnx.IR_VERSION}; upgrade the onnx package")
    return int(found[0])


def _infer_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Tensor name → dims (int or None) from onnx.shape_inference; {} when inference fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        return {}
    g = inferred.graph
    out = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return out
