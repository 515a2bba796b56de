"""The framer's C unit (``_cframer``, the C scanners) and its pure-Python
twin (``_pyframer``), as one :class:`~trioecho._backend.Unit`.

``IMPLEMENTATION`` is the default's, chosen when this module is imported:
``"c"``, or ``"python"`` under ``TRIOECHO_PUREPYTHON=1`` or without the
built extension (see :mod:`trioecho._backend`).
"""

from __future__ import annotations

from trioecho._backend import Unit

__all__ = ["FRAMER", "IMPLEMENTATION"]

FRAMER = Unit("framer", "trioecho.framing._cframer", "trioecho.framing._pyframer", "_framer_ffi")
IMPLEMENTATION: str = FRAMER.get().IMPLEMENTATION
