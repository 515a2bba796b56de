"""Every code block of the README and the docs runs (tests/support/snippets.py
says how each kind is checked), and the README keeps its promises."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support.snippets import ROOT, FileRun, Snippet, markdown_files, snippets, trioecho_commands

README = ROOT / "README.md"
SERVE = "python -m pip install -e . && python -m trioecho"
TEST = "sh tools/install-system-deps.sh && python -m pip install -e '.[test]' && python -m pytest"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_snippet_runs(path: Path, tmp_path: Path) -> None:
    run = FileRun(path)
    try:
        for snippet in snippets(path):
            run.run(snippet, tmp_path)
    finally:
        run.stop()


def test_the_readme_is_short_and_keeps_its_two_set_up_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 150
    commands = [line.strip() for line in lines if line.strip() in (SERVE, TEST)]
    assert commands == [SERVE, TEST]
    # CI runs the README's test command, word for word
    assert TEST in (ROOT / ".ci" / "run").read_text()


def test_the_docs_have_python_snippets_and_checks() -> None:
    found = [s for path in markdown_files() for s in snippets(path) if s.language == "python"]
    assert len(found) >= 10
    assert sum(s.code.count("  # -> ") for s in found) >= 20


def test_commands_are_found_in_shell_lines() -> None:
    code = (
        "$ python -m trioecho --port 9999 &\n"
        "printf 'a\\n' | TRIOECHO_PUREPYTHON=1 trioecho client --framing len  # a comment\n"
        "trioecho relay --upstream 127.0.0.1:5432 && echo done\n"
    )
    assert list(trioecho_commands(code)) == [
        ["--port", "9999"],
        ["client", "--framing", "len"],
        ["relay", "--upstream", "127.0.0.1:5432"],
    ]


def test_session_commands_run_this_python_not_the_one_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "python"  # what PATH offers first: not this interpreter
    fake.write_text("#!/bin/sh\necho 'the python on PATH ran' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    show = "python -c 'import sys; print(sys.executable)'"
    code = "".join(
        f"$ {command}\n{sys.executable}\n"
        for command in (show, f"echo x | {show}", f"true && {show}", f"X=1 {show}")
    )
    FileRun(README).run_session(Snippet(README, 1, "console", "session", code), code)
