"""Place a QAT library's activation quantizer in the graph as a ``QuantAct`` node.

Used by :mod:`.hgq` and :mod:`.qkeras`. Given the tensor a quantizer reads
and its :class:`~.fixed_point.ActQuant`:

- the quantizer is moved below index-only nodes (Flatten, MaxPool) to the
  value they read, and a ReLU right there is skipped: the quantizer clips at 0
  and commutes with those nodes, so q(Flatten(ReLU(z))) = Flatten(q(z)). The
  ReLU (and the old Flatten/MaxPool) are then left without readers and dropped
  by :func:`evsnn.frontends.keras.graph.build_graph`. This lets a fused
  ``activation='relu'`` and a following quantizer become one population;
- per-neuron scales (``ActQuant.pre``) become a per-channel affine before the
  ``QuantAct``, which the folding passes merge into the Conv/Dense before it;
  they must be per channel on a (C, H, W) map;
- ``ActQuant.post`` is returned in the Keras layout of the quantizer's input,
  for the reading layer to fold into its kernel (:func:`kernel_rows`), or is
  emitted as an affine after the node (:func:`apply_post`).

The node is named ``<layer>_<what>`` (e.g. ``conv2_iq``) and recorded in
``Builder.quantizers["<layer>/<what>"]`` as {"node": the QuantAct, "output": the node
holding the quantizer's value in Keras' shape (a rebuilt MaxPool/Flatten, or the
QuantAct), "hwc": (H, W, C) when the QuantAct is a vector in flattened NCHW order}.
"""

from __future__ import annotations

import numpy as np

from evsnn.frontends.keras import fixed_point as FP
from evsnn.frontends.keras.layers import Builder, LayerSpec, Tensor, _affine, fail, keras_order
from evsnn.ir import ann as A

NONNEG = (A.Relu, A.QuantAct, A.ClipAct)


def keras_to_graph(arr: np.ndarray, x: Tensor) -> np.ndarray:
    """Per-element values in Keras layout ((H, W, C) or Keras-ordered (F,)) → the graph layout of ``x``."""
    if len(x.shape) == 3:
        c, h, w = x.shape
        return np.broadcast_to(arr, (h, w, c)).transpose(2, 0, 1)
    arr = np.broadcast_to(arr, x.shape)
    return arr[keras_order(x.hwc)] if x.hwc else arr


def graph_to_keras(arr: np.ndarray, x: Tensor) -> np.ndarray:
    if len(x.shape) == 3:
        return arr.transpose(1, 2, 0)
    if not x.hwc:
        return arr
    out = np.empty_like(arr)
    out[keras_order(x.hwc)] = arr
    return out


def widths(spec: LayerSpec, x: Tensor, arrays) -> list[np.ndarray]:
    """Bit-width arrays as stored (batch axis first, Keras layout) broadcast to ``x`` in graph layout."""
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == len(x.shape) + 1:
            a = a[0]
        try:
            out.append(keras_to_graph(a, x))
        except ValueError:
            fail(spec, f"quantizer bit widths of shape {a.shape} do not fit the input {x.shape}")
    return out


def _channel_scale(arr: np.ndarray) -> np.ndarray | None:
    """(C, H, W) values → (C,) if they do not vary over (H, W), else None."""
    return None if np.any(arr != arr[:, :1, :1]) else arr[:, 0, 0].copy()


def _per_channel(spec: LayerSpec, arr: np.ndarray, what: str) -> np.ndarray:
    c = _channel_scale(arr)
    if c is None:
        fail(spec, f"{what} varies over the positions of a feature map; a convolution shares one scale per channel; "
                   "supported: per-channel or per-layer bit widths on (H, W, C) maps (heterogeneous_axis = channel)")
    return c


def _walk(b: Builder, x: Tensor) -> tuple[list[A.Node], A.Node]:
    """Index-only nodes (Flatten, MaxPool) between ``x`` and the value they read, top first; and that node."""
    nodes = {n.name: n for n in b.nodes}
    chain, node = [], nodes[x.node]
    while isinstance(node, (A.Flatten, A.MaxPool)):
        chain.append(node)
        node = nodes[node.inputs[0]]
    return chain, node


def _down(chain: list[A.Node], arr: np.ndarray, shapes: dict) -> np.ndarray | None:
    """Per-element scales at the chain's top → at its bottom input (None if a max pool's window disagrees)."""
    for node in chain:
        inp = shapes[node.inputs[0]]
        if isinstance(node, A.Flatten):
            arr = arr.reshape(inp)
        else:
            c = _channel_scale(arr)
            if c is None:
                return None
            arr = np.broadcast_to(c[:, None, None], inp)
    return arr


def _copy(b: Builder, node: A.Node, inp: str, base: str) -> str:
    kw = {} if isinstance(node, A.Flatten) else dict(kernel=node.kernel, stride=node.stride, pads=node.pads)
    return b.add(type(node)(b.unique(f"{base}_{node.kind}"), (inp,), **kw))


