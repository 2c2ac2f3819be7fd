"""Checks an untrusted file passes before anything executes it, one module per file kind.

- :mod:`evsnn.validate.limits`: size caps and the run memory budget (env-configurable).
- :mod:`evsnn.validate.files`: regular files only, capped gunzip, zip member caps, outputs ≠ inputs.
- :mod:`evsnn.validate.hdf5`: HDF5 files without external storage, links, virtual datasets,
  plugin filters or datasets that declare more data than they store.
- :mod:`evsnn.validate.network`: every field of a network file against the structure it declares.
- :mod:`evsnn.validate.results`: the layout of a results file before report/inspect read it.
- :mod:`evsnn.validate.onnx_model`: ONNX files (names, node order, tensor types and sizes, external
  data inside the model's folder, sizes of constants the frontend evaluates).
- :mod:`evsnn.validate.pickles`: a static scan of a pickle (memo, sizes) before unpickling.

Every failure is an :class:`evsnn.errors.FormatError` with one line naming the file and the problem.
"""
