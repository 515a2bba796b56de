"""The code blocks of the README and the docs, found and run.

A Markdown file's fenced blocks, in order, are its snippets.  How each is
checked depends on its language and on a marker comment on the line before
the fence (``<!-- snippet: MODE -->``):

``python``
    run in one namespace per file, in order (as doctest runs a page), with
    top-level ``await`` allowed (run under ``trio.run``).  A line
    ``EXPRESSION  # -> EXPECTED`` checks that EXPRESSION equals EXPECTED.
    With ``server``: the block is a program, started as its own process,
    and the file's later snippets run while it serves (it must accept a
    connection within 10 s); it is stopped with SIGTERM at the end of the
    file and must not have printed a traceback.
``console`` with ``session``
    ``$ COMMAND`` lines run with bash from the clone's root, each followed by
    the output it must print (trailing spaces ignored); a command ending in
    ``&`` is started in the background and its output lines are read as they
    come (a server printing ``listening on ...``); it is stopped with SIGTERM
    when the session ends and must exit without a traceback.
``console``, ``sh`` without a marker
    commands to copy, not run: each ``trioecho ...`` or ``python -m trioecho
    ...`` command in them must parse with trioecho's own parser.
``toml``, ``json``
    must parse.

The port ``9999`` in any snippet is replaced by a free port, the same one
throughout a file, so examples can say 9999 and tests still run in parallel
with a real service.  In a session command, each ``python`` that starts a
command (after ``|``, ``&&`` or ``;`` too) is this interpreter, never one
from ``PATH``.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from support.liveservers import free_port

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CHECK = "  # -> "
MARKER = re.compile(r"<!--\s*snippet:\s*(\w+)\s*-->")
FENCE = re.compile(r"^(`{3,})(\S*)")


@dataclasses.dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the fence's first line, 1-based
    language: str
    mode: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def markdown_files() -> list[Path]:
    """The README and every page of the docs."""
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *docs]


def snippets(path: Path) -> list[Snippet]:
    """The fenced code blocks of ``path`` (MyST directives excluded)."""
    found: list[Snippet] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        ticks, language = fence.groups()
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == ticks), None)
        if end is None:
            raise AssertionError(f"{path.relative_to(ROOT)}:{index + 1}: unclosed code fence")
        marker = MARKER.fullmatch(lines[index - 1].strip()) if index else None
        if not language.startswith("{"):
            found.append(
                Snippet(
                    path,
                    index + 1,
                    language,
                    marker.group(1) if marker else "",
                    "\n".join(lines[index + 1 : end]) + "\n",
                )
            )
        index = end + 1
    return found


def with_checks(snippet: Snippet, code: str) -> str:
    """``code`` with each ``EXPR  # -> EXPECTED`` line turned into a check."""
    out = []
    for number, line in enumerate(code.splitlines(), snippet.line + 1):
        if CHECK in line:
            expression, expected = line.split(CHECK, 1)
            indent = expression[: len(expression) - len(expression.lstrip())]
            where = f"{snippet.where.rsplit(':', 1)[0]}:{number}"
            out.append(
                f"{indent}__check__({where!r}, {expression.strip()!r}, ({expression.strip()}),"
                f" ({expected.strip()}))"
            )
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def check(where: str, expression: str, got: object, expected: object) -> None:
    if got != expected:
        raise AssertionError(f"{where}: {expression} is {got!r}, the docs say {expected!r}")


