#!/usr/bin/env python3
"""Differential fuzzing: the C framer against its pure-Python twin (atheris).

Each input picks a framing configuration (lines with one or several
delimiters; length fields of 1/2/3/4/8 bytes with an offset, an adjustment
and the header kept or not; varints; fixed-length frames), a chunking and
the bytes to feed,
drives one C framer and one Python framer through the same calls, and
crashes on the first difference in frames, errors, buffering or end-of-stream
outcome.  Run it with the C extension built with ASan + UBSan (``fuzz/run``
does the build) so that memory errors in the C scan crash too.

    fuzz/run 60                       # fuzz for 60 seconds
    python fuzz/fuzz_framer.py -runs=1000 fuzz/corpus
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import atheris

# Coverage comes from the C framer, compiled with -fsanitize=fuzzer-no-link
# (fuzz/run).  The Python twin mirrors its branches, and leaving it
# uninstrumented makes each execution several times faster.
from trioecho import FrameTooLongError, IncompleteFrameError, MalformedFrameError, make_framer

DELIMITERS = [b"\n", b"\r\n", b"\0", b"aa", b"aba", b"\r\r", b"12345678", b"b", b"ab"]


def delimiter_from(fdp: atheris.FuzzedDataProvider) -> bytes:
    if fdp.ConsumeBool():
        return bytes(fdp.PickValueInList(DELIMITERS))
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8)) or b"\n"


def config_from(fdp: atheris.FuzzedDataProvider) -> dict[str, Any]:
    framing = fdp.PickValueInList(["len", "line", "varint", "fixed", "line-several"])
    max_frame = fdp.ConsumeIntInRange(0, 1 << fdp.ConsumeIntInRange(0, 20))
    if framing == "len":
        return {
            "framing": "len",
            "length_bytes": fdp.PickValueInList([1, 2, 3, 4, 8]),
            "byteorder": fdp.PickValueInList(["big", "little"]),
            "max_frame": max_frame,
            "length_offset": fdp.ConsumeIntInRange(0, 4),
            "length_adjustment": fdp.ConsumeIntInRange(-9, 9),
            "include_header": fdp.ConsumeBool(),
        }
    if framing == "varint":
        return {
            "framing": "varint",
            "max_length_bytes": fdp.ConsumeIntInRange(1, 10),
            "max_frame": max_frame,
            "length_offset": fdp.ConsumeIntInRange(0, 4),
            "include_header": fdp.ConsumeBool(),
        }
    if framing == "fixed":
        return {"framing": "fixed", "frame_size": fdp.ConsumeIntInRange(1, 300)}
    count = 1 if framing == "line" else fdp.ConsumeIntInRange(2, 8)
    delimiters = tuple(delimiter_from(fdp) for _ in range(count))
    return {
        "framing": "line",
        "delimiter": delimiters[0] if count == 1 else delimiters,
        "strip_cr": fdp.ConsumeBool(),
        "max_frame": max_frame >> 3,
        "on_too_long": fdp.PickValueInList(["error", "discard"]),
    }


def outcome(framer: Any, data: bytes) -> tuple[Any, ...]:
    """What one feed reports, as plain values."""
    try:
        frames = framer.feed(data)
    except FrameTooLongError as exc:
        return ("too long", exc.frames, exc.limit, exc.length, str(exc), framer.buffered)
    except MalformedFrameError as exc:
        return ("malformed", exc.frames, exc.value, str(exc), framer.buffered)
    return ("frames", frames, framer.buffered)


def forward_outcome(framer: Any, data: bytes) -> tuple[Any, ...]:
    """What one forwarding scan reports, as plain values."""
    try:
        out, frames, error = framer.forward(data)
    except (FrameTooLongError, MalformedFrameError) as exc:  # broken earlier
        return ("again", str(exc))
    problem = None if error is None else (type(error).__name__, str(error))
    return ("forward", bytes(out), frames, problem, framer.buffered)


def test_forwarding(config: dict[str, Any], chunks: list[bytes]) -> None:
    """C and Python forward alike, the bytes passed on are the input's,
    and they count the frames and find the errors that feed() finds."""
    c_framer = make_framer(implementation="c", **config)
    py_framer = make_framer(implementation="python", **config)
    reference = make_framer(implementation="c", **config)
    passed = bytearray()
    frames = fed = 0
    error = None
    for chunk in chunks:
        c_result = forward_outcome(c_framer, chunk)
        if c_result != forward_outcome(py_framer, chunk):
            raise AssertionError(f"C and Python forward differently: {config}\n C: {c_result}")
        if c_result[0] != "forward":
            break
        passed += c_result[1]
        frames += c_result[2]
        expected = outcome(reference, chunk)
        fed += len(expected[1])
        if c_result[3] is not None or expected[0] != "frames":
            error = c_result[3]
            fed_error = expected[4] if expected[0] == "too long" else expected[3]
            if error is None or expected[0] == "frames" or error[1] != fed_error:
                raise AssertionError(f"feed and forward disagree on an error: {config}")
            break
    stream = b"".join(chunks)
    if bytes(passed) != stream[: len(passed)]:
        raise AssertionError(f"forwarded bytes differ from the input: {config}")
    if frames != fed:
        raise AssertionError(f"forward counted {frames} frames, feed {fed}: {config}")
    if error is None and eof_outcome(c_framer)[0] != eof_outcome(reference)[0]:
        raise AssertionError(f"forward and feed differ at EOF: {config}")


def eof_outcome(framer: Any) -> tuple[Any, ...]:
    try:
        framer.feed_eof()
    except IncompleteFrameError as exc:
        return ("incomplete", exc.buffered, str(exc))
    return ("eof",)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    config = config_from(fdp)
    c_framer = make_framer(implementation="c", **config)
    py_framer = make_framer(implementation="python", **config)
    cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 12)))
    forwarding = config["framing"] != "line" and fdp.ConsumeBool()
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    bounds = [0, *(min(cut, len(stream)) for cut in cuts), len(stream)]
    if forwarding:
        test_forwarding(config, [stream[a:b] for a, b in itertools.pairwise(bounds)])
        return
    for start, end in itertools.pairwise(bounds):
        chunk = stream[start:end]
        while True:
            c_result = outcome(c_framer, chunk)
            py_result = outcome(py_framer, chunk)
            if c_result != py_result:
                raise AssertionError(
                    f"C and Python differ: {config}\n C: {c_result}\n Py: {py_result}"
                )
            if c_result[0] != "too long" or config.get("on_too_long") != "discard":
                break
            chunk = b""  # discard mode: carry on after the bad line
    if eof_outcome(c_framer) != eof_outcome(py_framer):
        raise AssertionError(f"C and Python differ at EOF: {config}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
