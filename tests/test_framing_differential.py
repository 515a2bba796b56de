"""Differential properties: the C framer and the pure-Python twin agree.

Random configurations, random bytes or random messages, random chunking:
both implementations must yield the same frames and the same errors at the
same point, and valid messages must come back exactly as sent.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from support.helpers import chunked, framer_events, received

from trioecho import (
    FramingError,
    LengthPrefixedFramer,
    LineFramer,
)

Event = tuple[Any, ...]

DELIMITERS = [b"\n", b"\r\n", b"\0", b"aa", b"aba", b"\r\r", b"12345678"]

line_configs = st.fixed_dictionaries(
    {
        "delimiter": st.sampled_from(DELIMITERS) | st.binary(min_size=1, max_size=3),
        "strip_cr": st.booleans(),
        "max_frame": st.integers(0, 12),
        "on_too_long": st.sampled_from(["error", "discard"]),
    }
)
length_configs = st.fixed_dictionaries(
    {
        "length_bytes": st.sampled_from([1, 2, 4, 8]),
        "byteorder": st.sampled_from(["big", "little"]),
        "max_frame": st.integers(0, 300),
    }
)


def any_length_input(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test(config, data, cuts)`` on a length configuration and any
    bytes cut anywhere: the cases of the length framers' differential
    properties."""
    return settings(max_examples=1500, deadline=None)(
        given(
            config=length_configs,
            data=st.binary(max_size=80),
            cuts=st.lists(st.integers(0, 80), max_size=8),
        )(test)
    )


# Line input drawn mostly from the bytes that matter: delimiters, \r, 'a', 'b'.
line_bytes = st.lists(
    st.sampled_from([b"\n", b"\r", b"a", b"b", b"\0", b"1", b"x"]) | st.binary(max_size=3),
    max_size=60,
).map(b"".join)


def errors(evs: list[Event]) -> list[int]:
    """The limit of each error: the length seen depends on when the error was noticed."""
    return [e[2] for e in evs if e[0] == "too long"]


def both(kind: type[LineFramer] | type[LengthPrefixedFramer], config: dict[str, Any]) -> list[Any]:
    return [kind(implementation=impl, **config) for impl in ("c", "python")]


@settings(max_examples=1500, deadline=None)
@given(config=line_configs, data=line_bytes, cuts=st.lists(st.integers(0, 60), max_size=8))
def test_line_framers_agree_on_any_bytes(
    config: dict[str, Any], data: bytes, cuts: list[int]
) -> None:
    c, py = both(LineFramer, config)
    chunks = chunked(data, cuts)
    assert framer_events(c, chunks) == framer_events(py, chunks)


@settings(max_examples=1000, deadline=None)
@given(config=line_configs, data=line_bytes)
def test_line_framers_agree_byte_by_byte(config: dict[str, Any], data: bytes) -> None:
    c, py = both(LineFramer, config)
    chunks = [data[i : i + 1] for i in range(len(data))]
    by_byte = framer_events(c, chunks)
    assert by_byte == framer_events(py, chunks)
    # Chunking changes when frames and errors arrive, never what they are.
    whole = framer_events(LineFramer(implementation="c", **config), [data])
    assert received(whole) == received(by_byte)
    assert errors(whole) == errors(by_byte)


@any_length_input
def test_length_framers_agree_on_any_bytes(
    config: dict[str, Any], data: bytes, cuts: list[int]
) -> None:
    c, py = both(LengthPrefixedFramer, config)
    chunks = chunked(data, cuts)
    assert framer_events(c, chunks) == framer_events(py, chunks)


@settings(max_examples=800, deadline=None)
@given(
    config=length_configs,
    messages=st.lists(st.binary(max_size=40), max_size=30),
    cuts=st.lists(st.integers(0, 1500), max_size=10),
)
def test_length_messages_round_trip(
    config: dict[str, Any], messages: list[bytes], cuts: list[int]
) -> None:
    encoder = LengthPrefixedFramer(**config)
    chunks = chunked(encoder.encode_many(messages), cuts)
    c, py = both(LengthPrefixedFramer, config)
    c_events = framer_events(c, chunks)
    assert c_events == framer_events(py, chunks)
    accepted = list(itertools.takewhile(lambda m: len(m) <= config["max_frame"], messages))
    assert received(c_events) == accepted
    assert c_events[-1][0] == ("eof" if accepted == messages else "too long")


