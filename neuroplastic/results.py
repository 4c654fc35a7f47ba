"""The results store: one directory per run, the only code that writes into it.

A run directory ``<root>/<name>-<hash>`` holds

- ``manifest.json``: the resolved protocol, its hash, seed, package versions, git
  revision, command line, status (``running``, ``finished``, ``failed``) and timings;
- ``metrics.csv``: tidy rows ``epoch, stage, layer, name, value``;
- ``checkpoints/epoch_NNNN.npz``: arrays (weights, optimiser state) plus a JSON
  state (RNG, metrics so far) from which a run resumes bit-identically;
- figures (``*.png``, ``*.pdf``) and ``summary.json``;
- ``run.log``: what the package logged at INFO and above while the run was open (phases and their
  durations, resumes, Brian2 build cache hits), with timestamps, appended across resumes;
- ``.lock``: held (``flock``) by the process that runs it, for as long as it runs.

Every file is written atomically (a temporary file in the same directory, flushed to disk with
``fsync``, then ``os.replace`` and an ``fsync`` of the directory), so a run killed at any instant,
or a machine that loses power, leaves each file either old or new, never half-written. Temporary
files left by a killed writer are removed when the run is next opened.

**One process per run directory.** :meth:`Run.open` takes an exclusive lock on the directory's
``.lock`` file and keeps it until :meth:`Run.close`; a second ``run``, ``--resume`` or ``--force``
of the same directory (another shell, another sweep) is refused with :class:`~neuroplastic.errors.RunBusy`,
naming the process that holds it. The kernel releases the lock when that process dies, however it
dies, so a killed run never leaves a stale lock behind. (``flock`` is advisory and local: a results
store shared over NFS between machines is not protected.)
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import zipfile
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunBusy, RunError, StorageError
from .locks import DirectoryLock
from .names import name_problem

__all__ = ["Run", "RunBusy", "RunError", "atomic_write", "check_root", "number", "read_metrics", "save_figure",
           "METRIC_FIELDS"]

log = logging.getLogger(__name__)


def number(x) -> float:
    """A value read from a run's saved summary as a float, NaN when missing or not a number (older runs saved less)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")

METRIC_FIELDS = ("epoch", "stage", "layer", "name", "value")
_VERSIONED = ("neuroplastic", "numpy", "scipy", "scikit-learn", "brian2", "brian2cuda", "torch", "array-api-compat")
_LOCK = ".lock"
_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")      # what _atomic's mkstemp names look like
# What a checkpoint that cannot be read raises: truncated or empty (zip), a missing member, bad JSON.
_DAMAGED = (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError)
_RUN_LOG = "run.log"
#: The level of the ``neuroplastic`` logger before the first open run lowered it to INFO (for its run.log).
_LEVEL_BEFORE: list[int] = []
_OPEN_LOGS: list[logging.Handler] = []
_LOG_LOCK = threading.Lock()


def _file_mode() -> int:
    """Permissions of a newly created file under the current umask (mkstemp's own are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextmanager
def _atomic(path: Path, mode: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)          # results are readable like any other file, not owner-only
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())          # the data is on disk before the name points to it
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)          # ... and the rename is, too


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:                        # some file systems do not sync directories; the rename still happened
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left under ``directory``; return them.

    Call only while no other process writes there (a run's lock is held).
    """
    found = [p for p in Path(directory).rglob(".*.tmp") if p.is_file() and _TMP.match(p.name)]
    for path in found:
        with suppress(FileNotFoundError):
            path.unlink()
    return found


