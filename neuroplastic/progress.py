"""Progress of the long phases of a run: a status line on stderr, and their start and duration in the log.

A phase (loading the data, compiling a Brian2 network, the probe's simulations, the linear probe)
can take minutes without a training step in sight, so each one shows its own line while it runs,
with the time spent so far (and a count, when it has steps), and logs ``<phase>`` when it starts
and ``<phase>: done in N s`` (or ``failed``/``interrupted``) when it ends, at INFO, through the
caller's logger: ``neuroplastic -v`` prints those lines, and a run's ``run.log`` keeps them.

The status lines go to stderr (stdout stays the command's result) and are shown unless turned
off (:func:`show`, :func:`showing`): by ``--quiet``, and in sweep points, whose output would
interleave; the log lines are written either way.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

__all__ = ["ConsoleHandler", "phase", "show", "showing"]

log = logging.getLogger(__name__)

_SHOWN: ContextVar[bool] = ContextVar("neuroplastic_progress_shown", default=True)

#: Seconds between two redraws of a status line while its phase's work blocks (its elapsed time moves on).
REFRESH_S = 1.0


def show(shown: bool) -> None:
    """Show (or hide) status lines from now on in this thread (the command line's ``--quiet``)."""
    _SHOWN.set(bool(shown))


@contextmanager
def showing(shown: bool) -> Iterator[None]:
    """Show (or hide) the status lines of the phases run inside; the log lines are written either way."""
    token = _SHOWN.set(bool(shown))
    try:
        yield
    finally:
        _SHOWN.reset(token)


@contextmanager
def phase(description: str, total: int | None = None, unit: str = "step",
          logger: logging.Logger | None = None) -> Iterator[Callable[[int], None]]:
    """A long phase: its status line while inside, its start and duration in ``logger``'s log.

    Yields ``advance(n=1)``, to call after each of ``total`` steps (a phase without ``total`` shows its
    elapsed time only). The line is redrawn every :data:`REFRESH_S` seconds while the work blocks.
    """
    logger = logger or log
    logger.info("%s", description)
    start = time.monotonic()
    bar, stop, ticker = None, threading.Event(), None
    if _SHOWN.get():
        from tqdm.auto import tqdm

        form = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}]" if total else "{desc} [{elapsed}]"
        bar = tqdm(total=total, desc=description, unit=unit, leave=False, bar_format=form, mininterval=0.5)
        ticker = threading.Thread(target=_redraw, args=(bar, stop), name="neuroplastic-progress", daemon=True)
        ticker.start()
    outcome = "failed"
    try:
        yield (bar.update if bar is not None else _ignore)
        outcome = "done"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        stop.set()
        if ticker is not None:
            ticker.join()
        if bar is not None:
            bar.close()
        logger.info("%s: %s in %.1f s", description, outcome, time.monotonic() - start)


def _redraw(bar, stop: threading.Event) -> None:
    while not stop.wait(REFRESH_S):
        bar.refresh()


def _ignore(n: int = 1) -> None:
    pass


class ConsoleHandler(logging.Handler):
    """The command's log lines on stderr, written past any status line shown (no torn progress bars).

    It writes to the ``sys.stderr`` of the moment (not the one at its creation), as the rest of the output does.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)
