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
