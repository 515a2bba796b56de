"""Where ``trioecho serve`` and ``relay`` listen when the sockets are not
theirs to open: ``--fd``, systemd socket activation (``LISTEN_FDS``), and the
one socket a ``--workers`` supervisor opens for all its workers on ``--uds``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

from trioecho.logtext import format_listen_address
from trioecho.server.config import DEFAULT_HOST, DEFAULT_PORT
from trioecho.server.listeners import adopt_listening_socket, bind_unix
from trioecho.workers.systemd import inherited_sockets

__all__ = ["inherited_listening_sockets", "open_shared_unix_socket"]

logger = logging.getLogger("trioecho")


def inherited_listening_sockets(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[socket.socket] | None:
    """The listening sockets this process was given (``--fd N``, ``--fd
    NAME``, or every one systemd passed), or ``None`` to open its own.  A
    mistake is a ``parser.error``: a descriptor that is no listening socket,
    a name systemd did not pass, ``--host``/``--port``/``--uds`` besides."""
    try:
        from_systemd = inherited_sockets()
    except ValueError as exc:
        parser.error(f"systemd socket activation: {exc}")
    wanted: list[str] = args.fd or []
    if not wanted and not from_systemd:
        return None
    if args.uds is not None or args.host != DEFAULT_HOST or args.port != DEFAULT_PORT:
        given = "--fd" if wanted else "systemd's sockets (LISTEN_FDS)"
        parser.error(f"--host, --port and --uds do not apply: it serves on {given}")
    if getattr(args, "reuse_port", False):
        parser.error("--reuse-port opens its own sockets: not with inherited ones")
    for inherited in from_systemd:
        where = format_listen_address(inherited.socket.getsockname())
        logger.info("systemd socket %s (fd %d): %s", inherited.name, inherited.fd, where)
    if not wanted:
        return [inherited.socket for inherited in from_systemd]
    chosen: list[socket.socket] = []
    for item in wanted:
        if item.isdigit():
            try:
                chosen.append(adopt_listening_socket(int(item)))
            except ValueError as exc:
                parser.error(f"--fd {item}: {exc}")
            except OSError as exc:
                parser.error(f"--fd {item}: {exc.strerror or exc}")
            continue
        named = [inherited.socket for inherited in from_systemd if inherited.name == item]
        if not named:
            names = sorted({inherited.name for inherited in from_systemd}) or ["none"]
            parser.error(
                f"--fd {item}: systemd passed no socket of that name (LISTEN_FDNAMES: "
                f"{', '.join(names)})"
            )
        chosen.extend(named)
    return chosen


def open_shared_unix_socket(path: str, mode: int, backlog: int | None) -> tuple[socket.socket, int]:
    """``--uds`` with ``--workers``: the supervisor's listening socket, which
    every worker inherits (see :func:`~trioecho.server.listeners.bind_unix`
    for stale and live files), and the file's inode, for
    :func:`~trioecho.server.listeners.remove_unix_socket` at stop.  Raises
    ``OSError``."""
    sock = bind_unix(path, mode)
    try:
        sock.listen(backlog if backlog is not None else socket.SOMAXCONN)
        inode = os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise
    return sock, inode
