"""Chooses each C unit's implementation: the C extension or its pure-Python twin.

Each sans-IO C unit is declared, as a :class:`Unit`, in the layer that owns
it: the framer in ``trioecho.framing.implementation``, the echo session in
``trioecho.services.echo_session``.  This module names none of them (the
layer check sees a module named in a string as an import).
``TRIOECHO_PUREPYTHON=1`` selects the twins.  (The third C unit, the pump,
which does I/O, is chosen by the readiness hub:
``trioecho.io.pump.pump_enabled``; its twin is the hub's Python inline step.)
Otherwise the C units are used, and if an extension is missing (not
compiled) trioecho falls back to its twin with one logged warning, which
names the cause: most often, Python imported trioecho from a source tree
with no built extension (run from a clone's root after ``pip install .``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Literal

logger = logging.getLogger("trioecho")

Implementation = Literal["c", "python"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("c", "python")


def _want_pure_python() -> bool:
    return os.environ.get("TRIOECHO_PUREPYTHON", "") not in ("", "0")


@dataclass
class Unit:
    """One C unit: its C module, its pure-Python twin (the same contract) and
    the C extension the C module loads, next to this file.  The default is
    chosen when first asked for (:meth:`get` with None) and kept."""

    name: str
    c_module: str
    twin: str
    extension: str
    _default: ModuleType | None = field(default=None, repr=False)

    def get(self, implementation: Implementation | str | None = None) -> ModuleType:
        """The unit's module for ``"c"``, ``"python"`` or None (the default:
        the twin under ``TRIOECHO_PUREPYTHON=1`` or if the C one cannot be
        imported, with one warning saying why)."""
        if implementation is None:
            if self._default is None:
                self._default = self._select()
            return self._default
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS} or None, not {implementation!r}"
            )
        return importlib.import_module(self.c_module if implementation == "c" else self.twin)

    def _select(self) -> ModuleType:
        if _want_pure_python():
            return importlib.import_module(self.twin)
        try:
            return importlib.import_module(self.c_module)
        except ImportError as exc:
            logger.warning("trioecho: C %s not available: %s", self.name, _why_not_built(self, exc))
            return importlib.import_module(self.twin)


def _why_not_built(unit: Unit, exc: ImportError) -> str:
    """What to tell a user whose C ``unit`` failed to import with ``exc``.

    Run from a clone's root, Python imports the clone's ``trioecho/`` before
    any installed copy: if that tree has no built extension, the remedy is
    to build it there or to run elsewhere, not to reinstall."""
    package = Path(__file__).resolve().parent
    built = any(
        (package / (unit.extension + suffix)).exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )
    if built or not (package.parent / "build_ffi.py").exists():
        return (
            f"{exc}; using the pure-Python {unit.name}. "
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
    return f"{where}, which has no built C module; using the pure-Python {unit.name}. {remedy}."


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
