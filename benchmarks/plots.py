"""Figures from compare.py's results file (its JSON), with matplotlib.

    python benchmarks/plots.py results.json figures/   # redraw from a saved run

Draws three PNG files into the figures folder, each captioned with the run's
date and machine:

- ``pingpong.png``: ping-pong messages per second and server CPU per message
  against the number of connections, one line per peer (the floor, the C
  epoll server, dashed);
- ``latency-5000.png``: p99 and maximum latency with 5,000 connections;
- ``pipelined.png``: pipelined throughput, length-prefixed and line framing.

A peer that failed a workload has no point there; the tables on the
performance page keep the numbers (a figure never replaces them).
matplotlib comes from the optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

FIGURES = ("pingpong.png", "latency-5000.png", "pipelined.png")
# Lines that stand out: trioecho, and the floor (compare.py's C epoll server).
STYLES: dict[str, dict[str, Any]] = {
    "trioecho": {"linewidth": 2.6},
    "c-epoll": {"linewidth": 1.6, "linestyle": "--", "color": "black"},
}


def caption(results: dict[str, Any]) -> str:
    """One line naming the run: date, machine, commit, run lengths."""
    machine = results["machine"]
    settings = results["settings"]
    return (
        f"{results['date'][:10]}, {machine['cpu']} ({machine['cpus']} CPUs), "
        f"Linux {machine['kernel']}, Python {machine['python']}, trioecho {machine['trioecho']} "
        f"({machine['commit']}); {settings['duration']:g} s runs, {settings['placement']}"
    )


def measured(results: dict[str, Any], workload: str, peer: str) -> dict[str, Any] | None:
    """The clean measurement of ``peer`` on ``workload``, if there is one."""
    cell = results["results"].get(workload, {}).get(peer)
    if cell is None or "failed" in cell or "skipped" in cell or cell["errors"]:
        return None
    return dict(cell)


def pingpong_workloads(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The ping-pong workloads with 64-byte length-prefixed messages, by
    connections (not over TLS: those are rows of the tables only)."""
    chosen = [
        w
        for w in results["workloads"]
        if w["depth"] == 1 and w["size"] == 64 and w["framing"] == "len" and not w.get("tls")
    ]
    return sorted(chosen, key=lambda w: w["connections"])


def peer_style(peer: str, peers: list[str]) -> dict[str, Any]:
    """The peer's line: its own style, else a colour of its own (tab20: more
    peers than the default cycle's ten colours)."""
    import matplotlib

    style = dict(STYLES.get(peer, {"linewidth": 1.2}))
    style.setdefault("color", matplotlib.colormaps["tab20"](peers.index(peer) % 20))
    return style


def draw_pingpong(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    workloads = pingpong_workloads(results)
    figure, (rate, cpu) = plt.subplots(1, 2, figsize=(13, 4.8))
    for peer, title in results["peers"].items():
        points = [(w["connections"], measured(results, w["key"], peer)) for w in workloads]
        clean = [(n, m) for n, m in points if m is not None]
        if not clean:
            continue
        style = peer_style(peer, list(results["peers"]))
        xs = [n for n, _ in clean]
        rate.plot(xs, [m["msgs_per_s"] for _, m in clean], marker="o", label=title, **style)
        with_cpu = [(n, m) for n, m in clean if m["cpu_per_message_us"] is not None]
        cpu.plot(
            [n for n, _ in with_cpu],
            [m["cpu_per_message_us"] for _, m in with_cpu],
            marker="o",
            label=title,
            **style,
        )
    for axes in (rate, cpu):
        axes.set_xscale("log")
        axes.set_xlabel("connections (ping-pong, 64 B, len framing)")
        axes.grid(True, which="both", alpha=0.3)
    rate.set_ylabel("messages per second (higher is better)")
    cpu.set_ylabel("server CPU per message, µs (lower is better)")
    rate.set_ylim(bottom=0)
    cpu.set_ylim(bottom=0)
    handles, labels = rate.get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8)
    figure.suptitle("Request/reply against connection count", fontsize=12)
    finish(figure, results, path, right=0.8)


def draw_latency(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    many = [w for w in pingpong_workloads(results) if w["connections"] >= 5000]
    figure, axes = plt.subplots(figsize=(9, 4.6))
    if many:
        key = many[0]["key"]
        rows = [
            (title, m)
            for peer, title in results["peers"].items()
            if (m := measured(results, key, peer)) is not None
        ]
        names = [title for title, _ in rows]
        positions = range(len(rows))
        for offset, which in ((0.2, "p99"), (-0.2, "max")):
            bars = axes.barh(
                [p + offset for p in positions],
                [m["latency_ms"][which] for _, m in rows],
                0.4,
                label=which,
            )
            axes.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
        axes.set_yticks(list(positions), names, fontsize=8)
        axes.legend()
    axes.set_xscale("log")  # the seed's threads are 30 times slower than the rest
    axes.set_xlabel("latency, ms, log scale (lower is better)")
    axes.grid(True, axis="x", alpha=0.3)
    figure.suptitle("Latency with 5,000 connections (ping-pong, 64 B, len)", fontsize=12)
    finish(figure, results, path)


def draw_pipelined(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    pipelined = [w for w in results["workloads"] if w["depth"] > 1]
    figure, axes = plt.subplots(figsize=(9, 4.6))
    peers = list(results["peers"].items())
    width = 0.8 / max(len(pipelined), 1)
    for index, workload in enumerate(pipelined):
        values = [
            (m["msgs_per_s"] if (m := measured(results, workload["key"], peer)) else 0.0)
            for peer, _ in peers
        ]
        offset = (index - (len(pipelined) - 1) / 2) * width
        axes.barh(
            [p + offset for p in range(len(peers))],
            values,
            width,
            label=f"{workload['framing']} framing",
        )
    axes.set_yticks(range(len(peers)), [title for _, title in peers], fontsize=8)
    axes.set_xlabel("messages per second (higher is better)")
    axes.grid(True, axis="x", alpha=0.3)
    if pipelined:
        axes.legend()
        first = pipelined[0]
        subtitle = f"{first['connections']} conns, depth {first['depth']}, {first['size']} B"
    else:
        subtitle = "not measured"
    figure.suptitle(f"Pipelined throughput ({subtitle})", fontsize=12)
    finish(figure, results, path)


def finish(figure: Any, results: dict[str, Any], path: Path, right: float = 1.0) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    thousands = FuncFormatter(lambda value, _position: f"{value:,.0f}")
    for axes in figure.axes:
        if axes.get_xscale() == "linear":
            axes.xaxis.set_major_formatter(thousands)
        if axes.get_ylabel().startswith("messages"):
            axes.yaxis.set_major_formatter(thousands)

    figure.text(0.5, 0.01, caption(results), ha="center", fontsize=7, color="0.35")
    figure.tight_layout(rect=(0, 0.04, right, 1))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def draw_all(results: dict[str, Any], folder: Path) -> list[Path]:
    """Draw every figure of ``results`` into ``folder``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FIGURES]
    draw_pingpong(results, paths[0])
    draw_latency(results, paths[1])
    draw_pipelined(results, paths[2])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results file written by compare.py --json")
    parser.add_argument("folder", type=Path, help="where to write the PNG files")
    args = parser.parse_args(argv)
    for path in draw_all(json.loads(args.results.read_text()), args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
