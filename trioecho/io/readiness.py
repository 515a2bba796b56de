"""How a direct-socket transport waits for readiness: ``"hub"`` (the run's
readiness hub, :mod:`trioecho.io.hub`, the default) or ``"trio"`` (Trio's own
``wait_readable``/``wait_writable``), chosen per call or by
``$TRIOECHO_READINESS``.
"""

from __future__ import annotations

import os
from typing import Literal

__all__ = [
    "READINESS_ENV",
    "READINESS_MODES",
    "Readiness",
    "default_readiness",
    "resolve_readiness",
]


Readiness = Literal["hub", "trio"]
READINESS_MODES: tuple[Readiness, ...] = ("hub", "trio")
READINESS_ENV = "TRIOECHO_READINESS"


def default_readiness() -> Readiness:
    """``$TRIOECHO_READINESS`` if set (``hub`` or ``trio``), else ``hub``."""
    mode = os.environ.get(READINESS_ENV, "") or "hub"
    if mode not in READINESS_MODES:
        raise ValueError(f"{READINESS_ENV} must be hub or trio, not {mode!r}")
    return mode


def resolve_readiness(readiness: Readiness | None) -> Readiness:
    """``readiness`` checked (``"hub"`` or ``"trio"``), or for None
    :func:`default_readiness`; ValueError otherwise."""
    if readiness is None:
        return default_readiness()
    if readiness not in READINESS_MODES:
        raise ValueError(f"readiness must be hub, trio or None, not {readiness!r}")
    return readiness
