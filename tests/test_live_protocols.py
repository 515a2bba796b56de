"""Proof on live traffic: real PostgreSQL and MQTT clients and servers, with a
trioecho relay between them (``trioecho.services.relay``: a MessageStream each way,
every frame re-encoded) built from the presets.

Each session runs through a byte tap on each side of the relay
(client -> tap -> relay -> tap -> server): the bytes the relay sends on must
be exactly the bytes it received, each way.  The servers are the Debian
packages' (``tools/install-system-deps.sh`` installs them)."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.liveservers import ByteTap, LiveServer, mosquitto_server, postgresql_server
from support.serverproc import server_process

from trioecho.framing import presets
from trioecho.framing.config import FramingConfig
from trioecho.services.relay import relay_server
from trioecho.services.relay_config import Answer, Direction

# Message types of PostgreSQL's protocol 3.0 (the "Message Formats" chapter).
FRONTEND_TYPES = set(b"BCcdDEfFHPpQSX")
BACKEND_TYPES = set(b"123AcCdDEGHIKnNRsStTVvWZ")
PROTOCOL_3_0 = 196608
ROWS = 10_000
BIG = 70_000  # over 64 KiB


@pytest.fixture(scope="module")
def postgres() -> Iterator[LiveServer]:
    with postgresql_server() as server:
        yield server


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[LiveServer]:
    with mosquitto_server() as server:
        yield server


async def start_relay(
    nursery: trio.Nursery,
    upstream_port: int,
    client_framing: FramingConfig,
    server_framing: FramingConfig,
    answer: Answer | None = None,
) -> tuple[int, ByteTap, ByteTap, dict[Direction, list[bytes]]]:
    """client -> tap -> relay -> tap -> upstream; returns the port clients
    connect to, both taps and the frames the relay saw each way."""
    server_side = ByteTap(upstream_port)
    server_side_port = await nursery.start(server_side.serve)
    frames: dict[Direction, list[bytes]] = {"up": [], "down": []}
    relay = relay_server(
        ("127.0.0.1", server_side_port),
        client_framing=client_framing,
        server_framing=server_framing,
        on_frame=lambda direction, frame: frames[direction].append(frame),
        answer=answer,
        host="127.0.0.1",
        port=0,
    )
    listeners = await nursery.start(relay.serve)
    client_side = ByteTap(listeners[0].socket.getsockname()[1])
    port = await nursery.start(client_side.serve)
    return port, client_side, server_side, frames


def assert_relayed_unchanged(client_side: ByteTap, server_side: ByteTap, count: int) -> None:
    assert len(client_side.connections) == len(server_side.connections) == count
    for before, after in zip(client_side.connections, server_side.connections, strict=True):
        assert before.up and before.down
        assert bytes(before.up) == bytes(after.up)
        assert bytes(before.down) == bytes(after.down)


# ---- PostgreSQL ------------------------------------------------------------------


def body(row: int) -> str:
    if row % 1000 == 0:
        return (f"big {row} " + "0123456789abcdef" * (BIG // 16 + 1))[: BIG + row // 1000]
    return f"row {row} " + "abcdefghij" * (row % 50)


def psql_script(path: Path) -> str:
    """Create a table, COPY 10,000 rows in, insert two more whose literals are
    over 64 KiB (Query messages that large), read them all back (DataRows
    that large), and an error in between."""
    copy_rows = "".join(f"{row}\t{body(row)}\n" for row in range(1, ROWS + 1))
    literal = "L" * 100_000
    script = path / "session.sql"
    script.write_text(
        "DROP TABLE IF EXISTS items;\n"
        "CREATE TABLE items (id integer PRIMARY KEY, body text NOT NULL);\n"
        "COPY items (id, body) FROM STDIN;\n"
        f"{copy_rows}\\.\n"
        f"INSERT INTO items VALUES ({ROWS + 1}, '{literal}'), ({ROWS + 2}, 'x{literal}');\n"
        "SELECT count(*), sum(length(body)), md5(string_agg(body, '|' ORDER BY id)) FROM items;\n"
        "SELECT id, body FROM items WHERE length(body) > 65536 ORDER BY id;\n"
        "SELECT 1/0;\n"
        "SELECT id, length(body) FROM items ORDER BY id;\n"
        "DROP TABLE items;\n"
    )
    return str(script)


def expected_rows() -> dict[int, str]:
    rows = {row: body(row) for row in range(1, ROWS + 1)}
    rows[ROWS + 1] = "L" * 100_000
    rows[ROWS + 2] = "x" + "L" * 100_000
    return rows


async def psql(port: int, script: str) -> subprocess.CompletedProcess[bytes]:
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"
    return await trio.run_process(
        ["psql", dsn + " gssencmode=disable", "-X", "-A", "-t", "-q", "-f", script],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_postgresql_session_through_the_relay(postgres: LiveServer, tmp_path: Path) -> None:
    script = psql_script(tmp_path)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            port, client_side, server_side, frames = await start_relay(
                nursery,
                postgres.port,
                presets.postgresql("client"),
                presets.postgresql("server"),
            )
            relayed = await psql(port, script)
            await client_side.wait_closed(1)
            await server_side.wait_closed(1)
            nursery.cancel_scope.cancel()
        direct = await psql(postgres.port, script)

    # The same results as without the relay, and the right ones.
    assert relayed.stdout == direct.stdout
    assert relayed.stderr == direct.stderr
    assert relayed.returncode == direct.returncode == 0
    assert b"ERROR:  division by zero" in relayed.stderr
    rows = expected_rows()
    lines = relayed.stdout.decode().splitlines()
    joined = "|".join(rows[row] for row in sorted(rows))
    total = sum(len(text) for text in rows.values())
    assert lines[0] == f"{len(rows)}|{total}|{hashlib.md5(joined.encode()).hexdigest()}"
    big = [row for row in sorted(rows) if len(rows[row]) > 65536]
    assert len(big) == 12
    assert lines[1 : 1 + len(big)] == [f"{row}|{rows[row]}" for row in big]
    assert lines[1 + len(big) :] == [f"{row}|{len(rows[row])}" for row in sorted(rows)]

    # Every frame is a message the protocol defines; the relay changed no byte.
    startup, *messages = frames["up"]
    assert int.from_bytes(startup[:4], "big") == len(startup)
    assert int.from_bytes(startup[4:8], "big") == PROTOCOL_3_0
    assert {frame[0] for frame in messages} <= FRONTEND_TYPES
    assert {frame[0] for frame in frames["down"]} <= BACKEND_TYPES
    for frame in messages + frames["down"]:
        assert int.from_bytes(frame[1:5], "big") == len(frame) - 1
    assert max(len(frame) for frame in messages) > 65536  # the INSERT
    assert max(len(frame) for frame in frames["down"]) > 65536  # a DataRow
    assert sum(frame[0] == ord("D") for frame in frames["down"]) == 1 + len(big) + len(rows)
    assert frames["up"][-1] == b"X\x00\x00\x00\x04"  # Terminate
    assert_relayed_unchanged(client_side, server_side, 1)


# ---- MQTT --------------------------------------------------------------------------

TOPIC = "t"
PUBLISH_OVERHEAD = 2 + len(TOPIC) + 2  # topic length, topic, packet id (QoS 1)
VARINT_BOUNDARIES = (128, 16_384, 2_097_152)  # where the remaining length needs 2, 3, 4 bytes


def payload_sizes() -> list[int]:
    """1,000 sizes: remaining lengths one below, at and one above each
    boundary of the varint's byte count, the rest spread from 1 to 20,000."""
    edges = [
        boundary + delta - PUBLISH_OVERHEAD
        for boundary in VARINT_BOUNDARIES
        for delta in (-1, 0, 1)
    ]
    rng = random.Random(14)
    spread = [rng.choice([rng.randint(1, 200), rng.randint(1, 20_000)]) for _ in range(1000)]
    sizes = spread[: 1000 - len(edges)]
    for i, edge in enumerate(edges):  # spread the large ones over the run
        sizes.insert(100 * i + 50, edge)
    return sizes


