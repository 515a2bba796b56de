"""One worker of ``trioecho serve --workers N``.

``python -m trioecho.cli.worker FD INDEX PORT [LISTEN_FD...]``.

The supervisor (:mod:`trioecho.workers.supervisor`) starts it with ``FD``,
its end of a socket pair, inherited.  On it the worker first receives its
:class:`~trioecho.cli.configs.ServeSpec` (the configuration the supervisor's
command line parsed and checked: nothing is parsed again), then serves as
worker ``INDEX`` on the listening sockets ``LISTEN_FD...`` it inherited from
the supervisor (shared with the other workers) or, without them, on ``PORT``
with its own ``SO_REUSEPORT`` socket, reporting "ready" and heartbeats on the
same socket pair.  Not meant to be started by hand: run
``trioecho serve --workers N``.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import sys
from collections.abc import Sequence

import trio

from trioecho.cli.configs import ServeSpec, WorkerContext, server_tls
from trioecho.cli.logging_setup import configure_logging
from trioecho.cli.serve import serve_worker
from trioecho.workers.link import receive_configuration

__all__ = ["main", "read_spec"]

logger = logging.getLogger("trioecho.workers")


def read_spec(fd: int) -> ServeSpec:
    """The worker's configuration, from its supervisor on ``fd``.  Raises
    ``OSError`` or ``ValueError`` if none (or something else) came."""
    data = receive_configuration(fd)
    try:
        spec = pickle.loads(data)  # from our own supervisor, over a private socket pair
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ValueError(f"the supervisor sent no worker configuration: {exc}") from exc
    if not isinstance(spec, ServeSpec):
        raise ValueError(f"the supervisor sent a {type(spec).__name__}, not a ServeSpec")
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker; return its exit code (1: it could not start)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        fd, index, port, *listen_fds = (int(argument) for argument in arguments)
    except ValueError:
        print(
            "usage: python -m trioecho.cli.worker FD INDEX PORT [LISTEN_FD...] (started by "
            "trioecho serve --workers N)",
            file=sys.stderr,
        )
        return 2
    try:
        spec = read_spec(fd)
    except (OSError, ValueError) as exc:
        print(f"trioecho worker {index}: {exc}", file=sys.stderr)
        return 1
    worker = WorkerContext(index, fd, port, tuple(listen_fds))
    options = spec.options
    configure_logging(dataclasses.replace(options.log, worker_index=index))
    try:
        tls = server_tls(options)
    except (OSError, ValueError) as exc:  # the files changed since the supervisor checked them
        logger.error("cannot load --tls-cert %s: %s", options.tls_cert, exc)
        return 1
    return trio.run(serve_worker, spec, worker, tls)


if __name__ == "__main__":
    raise SystemExit(main())
