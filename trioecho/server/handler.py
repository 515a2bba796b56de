"""The handler model of ``socketserver``, made async: :class:`BaseRequestHandler`
(``setup``/``handle``/``finish``, or ``respond`` per message), the
:data:`Handler` a server takes, :func:`check_handler` (is it one a server
can call?) and :func:`run_handler` (a handler's life on one connection, as
the server and :func:`trioecho.testing.connect_in_memory` run it).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from trioecho.server.server import MessageServer

from trioecho.errors import (
    FramingError,
)
from trioecho.logtext import format_address
from trioecho.stream.message_stream import MessageStream
from trioecho.stream.session import RespondSession

logger = logging.getLogger("trioecho.server")

__all__ = ["BaseRequestHandler", "Handler", "check_handler", "run_handler"]


class BaseRequestHandler:
    """``socketserver.BaseRequestHandler``, made async.

    One instance serves one connection.  The server calls :meth:`setup`, then
    :meth:`handle`, then :meth:`finish` (even if ``handle`` raised), as
    socketserver does.  Attributes:

    ``request``
        the connection's :class:`MessageStream`;
    ``client_address``
        the peer's address, ``(host, port)`` for IPv4;
    ``server``
        the :class:`MessageServer`.

    A subclass answers in one of two ways, never both (defining both is
    refused when the server is made: ``respond`` would never be called):

    * ``async def handle(self)``: receive and send through ``self.request``
      as it likes, awaiting whatever it needs;
    * ``def respond(self, message) -> bytes | None``: a plain function
      called for each message, whose return value is the reply (framed like
      the input; None: no reply; anything else raises ``TypeError``).  The
      server then frames, answers and sends inline: on a plain TCP socket
      the readiness hub calls ``respond`` as the bytes arrive, with no task
      wake-up per message.  :meth:`end_session` closes the connection after
      the current reply.  Over TLS and in-memory streams the same handler
      runs in the connection's task.  Something to send first (a greeting)
      goes in ``async def setup(self)``.

    ``respond`` must not block: it runs on the event loop, so while it
    waits, **every** connection of the server waits.  Measured: a
    ``time.sleep(0.5)`` in one connection's ``respond`` delayed another
    connection's reply, sent 0.05 s later, by 0.45 s (0.03 ms otherwise).
    Blocking work (a file, a database driver without async support, heavy
    computing) belongs in ``handle``, moved to a thread: ``reply = await
    trio.to_thread.run_sync(work, message)``; the other connections are
    answered meanwhile (within 3 ms in the same measurement).

    What ends ``handle`` (or ``setup``, ``finish``, ``respond``) is logged
    and counted by the server: a peer's failure as one line, anything else
    as the handler's bug, one ERROR with its traceback (``handler_error``).
    """

    __slots__ = ("__dict__", "_session", "client_address", "request", "server")

    def __init__(self, request: MessageStream, client_address: Any, server: MessageServer) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self._session: RespondSession | None = None

    async def setup(self) -> None:
        """Called before :meth:`handle`; does nothing by default."""

    async def handle(self) -> None:
        """Serve the connection: by default, answer each message with
        :meth:`respond` if the subclass defines it, else do nothing."""
        if type(self).respond is BaseRequestHandler.respond:
            return
        self._session = RespondSession(self.request.framer, self.respond)
        await self.request.run_session(self._session, on_dropped=self.dropped_line)

    def respond(self, message: bytes) -> bytes | None:
        """The reply to ``message`` (None: no reply); see the class docstring."""
        raise NotImplementedError

    def end_session(self) -> None:
        """From :meth:`respond`: close the connection once this reply is sent;
        later messages are not answered."""
        if self._session is None:
            raise RuntimeError("end_session() is for respond(); handle() returns instead")
        self._session.stop()

    def dropped_line(self, error: FramingError) -> None:
        """An over-long line was dropped (discard mode); logs it."""
        logger.warning(
            "%s: dropped an over-long line: %s", format_address(self.client_address), error
        )

    async def finish(self) -> None:
        """Called after :meth:`handle`, even if it raised; does nothing by default."""


Handler = type[BaseRequestHandler] | Callable[[MessageStream], Awaitable[None]]


_HANDLER_KINDS = (
    "an async def function taking the MessageStream, or a BaseRequestHandler "
    "subclass with async def handle() or def respond()"
)


def check_handler(handler: object) -> Handler:
    """``handler`` if a server can call it, else one ``TypeError`` saying why:
    a :class:`BaseRequestHandler` subclass whose ``setup``, ``handle`` and
    ``finish`` are ``async def`` and whose ``respond`` (if defined) is a
    plain ``def``, defining ``handle`` or ``respond`` (not both); or an ``async def``
    callable (a function, a ``functools.partial`` of one, or an object
    whose ``__call__`` is one)."""
    if isinstance(handler, type):
        if not issubclass(handler, BaseRequestHandler):
            raise TypeError(
                f"handler {handler.__name__} must subclass trioecho.BaseRequestHandler "
                f"(not {_base_names(handler)})"
            )
        _check_request_handler(handler)
        return handler
    if isinstance(handler, BaseRequestHandler):
        raise TypeError(
            f"handler must be the class {type(handler).__name__}, not an instance of it: "
            "the server makes one per connection"
        )
    if not callable(handler):
        raise TypeError(f"handler must be {_HANDLER_KINDS}, not {handler!r}")
    if not _is_async_callable(handler):
        raise TypeError(
            f"handler {_callable_name(handler)} must be async def: a plain function "
            "cannot wait for messages (write async def, or a BaseRequestHandler "
            "with def respond(self, message))"
        )
    return cast(Handler, handler)


async def run_handler(
    handler: Handler, stream: MessageStream, client_address: Any, server: MessageServer | None
) -> None:
    """Run ``handler`` (checked by :func:`check_handler`) on ``stream`` for
    its whole life: a :class:`BaseRequestHandler` subclass is made with
    ``client_address`` and ``server`` (None in :mod:`trioecho.testing`),
    then ``setup()``, ``handle()`` and ``finish()`` (even if ``handle``
    raised) are awaited; a function is called with the stream.  What the
    handler raises propagates."""
    if isinstance(handler, type) and issubclass(handler, BaseRequestHandler):
        request_handler = handler(stream, client_address, cast("MessageServer", server))
        await request_handler.setup()
        try:
            await request_handler.handle()
        finally:
            await request_handler.finish()
    else:
        await cast("Callable[[MessageStream], Awaitable[None]]", handler)(stream)


def _check_request_handler(cls: type[BaseRequestHandler]) -> None:
    if (
        cls.handle is not BaseRequestHandler.handle
        and cls.respond is not BaseRequestHandler.respond
    ):
        raise TypeError(
            f"{cls.__name__} defines both handle() and respond(): the server calls "
            "handle(), so respond() would never be called; keep one: def respond(self, "
            "message) alone (send what comes first from async def setup()), or "
            "async def handle() alone"
        )
    for name in ("setup", "handle", "finish"):
        method = getattr(cls, name)
        if not inspect.iscoroutinefunction(method):
            raise TypeError(
                f"{cls.__name__}.{name} must be async def (the server awaits it)"
                + (": or define def respond(self, message) instead" if name == "handle" else "")
            )
    respond = cls.respond
    if respond is not BaseRequestHandler.respond and inspect.iscoroutinefunction(respond):
        raise TypeError(
            f"{cls.__name__}.respond must be a plain def returning the reply "
            "(it runs inline, with no await): use async def handle() to await"
        )
    if cls.handle is BaseRequestHandler.handle and respond is BaseRequestHandler.respond:
        raise TypeError(
            f"{cls.__name__} defines neither handle() nor respond(): it would close "
            "every connection at once"
        )


def _unwrapped(handler: object) -> object:
    """The function under any ``functools.partial`` layers."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    return handler


def _is_async_callable(handler: object) -> bool:
    function = _unwrapped(handler)
    if inspect.iscoroutinefunction(function):
        return True
    return inspect.iscoroutinefunction(type(function).__call__)


def _callable_name(handler: object) -> str:
    function = _unwrapped(handler)
    return getattr(function, "__qualname__", None) or repr(function)


def _base_names(cls: type) -> str:
    return ", ".join(f"{base.__module__}.{base.__qualname__}" for base in cls.__mro__[1:-1]) or (
        "a plain class"
    )
