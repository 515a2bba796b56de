"""Run the whole test suite on every Python version trioecho claims, besides
this interpreter's (CI has run the suite on it already).

    python tools/test_pythons.py                 # what CI runs
    python tools/test_pythons.py --list          # the claimed versions and their interpreters
    python tools/test_pythons.py -- -x -k logs   # arguments for pytest

The claimed versions are pyproject.toml's classifiers ``Programming Language
:: Python :: 3.X``.  They must run without a gap from ``requires-python``'s
lower bound (``>=3.10``), so the two cannot drift apart.  Each claimed
version other than this interpreter's must be on this machine: pyenv's
newest ``3.X.N`` (``$(pyenv root)/versions/3.X.N/bin/python3.X``), else a
``python3.X`` on ``PATH`` that runs (pyenv's shims do not, unless
``PYENV_VERSION`` selects them).  A claimed version that is missing fails
the run before any test: a version that cannot be tested is not claimed.

For each version, one after another:

1. a fresh virtual environment, ``.ci-venv-3.X`` in the clone's root;
2. the clone's built C extensions removed, then ``pip install -e '.[test]'``
   in it: the extensions are built again, by that version;
3. a check that the C units (the framer, the echo session, the load
   generator) import on it, so the suite really runs the C path there;
4. the README's test command's ``python -m pytest`` (with ``-q``, and any
   arguments given after ``--``), as in an activated environment.

At the end this interpreter builds the extensions again (``python
build_ffi.py``), so the clone is as CI left it.  The extensions use the
stable ABI (``*.abi3.so``): every version builds the same files in place,
so two runs must not share a clone.  Every version is tried, even after one
failed; exits 1 if a version is missing, cannot install, lacks its C units or
fails a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency of trioecho there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = re.compile(r"Programming Language :: Python :: 3\.(\d+)")
LOWER_BOUND = re.compile(r">=\s*3\.(\d+)")
# What must import from the C extensions on each version (TRIOECHO_PUREPYTHON unset).
C_CHECK = (
    "import trioecho, trioecho.framing._cframer, trioecho.services._cecho, trioecho.cli._cloadgen; "
    "assert trioecho.FRAMER_IMPLEMENTATION == 'c', trioecho.FRAMER_IMPLEMENTATION"
)
EXTENSIONS = ("_framer_ffi", "_echo_ffi", "_loadgen_ffi", "_pump_ffi")


def claimed_versions(pyproject: Path) -> list[str]:
    """``["3.10", ...]``: the classifiers' versions, in order.  Raises
    ``ValueError`` if they do not run from ``requires-python``'s lower bound
    without a gap."""
    project = tomllib.loads(pyproject.read_text())["project"]
    minors = sorted(
        int(match[1])
        for classifier in project.get("classifiers", [])
        if (match := CLASSIFIER.fullmatch(classifier))
    )
    bound = LOWER_BOUND.fullmatch(project.get("requires-python", "").strip())
    if bound is None:
        raise ValueError(f"requires-python is not '>=3.X': {project.get('requires-python')!r}")
    lowest = int(bound[1])
    if not minors or minors != list(range(lowest, lowest + len(minors))):
        listed = ", ".join(f"3.{minor}" for minor in minors) or "none"
        raise ValueError(
            f"requires-python {project['requires-python']!r} claims 3.{lowest} and later, "
            f"but the classifiers name {listed}: they must run from 3.{lowest} without a gap"
        )
    return [f"3.{minor}" for minor in minors]


def pyenv_root() -> Path:
    """Where pyenv keeps its versions (``pyenv root``, else its default)."""
    if shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip())
    return Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))


def find_interpreter(version: str) -> Path | None:
    """An interpreter of ``version`` ("3.X") that runs, or None."""
    candidates: list[Path] = []
    installs = [
        path
        for path in (pyenv_root() / "versions").glob(f"{version}.*")
        if re.fullmatch(re.escape(version) + r"\.\d+", path.name)
    ]
    installs.sort(key=lambda path: int(path.name.rsplit(".", 1)[1]), reverse=True)
    candidates += [path / "bin" / f"python{version}" for path in installs]
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        done = subprocess.run(
            [str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


def run(command: list[str], env: dict[str, str] | None = None, quiet: bool = False) -> None:
    """Run ``command`` in the clone's root (``quiet``: its output discarded);
    raise ``RuntimeError`` if it fails."""
    print("+", " ".join(command), flush=True)
    output = subprocess.DEVNULL if quiet else None
    done = subprocess.run(command, cwd=ROOT, env=env, stdout=output, stderr=output, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}")


def suite_environment(venv: Path) -> dict[str, str]:
    """This environment as ``venv`` activated sees it, in the suite's default mode."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("TRIOECHO_PUREPYTHON", "TRIOECHO_READINESS")
    }
    environment["VIRTUAL_ENV"] = str(venv)
    environment["PATH"] = f"{venv / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    return environment


def test_version(version: str, interpreter: Path, pytest_args: list[str]) -> None:
    """Install and test on ``version``; raises ``RuntimeError`` if a step fails."""
    venv = ROOT / f".ci-venv-{version}"
    python = str(venv / "bin" / "python")
    environment = suite_environment(venv)
    run([str(interpreter), "-m", "venv", "--clear", str(venv)])
    run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], env=environment)
    for name in EXTENSIONS:  # this version's build, not one left by another
        for built in (ROOT / "trioecho").glob(f"{name}.*so"):
            built.unlink()
    run([python, "-m", "pip", "install", "--quiet", "-e", ".[test]"], env=environment)
    run([python, "-c", C_CHECK], env=environment)
    run([python, "-m", "pytest", "-q", *pytest_args], env=environment)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the versions and stop")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = parser.parse_args()
    this = f"{sys.version_info[0]}.{sys.version_info[1]}"
    try:
        versions = claimed_versions(ROOT / "pyproject.toml")
    except ValueError as exc:
        print(f"test_pythons: pyproject.toml: {exc}", file=sys.stderr)
        return 1
    if this not in versions:
        print(f"test_pythons: this Python ({this}) is not one trioecho claims", file=sys.stderr)
        return 1
    others = {version: find_interpreter(version) for version in versions if version != this}
    for version, interpreter in [(this, Path(sys.executable)), *others.items()]:
        print(f"test_pythons: {version}: {interpreter or 'MISSING'}")
    missing = [version for version, interpreter in others.items() if interpreter is None]
    if missing:
        print(
            f"test_pythons: trioecho claims Python {', '.join(missing)}, not on this machine: "
            "install it (pyenv install), or stop claiming it in pyproject.toml",
            file=sys.stderr,
        )
        return 1
    if args.list:
        return 0
    results: dict[str, str] = {}
    try:
        for version, interpreter in others.items():  # each one, even after a failure
            assert interpreter is not None
            print(f"\n=== test_pythons: the suite on Python {version}", flush=True)
            start = time.monotonic()
            try:
                test_version(version, interpreter, args.pytest_args)
            except RuntimeError as exc:
                results[version] = f"FAILED: {exc}"
            else:
                results[version] = f"passed in {time.monotonic() - start:.0f} s"
            print(f"test_pythons: Python {version}: {results[version]}", flush=True)
    finally:  # the clone's extensions built by this interpreter again
        run([sys.executable, "build_ffi.py"], quiet=True)
    for version, result in results.items():
        print(f"test_pythons: Python {version}: {result}")
    return 1 if any(result.startswith("FAILED") for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
