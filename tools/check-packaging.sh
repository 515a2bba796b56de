#!/bin/sh
# Packaging checks (CI runs them): the sdist builds a working wheel, and an
# install without a C compiler works with the pure-Python twins.
#   1. python -m build: an sdist and a wheel;
#   2. a wheel built from that sdist, installed in a fresh venv: the C units;
#   3. `CC=false pip install` of the sdist in a fresh venv: pure Python, working.
# Run from the clone root with the virtual environment that has `build`.
set -eu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
sdist=$(ls "$work"/dist/trioecho-*.tar.gz)
echo "check-packaging: built $(basename "$sdist") and $(basename "$work"/dist/*.whl)"
for needed in build_ffi.py setup.py LICENSE csrc/framer.h csrc/echo.h csrc/scan.h csrc/loadgen.h \
    csrc/echo.c tests/support/helpers.py tests/support/serverproc.py examples/shout_server.py; do
    tar -tzf "$sdist" | grep -q "^trioecho-[^/]*/$needed\$" || { echo "sdist lacks $needed"; exit 1; }
done

python -m build --wheel --outdir "$work/from-sdist" "$sdist" > "$work/wheel.log" 2>&1 \
    || { cat "$work/wheel.log"; exit 1; }
# The stable ABI: one wheel for every CPython >= 3.10 on this platform.
wheel=$(ls "$work"/from-sdist/*.whl)
case "$(basename "$wheel")" in
    trioecho-*-cp310-abi3-*.whl) echo "check-packaging: $(basename "$wheel") (stable ABI)" ;;
    *) echo "expected a cp310-abi3 wheel, got $(basename "$wheel")"; exit 1 ;;
esac
python -m zipfile -l "$wheel" > "$work/wheel-files.txt"
for unit in _framer_ffi _echo_ffi _loadgen_ffi _pump_ffi; do
    grep -q "trioecho/$unit\.abi3\.so" "$work/wheel-files.txt" \
        || { echo "the wheel's $unit is not built for the stable ABI:"; cat "$work/wheel-files.txt"; exit 1; }
done
python -m venv "$work/venv-c"
"$work/venv-c/bin/pip" install --quiet "$work"/from-sdist/*.whl
cd "$work"  # not the clone root: its trioecho/ would shadow the installed one
version=$("$work/venv-c/bin/trioecho" --version)
echo "check-packaging: wheel from the sdist: $version"
case "$version" in *"framer: c)") ;; *) echo "expected the C framer"; exit 1 ;; esac
printf 'hi\nq\n' | "$work/venv-c/bin/python" -c '
import sys, trio
from trioecho import EchoSession, FramingConfig
out = EchoSession(FramingConfig("len")).feed(b"\0\0\0\2hi")
assert out.data == b"\0\0\0\5hi" + "好".encode(), out
from trioecho.services import _cecho  # the C echo session is installed too
'
cd - > /dev/null

# The same wheel on every other CPython >= 3.10 this machine has (on PATH, or
# pyenv's): that is what abi3 promises.
built_with=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
others=""
for minor in 10 11 12 13 14; do
    [ "3.$minor" = "$built_with" ] && continue  # checked above
    for candidate in "python3.$minor" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3."$minor".*/bin/python; do
        interpreter=$(command -v "$candidate" 2> /dev/null) || continue
        "$interpreter" -c pass 2> /dev/null || continue  # a pyenv shim of a version not selected
        "$interpreter" -m venv "$work/venv-3.$minor"
        "$work/venv-3.$minor/bin/pip" install --quiet "$wheel" 2> "$work/pip-3.$minor.log" \
            || { cat "$work/pip-3.$minor.log"; exit 1; }
        (cd "$work" && "$work/venv-3.$minor/bin/python" -c '
import trioecho.cli.main  # the command line imports on this version too
from trioecho import FRAMER_IMPLEMENTATION, EchoSession, FramingConfig
from trioecho.services import _cecho
assert FRAMER_IMPLEMENTATION == "c", FRAMER_IMPLEMENTATION
out = EchoSession(FramingConfig("len")).feed(b"\0\0\0\2hi")
assert out.data == b"\0\0\0\5hi" + "好".encode(), out
')
        others="$others 3.$minor"
        break
    done
done
echo "check-packaging: the same wheel, C framer, on CPython${others:- (no other version here)}"

python -m venv "$work/venv-py"
CC=false "$work/venv-py/bin/pip" install --quiet "$sdist" 2> "$work/nocc.log" \
    || { cat "$work/nocc.log"; exit 1; }
cd "$work"
version=$("$work/venv-py/bin/trioecho" --version 2> "$work/warn.log")
echo "check-packaging: without a C compiler: $version"
case "$version" in *"framer: python)") ;; *) echo "expected the Python framer"; exit 1 ;; esac
grep -q "C framer not available" "$work/warn.log" || { echo "no warning at start-up"; exit 1; }
"$work/venv-py/bin/trioecho" bench > /dev/null 2> "$work/bench.log" && { echo "bench ran?"; exit 1; }
grep -q "needs its C load generator" "$work/bench.log" || { cat "$work/bench.log"; exit 1; }
echo "check-packaging: ok"
