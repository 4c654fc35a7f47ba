"""Run one protocol into the results store: the body of ``neuroplastic run``, shared with ``neuroplastic sweep``.

A sweep point *is* a ``neuroplastic run``: the same checks before the run directory exists, the
same directory, manifest, checkpoints and summary figure, the same failure statuses. Keeping that
in one function is what guarantees it. Printing stays with the callers (the command line prints a
probe table; a sweep prints one table for all its points).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .engines import get_engine
from .engines.base import train
from .engines.prepare import prepare
from .errors import NeuroplasticError, RunBusy, RunError, storage_error
from .progress import phase, showing
from .results import Run, check_root

__all__ = ["RunOutcome", "run_protocol", "summary_figure"]


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended; ``code`` is the exit code of ``neuroplastic run``.

    0 finished; otherwise the :attr:`~neuroplastic.errors.NeuroplasticError.exit_code` of the
    package's error that ended it (1 diverged or a file the machine could not write, 2 bad input
    that only showed while building or training); 130 interrupted (Ctrl-C). ``error`` is ``None`` exactly when ``code`` is 0. Any
    other exception is a bug: it is recorded in the manifest and raised.
    """

    directory: Path
    code: int
    summary: dict | None = None
    error: str | None = None
    #: The run had finished before this call: nothing was trained, ``summary`` is its saved one.
    reused: bool = False
    #: The package's error (or ``KeyboardInterrupt``) that ended the run, for callers that re-raise it.
    exception: BaseException | None = field(default=None, repr=False, compare=False)


def run_protocol(protocol, out: str | Path, *, resume: bool = False, force: bool = False, progress: bool = True,
                 command: list[str] | None = None, on_open: Callable[[Run], None] | None = None) -> RunOutcome:
    """Prepare, train, evaluate and finish ``protocol``'s run under ``out``.

    Input errors found before training (:class:`~neuroplastic.protocol.ProtocolError` from the data
    checks, :class:`~neuroplastic.results.RunError` for a directory that cannot be used) are raised
    before the run directory is created or touched, so bad input never leaves a run behind. Once
    the run exists, it is locked against other processes until it ends, and every way it can end
    is written into its manifest: an unexpected exception marks it failed (its checkpoints stay for
    ``--resume``) and is re-raised.
    ``on_open(run)`` is called once the run directory exists, before training.

    A run that already finished is not run again (unless ``force``): its saved summary is returned
    with code 0 and ``reused`` set, whatever ``resume`` says, and neither the data nor the run
    directory is touched. So running the same protocol again is idempotent, also when another
    process finishes it between this check and the start.
    """
    engine = get_engine(protocol.engine.name)
    try:
        directory = Run.path_for(check_root(out), protocol)
    except OSError:                            # an unreadable model file: prepare() below names it as bad input
        directory = None
    if not force and directory is not None and (done := _finished(directory)) is not None:
        return done
    with showing(progress):
        prepared = prepare(protocol)
    try:
        run = Run.open(out, protocol, resume=resume, force=force, command=command)
    except RunBusy:
        raise
    except RunError:                           # finished by another process since the check above?
        if force or directory is None or (done := _finished(directory)) is None:
            raise
        return done
    try:
        if on_open is not None:
            on_open(run)
        summary = train(engine, protocol, run, progress=progress, prepared=prepared)
        with showing(progress):
            summary_figure(run, protocol)
        run.finish(summary)
    except NeuroplasticError as err:           # diverged, or input errors that only show while building or training
        run.fail(str(err))
        return RunOutcome(run.directory, err.exit_code, error=str(err), exception=err)
    except KeyboardInterrupt as err:           # Ctrl-C (or SIGTERM in a sweep's point) at any moment of the run
        run.fail("interrupted")
        return RunOutcome(run.directory, 130, error="interrupted", exception=err)
    except OSError as err:                     # the machine, not the input: a full disk, a read-only file system
        error = storage_error(err)
        run.fail(str(error))
        return RunOutcome(run.directory, error.exit_code, error=str(error), exception=error)
    except Exception as err:                   # a bug or a crash: say so in the manifest, then let it show
        run.fail(f"{type(err).__name__}: {err}")
        raise
    finally:
        run.close()
    return RunOutcome(run.directory, 0, summary=summary)


def _finished(directory: Path) -> RunOutcome | None:
    """The outcome of the finished run in ``directory`` (its saved summary), or ``None`` if it has not finished.

    A finished run whose ``summary.json`` cannot be read is :class:`RunError` (bad input: ``--force``
    runs it again).
    """
    try:
        if Run.load(directory).manifest.get("status") != "finished":
            return None
    except RunError:                           # no run there yet (or a damaged manifest: Run.open says what to do)
        return None
    path = directory / "summary.json"
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or err
        raise RunError(f"{directory}: this run finished, but its {path.name} cannot be read ({why}); "
                       "use --force to run it again") from None
    return RunOutcome(directory, 0, summary=summary, reused=True)


def summary_figure(run: Run, protocol) -> None:
    """Save the run's summary figure (``summary.png``/``.pdf``) from its metrics and the files of its
    directory (the rule and glimpse length of its manifest, the probe's classes, a spiking run's spikes)."""
    with phase("summary figure", logger=logging.getLogger(__name__)):
        from .plots import run_summary
        from .results import read_metrics

        import matplotlib.pyplot as plt

        fig = run_summary(read_metrics(run.directory), title=f"{protocol.name} (seed {protocol.seed})",
                          directory=run.directory)
        run.save_figure(fig, "summary")
        plt.close(fig)