def payload(index: int, size: int) -> bytes:
    text = f"{index:04d}:" + "abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1)
    return text.encode()[:size]


async def test_mqtt_publishes_through_the_relay(mosquitto: LiveServer) -> None:
    sizes = payload_sizes()
    assert len(sizes) == 1000
    remaining = {size + PUBLISH_OVERHEAD for size in sizes}
    for boundary in VARINT_BOUNDARIES:
        assert {boundary - 1, boundary, boundary + 1} <= remaining
    payloads = [payload(i, size) for i, size in enumerate(sizes)]
    framing = presets.mqtt(max_frame=4 << 20)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            port, client_side, server_side, frames = await start_relay(
                nursery, mosquitto.port, framing, framing
            )
            common = ["-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-q", "1"]
            received: list[subprocess.CompletedProcess[bytes]] = []

            async def subscribe() -> None:
                received.append(
                    await trio.run_process(
                        ["mosquitto_sub", *common, "-C", "1000", "-F", "%l %p", "-i", "sub"],
                        capture_stdout=True,
                        capture_stderr=True,
                    )
                )

            nursery.start_soon(subscribe)
            while not any(frame[0] == 0x90 for frame in frames["down"]):  # SUBACK
                await trio.sleep(0.01)
            await trio.run_process(
                ["mosquitto_pub", *common, "-l", "-i", "pub"],
                stdin=b"".join(data + b"\n" for data in payloads),
                capture_stderr=True,
            )
            while not received:
                await trio.sleep(0.01)
            await client_side.wait_closed(2)
            await server_side.wait_closed(2)
            nursery.cancel_scope.cancel()

    lines = received[0].stdout.split(b"\n")
    assert lines.pop() == b""
    assert [line.split(b" ", 1) for line in lines] == [
        [str(len(data)).encode(), data] for data in payloads
    ]
    # Both clients' PUBLISH packets crossed the relay, each whole.
    publishes = [frame for frame in frames["up"] if frame[0] >> 4 == 3]
    delivered = [frame for frame in frames["down"] if frame[0] >> 4 == 3]
    assert len(publishes) == len(delivered) == 1000
    assert max(len(frame) for frame in publishes) == 2_097_153 + 5  # byte, 4-byte varint, body
    assert {frame[0] >> 4 for frame in frames["up"] + frames["down"]} <= set(range(1, 16))
    assert_relayed_unchanged(client_side, server_side, 2)


