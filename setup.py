"""setuptools has no pyproject.toml key for cffi's build hook; this file adds it.

All other metadata lives in pyproject.toml.

The C extensions are optional, as in markupsafe and msgpack: without a C
compiler (or with ``TRIOECHO_NO_EXTENSIONS=1``) the build prints one warning
and installs the pure-Python twins, which trioecho then uses (and says so
when it starts).  ``trioecho bench`` needs its C load generator.

The extensions use Python's stable ABI, so the wheel is tagged ``abi3``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

_BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)


def _warn(what: str, exc: BaseException | None = None) -> None:
    reason = f": {exc}" if exc is not None else ""
    print(
        f"WARNING: trioecho: {what}{reason}\n"
        "WARNING: trioecho: installing without it; the pure-Python framer and echo "
        "session will be used (slower), and `trioecho bench` is unavailable.",
        file=sys.stderr,
    )


class OptionalBuildExt(build_ext):
    """Builds each C extension if it can; warns and goes on if it cannot."""

    def run(self) -> None:
        if os.environ.get("TRIOECHO_NO_EXTENSIONS", "") not in ("", "0"):
            _warn("TRIOECHO_NO_EXTENSIONS is set: the C extensions are not built")
            return
        try:
            super().run()
        except _BUILD_ERRORS as exc:
            _warn("cannot build the C extensions", exc)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except _BUILD_ERRORS as exc:
            _warn(f"cannot build {ext.name} (is a C compiler installed?)", exc)


setup(
    cmdclass={"build_ext": OptionalBuildExt},
    # cffi builds its extensions for the stable ABI (py_limited_api); this
    # tags the wheel so: one wheel per platform for every CPython >= 3.10.
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    cffi_modules=[
        "build_ffi.py:ffibuilder",
        "build_ffi.py:echo_builder",
        "build_ffi.py:loadgen_builder",
        "build_ffi.py:pump_builder",
    ],
)