def _scaled(b: Builder, spec: LayerSpec, what: str, node: str, shape: tuple, pre: np.ndarray) -> str | None:
    """``node`` times the per-element ``pre`` (an exact affine node), or None if a map's scale is not per channel."""
    if np.all(pre == 1.0):
        return node
    scale = _channel_scale(pre) if len(shape) == 3 else pre
    if scale is None:
        return None
    return _affine(b, b.unique(f"{spec.name}_{what}_scale"), Tensor(node, shape), scale, np.zeros_like(scale)).node


def quantize(b: Builder, spec: LayerSpec, x: Tensor, what: str, k, i, f, round_mode: str,
             overflow_mode: str) -> tuple[Tensor, np.ndarray]:
    """Emit the quantizer ``what`` of ``spec`` on ``x``; return (its output tensor, post scale in Keras layout).

    The QuantAct goes below the Flatten/MaxPool chain when its per-neuron scale can (then the chain is
    rebuilt above it), else right at ``x`` (the chain is rebuilt below it without the ReLU).
    """
    k, i, f = widths(spec, x, (k, i, f))
    chain, src = _walk(b, x)
    relu = isinstance(src, A.Relu)
    base = src.inputs[0] if relu else src.name
    try:
        q = FP.activation(k, i, f, round_mode, overflow_mode, isinstance(src, NONNEG))
    except ValueError as e:
        fail(spec, f"{what} quantizer: {e}")
    shapes = A.AnnGraph(nodes=list(b.nodes), output=x.node).shapes()
    name = b.unique(f"{spec.name}_{what}")
    pre = _down(chain, q.pre, shapes)
    below = _scaled(b, spec, what, base, shapes[base], pre) if pre is not None else None
    if below is not None:
        top = b.add(A.QuantAct(name, (below,), levels=q.levels, scale=q.scale, phase=q.phase,
                               rounding=q.rounding))
        for node in reversed(chain):
            top = _copy(b, node, top, name)
    else:
        at = x.node
        if relu:  # rebuild the chain on the ReLU's input
            at = base
            for node in reversed(chain):
                at = _copy(b, node, at, name)
        at = _scaled(b, spec, what, at, x.shape, q.pre)
        if at is None:
            fail(spec, f"the {what} quantizer's step 2^-f varies over the positions of a feature map, and a "
                       "convolution shares one scale per channel; supported: per-channel or per-layer bit widths "
                       "on (H, W, C) maps, per-neuron ones on vectors")
        top = b.add(A.QuantAct(name, (at,), levels=q.levels, scale=q.scale, phase=q.phase,
                               rounding=q.rounding))
    b.quantizers[f"{spec.name}/{what}"] = {"node": name, "output": top,
                                           "hwc": list(x.hwc) if below is None and x.hwc else None}
    return Tensor(top, x.shape, x.hwc), graph_to_keras(q.post, x)


def apply_post(b: Builder, spec: LayerSpec, x: Tensor, post: np.ndarray, what: str) -> Tensor:
    """Multiply ``x`` by ``post`` (Keras layout) with an exact per-channel affine, unless it is all ones."""
    if np.all(post == 1.0):
        return x
    g = keras_to_graph(post, x)
    scale = _per_channel(spec, g, f"the {what} quantizer's step 2^-f") if len(x.shape) == 3 else g
    if len(x.shape) == 1 and x.hwc:  # _affine takes Keras order for flattened maps
        scale = graph_to_keras(scale, x)
    return _affine(b, b.unique(f"{spec.name}_{what}_unscale"), x, scale, np.zeros_like(scale))


def kernel_rows(spec: LayerSpec, kernel: np.ndarray, post: np.ndarray, groups: int = 1) -> np.ndarray:
    """Fold the input's post scale (Keras layout) into a Dense (in, out) or Conv (kh, kw, Cin/groups, Cout)
    kernel; in a grouped Conv output o reads input channels g·Cin/groups + j of its group g = o // (Cout/groups)."""
    if np.all(post == post.reshape(-1)[0]):
        return kernel * post.reshape(-1)[0]
    if kernel.ndim == 2:
        return kernel * post.reshape(-1)[:, None]
    per_c = post.reshape(-1, post.shape[-1])
    if np.any(per_c != per_c[:1]):
        fail(spec, "the input quantizer's step 2^-f varies over positions; supported: per-channel bit widths")
    cig, cout = kernel.shape[2:]
    if cig * groups != per_c.shape[1] or cout % groups:
        fail(spec, f"kernel {kernel.shape} with groups={groups} does not fit {per_c.shape[1]} input channels")
    group = np.arange(cout) // (cout // groups)
    return kernel * per_c[0][group[None, :] * cig + np.arange(cig)[:, None]][None, None]