async def test_a_request_for_tls_is_answered_by_the_relay(postgres: LiveServer) -> None:
    """``sslmode=require``: the relay refuses TLS (it must see the messages),
    so the client gives up with libpq's own clear error; ``prefer`` goes on in
    clear; the request never reaches the server."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port, client_side, server_side, _ = await start_relay(
                nursery,
                postgres.port,
                presets.postgresql("client"),
                presets.postgresql("server"),
                answer=presets.refuse_encryption,
            )
            dsn = f"host=127.0.0.1 port={port} user=postgres gssencmode=disable"
            refused = await trio.run_process(
                ["psql", dsn + " sslmode=require", "-X", "-c", "SELECT 1"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            clear = await trio.run_process(
                ["psql", dsn + " sslmode=prefer", "-X", "-A", "-t", "-c", "SELECT 1"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            await client_side.wait_closed(2)
            await server_side.wait_closed(2)
            nursery.cancel_scope.cancel()
    assert refused.returncode == 2
    assert b"server does not support SSL, but SSL was required" in refused.stderr
    assert (clear.returncode, clear.stdout) == (0, b"1\n")
    ssl_request = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
    assert [bytes(c.down[:1]) for c in client_side.connections] == [b"N", b"N"]
    assert all(bytes(c.up[:8]) == ssl_request for c in client_side.connections)
    # The server never sees a request: nothing at all from the client that
    # gave up, the clear session from the other.
    gave_up, went_on = server_side.connections
    assert bytes(gave_up.up) == b""
    assert bytes(went_on.up[4:8]) == (196608).to_bytes(4, "big")  # protocol 3.0


def test_relay_command_with_the_postgresql_preset(postgres: LiveServer) -> None:
    """``trioecho relay --preset postgresql``, a real process, in front of the server,
    with a client that asks for TLS first (``sslmode=prefer``)."""
    upstream = f"127.0.0.1:{postgres.port}"
    with server_process("--preset", "postgresql", "--upstream", upstream, command="relay") as relay:
        # libpq's defaults: it asks for TLS first, and the relay says no.
        dsn = f"host=127.0.0.1 port={relay.port} user=postgres"
        result = subprocess.run(
            [
                "psql",
                dsn,
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT 6 * 7, repeat('x', 70000) = repeat('x', 70000)",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, b"42|t\n", b"")
        assert relay.stop(signal.SIGTERM) == 0
