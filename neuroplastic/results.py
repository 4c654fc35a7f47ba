"""The results store: one directory per run, the only code that writes into it.

A run directory ``<root>/<name>-<hash>`` holds

- ``manifest.json``: the resolved protocol, its hash, seed, package versions, git
  revision, command line, status (``running``, ``finished``, ``failed``) and timings;
- ``metrics.csv``: tidy rows ``epoch, stage, layer, name, value``;
- ``checkpoints/epoch_NNNN.npz``: arrays (weights, optimiser state) plus a JSON
  state (RNG, metrics so far) from which a run resumes bit-identically;
- figures (``*.png``, ``*.pdf``) and ``summary.json``.

Every file is written atomically (a temporary file in the same directory, then
``os.replace``), so a run killed at any instant leaves each file either old or
new, never half-written.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunError

__all__ = ["Run", "RunError", "atomic_write", "read_metrics", "save_figure", "METRIC_FIELDS"]

METRIC_FIELDS = ("epoch", "stage", "layer", "name", "value")
_VERSIONED = ("neuroplastic", "numpy", "scipy", "scikit-learn", "brian2", "brian2cuda", "torch", "array-api-compat")




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
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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

    # -- opening -----------------------------------------------------------------------------
    @staticmethod
    def path_for(root: str | Path, protocol) -> Path:
        """Directory of ``protocol``'s run under ``root``: its name and the hash of the resolved protocol."""
        return Path(root) / f"{protocol.name}-{protocol.digest()[:10]}"

    @classmethod
    def open(cls, root: str | Path, protocol, *, resume: bool = False, force: bool = False,
             command: list[str] | None = None) -> "Run":
        """Create the run directory of ``protocol``, or reopen it to resume.

        A finished run is never overwritten unless ``force``; an unfinished one
        is continued only with ``resume`` (or started over with ``force``).
        """
        directory = cls.path_for(root, protocol)
        manifest_path = directory / "manifest.json"
        if directory.exists() and not force:
            if not manifest_path.is_file():
                raise RunError(f"{directory} exists but has no manifest.json; it is not a run directory "
                               "(use --force to start over there, or another --out)")
            old = json.loads(manifest_path.read_text())
            if old.get("status") == "finished":
                raise RunError(f"{directory}: this run already finished; its results are there. "
                               "Use --force to run it again and overwrite them.")
            if not resume:
                raise RunError(f"{directory}: an unfinished run ({old.get('status')}) exists; "
                               "use --resume to continue it from its last checkpoint, or --force to start over")
            old.update(status="running", resumed=old.get("resumed", 0) + 1, command=command or sys.argv)
            old.pop("error", None)
            run = cls(directory, old)
            run._write_manifest()
            return run
        if directory.exists():
            shutil.rmtree(directory)
        manifest = {
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
        run = cls(directory, manifest)
        run._write_manifest()
        return run

    @classmethod
    def load(cls, directory: str | Path) -> "Run":
        """Open an existing run directory for reading."""
        directory = Path(directory)
        path = directory / "manifest.json"
        if not path.is_file():
            raise RunError(f"{directory}: not a run directory (no manifest.json)")
        return cls(directory, json.loads(path.read_text()))

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
            old.unlink()
        return path

    def latest_checkpoint(self) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
        """``(epoch, arrays, state)`` of the newest checkpoint, or ``None``."""
        found = sorted((self.directory / "checkpoints").glob("epoch_*.npz"))
        if not found:
            return None
        with np.load(found[-1]) as data:
            arrays = {k: data[k] for k in data.files if k != "__state__"}
            state = json.loads(str(data["__state__"]))
        return int(found[-1].stem.split("_")[1]), arrays, state

    def initial_params(self) -> dict[str, np.ndarray]:
        """The weights the run started from (its epoch-0 checkpoint), keyed as the engine's parameters."""
        path = self.directory / "checkpoints" / "epoch_0000.npz"
        if not path.is_file():
            raise RunError(f"{self.directory}: no initial checkpoint (checkpoints/epoch_0000.npz)")
        with np.load(path) as data:
            return {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}

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
        """Mark the run failed with ``message``; checkpoints stay for --resume."""
        self._elapsed()
        self.manifest.update(status="failed", error=message)
        self._write_manifest()
