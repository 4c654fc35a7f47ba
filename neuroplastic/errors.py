"""The package's named errors: what ``neuroplastic`` reports as bad input, and nothing else.

Every error a user can fix by changing what they gave (a protocol, a model file, a data set, a
device, a run directory, a figure recipe, a sweep) is a :class:`NeuroplasticError`. The command
line prints such an error as one line and exits with its :attr:`~NeuroplasticError.exit_code`
(2 for bad input). Anything else -- a ``ValueError`` from numpy, a missing module, a bug -- is an
internal error: the command line prints its traceback and exits with 1.

The input errors keep ``ValueError`` (or ``RuntimeError``) as a second base, so that code written
against the standard exceptions still catches them.

Examples
--------
>>> from neuroplastic.errors import ProtocolError, NeuroplasticError
>>> err = ProtocolError("x.toml", "rule.lr", "= -1: must be a number > 0")
>>> str(err), isinstance(err, NeuroplasticError), err.exit_code
('x.toml: [rule] lr = -1: must be a number > 0', True, 2)
"""
from __future__ import annotations

__all__ = ["BenchError", "DataError", "DeviceError", "FigureError", "ModelError", "NeuroplasticError", "ProtocolError",
           "RunBusy", "RunError", "SettingError", "StorageError", "SweepError", "TrainingDiverged", "storage_error"]


class NeuroplasticError(Exception):
    """Base of the package's own errors: input that cannot be used, with a message that says why."""

    #: Exit code of ``neuroplastic`` when this error ends a command.
    exit_code = 2


class ProtocolError(NeuroplasticError, ValueError):
    """A protocol file (or override) that cannot be run, naming the file, the ``table.key`` and what is allowed.

    ``problems`` holds every ``(key, message)`` found in the file when several are reported at once.
    """

    def __init__(self, source: str, key: str, message: str, problems: list[tuple[str, str]] | None = None):
        self.source, self.key = str(source), key
        self.problems = problems if problems is not None else [(key, message)]
        super().__init__(f"{self.source}: {_where(key, message)}" if key else f"{self.source}: {message}")

    @classmethod
    def collect(cls, source: str, problems: list[tuple[str, str]]) -> "ProtocolError":
        """One error for several problems of one file: each on its own line, in the order found."""
        if len(problems) == 1:
            return cls(source, *problems[0])
        lines = "\n".join(f"  {_where(k, m)}" if k else f"  {m}" for k, m in problems)
        return cls(source, "", f"{len(problems)} problems:\n{lines}", problems=problems)


def _where(key: str, message: str) -> str:
    """``"[rule] lr = -1: ..."`` for key ``rule.lr`` and message ``"= -1: ..."``."""
    if not key:
        return message
    where = f"[{key.rsplit('.', 1)[0]}] {key.rsplit('.', 1)[1]}" if "." in key else key
    sep = " " if message.startswith("= ") else ": "
    return f"{where}{sep}{message}"


class SettingError(NeuroplasticError, ValueError):
    """A setting that does not fit the data (e.g. a glimpse larger than the images), raised where it shows.

    ``key`` is the protocol key (``"stimulus.patch"``); code that knows the protocol file re-raises it
    as a :class:`ProtocolError` naming that file.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


class ModelError(NeuroplasticError, ValueError):
    """A model file that cannot be used, with the file, line and key in the message."""


class DataError(NeuroplasticError, ValueError):
    """A data set that cannot be read as asked: the message names the path and what was expected."""

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class DeviceError(NeuroplasticError, RuntimeError):
    """A device that cannot be used here (no compiler, no GPU, a missing extra), with what to do instead."""


class RunError(NeuroplasticError, RuntimeError):
    """A run directory that cannot be used as asked (finished, unfinished, or corrupt)."""


class RunBusy(RunError):
    """A run directory another process is using (its lock is held): the message names that process."""


class FigureError(NeuroplasticError, ValueError):
    """A figure recipe that cannot be used: names the file, the key and what is allowed."""


class BenchError(NeuroplasticError, RuntimeError):
    """A benchmark that cannot run here: its script is missing (``benchmarks/`` ships only with a checkout)."""


class SweepError(NeuroplasticError, RuntimeError):
    """A sweep that cannot start as asked (dask missing, scheduler unreachable, conflicting options)."""


class StorageError(NeuroplasticError, RuntimeError):
    """The machine refused to read or write a file the run needs (a full disk, a read-only file system,
    permissions): not the input's fault, so ``neuroplastic`` exits with 1. The message names the path.
    """

    exit_code = 1


def storage_error(err: OSError, doing: str = "write") -> StorageError:
    """A :class:`StorageError` for ``err`` that names its path and what to do about it."""
    import errno

    advice = {errno.ENOSPC: "free space on that file system, or choose another --out",
              errno.EDQUOT: "free space within your quota, or choose another --out",
              errno.EROFS: "the file system is read-only; choose another --out",
              errno.EACCES: "check its permissions, or choose another --out",
              errno.EPERM: "check its permissions, or choose another --out",
              errno.ENAMETOOLONG: "use a shorter name or --out"}.get(err.errno, "check the path and the file system")
    where = err.filename if err.filename is not None else "a file"
    return StorageError(f"cannot {doing} {where}: {err.strerror or err}; {advice}")


class TrainingDiverged(NeuroplasticError, RuntimeError):
    """A loss or a weight became NaN or infinite; the run stops and keeps its last good checkpoint.

    Not bad input in the file's syntax, but a run that failed: ``neuroplastic run`` exits with 1.
    """

    exit_code = 1
