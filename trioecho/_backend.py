"""Chooses each C unit's implementation: the C extension or its pure-Python twin.

trioecho has two sans-IO C units, each with a twin of the same contract:
the framer (``framing._cframer``/``framing._pyframer``) and the echo session
(``services._cecho``/``services._pyecho``).  ``TRIOECHO_PUREPYTHON=1`` selects the twins.
(The third C unit, the pump, which does I/O, is chosen by the readiness hub:
``trioecho.io.pump.pump_enabled``; its twin is the hub's Python inline step.)
Otherwise the C units are used, and if an extension is missing (not
compiled) trioecho falls back to its twin with one logged warning, which
names the cause: most often, Python imported trioecho from a source tree
with no built extension (run from a clone's root after ``pip install .``).
``IMPLEMENTATION`` says which one the framer uses.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import os
import sys
from pathlib import Path
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
# unit -> its C extension, next to this file
_EXTENSIONS = {"framer": "_framer_ffi", "echo": "_echo_ffi"}


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
        logger.warning("trioecho: C %s not available: %s", unit, _why_not_built(unit, exc))
        return _module(twin)


def _why_not_built(unit: str, exc: ImportError) -> str:
    """What to tell a user whose C ``unit`` failed to import with ``exc``.

    Run from a clone's root, Python imports the clone's ``trioecho/`` before
    any installed copy: if that tree has no built extension, the remedy is
    to build it there or to run elsewhere, not to reinstall."""
    package = Path(__file__).resolve().parent
    built = any(
        (package / (_EXTENSIONS[unit] + suffix)).exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )
    if built or not (package.parent / "build_ffi.py").exists():
        return (
            f"{exc}; using the pure-Python {unit}. "
            "Build it with `python build_ffi.py` or reinstall with `pip install .`."
        )
    where = f"trioecho was imported from the source tree at {package.parent}"
    installed = _installed_elsewhere(package.parent)
    remedy = (
        "Run `python build_ffi.py` there (or `pip install -e .`)"
        if installed is None
        else "Run `python build_ffi.py` there, or run from another directory to use "
        f"the trioecho installed at {installed}"
    )
    return f"{where}, which has no built C module; using the pure-Python {unit}. {remedy}."


def _installed_elsewhere(root: Path) -> Path | None:
    """The ``trioecho`` package Python would import if ``root`` (a source
    tree) were not on ``sys.path``, or None."""
    others = [
        entry
        for entry in sys.path
        if isinstance(entry, str) and Path(entry or ".").resolve() != root
    ]
    spec = importlib.machinery.PathFinder.find_spec("trioecho", others)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


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
