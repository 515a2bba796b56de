"""The command line's ``main()`` run in this process, stopped where it would serve.

``python -m trioecho`` is ``raise SystemExit(main())``: what ``main(argv)``
raises, prints and hands to ``trio.run`` here is what the process exits
with, prints and serves.  :func:`run_main` calls it with ``trio.run``
replaced (a command that would run instead raises :class:`WouldRun`, with
the arguments it would run with), ``sys.stdout``/``sys.stderr`` captured,
and the logging configuration ``main()`` sets up undone afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from unittest import mock

import trio

from trioecho import FramingConfig
from trioecho.cli.main import main


class WouldRun(Exception):
    """``main()`` got past every check and called ``trio.run(*args)``."""

    def __init__(self, *args: object) -> None:
        super().__init__("the command line accepted the options and would run")
        self.run_args = args


@dataclass
class Outcome:
    """How ``main(argv)`` ended: ``code`` is its exit code (``SystemExit``'s
    or its return value), ``None`` when it would run (``would_run``)."""

    code: int | str | None
    stdout: str
    stderr: str
    would_run: WouldRun | None = None

    @property
    def last_error_line(self) -> str:
        return self.stderr.splitlines()[-1]


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Undo on exit what ``configure_logging`` changes: the root logger's
    handlers and level and every logger's level."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, logger in logging.Logger.manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))


def run_main(argv: Sequence[str]) -> Outcome:
    """``main(argv)`` as described above; never serves."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise WouldRun(*args)

    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | str | None
    would_run = None
    with (
        logging_restored(),
        mock.patch.object(trio, "run", refuse),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        except WouldRun as exc:
            code, would_run = None, exc
    return Outcome(code, stdout.getvalue(), stderr.getvalue(), would_run)


def served_framing(*options: str) -> FramingConfig:
    """The framing ``trioecho serve OPTIONS`` serves with (``main()`` hands it
    to ``trio.run``)."""
    outcome = run_main(["serve", *options])
    assert outcome.would_run is not None, outcome.stderr
    (framing,) = [arg for arg in outcome.would_run.run_args if isinstance(arg, FramingConfig)]
    return framing
