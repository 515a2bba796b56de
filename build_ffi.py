"""Build trioecho's C framer (csrc/) as the cffi extension ``trioecho._framer_ffi``.

``pip install .`` runs this through setuptools' ``cffi_modules``; for development,
``python build_ffi.py`` compiles the extension in place, next to the sources.

Environment switches:

``TRIOECHO_SANITIZE=1``
    Build with AddressSanitizer and UndefinedBehaviorSanitizer.  Python itself
    is not instrumented, so run it with the ASan runtime preloaded, e.g.
    ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0``.
``TRIOECHO_DEBUG=1``
    Build without optimisation and with debug symbols.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"
HEADER = CSRC / "framer.h"
SOURCES = ["framer.c"]


def _cdef_from_header(text: str) -> str:
    """Return the declarations between the ``cffi:begin``/``cffi:end`` markers."""
    match = re.search(r"/\* cffi:begin.*?\*/(.*)/\* cffi:end \*/", text, re.S)
    if match is None:
        raise RuntimeError(f"{HEADER}: cffi:begin/cffi:end markers not found")
    return match.group(1)


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _compile_args() -> tuple[list[str], list[str]]:
    compile_args = ["-std=c11", "-Wall", "-Wextra"]
    link_args: list[str] = []
    if _flag("TRIOECHO_DEBUG") or _flag("TRIOECHO_SANITIZE"):
        compile_args += ["-O1", "-g", "-fno-omit-frame-pointer"]
    else:
        compile_args += ["-O2"]
    if _flag("TRIOECHO_SANITIZE"):
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
        compile_args += sanitize
        link_args += sanitize
    return compile_args, link_args


if __name__ == "__main__":
    os.chdir(HERE)

ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header(HEADER.read_text()))
_compile, _link = _compile_args()
ffibuilder.set_source(
    "trioecho._framer_ffi",
    '#include "framer.h"',
    # Paths relative to the project root: setuptools builds from there and
    # rejects absolute source paths.
    sources=[os.path.relpath(CSRC / name, os.getcwd()) for name in SOURCES],
    include_dirs=[os.path.relpath(CSRC, os.getcwd())],
    extra_compile_args=_compile,
    extra_link_args=_link,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=".", verbose=True)
