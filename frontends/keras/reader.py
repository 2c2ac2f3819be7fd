"""Keras frontend: ``.keras`` archives and legacy HDF5 ``.h5`` models → :class:`~evsnn.ir.AnnGraph`.

Reads files with ``zipfile``, ``json`` and ``h5py`` only; keras/TensorFlow are
never imported.

Formats (decided by content, not suffix):

- Keras 3 ``.keras``: a zip holding ``config.json`` (the model config) and
  ``model.weights.h5``, whose groups ``layers/<snake_case class>[_n]/vars``
  hold a layer's variables ``0, 1, …`` and (recent Keras 3) a ``name`` attribute
  with the layer name; without it the path is rebuilt from the class names.
  Sub-layers' variables (an HGQ2 layer's quantizers) sit in nested groups
  ``…/<path>/vars`` and reach the converters as ``LayerSpec.parts[path]``.
- Legacy HDF5 (``model.save("x.h5")`` in Keras 2 or 3): root attribute
  ``model_config`` (JSON) and group ``model_weights/<layer>`` whose attribute
  ``weight_names`` lists the layer's datasets in order.

Sequential and Functional models (Keras 3 and Keras 2 config styles) with one
input and one output; layers: see :data:`SUPPORTED` and
:mod:`evsnn.frontends.keras.layers` for layout, naming and folding rules;
QAT layers: :mod:`.hgq` (HGQ2) and :mod:`.qkeras` (QKeras).
The graph is NCHW: a 4-D Keras output (N, H, W, C) appears as (N, C, H, W);
a flattened output keeps Keras' order (a permutation node is added if needed).

``graph.meta``: ``source`` ("keras"), ``format`` ("keras-v3" | "keras-h5"),
``keras_version``, ``keras_layers`` (Keras layer name → graph node holding its
output, for every layer whose output survives folding), ``tensors`` (node →
the Keras layer that produces its value, as other frontends) and ``flatten_hwc``
(layer → (H, W, C) for vectors held in NCHW-flattened order; see
:func:`layers.keras_order`) and ``quantizers`` ("<layer>/<quantizer>" of a QAT
layer → {"node": its QuantAct, "output": the node holding its value in Keras'
shape, "hwc"}; see :mod:`.qat`).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile

import h5py
import numpy as np

from evsnn.errors import ConversionError, EvsnnError, FormatError
from evsnn.frontends.keras import layers as KL
from evsnn.frontends.keras import graph as G
from evsnn.frontends.keras.graph import build_graph, check_classes
from evsnn.ir import ann as A
from evsnn.validate import deadline
from evsnn.validate.files import check_zip_members, read_zip_member
from evsnn.validate.hdf5 import check_tree, open_untrusted

SUPPORTED = G.SUPPORTED
_MODELS = ("Sequential", "Functional", "Model")
_KNOWN = "a Keras model: a .keras archive (zip with config.json) or a legacy HDF5 file with a model_config attribute"


# ---------------------------------------------------------------- file detection and reading

def _sniff(path: str) -> str | None:
    """'keras', 'h5' or None, from the file's content."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if "config.json" not in z.namelist():
                return None
            cfg = json.loads(read_zip_member(z, "config.json", path))
        return "keras" if isinstance(cfg, dict) and "class_name" in cfg else None
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            return "h5" if "model_config" in f.attrs else None
    return None


def can_open(path) -> bool:
    """True if ``path`` holds a Keras model this frontend reads; never raises."""
    try:
        return _sniff(os.fspath(path)) is not None
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile, UnicodeDecodeError):
        return False


def _json(text, path: str) -> dict:
    try:
        cfg = json.loads(text.decode("utf-8") if isinstance(text, (bytes, np.bytes_)) else text)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: the model config is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise FormatError(f"{path}: the model config is not a JSON object")
    return cfg


def _snake(name: str) -> str:
    """Keras' ``naming.to_snake_case`` (names the weight groups of a .keras file)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _vars(group) -> list[np.ndarray]:
    if group is None:
        return []
    keys = sorted((k for k in group.keys() if k.isdigit()), key=int)
    return [np.asarray(group[k][()]) for k in keys]


def _v3_weights(f: h5py.File, specs: list[KL.LayerSpec]) -> None:
    """Fill ``spec.weights`` from a Keras 3 ``model.weights.h5``."""
    root = f.get("layers")
    by_name, used = {}, {}
    for grp in (root.values() if root is not None else ()):
        v = grp.get("vars")
        if v is not None and "name" in v.attrs:
            by_name[_text(v.attrs["name"])] = v
    for spec in specs:
        key = _snake(spec.cls)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        v = by_name.get(spec.name)
        if v is None and root is not None and key in root:
            v = root[key].get("vars")
        spec.weights = _vars(v)
        spec.parts = _parts(v.parent) if v is not None else {}


def _parts(layer_group) -> dict[str, list[np.ndarray]]:
    """Variables of a layer's sub-layers (e.g. an HGQ2 layer's ``iq/quantizer``), by path in the layer group."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and name.endswith("/vars"):
            out[name[: -len("/vars")]] = _vars(obj)

    layer_group.visititems(visit)
    return out


