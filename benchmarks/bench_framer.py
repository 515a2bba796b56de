"""Framer micro-benchmark: nanoseconds per frame, C framer vs pure-Python twin vs naive splitters.

Each measurement feeds one read's worth of complete frames (64 KiB, or 16
frames when they are larger) to a framer with default limits, over and over,
and reports the best of several rounds.  Baselines:

* ``struct loop``: a ``struct.unpack_from`` loop slicing length-prefixed frames;
* ``bytes.split``: ``data.split(b"\\n")``, the C loop a line framer must match;
* ``typed loop``: the same loop for PostgreSQL's messages (a type byte, then a
  length counting itself; frames keep both), against ``presets.postgresql``;
* ``varint loop``: a plain-Python LEB128 loop for protobuf's delimited
  messages, against ``presets.protobuf_delimited``.

Ratios are baseline time / framer time: above 1.0 the framer is faster.

    python benchmarks/bench_framer.py            # full table
    python benchmarks/bench_framer.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import struct
import sys
import time
from collections.abc import Callable

from trioecho import FramingConfig, LengthPrefixedFramer, LineFramer
from trioecho.framing import presets
from trioecho.framing.length import encode_varint

SIZES = (16, 256, 4096)
READ_SIZE = 64 * 1024
_HEADER = struct.Struct(">I")


def struct_loop(data: bytes) -> list[bytes]:
    """Naive length-prefixed splitter: what most hand-written servers do."""
    unpack_from = _HEADER.unpack_from
    frames: list[bytes] = []
    pos = 0
    size = len(data)
    while size - pos >= 4:
        (length,) = unpack_from(data, pos)
        end = pos + 4 + length
        if end > size:
            break
        frames.append(data[pos + 4 : end])
        pos = end
    return frames


def typed_loop(data: bytes) -> list[bytes]:
    """Naive PostgreSQL message splitter: type byte, length counting itself."""
    unpack_from = _HEADER.unpack_from
    frames: list[bytes] = []
    pos = 0
    size = len(data)
    while size - pos >= 5:
        (length,) = unpack_from(data, pos + 1)
        if length < 4:
            raise ValueError("negative length")
        end = pos + 1 + length
        if end > size:
            break
        frames.append(data[pos:end])
        pos = end
    return frames


def varint_loop(data: bytes) -> list[bytes]:
    """Naive varint-delimited splitter (protobuf's writeDelimitedTo format)."""
    frames: list[bytes] = []
    pos = 0
    size = len(data)
    while pos < size:
        length = shift = 0
        i = pos
        while True:
            if i >= size:
                return frames
            byte = data[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 35:
                raise ValueError("varint too long")
        end = i + length
        if end > size:
            break
        frames.append(data[i:end])
        pos = end
    return frames


def split_lines(data: bytes) -> list[bytes]:
    """Naive line splitter: bytes.split, keeping the unfinished tail aside."""
    lines = data.split(b"\n")
    lines.pop()
    return lines


def best_ns_per_frame(
    splitters: dict[str, Callable[[bytes], list[bytes]]], data: bytes, count: int, rounds: int
) -> dict[str, float]:
    """Best ns per frame of each splitter; rounds interleave them, so that a
    noisy neighbour slows all of them alike."""
    for name, split in splitters.items():
        assert len(split(data)) == count, f"{name} lost frames"
    loops = max(1, 100_000 // count)
    best = dict.fromkeys(splitters, float("inf"))
    for _ in range(rounds):
        for name, split in splitters.items():
            start = time.perf_counter_ns()
            for _ in range(loops):
                split(data)
            best[name] = min(best[name], (time.perf_counter_ns() - start) / (loops * count))
    return best


def workload(framing: str, size: int) -> tuple[bytes, int]:
    count = max(16, READ_SIZE // (size + 4))
    payload = bytes(range(97, 97 + 26)) * (size // 26 + 1)
    messages = [payload[:size]] * count
    if framing == "len":
        return LengthPrefixedFramer().encode_many(messages), count
    if framing == "typed":  # PostgreSQL DataRow-like messages
        return b"".join(b"D" + (size + 4).to_bytes(4, "big") + m for m in messages), count
    if framing == "varint":
        return b"".join(encode_varint(size) + m for m in messages), count
    return LineFramer().encode_many(messages), count


CASES: tuple[tuple[str, str, Callable[[bytes], list[bytes]], FramingConfig], ...] = (
    ("len", "struct loop", struct_loop, FramingConfig("len")),
    ("line", "bytes.split", split_lines, FramingConfig("line")),
    ("typed", "typed loop", typed_loop, presets.postgresql("server")),
    ("varint", "varint loop", varint_loop, presets.protobuf_delimited()),
)


def run(rounds: int, sizes: tuple[int, ...] = SIZES) -> list[tuple[str, int, str, float, float]]:
    rows = []
    for framing, baseline_name, baseline, config in CASES:
        for size in sizes:
            data, count = workload(framing, size)
            splitters: dict[str, Callable[[bytes], list[bytes]]] = {baseline_name: baseline}
            for impl in ("c", "python"):
                framer = dataclasses.replace(config, implementation=impl).new_framer()
                splitters[f"trioecho {impl}"] = framer.feed
            best = best_ns_per_frame(splitters, data, count, rounds)
            base_ns = best[baseline_name]
            for name, ns in best.items():
                rows.append((framing, size, name, ns, base_ns / ns))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 25")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})  # one core, less jitter
    rows = run(5 if args.quick else 25)
    print(
        f"Python {sys.version.split()[0]}, {READ_SIZE // 1024} KiB per feed; "
        "ratio = baseline ns / ns (higher is faster)\n"
    )
    print("| framing | frame bytes | splitter | ns/frame | ratio vs baseline |")
    print("|---|---:|---|---:|---:|")
    for framing, size, name, ns, ratio in rows:
        print(f"| {framing} | {size} | {name} | {ns:.1f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
