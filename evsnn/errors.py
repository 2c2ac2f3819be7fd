"""User-facing error types.

Every error a user can cause (bad model, bad option, bad shape, bad file) is a
subclass of :class:`EvsnnError`, itself a :class:`ValueError`, so callers can
catch one type and the CLI can print one line instead of a traceback.
"""


class EvsnnError(ValueError):
    """Base class of all user-facing evsnn errors."""


class ConversionError(EvsnnError):
    """A model cannot be represented or converted (unsupported op, attribute, preset option)."""


class ShapeError(EvsnnError):
    """Input data does not have the shape the model expects."""


class FormatError(EvsnnError):
    """A file is not in a known format, or has a format version this evsnn cannot read."""