def _read_keras(path: str) -> tuple[dict, object, dict]:
    with zipfile.ZipFile(path) as z:
        check_zip_members(z, path)  # declared sizes capped before anything is decompressed
        names = z.namelist()
        config = _json(read_zip_member(z, "config.json", path), path)
        meta = {}
        if "metadata.json" in names:
            meta = _json(read_zip_member(z, "metadata.json", path), path)
        if "model.weights.h5" not in names:
            raise FormatError(f"{path}: .keras archive without model.weights.h5 (found {names}); "
                              "evsnn reads archives written by model.save('x.keras')")
        blob = read_zip_member(z, "model.weights.h5", path)

    def fill(specs):
        with h5py.File(io.BytesIO(blob), "r") as f:
            check_tree(f, f"{path}:model.weights.h5", file_bytes=len(blob))  # no external storage/links, no unknown filters
            _v3_weights(f, specs)

    return config, fill, {"format": "keras-v3", "keras_version": str(meta.get("keras_version", ""))}


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def _h5_contents(path: str) -> tuple[object, str, dict]:
    """What evsnn reads from a legacy ``.h5``: the model_config attribute, the Keras version and every
    layer's weights (``model_weights/<layer>``, in its ``weight_names`` order)."""
    with open_untrusted(path, "a Keras .h5 model") as f:
        config = f.attrs["model_config"]
        version = _text(f.attrs.get("keras_version", ""))
        if "model_weights" not in f:
            raise FormatError(f"{path}: HDF5 model without a model_weights group; evsnn reads files written "
                              "by model.save('x.h5')")
        mw = f["model_weights"]
        weights = {}
        for name in mw:
            g = mw[name]
            names = g.attrs.get("weight_names", []) if isinstance(g, h5py.Group) else []
            weights[name] = [np.asarray(g[_text(n)][()]) for n in names]
    return config, version, weights


def _read_h5(path: str) -> tuple[dict, object, dict]:
    # read in a child with a time limit: damaged HDF5 metadata can make the C library loop forever
    config, version, weights = deadline.call(_h5_contents, path, what=path)
    config = _json(config, path)

    def fill(specs):
        for spec in specs:
            spec.weights = list(weights.get(spec.name, []))

    return config, fill, {"format": "keras-h5", "keras_version": version}


# ---------------------------------------------------------------- model config → layer specs

def _layer_entries(cfg: dict) -> list:
    layers = cfg.get("layers") if isinstance(cfg, dict) else cfg
    return layers if isinstance(layers, list) else []


def _entry_spec(entry: dict) -> KL.LayerSpec:
    if not isinstance(entry, dict):
        raise ConversionError(f"malformed layer entry in the model config: {str(entry)[:80]}")
    cls = str(entry.get("class_name", "?")).rsplit(">", 1)[-1]  # legacy h5 writes registered names "pkg>Class"
    cfg = entry.get("config")
    name = str((cfg or {}).get("name") or entry.get("name") or "?")
    spec = KL.LayerSpec(name, KL.ALIASES.get(cls, cls), cfg if isinstance(cfg, dict) else {})
    if cls in _MODELS or "layers" in spec.config:
        KL.fail(spec, "nested models are not supported; rebuild the model flat; supported layers: "
                      + ", ".join(SUPPORTED))
    if not isinstance(cfg, dict) or not cfg:
        KL.fail(spec, "the layer has no config (a custom layer saved without get_config?); supported: "
                      + ", ".join(SUPPORTED))
    return spec


def _input_spec(name: str, batch_shape) -> KL.LayerSpec:
    return KL.LayerSpec(name, "InputLayer", {"batch_shape": list(batch_shape), "name": name})


def _sequential(cfg: dict) -> tuple[list[KL.LayerSpec], list[KL.LayerSpec], str, str]:
    specs = [_entry_spec(e) for e in _layer_entries(cfg)]
    if not specs:
        raise ConversionError("Sequential model has no layers")
    if specs[0].cls != "InputLayer":
        first = specs[0].config
        built = cfg.get("build_input_shape") if isinstance(cfg, dict) else None
        shape = first.get("batch_input_shape") or first.get("batch_shape") or built
        if shape is None:
            raise ConversionError("Sequential model has no input shape (never built?); add keras.Input(shape)")
        names = {s.name for s in specs}
        name, k = "input_layer", 0
        while name in names:
            k += 1
            name = f"input_layer_{k}"
        specs.insert(0, _input_spec(name, shape))
    for prev, spec in zip(specs, specs[1:]):
        spec.inputs = [prev.name]
    return specs, specs, specs[0].name, specs[-1].name