def check_root(root: str | Path) -> Path:
    """Check that run directories can be made under ``root`` (``--out``) before any work starts.

    ``root`` must be a directory, or not exist yet under a directory that does (else :class:`RunError`,
    bad input); it must be writable (else :class:`~neuroplastic.errors.StorageError`, the environment).
    """
    root = Path(root)
    existing = next((p for p in (root, *root.absolute().parents) if p.exists()), None)
    if root.exists() and not root.is_dir():
        raise RunError(f"--out {root}: not a directory; give a directory to hold the run directories")
    if existing is not None and not existing.is_dir():
        raise RunError(f"--out {root}: {existing} is a file, so no directory can be made under it")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):     # the machine's, not the input's
        raise StorageError(f"--out {root}: {existing} is not writable (read-only file system or permissions); "
                           "choose another --out")
    return root


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    with _atomic(Path(path), "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Save a matplotlib figure atomically as ``stem.png`` (150 dpi) and ``stem.pdf``."""
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
        path = Path(f"{stem}.{ext}")
        atomic_write(path, buf.getvalue())
        paths.append(path)
    return paths


def read_metrics(directory: str | Path) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.csv`` with ``epoch``/``layer`` as int and ``value`` as float."""
    path = Path(directory) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{"epoch": int(r["epoch"]), "stage": r["stage"], "layer": int(r["layer"]),
                 "name": r["name"], "value": float(r["value"])} for r in csv.DictReader(fh)]


def _git_revision() -> str | None:
    """Revision of the neuroplastic checkout (``+dirty`` when it has uncommitted changes), if it is one."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) if rev else None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class Run:
    """A run directory. Make one with :meth:`Run.open`; engines call its writers."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.directory = Path(directory)
        self.manifest = manifest
        self._started = time.monotonic()
        self._lock: DirectoryLock | None = None
        self._log: weakref.finalize | None = None          # detaches run.log (see _start_log)

    # -- opening -----------------------------------------------------------------------------
    @staticmethod
    def path_for(root: str | Path, protocol) -> Path:
        """Directory of ``protocol``'s run under ``root``: its name and the hash of the resolved protocol."""
        if (problem := name_problem(protocol.name)) is not None:     # checked on load; this guards other callers
            raise RunError(f"run name {protocol.name!r} {problem}")
        return Path(root) / f"{protocol.name}-{protocol.digest()[:10]}"

    @classmethod
    def open(cls, root: str | Path, protocol, *, resume: bool = False, force: bool = False,
             command: list[str] | None = None) -> "Run":
        """Create the run directory of ``protocol``, or reopen it to resume, and lock it until :meth:`close`.

        A finished run is never overwritten unless ``force``; an unfinished one
        is continued only with ``resume`` (or started over with ``force``). A directory that
        another process is running is refused (:class:`~neuroplastic.errors.RunBusy`) whatever the flags.
        """
        directory = cls.path_for(check_root(root), protocol)
        manifest_path = directory / "manifest.json"
        if directory.exists() and not force and not manifest_path.is_file() and _foreign(directory):
            raise RunError(f"{directory} exists but has no manifest.json; it is not a run directory "
                           "(use --force to start over there, or another --out)")
        lock = DirectoryLock(directory, _LOCK, command or sys.argv)
        if (holder := lock.holder()) is not None:                          # refuse before touching anything
            raise _busy(directory, holder)
        if manifest_path.is_file() and not force:
            cls._reusable(directory, protocol, resume, command, quiet=True)
        directory.mkdir(parents=True, exist_ok=True)
        if (holder := lock.acquire()) is not None:
            raise _busy(directory, holder)
        try:
            run = cls._open_locked(directory, protocol, resume, force, command)
        except BaseException:
            lock.release()
            raise
        run._lock = lock
        run._start_log()
        return run

    @classmethod
    def _open_locked(cls, directory: Path, protocol, resume: bool, force: bool, command) -> "Run":
        manifest_path = directory / "manifest.json"
        stale = remove_stale_temporaries(directory)
        if stale:
            log.info("removed %d temporary file(s) left by an interrupted write in %s", len(stale), directory)
        if manifest_path.is_file() and not force:
            old = cls._reusable(directory, protocol, resume, command)
            old.update(status="running", resumed=old.get("resumed", 0) + 1, command=command or sys.argv)
            old.pop("error", None)
            run = cls(directory, old)
            run._write_manifest()
            return run
        for entry in directory.iterdir():        # --force (or a directory a killed start left empty): start over
            if entry.name == _LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        run = cls(directory, cls._new_manifest(protocol, command))
        run._write_manifest()
        return run

    @classmethod
    def _reusable(cls, directory: Path, protocol, resume: bool, command, quiet: bool = False) -> dict[str, Any]:
        """The manifest of an existing run that may be continued (``resume`` and unfinished), else refuse."""
        manifest_path = directory / "manifest.json"
        try:
            old = json.loads(manifest_path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:      # damaged: the protocol rebuilds it, the status is unknown
            if not quiet:
                log.warning("%s is damaged (%s); it is rewritten from the protocol", manifest_path, err)
            old = dict(cls._new_manifest(protocol, command), status="unknown")
        if old.get("status") == "finished":
            raise RunError(f"{directory}: this run already finished; its results are there. "
                           "Use --force to run it again and overwrite them.")
        if not resume:
            raise RunError(f"{directory}: an unfinished run ({old.get('status')}) exists; "
                           "use --resume to continue it from its last checkpoint, or --force to start over")
        return old

    @staticmethod
    def _new_manifest(protocol, command) -> dict[str, Any]:
        return {
            "name": protocol.name,
            "protocol": protocol.as_dict(),
            "protocol_hash": protocol.digest(),
            "protocol_file": str(protocol.source),
            "model_file": str(protocol.model_path) if protocol.model_path else None,
            "seed": protocol.seed,
            "versions": _versions(),
            "git_revision": _git_revision(),
            "command": command or sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            "elapsed_s": 0.0,
        }

    @classmethod
    def load(cls, directory: str | Path) -> "Run":
        """Open an existing run directory for reading (no lock: reading never waits for a running run)."""
        directory = Path(directory)
        path = directory / "manifest.json"
        if not path.is_file():
            raise RunError(f"{directory}: not a run directory (no manifest.json)")
        try:
            manifest = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise RunError(f"{path}: damaged ({err}); resume the run (neuroplastic run ... --resume) to rewrite "
                           "it, or delete the run directory") from None
        except OSError as err:
            raise RunError(f"{path}: cannot read ({err.strerror})") from None
        if not isinstance(manifest, dict):
            raise RunError(f"{path}: damaged (not a JSON object); resume the run to rewrite it")
        return cls(directory, manifest)

    @classmethod
    def fail_abandoned(cls, directory: str | Path, message: str) -> bool:
        """Mark a run whose process died failed with ``message``, unless a live process holds it; say whether."""
        directory = Path(directory)
        lock = DirectoryLock(directory, _LOCK, ["neuroplastic", "(recording a dead run)"])
        if lock.acquire() is not None:          # taken over since: its new holder writes its status
            return False
        try:
            run = cls.load(directory)
            if run.manifest.get("status") != "running":
                return False
            run.fail(message)
            return True
        finally:
            lock.release()

    def close(self) -> None:
        """Release the run directory's lock (the end of every run, however it ended) and close its ``run.log``."""
        self._stop_log()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # -- run.log --------------------------------------------------------------------------------
    def _start_log(self) -> None:
        """Append what the package logs at INFO and above, from this thread, to ``run.log`` until :meth:`close`.

        The ``neuroplastic`` logger is lowered to INFO while a run is open (the command's console
        handler keeps its own level, so ``-v`` alone decides what the terminal shows); the filter on
        the thread keeps runs that threads of one process hold at once out of each other's logs. A
        run dropped without :meth:`close` detaches its log when it is garbage-collected.
        """
        try:
            handler = logging.FileHandler(self.directory / _RUN_LOG, encoding="utf-8")     # appends
        except OSError as err:
            log.warning("%s: cannot write %s (%s); the run goes on without it", self.directory, _RUN_LOG, err)
            return
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        thread = threading.get_ident()
        handler.addFilter(lambda record: record.thread == thread)
        package = logging.getLogger("neuroplastic")
        with _LOG_LOCK:
            if not _OPEN_LOGS:
                _LEVEL_BEFORE[:] = [package.level]
                if package.getEffectiveLevel() > logging.INFO:
                    package.setLevel(logging.INFO)
            _OPEN_LOGS.append(handler)
            package.addHandler(handler)
        self._log = weakref.finalize(self, _detach_log, handler)
        resumed = self.manifest.get("resumed", 0)
        log.info("run %s opened (%s), command: %s", self.directory, f"resumed, {resumed} time(s)" if resumed else "new",
                 " ".join(map(str, self.manifest.get("command") or [])))

    def _stop_log(self) -> None:
        """Close ``run.log`` and detach it; the ``neuroplastic`` logger's level is restored after the last open run."""
        detach, self._log = self._log, None
        if detach is None or not detach.alive:
            return
        log.info("run %s closed: %s, %.1f s in all", self.directory, self.manifest.get("status"),
                 float(self.manifest.get("elapsed_s") or 0.0))
        detach()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------
    def _write_manifest(self) -> None:
        atomic_write(self.directory / "manifest.json", json.dumps(self.manifest, indent=2, default=str) + "\n")

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Replace ``metrics.csv`` with ``rows`` (the full history so far)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "value": repr(float(r["value"]))})
        atomic_write(self.directory / "metrics.csv", buf.getvalue())

    def save_checkpoint(self, epoch: int, arrays: dict[str, np.ndarray], state: dict[str, Any],
                        keep: int = 2) -> Path:
        """Write ``checkpoints/epoch_NNNN.npz`` atomically; keep the ``keep`` newest and epoch 0 (the initial state)."""
        path = self.directory / "checkpoints" / f"epoch_{epoch:04d}.npz"
        with _atomic(path, "wb") as fh:
            np.savez(fh, __state__=np.array(json.dumps(state)), **{k: np.asarray(v) for k, v in arrays.items()})
        for old in sorted(path.parent.glob("epoch_*.npz"))[1:-keep]:
            with suppress(FileNotFoundError):
                old.unlink()
        return path

    def latest_checkpoint(self, set_aside: bool = False) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
        """``(epoch, arrays, state)`` of the newest intact checkpoint, or ``None`` when there is none.

        Every array is read (which checks each member's CRC), so a truncated, empty or otherwise
        damaged file is found here, and the previous checkpoint is used instead, with a warning.
        ``set_aside`` (while the run is locked for resuming) renames a damaged file to
        ``*.npz.damaged``, so that it is neither read again nor counted as one of the kept checkpoints.
        """
        for path in sorted((self.directory / "checkpoints").glob("epoch_*.npz"), reverse=True):
            try:
                with np.load(path) as data:
                    arrays = {k: data[k] for k in data.files if k != "__state__"}
                    state = json.loads(str(data["__state__"]))
                epoch = int(path.stem.split("_")[1])
            except _DAMAGED as err:
                log.warning("checkpoint %s is damaged (%s: %s); using the one before it", path,
                            type(err).__name__, err or "empty")
                if set_aside:
                    os.replace(path, path.with_name(path.name + ".damaged"))
                continue
            return epoch, arrays, state
        return None

    def initial_params(self) -> dict[str, np.ndarray]:
        """The weights the run started from (its epoch-0 checkpoint), keyed as the engine's parameters."""
        path = self.directory / "checkpoints" / "epoch_0000.npz"
        if not path.is_file():
            raise RunError(f"{self.directory}: no initial checkpoint (checkpoints/epoch_0000.npz)")
        with np.load(path) as data:
            return {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}

    def summary(self) -> dict[str, Any]:
        """The run's ``summary.json`` (probe accuracies, fidelity, ...), ``{}`` while it has none (unfinished)."""
        path = self.directory / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> Path:
        """Write ``name.npz`` (e.g. monitor recordings) atomically."""
        path = self.directory / f"{name}.npz"
        with _atomic(path, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
        return path

    def save_json(self, name: str, data: Any) -> None:
        atomic_write(self.directory / name, json.dumps(data, indent=2, default=str) + "\n")

    def save_figure(self, fig, name: str) -> list[Path]:
        """Save a matplotlib figure as ``name.png`` and ``name.pdf``."""
        return save_figure(fig, self.directory / name)

    def _elapsed(self) -> None:
        now = time.monotonic()
        self.manifest["elapsed_s"] = round(self.manifest.get("elapsed_s", 0.0) + now - self._started, 3)
        self._started = now

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Mark the run finished (last write of a run)."""
        if summary is not None:
            self.save_json("summary.json", summary)
        self._elapsed()
        self.manifest.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self._write_manifest()

    def fail(self, message: str) -> None:
        """Mark the run failed with ``message``; checkpoints stay for --resume.

        Best effort: when the manifest itself cannot be written (a full disk), the run stays
        ``running`` on disk, which ``--resume`` treats the same way.
        """
        self._elapsed()
        self.manifest.update(status="failed", error=message)
        try:
            self._write_manifest()
        except OSError as err:
            log.warning("could not mark %s failed: %s", self.directory, err)



def _detach_log(handler: logging.Handler) -> None:
    """Detach a run's ``run.log`` handler and close it; the last one restores the ``neuroplastic`` logger's level."""
    package = logging.getLogger("neuroplastic")
    with _LOG_LOCK:
        package.removeHandler(handler)
        _OPEN_LOGS.remove(handler)
        if not _OPEN_LOGS and _LEVEL_BEFORE:
            package.setLevel(_LEVEL_BEFORE.pop())
    handler.close()


def _busy(directory: Path, holder: str) -> RunBusy:
    return RunBusy(f"{directory}: in use by {holder}; wait for it to end (or stop it), then run again")


def _foreign(directory: Path) -> bool:
    """Whether ``directory`` holds anything but what a killed start leaves (the lock, temporary files)."""
    return any(e.name != _LOCK and not _TMP.match(e.name) for e in directory.iterdir())