@settings(max_examples=800, deadline=None)
@given(
    config=line_configs,
    messages=st.lists(line_bytes, max_size=20),
    cuts=st.lists(st.integers(0, 1500), max_size=10),
)
def test_line_messages_round_trip_or_are_refused(
    config: dict[str, Any], messages: list[bytes], cuts: list[int]
) -> None:
    encoder = LineFramer(**config)
    try:
        wire = encoder.encode_many(messages)
    except FramingError:
        # Refused: then at least one message really cannot be sent as a line.
        assert any(_unsendable(encoder, m) for m in messages)
        return
    chunks = chunked(wire, cuts)
    c, py = both(LineFramer, config)
    c_events = framer_events(c, chunks)
    assert c_events == framer_events(py, chunks)
    if config["on_too_long"] == "discard":
        accepted = [m for m in messages if len(m) <= config["max_frame"]]
    else:
        accepted = list(itertools.takewhile(lambda m: len(m) <= config["max_frame"], messages))
    assert received(c_events) == accepted
    if accepted == messages:
        assert c_events[-1] == ("eof",)


def _unsendable(encoder: LineFramer, message: bytes) -> bool:
    try:
        encoder.encode(message)
    except FramingError:
        return True
    return False


def _run_python(code: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
        cwd=cwd,
        timeout=60,
    )


def test_environment_variable_selects_the_pure_python_twin() -> None:
    result = _run_python(
        "import trioecho; print(trioecho.FRAMER_IMPLEMENTATION)", TRIOECHO_PUREPYTHON="1"
    )
    assert result.stdout == "python\n"
    assert result.stderr == ""
    result = _run_python(
        "import trioecho; print(trioecho.FRAMER_IMPLEMENTATION)", TRIOECHO_PUREPYTHON="0"
    )
    assert result.stdout == "c\n"


def test_missing_extension_falls_back_with_one_warning() -> None:
    code = (
        "import sys, logging\n"
        "logging.basicConfig(format='%(levelname)s %(message)s')\n"
        "sys.modules['trioecho._framer_ffi'] = None\n"
        "import trioecho\n"
        "from trioecho import LineFramer\n"
        "print(trioecho.FRAMER_IMPLEMENTATION, LineFramer().feed(b'a\\n'))\n"
    )
    result = _run_python(code, TRIOECHO_PUREPYTHON="")
    assert result.stdout == "python [b'a']\n"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1
    assert "C framer not available" in warnings[0]


def test_a_source_tree_without_its_c_modules_is_named_in_the_warning(tmp_path: Path) -> None:
    """Run from a clone's root (here, a copy of the tree with nothing built),
    Python imports the clone, not the installed trioecho: the warning says
    so, not "reinstall" (which the user may have just done)."""
    root = Path(__file__).resolve().parent.parent
    clone = tmp_path / "clone"
    shutil.copytree(
        root / "trioecho", clone / "trioecho", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    shutil.copy(root / "build_ffi.py", clone)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    show = "import trioecho; print(trioecho.__file__, trioecho.FRAMER_IMPLEMENTATION)"
    installed = _run_python(show, cwd=elsewhere, TRIOECHO_PUREPYTHON="")
    package = Path(installed.stdout.split()[0]).parent  # the installed trioecho
    assert installed.stdout.split()[1] == "c"  # the advice works
    assert installed.stderr == ""
    from_clone = _run_python(show, cwd=clone, TRIOECHO_PUREPYTHON="")
    assert from_clone.stdout == f"{clone / 'trioecho' / '__init__.py'} python\n"
    warning = (
        f"trioecho: C framer not available: trioecho was imported from the source tree at "
        f"{clone}, which has no built C module; using the pure-Python framer. Run "
        "`python build_ffi.py` there"
    )
    assert from_clone.stderr == (
        f"{warning}, or run from another directory to use the trioecho installed at {package}.\n"
    )
    # No other copy on sys.path (the editable install's entry taken out):
    alone = _run_python(
        "import os, sys, trio\n"
        "sys.path[:] = [p for p in sys.path if not p or not os.path.isdir(p + '/trioecho')]\n"
        + show,
        cwd=clone,
        TRIOECHO_PUREPYTHON="",
    )
    assert alone.stderr == f"{warning} (or `pip install -e .`).\n"


def forward_events(framer: LengthPrefixedFramer, chunks: list[bytes]) -> list[Event]:
    """What each forwarding scan reports, as plain values, up to an error."""
    events: list[Event] = []
    for chunk in chunks:
        out, frames, error = framer.forward(chunk)
        events.append((bytes(out), frames, None if error is None else str(error)))
        if error is not None:
            break
    return events


@any_length_input
def test_length_framers_forward_alike_and_pass_the_input_on(
    config: dict[str, Any], data: bytes, cuts: list[int]
) -> None:
    c, py = both(LengthPrefixedFramer, config)
    chunks = chunked(data, cuts)
    events = forward_events(c, chunks)
    assert events == forward_events(py, chunks)
    passed = b"".join(event[0] for event in events)
    assert passed == data[: len(passed)]
    # The frames counted and the error found are feed()'s.
    fed = framer_events(LengthPrefixedFramer(implementation="c", **config), chunks)
    assert sum(event[1] for event in events) == len(received(fed))
    found = [event[2] for event in events if event[2] is not None]
    assert bool(found) == (fed[-1][0] == "too long")
