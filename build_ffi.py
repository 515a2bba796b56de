"""Build trioecho's C code (csrc/) as cffi extensions.

``trioecho._framer_ffi``: the sans-IO framer (``framer.h``/``framer.c``);
``trioecho._echo_ffi``: the sans-IO echo session (``echo.h``/``echo.c``, on
the framer's scanning primitives in ``scan.h``);
``trioecho._pump_ffi``: the pump, which serves echo sessions on sockets
for the readiness hub (``pump.h``/``pump.c``, with ``echo.c`` and ``framer.c``).
``trioecho._loadgen_ffi``: the load generator of ``trioecho bench``
(``loadgen.h``/``loadgen.c``), kept apart because it does I/O.

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
# extension module -> (header, sources)
EXTENSIONS = {
    "trioecho._framer_ffi": ("framer.h", ["framer.c"]),
    "trioecho._echo_ffi": ("echo.h", ["echo.c", "framer.c"]),
    "trioecho._loadgen_ffi": ("loadgen.h", ["loadgen.c"]),
    "trioecho._pump_ffi": ("pump.h", ["pump.c", "echo.c", "framer.c"]),
}
# Structs cffi only allocates: it learns their size from the C compiler.
OPAQUE_STRUCTS = {"trioecho._echo_ffi": ["te_echo_state"]}


def _cdef_from_header(header: Path) -> str:
    """Return the declarations between the ``cffi:begin``/``cffi:end`` markers."""
    match = re.search(r"/\* cffi:begin.*?\*/(.*)/\* cffi:end \*/", header.read_text(), re.S)
    if match is None:
        raise RuntimeError(f"{header}: cffi:begin/cffi:end markers not found")
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
        checks = (
            "address,undefined,fuzzer-no-link" if _flag("TRIOECHO_FUZZ") else "address,undefined"
        )
        sanitize = [f"-fsanitize={checks}", "-fno-sanitize-recover=all"]
        if _flag("TRIOECHO_FUZZ"):
            # atheris's bundled runtime predates clang 17's -fsanitize=function for C
            sanitize.append("-fno-sanitize=function")
        compile_args += sanitize
        link_args += sanitize
    return compile_args, link_args


def make_builder(module: str, root: Path) -> FFI:
    """The cffi builder of ``module``, with source paths relative to ``root``
    (setuptools runs from the project root and rejects absolute paths)."""
    header, sources = EXTENSIONS[module]
    builder = FFI()
    cdef = _cdef_from_header(CSRC / header)
    for struct in OPAQUE_STRUCTS.get(module, []):
        cdef += f"\nstruct {struct} {{ ...; }};\n"
    builder.cdef(cdef)
    compile_args, link_args = _compile_args()
    builder.set_source(
        module,
        f'#include "{header}"',
        sources=[os.path.relpath(CSRC / name, root) for name in sources],
        include_dirs=[os.path.relpath(CSRC, root)],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return builder


ffibuilder = make_builder("trioecho._framer_ffi", Path.cwd())
echo_builder = make_builder("trioecho._echo_ffi", Path.cwd())
loadgen_builder = make_builder("trioecho._loadgen_ffi", Path.cwd())
pump_builder = make_builder("trioecho._pump_ffi", Path.cwd())


def build_in_place(module: str) -> Path:
    """Compile into build/cffi and copy the extension next to the package sources.

    Building outside the project root keeps cffi's setuptools run from reading
    pyproject.toml, so an older setuptools in the environment does not matter.
    """
    tmpdir = HERE / "build" / "cffi"
    tmpdir.mkdir(parents=True, exist_ok=True)
    built = Path(make_builder(module, tmpdir).compile(tmpdir=str(tmpdir), verbose=True))
    target = HERE / "trioecho" / built.name
    for stale in target.parent.glob(module.rpartition(".")[2] + ".*.so"):
        stale.unlink()  # one build only: the import system would pick any
    shutil.copyfile(built, target)
    return target


if __name__ == "__main__":
    for name in EXTENSIONS:
        print(f"built {build_in_place(name)}")
