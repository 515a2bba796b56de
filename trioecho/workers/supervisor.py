"""``trioecho serve --workers N``: a supervisor and N worker processes on one socket.

One Trio process uses one core.  With ``--workers N`` the ``trioecho``
process becomes a supervisor that starts N copies of the server through a
Python entry point (``python -m trioecho.cli.worker FD INDEX PORT
[LISTEN_FD...]``, which receives its configuration over the socket pair
``FD``, not as command-line flags to parse again).

The supervisor:

* opens the listening sockets (or takes them from ``--fd``, systemd or
  ``--uds``) and every worker inherits them: one accept queue, so the
  connections the kernel has queued belong to no worker, and a worker that
  dies, is killed or retires resets only those it had accepted.  With
  ``--reuse-port`` each worker opens its own ``SO_REUSEPORT`` socket instead;
  the supervisor then reserves the port (binds, never listens) so that
  ``--port 0`` picks one port for all;
* waits for every worker to report that it listens (over its socket pair),
  then announces where the service listens (the command line prints
  ``listening on``) and tells systemd ``READY=1``;
* restarts a worker that dies, after a back-off that grows while it keeps
  dying young (0.1 s doubling up to 5 s); a worker that fails its very
  first start is a configuration error: everything stops, exit code 1;
* refuses a port another process already serves (``Address already in
  use``, exit 1);
* checks that every worker's event loop is turning: a worker sends a
  heartbeat every ``HEARTBEAT_INTERVAL`` seconds over its socket pair, and
  one silent for ``--worker-timeout`` seconds (stopped, or stuck in a busy
  loop) is killed with SIGKILL, logged, and restarted like a worker that died;
* on SIGHUP, reloads: one slot at a time, it starts a new worker (fresh code,
  the TLS certificate read again), waits until it serves, then tells the old
  one to retire (:meth:`MessageServer.retire`: stop accepting, let its
  connections run on for ``--grace`` seconds, then drain as on SIGTERM).  A
  new worker that fails to start ends the reload and the old ones serve on;
* on SIGTTIN starts one worker more, on SIGTTOU retires the newest (never
  the last);
* forwards SIGINT/SIGTERM to the workers as SIGTERM (a second signal is
  forwarded again: the workers then close at once), waits for them to
  drain, and exits 0 if all of them exited 0.  A worker still running
  ``KILL_MARGIN`` seconds after the grace period is killed: shutdown always
  completes.

Workers run in their own session, so a terminal's Ctrl-C reaches the
supervisor only.  No worker outlives its supervisor: if the supervisor dies,
its end of each socket pair closes and the workers shut down gracefully on
their own; a worker whose event loop is stuck cannot, so a watchdog thread
in each worker (which needs no event loop) kills its process once the grace
period after the supervisor's death is over.

The modules: this one runs the whole (:func:`supervise`);
:mod:`~trioecho.workers.decisions` decides (restarts, back-off, reloads,
scaling, hung workers, stopping) through the interface of
:mod:`~trioecho.workers.worker_process`; :mod:`~trioecho.workers.processes`
starts the processes and talks over their socket pairs;
:mod:`~trioecho.workers.ports` opens or reserves the listening sockets;
:mod:`~trioecho.workers.signals` maps signals to actions;
:mod:`~trioecho.workers.totals` adds up the workers' figures.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import trio

from trioecho.logtext import format_listen_address
from trioecho.workers.decisions import DEFAULT_WORKER_TIMEOUT, Supervisor
from trioecho.workers.ports import WorkerSockets, reserve_port
from trioecho.workers.processes import ProcessSpawner
from trioecho.workers.signals import act_on_signals, open_signal_receiver
from trioecho.workers.systemd import Notifier

__all__ = ["DEFAULT_WORKER_TIMEOUT", "cpu_count", "reserve_port", "supervise"]

logger = logging.getLogger("trioecho.workers")

# Called once every worker serves, with the addresses the service listens on
# (``getsockname()``): the command line prints them.
Announce = Callable[[list[Any]], None]


def cpu_count() -> int:
    """The CPUs this process may run on (``--workers auto``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


async def supervise(
    configuration: bytes,
    workers: int,
    opened: WorkerSockets,
    *,
    worker_module: str,
    grace: float = 5.0,
    drain_delay: float = 0.0,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
    notifier: Notifier | None = None,
    metrics: tuple[str, int] | None = None,
    announce: Announce | None = None,
) -> int:
    """Run ``workers`` worker processes; return the exit code.

    ``opened`` is what :func:`~trioecho.workers.ports.open_worker_sockets`
    opened or was given: the listening sockets the workers share (inherited:
    ``--fd``, systemd, ``--uds``, or opened on the host and port), or, with
    ``SO_REUSEPORT``, the reserved port on which each worker opens its own
    socket.  The sockets it opened (``opened.owned``) are closed when this
    returns; those it was given stay the caller's.

    Each worker is ``python -m worker_module FD INDEX PORT [LISTEN_FD...]``:
    ``FD`` its end of the socket pair, on which it first receives
    ``configuration`` (bytes the supervisor does not read; see
    :func:`~trioecho.workers.link.receive_configuration`), ``PORT`` the port
    for ``SO_REUSEPORT`` (0 when it inherits listening sockets).  ``grace``
    and ``drain_delay`` are the workers' (``--grace``, ``--drain-delay``),
    ``worker_timeout`` how long a worker may stay silent.  ``notifier``
    gets READY, RELOADING and STOPPING.
    ``metrics`` is the (host, port) of the whole service's ``/metrics``.
    ``announce`` is called with the listening addresses once every worker
    serves.
    """
    spawner = ProcessSpawner(
        configuration,
        worker_module=worker_module,
        port=opened.port,
        listen_fds=tuple(sock.fileno() for sock in opened.shared),
    )
    supervisor = Supervisor(
        spawner,
        workers,
        grace=grace,
        drain_delay=drain_delay,
        worker_timeout=worker_timeout,
        notifier=notifier,
    )
    try:
        with open_signal_receiver() as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(act_on_signals, signals, supervisor.signal_actions(nursery))
                nursery.start_soon(_announce_when_started, supervisor, workers, opened, announce)
                nursery.start_soon(_let_go_of_listening_sockets, supervisor, opened)
                if notifier is not None:
                    nursery.start_soon(notifier.keep_watchdog_fed)
                if metrics is not None:
                    # prometheus_client and h11 are loaded only for --metrics.
                    from trioecho.workers.metrics import metrics_registry, open_metrics

                    registry = metrics_registry(supervisor.snapshot)
                    await open_metrics(nursery, metrics, registry, supervisor.ready)
                await supervisor.run()
                nursery.cancel_scope.cancel()
    finally:
        supervisor.forward(signal.SIGKILL)  # only if we are being torn down abnormally
        for sock in opened.owned:
            sock.close()
    return supervisor.exit_code()


async def _let_go_of_listening_sockets(supervisor: Supervisor, opened: WorkerSockets) -> None:
    """Once stopping, close the shared listening sockets this process opened:
    no worker will be started again, and the socket must close as soon as
    the last worker has emptied its queue and let go of it, so that a client
    then is refused, not kept waiting for this process to exit."""
    await supervisor.stop_requested.wait()
    for sock in opened.owned:
        if sock in opened.shared:
            sock.close()


async def _announce_when_started(
    supervisor: Supervisor, workers: int, opened: WorkerSockets, announce: Announce | None
) -> None:
    """Once the ``workers`` first workers serve: ``announce`` the addresses,
    log them, and tell the notifier (systemd) READY."""
    await supervisor.all_started.wait()
    if supervisor.stopping:  # the sockets may be closed already
        return
    addresses = [sock.getsockname() for sock in opened.announced]
    if announce is not None:
        announce(addresses)
    if opened.shared:
        where = format_listen_address(opened.shared[0].getsockname())
        logger.info("%d workers listening on %s (one shared socket)", workers, where)
    else:
        logger.info("%d workers listening on port %d (SO_REUSEPORT)", workers, opened.port)
    if supervisor.notifier is not None:
        supervisor.notifier.ready(f"serving with {workers} workers")
