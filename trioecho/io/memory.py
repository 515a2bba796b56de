"""Giving freed memory back to the operating system (glibc's malloc_trim).

After many large messages, glibc keeps freed memory in its heaps (its
threshold for serving big blocks with mmap rises as big blocks are freed),
so a server's RSS stays at its peak long after the clients left.
``trim()`` asks glibc to return free pages; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["MMAP_THRESHOLD", "serve_large_blocks_with_mmap", "trim"]

# Blocks this large come from mmap and go back to the OS when freed (a
# 64 KiB read buffer stays below: no system call per read).
MMAP_THRESHOLD = 256 << 10
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

logger = logging.getLogger("trioecho.server")


def _load(function: str) -> object:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _load("malloc_trim")
_mallopt = _load("mallopt")


def serve_large_blocks_with_mmap(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (it otherwise rises as large blocks are
    freed, and later large messages then stay in the heap after use)."""
    if _mallopt is None:
        return False
    return bool(_mallopt(_M_MMAP_THRESHOLD, threshold))  # type: ignore[operator]


def trim() -> bool:
    """Return free heap memory to the OS; False where that is not possible."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)  # type: ignore[operator]
    return True
