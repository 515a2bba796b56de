"""Chooses each C unit's implementation: the C extension or its pure-Python twin.

trioecho has two sans-IO C units, each with a twin of the same contract:
the framer (``framing._cframer``/``framing._pyframer``) and the echo session
(``services._cecho``/``services._pyecho``).  ``TRIOECHO_PUREPYTHON=1`` selects the twins.
Otherwise the C units are used, and if an extension is missing (not
compiled) trioecho falls back to its twin with one logged warning.
``IMPLEMENTATION`` says which one the framer uses.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import Literal

logger = logging.getLogger("trioecho")

Implementation = Literal["c", "python"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("c", "python")
# unit -> (C module, pure-Python twin)
_UNITS = {
    "framer": ("trioecho.framing._cframer", "trioecho.framing._pyframer"),
    "echo": ("trioecho.services._cecho", "trioecho.services._pyecho"),
}


def _want_pure_python() -> bool:
    return os.environ.get("TRIOECHO_PUREPYTHON", "") not in ("", "0")


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _select(unit: str) -> ModuleType:
    c_module, twin = _UNITS[unit]
    if _want_pure_python():
        return _module(twin)
    try:
        return _module(c_module)
    except ImportError as exc:
        logger.warning(
            "trioecho: C %s not available (%s); using the pure-Python %s. "
            "Build it with `python build_ffi.py` or reinstall with `pip install .`.",
            unit,
            exc,
            unit,
        )
        return _module(twin)


# Each unit is chosen when first used (the echo unit is the services' layer:
# the framing core does not load it).
_defaults: dict[str, ModuleType] = {"framer": _select("framer")}
default = _defaults["framer"]
IMPLEMENTATION: str = default.IMPLEMENTATION


def get(implementation: Implementation | str | None, unit: str = "framer") -> ModuleType:
    """Return ``unit``'s module (``"framer"`` or ``"echo"``) for ``"c"``,
    ``"python"`` or ``None`` (the default)."""
    if implementation is None:
        module = _defaults.get(unit)
        if module is None:
            module = _defaults[unit] = _select(unit)
        return module
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {IMPLEMENTATIONS} or None, not {implementation!r}"
        )
    c_module, twin = _UNITS[unit]
    return _module(c_module if implementation == "c" else twin)
