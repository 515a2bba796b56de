"""trioecho's types reach its users: mypy, run on a user's code outside the
clone, finds the installed package (``py.typed``, an editable install's
plain ``.pth``) and reports the mistakes planted in it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

USER_CODE = """\
import trio
import trioecho


async def handler(stream: trioecho.MessageStream) -> None:
    async for message in stream:
        await stream.send_message(message.decode())


server = trioecho.MessageServer(handler, port="9999")
framing: int = trioecho.FramingConfig("len")


async def main() -> None:
    stream = await trioecho.open_message_stream("127.0.0.1", 9999, framing="len")
    await stream.send_message(b"fine")
    reply: str = await stream.receive_message()


trio.run(main)
"""


def test_mypy_checks_a_users_code_against_the_installed_package(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER_CODE)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--hide-error-context",
            "--cache-dir",
            str(tmp_path / "cache"),
            "user.py",
        ],
        cwd=tmp_path,  # outside the clone: the package is found as installed
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert errors == [
        'user.py:7: error: Argument 1 to "send_message" of "MessageStream" has incompatible '
        'type "str"; expected "bytes | bytearray | memoryview[int]"  [arg-type]',
        'user.py:10: error: Argument "port" to "MessageServer" has incompatible type "str"; '
        'expected "int"  [arg-type]',
        "user.py:11: error: Incompatible types in assignment (expression has type "
        '"FramingConfig", variable has type "int")  [assignment]',
        'user.py:17: error: Incompatible types in assignment (expression has type "bytes", '
        'variable has type "str")  [assignment]',
    ], textwrap.indent(result.stdout + result.stderr, "    ")
