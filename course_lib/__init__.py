"""course_lib: the shared library of the learned image compression course."""

import os

__version__ = "0.1.0"


def fast_mode() -> bool:
    """True when ``COURSE_FAST=1``: heavy notebook cells take a short path (CI uses it)."""
    return os.environ.get("COURSE_FAST", "0") not in ("", "0", "false", "False")
