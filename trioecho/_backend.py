"""Chooses the frame scanner implementation: the C framer or its pure-Python twin.

``TRIOECHO_PUREPYTHON=1`` selects the twin.  Otherwise the C framer is used,
and if its extension is missing (not compiled) trioecho falls back to the twin
with one logged warning.  ``IMPLEMENTATION`` says which one is active.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

logger = logging.getLogger("trioecho")

IMPLEMENTATIONS = ("c", "python")


def _want_pure_python() -> bool:
    return os.environ.get("TRIOECHO_PUREPYTHON", "") not in ("", "0")


def _select() -> ModuleType:
    if _want_pure_python():
        from . import _pyframer

        return _pyframer
    try:
        from . import _cframer
    except ImportError as exc:
        logger.warning(
            "trioecho: C framer not available (%s); using the pure-Python framer. "
            "Build it with `python build_ffi.py` or reinstall with `pip install .`.",
            exc,
        )
        from . import _pyframer

        return _pyframer
    return _cframer


default = _select()
IMPLEMENTATION: str = default.IMPLEMENTATION


def get(implementation: str | None) -> ModuleType:
    """Return the scanner module for ``"c"``, ``"python"`` or ``None`` (the default)."""
    if implementation is None:
        return default
    if implementation == "python":
        from . import _pyframer

        return _pyframer
    if implementation == "c":
        from . import _cframer

        return _cframer
    raise ValueError(
        f"implementation must be one of {IMPLEMENTATIONS} or None, not {implementation!r}"
    )
