"""Build trioecho's C framer (csrc/) as the cffi extension ``trioecho._framer_ffi``.

``pip install .`` runs this through setuptools' ``cffi_modules``; for development,
``python build_ffi.py`` compiles the extension in place, next to the sources.

Environment switches:

``TRIOECHO_SANITIZE=1``
    Build with AddressSanitizer and UndefinedBehaviorSanitizer.  Python itself
    is not instrumented, so run it with the ASan runtime preloaded, e.g.
    ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0``.
``TRIOECHO_FUZZ=1``
    With ``TRIOECHO_SANITIZE=1`` and clang (``CC=clang``): also instrument
    the C code for libFuzzer's coverage (``-fsanitize=fuzzer-no-link``), for
    the atheris harness in ``fuzz/``.
``TRIOECHO_DEBUG=1``
    Build without optimisation and with debug symbols.
"""

from __future__ import annotations

import os
import re
import shutil
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
        checks = "address,undefined,fuzzer-no-link" if _flag("TRIOECHO_FUZZ") else "address,undefined"
        sanitize = [f"-fsanitize={checks}", "-fno-sanitize-recover=all"]
        if _flag("TRIOECHO_FUZZ"):
            # atheris's bundled runtime predates clang 17's -fsanitize=function for C
            sanitize.append("-fno-sanitize=function")
        compile_args += sanitize
        link_args += sanitize
    return compile_args, link_args


def make_builder(root: Path) -> FFI:
    """The cffi builder, with source paths relative to ``root`` (setuptools
    runs from the project root and rejects absolute source paths)."""
    builder = FFI()
    builder.cdef(_cdef_from_header(HEADER.read_text()))
    compile_args, link_args = _compile_args()
    builder.set_source(
        "trioecho._framer_ffi",
        '#include "framer.h"',
        sources=[os.path.relpath(CSRC / name, root) for name in SOURCES],
        include_dirs=[os.path.relpath(CSRC, root)],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return builder


ffibuilder = make_builder(Path.cwd())


def build_in_place() -> Path:
    """Compile into build/cffi and copy the extension next to the package sources.

    Building outside the project root keeps cffi's setuptools run from reading
    pyproject.toml, so an older setuptools in the environment does not matter.
    """
    tmpdir = HERE / "build" / "cffi"
    tmpdir.mkdir(parents=True, exist_ok=True)
    built = Path(make_builder(tmpdir).compile(tmpdir=str(tmpdir), verbose=True))
    target = HERE / "trioecho" / built.name
    for stale in target.parent.glob("_framer_ffi.*.so"):
        stale.unlink()  # one build only: the import system would pick any
    shutil.copyfile(built, target)
    return target


if __name__ == "__main__":
    print(f"built {build_in_place()}")
