"""HDF5 files: networks (:mod:`.network`) and results (:mod:`.results`); shared conventions in :mod:`.files`."""

from evsnn.store.files import atomic_file, atomic_h5, check_writable, existing_file, file_format, open_h5
from evsnn.store.network import load_network, save_network
from evsnn.store.results import (
    Layer, Layout, ResultsWriter, escape_name, open_results, partial_path, read_summary, unescape_name,
)

__all__ = [
    "Layer", "Layout", "ResultsWriter", "atomic_file", "atomic_h5", "check_writable", "existing_file", "escape_name", "file_format", "load_network", "open_h5",
    "open_results", "partial_path", "read_summary", "save_network", "unescape_name",
]