class FileRun:
    """Runs one file's snippets in order; stops what they started at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = free_port()
        self.namespace: dict[str, Any] = {"__name__": "__snippet__", "__check__": check}
        self.processes: list[tuple[str, subprocess.Popen[str]]] = []

    def localize(self, code: str) -> str:
        return code.replace("9999", str(self.port))

    def run(self, snippet: Snippet, tmp: Path) -> None:
        code = self.localize(snippet.code)
        if snippet.language == "python":
            if snippet.mode == "server":
                self.start_program(snippet, code, tmp)
            else:
                self.run_python(snippet, code)
        elif snippet.language == "console" and snippet.mode == "session":
            self.run_session(snippet, code)
        elif snippet.language in ("console", "sh"):
            check_commands(snippet, code)
        elif snippet.language == "toml":
            tomllib.loads(code)
        elif snippet.language == "json":
            json.loads(code)

    def run_python(self, snippet: Snippet, code: str) -> None:
        source = with_checks(snippet, code)
        compiled = compile(
            source, snippet.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        result = eval(compiled, self.namespace)
        if inspect.iscoroutine(result):

            async def run_it() -> None:
                await result

            trio.run(run_it)

    def start_program(self, snippet: Snippet, code: str, tmp: Path) -> None:
        program = tmp / f"snippet_{snippet.line}.py"
        program.write_text(code)
        process = subprocess.Popen(
            [sys.executable, str(program)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.processes.append((snippet.where, process))
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{snippet.where}: the program exited: {process.stderr}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{snippet.where}: nothing listens on the port after 10 s")
            time.sleep(0.05)

    def run_session(self, snippet: Snippet, code: str) -> None:
        try:
            self.run_session_steps(snippet, code)
        finally:
            self.stop()  # what the session started in the background: its port is free again

    def run_session_steps(self, snippet: Snippet, code: str) -> None:
        for command, expected in session_steps(code):
            shell = with_this_python(command)
            if shell.endswith("&"):
                process = subprocess.Popen(
                    ["bash", "-c", "exec " + shell[:-1]],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                    start_new_session=True,
                )
                self.processes.append((snippet.where, process))
                assert process.stdout is not None
                got = [process.stdout.readline().rstrip() for _ in expected]
            else:
                done = subprocess.run(
                    ["bash", "-c", shell], capture_output=True, text=True, cwd=ROOT, timeout=60
                )
                assert done.returncode == 0, f"{snippet.where}: {command}: {done.stderr}"
                got = [line.rstrip() for line in done.stdout.rstrip("\n").splitlines()]
            want = [line.rstrip() for line in expected]
            assert got == want, f"{snippet.where}: $ {command}"

    def stop(self) -> None:
        failures = []
        for where, process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
                failures.append(f"{where}: did not stop within 30 s of SIGTERM")
                continue
            if "Traceback" in (err or ""):
                failures.append(f"{where}: printed a traceback:\n{err}")
        self.processes.clear()
        assert not failures, "\n".join(failures)


# "python" where a shell command starts: at the start, after | & ; ( and VAR=value words.
_PYTHON_COMMAND = re.compile(r"(^|[|&;(]\s*)((?:\w+=\S*\s+)*)python3?(?=\s|$)")


def with_this_python(command: str) -> str:
    """The shell ``command`` with each ``python`` (or ``python3``) that
    starts a command, in a pipe or a list too, replaced by this interpreter."""
    executable = shlex.quote(sys.executable)
    return _PYTHON_COMMAND.sub(lambda match: match[1] + match[2] + executable, command)


def session_steps(code: str) -> Iterator[tuple[str, list[str]]]:
    """``(command, expected output lines)`` for each ``$ `` line of a session."""
    command: str | None = None
    output: list[str] = []
    for line in code.rstrip("\n").splitlines():
        if line.startswith("$ "):
            if command is not None:
                yield command, output
            command, output = line[2:].strip(), []
        else:
            output.append(line)
    if command is not None:
        yield command, output


def trioecho_commands(code: str) -> Iterator[list[str]]:
    """The arguments of each ``trioecho`` command line in ``code``."""
    for raw in code.splitlines():
        line = raw.strip().removeprefix("$ ")
        for part in re.split(r"\s*(?:&&|\||;)\s*", line):
            words = shlex.split(part, comments=True)
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VARIABLE=value before the command
            if words[:1] == ["trioecho"]:
                yield [w for w in words[1:] if w != "&"]
            elif words[:3] == ["python", "-m", "trioecho"]:
                yield [w for w in words[3:] if w != "&"]


def check_commands(snippet: Snippet, code: str) -> None:
    from trioecho.cli.main import with_default_command
    from trioecho.cli.options import build_parser

    for words in trioecho_commands(code):
        arguments = with_default_command(words)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            try:
                build_parser().parse_args(arguments)
            except SystemExit as exit_:
                if exit_.code not in (0, None):
                    raise AssertionError(
                        f"{snippet.where}: trioecho {shlex.join(arguments)} does not parse"
                    ) from None
