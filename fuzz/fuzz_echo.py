#!/usr/bin/env python3
"""Differential fuzzing: the C echo session against its pure-Python twin (atheris).

Each input picks a framing configuration (length prefix, lines or raw, with
their limits), a stop message, an output capacity (often smaller than one
reply, so replies come out of the C code in pieces), a chunking and the
bytes to feed; it drives one C session and one Python session through the
same calls and crashes on the first difference in replies, counts, stop,
errors, dropped lines or buffered bytes.  Every valid reply is also checked
against the framer's own encoding.  Run it with the C extension built with
ASan + UBSan (``fuzz/run SECONDS JOBS echo`` does the build) so that memory
errors in the C code crash too.

    fuzz/run 60 1 echo
    python fuzz/fuzz_echo.py -runs=1000 fuzz/corpus-echo
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import atheris

from trioecho import FramingConfig
from trioecho.services.echo_session import EchoOutput, EchoSession

DELIMITERS = [b"\n", b"\r\n", b"\0", b"aa", b"aba", b"\r\r", b"12345678", b"a\xe5"]
SUFFIXES = [b"\xe5\xa5\xbd", b"", b"!", b"\r", b"a", b"\n"]


def config_from(fdp: atheris.FuzzedDataProvider) -> tuple[FramingConfig, bytes, bytes]:
    kind = fdp.ConsumeIntInRange(0, 4)
    suffix = fdp.PickValueInList(SUFFIXES)
    stop = fdp.PickValueInList([b"q", b"", b"qq", b"a\n"])
    if kind <= 1:
        length_bytes = fdp.PickValueInList([1, 2, 4, 8])
        limit = (1 << (8 * length_bytes)) - 1 - len(suffix)
        max_frame = min(limit, fdp.ConsumeIntInRange(0, 1 << fdp.ConsumeIntInRange(0, 12)))
        config = FramingConfig(
            "len",
            length_bytes=length_bytes,
            byteorder=fdp.PickValueInList(["big", "little"]),
            max_frame=max_frame,
        )
    elif kind <= 3:
        if fdp.ConsumeBool():
            delimiter = fdp.PickValueInList(DELIMITERS)
        else:
            delimiter = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8)) or b"\n"
        config = FramingConfig(
            "line",
            delimiter=delimiter,
            strip_cr=fdp.ConsumeBool(),
            max_frame=fdp.ConsumeIntInRange(0, 1 << fdp.ConsumeIntInRange(0, 10)),
            on_too_long=fdp.PickValueInList(["error", "discard"]),
        )
    else:
        config = FramingConfig("raw")
    return config, suffix, stop


def plain(output: EchoOutput, buffered: int) -> tuple[Any, ...]:
    def error(exc: BaseException | None) -> Any:
        return None if exc is None else (type(exc).__name__, str(exc))

    return (
        output.data,
        output.replies,
        output.received,
        output.stopped,
        error(output.error),
        tuple(error(e) for e in output.dropped),
        buffered,
    )


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    config, suffix, stop = config_from(fdp)
    capacity = fdp.PickValueInList([1, 2, 3, 5, 8, 13, 64, 4096])
    c = EchoSession(config, suffix=suffix, stop=stop, capacity=capacity, implementation="c")
    py = EchoSession(config, suffix=suffix, stop=stop, capacity=capacity, implementation="python")
    cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 12)))
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    bounds = [0, *(min(cut, len(stream)) for cut in cuts), len(stream)]
    encoder = config.new_framer()
    for start, end in itertools.pairwise(bounds):
        chunk = stream[start:end]
        c_out, py_out = c.feed(chunk), py.feed(chunk)
        c_result, py_result = plain(c_out, c.buffered), plain(py_out, py.buffered)
        if c_result != py_result:
            raise AssertionError(f"C and Python differ: {config}\n C: {c_result}\n Py: {py_result}")
        if config.framing != "raw" and c_out.replies:
            # Replies decode as whole frames, one per reply.
            decoder = FramingConfig(
                config.framing,
                length_bytes=config.length_bytes,
                byteorder=config.byteorder,
                delimiter=config.delimiter,
                strip_cr=config.strip_cr,
                max_frame=1 << 40 if config.framing == "len" else (1 << 12) + 80,
            ).new_framer()
            frames = decoder.feed(c_out.data)
            if len(frames) != c_out.replies or decoder.buffered:
                raise AssertionError(f"replies do not decode: {config} {c_out}")
            if any(not frame.endswith(suffix) for frame in frames):
                raise AssertionError(f"a reply lacks the suffix: {config} {c_out}")
    if plain(c.feed_eof(), c.buffered) != plain(py.feed_eof(), py.buffered):
        raise AssertionError(f"C and Python differ at EOF: {config}")
    del encoder


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
