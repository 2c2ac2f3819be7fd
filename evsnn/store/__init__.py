"""HDF5 files: networks (:mod:`.network`) and results; shared conventions in :mod:`.files`."""

from evsnn.store.files import atomic_h5, file_format, open_h5
from evsnn.store.network import load_network, save_network

__all__ = ["atomic_h5", "file_format", "load_network", "open_h5", "save_network"]
