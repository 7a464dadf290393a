"""The one error every decoder in :mod:`course_lib.entropy` raises on bad input."""


class DecodeError(ValueError):
    """The bytes cannot be decoded: they are truncated, corrupted, or were made with another
    model/table than the one given to the decoder."""
