"""tools/check_layers.py: it passes on the package, and fails on each kind
of breach planted in a copy of it."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_layers", ROOT / "tools" / "check_layers.py")
assert _spec is not None and _spec.loader is not None
check_layers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_layers)


class Checked(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_check(root: Path) -> Checked:
    """The tool's exit code and output on the package under ``root``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = check_layers.main([str(root)])
    return Checked(code, out.getvalue(), err.getvalue())


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "trioecho",
        tmp_path / "trioecho",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    return tmp_path


def test_the_package_keeps_every_rule() -> None:
    checked = run_check(ROOT)
    assert checked.returncode == 0, checked.stderr
    assert "no .transport above the stream, argparse only in the command line" in checked.stdout


def test_the_unplanted_copy_passes(copy: Path) -> None:
    assert run_check(copy).returncode == 0


@pytest.mark.parametrize(
    ("module", "planted", "problem"),
    [
        (
            "server/planted.py",
            "import argparse\n",
            "trioecho.server.planted imports argparse (line 1): only trioecho.cli may",
        ),
        (
            "workers/planted.py",
            "from argparse import Namespace\n",
            "trioecho.workers.planted imports argparse (line 1): only trioecho.cli may",
        ),
        (
            "services/planted.py",
            "def peek(stream):\n    return stream.transport\n",
            "trioecho.services.planted reaches .transport (line 2): above the stream layer, "
            "use what MessageStream offers",
        ),
        (
            "framing/planted.py",
            "from trioecho.server.server import MessageServer\n",
            "trioecho.framing.planted (layer 1) imports trioecho.server.server (layer 4)",
        ),
        (
            "framing/named.py",
            'import importlib\nUNIT = importlib.import_module("trioecho.services._cecho")\n',
            "trioecho.framing.named (layer 1) imports trioecho.services._cecho (layer 5)",
        ),
    ],
)
def test_a_planted_breach_fails_the_check_naming_it(
    copy: Path, module: str, planted: str, problem: str
) -> None:
    (copy / "trioecho" / module).write_text(planted)
    checked = run_check(copy)
    assert checked.returncode == 1
    assert problem in checked.stderr.splitlines()


def test_a_package_named_in_a_string_is_a_logger_not_an_import(copy: Path) -> None:
    planted = 'import logging\nlogger = logging.getLogger("trioecho.server")\n'
    (copy / "trioecho" / "io" / "planted.py").write_text(planted)
    assert run_check(copy).returncode == 0


def test_the_stream_and_the_command_line_may_do_what_the_rules_forbid_above(copy: Path) -> None:
    (copy / "trioecho" / "stream" / "planted.py").write_text("def t(s):\n    return s.transport\n")
    (copy / "trioecho" / "cli" / "planted.py").write_text("import argparse\n")
    assert run_check(copy).returncode == 0