def _history(obj, out: list) -> None:
    """Collect input layer names from Keras 3 call args (``__keras_tensor__`` dicts) or Keras 2 lists."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            hist = obj.get("config", {}).get("keras_history") or ["?", 0, 0]
            out.append((str(hist[0]), int(hist[1])))
        else:
            for v in obj.values():
                _history(v, out)
    elif isinstance(obj, (list, tuple)):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):  # Keras 2: [name, node, tensor, kw]
            out.append((obj[0], obj[1]))
        else:
            for v in obj:
                _history(v, out)


def _inbound(spec: KL.LayerSpec, entry: dict) -> list[str]:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        KL.fail(spec, f"is called {len(nodes)} times (shared layer); supported: each layer used once")
    found: list = []
    if nodes:
        node = nodes[0]
        _history(node.get("args", []) if isinstance(node, dict) else node, found)
    if any(idx != 0 for _, idx in found):
        KL.fail(spec, "reads an output of a shared layer; supported: each layer used once")
    return [name for name, _ in found]


def _endpoints(cfg: dict, key: str) -> list[str]:
    v = cfg.get(key) or []
    if v and isinstance(v[0], str):
        v = [v]
    return [str(e[0]) for e in v]


def _topo(specs: list[KL.LayerSpec], output: str) -> list[KL.LayerSpec]:
    """The layers the output depends on, inputs first; config order breaks ties."""
    by_name = {s.name: s for s in specs}
    for s in specs:
        for i in s.inputs:
            if i not in by_name:
                KL.fail(s, f"reads layer {i!r}, which is not in the model")
    if output not in by_name:
        raise ConversionError(f"the model output names layer {output!r}, which is not in the model")
    needed = A.ancestors(specs, output)
    specs = [s for s in specs if s.name in needed]
    done, order = set(), []
    while len(order) < len(specs):
        ready = [s for s in specs if s.name not in done and all(i in done for i in s.inputs)]
        if not ready:
            raise ConversionError("the model's layer graph has a cycle")
        order.append(ready[0])
        done.add(ready[0].name)
    return order


def _functional(cfg: dict) -> tuple[list[KL.LayerSpec], list[KL.LayerSpec], str, str]:
    specs = []
    for entry in _layer_entries(cfg):
        spec = _entry_spec(entry)
        spec.inputs = _inbound(spec, entry)
        specs.append(spec)
    ins, outs = _endpoints(cfg, "input_layers"), _endpoints(cfg, "output_layers")
    if len(ins) != 1 or len(outs) != 1:
        raise ConversionError(f"model has {len(ins)} inputs and {len(outs)} outputs; evsnn supports exactly one each")
    used = _topo(specs, outs[0])
    if ins[0] not in {s.name for s in used}:
        raise ConversionError(f"the model output {outs[0]!r} does not depend on its input {ins[0]!r}")
    return used, specs, ins[0], outs[0]


def model_specs(config: dict) -> tuple[list[KL.LayerSpec], list[KL.LayerSpec], str, str, str]:
    """From a model config: (the specs the output needs, in topological order; all specs in config order
    (the order Keras numbers weight groups in); input layer; output layer; model name)."""
    cls = config.get("class_name")
    cfg = config.get("config")
    name = str((cfg if isinstance(cfg, dict) else {}).get("name") or "model")
    if cls == "Sequential":
        return (*_sequential(cfg), name)
    if isinstance(cfg, dict) and isinstance(cfg.get("layers"), list) and "output_layers" in cfg:
        return (*_functional(cfg), name)
    raise ConversionError(f"model {name!r} ({cls}): a subclassed model has no layer graph in its config; evsnn "
                          "reads Sequential and Functional models only (supported layers: "
                          + ", ".join(SUPPORTED) + ")")


def load(path) -> A.AnnGraph:
    """Read a ``.keras`` or legacy ``.h5`` Keras model into an AnnGraph (NCHW, float64)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"model file not found: {path}")
    try:
        kind = _sniff(path)
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: unreadable as {_KNOWN} ({e})") from None
    if kind is None:
        raise FormatError(f"{path}: not {_KNOWN}")
    try:
        config, fill, meta = (_read_keras if kind == "keras" else _read_h5)(path)
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, zipfile.BadZipFile) as e:
        if isinstance(e, EvsnnError):
            raise
        raise FormatError(f"{path}: damaged {_KNOWN} ({type(e).__name__}: {str(e)[:100]})") from None
    specs, every, inp, out, name = model_specs(config)
    check_classes(specs)
    try:
        fill(every)
    except EvsnnError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, zipfile.BadZipFile) as e:
        raise FormatError(f"{path}: cannot read the model weights ({e})") from None
    return build_graph(specs, inp, out, name, meta)
