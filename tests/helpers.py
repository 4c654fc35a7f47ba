"""Test scaffolding shared by the tests and the benchmarks: random test problems, finite differences, a resume check.

Not part of the package: tests import it as ``from helpers import ...`` (pytest puts ``tests/`` on
``sys.path``; it has no ``__init__.py``), and the benchmarks add ``tests/`` to ``sys.path`` themselves.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["assert_cli_resume_is_bit_identical", "benchmark_module", "fd_grad", "random_problem", "rel_err",
           "set_args"]


def set_args(overrides) -> list[str]:
    """``["a.b=1", ...]`` as the command line's ``["--set", "a.b=1", ...]``."""
    return [a for o in overrides for a in ("--set", o)]


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_module(name: str):
    """The script ``benchmarks/<name>.py`` imported as a module (its folder on ``sys.path`` while it loads, for
    the scripts that import their neighbours)."""
    path = BENCHMARKS / f"{name}.py"
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def fd_grad(f, P: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``f(P)`` with respect to every entry of ``P`` (float64).

    ``P`` is perturbed in place and restored; keep every kink (ReLU input, hinge margin) further than
    ``h`` away, or the difference straddles it.
    """
    G = np.zeros_like(P)
    for idx in np.ndindex(P.shape):
        old = P[idx]
        P[idx] = old + h
        fp = f(P)
        P[idx] = old - h
        fm = f(P)
        P[idx] = old
        G[idx] = (fp - fm) / (2 * h)
    return G


def rel_err(g: np.ndarray, ref: np.ndarray) -> float:
    """``|g - ref| / |ref|`` (Frobenius norms)."""
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


def random_problem(sizes: list[int], length: int, rule: str = "clapp_s", seed: int = 0, *,
                   offset: float = 0.0, pred_init_scale: float = 1.0):
    """Initial weights of a CLAPP stack and a random glimpse stream: ``(params, x, y)``.

    ``x`` (length, sizes[0]) is uniform in [0, 1); ``y`` is a fair coin of fixations (+1) and saccades (-1)
    with ``y[0] = 0`` (no context yet). ``offset / fan_in`` is added to every feed-forward weight, so that
    most units are active on positive inputs (spiking networks need some drive to fire). float64.
    """
    from neuroplastic.engines.numpy.clapp_stack import ClappStack

    rng = np.random.default_rng(seed)
    params = ClappStack.init(sizes, rule, rng, dtype="float64", pred_init_scale=pred_init_scale).params
    for l in range(len(sizes) - 1):
        params[f"{l + 1}/W"] = params[f"{l + 1}/W"] + offset / sizes[l]
    x = rng.random((length, sizes[0]))
    y = np.where(rng.random(length) < 0.5, -1.0, 1.0)
    y[0] = 0.0
    return params, x, y


class _Killed(BaseException):
    """Stands for SIGKILL: no handler in the package catches it, so the run is left as a kill leaves it."""


@contextmanager
def _killed_before_checkpoint(epoch: int):
    """While inside, a run is "killed" just before it writes its checkpoint of ``epoch``.

    The checkpoints before it stay, the manifest stays ``running`` (``neuroplastic.runner`` marks a
    run failed on ``Exception`` and ``KeyboardInterrupt`` only) and nothing after it is written: what
    SIGKILL leaves at that instant, but deterministic, and written only by :class:`~neuroplastic.results.Run`.
    """
    from neuroplastic.results import Run

    save = Run.save_checkpoint

    def save_or_die(run, e, *args, **kwargs):
        if e == epoch:
            raise _Killed(f"killed before the checkpoint of epoch {epoch}")
        return save(run, e, *args, **kwargs)

    Run.save_checkpoint = save_or_die
    try:
        yield
    finally:
        Run.save_checkpoint = save


def assert_cli_resume_is_bit_identical(protocol_path, overrides: list[str], out, epochs: int):
    """Kill a run through the command line before its last checkpoint, resume it, and compare with a whole run.

    The whole run goes into ``out/reference``; the killed one into ``out``, stopped as a kill just
    before the checkpoint of epoch ``epochs`` leaves it (checkpoints up to ``epochs - 1``, no summary,
    the manifest still ``running``), then resumed with ``--resume``. The resumed run must end with
    the same checkpoint arrays and state (bit for bit), the same ``metrics.csv`` (byte for byte) and
    the same probe. Returns the resumed run directory and its summary, for further checks.

    Every file in a run directory is written by :mod:`neuroplastic.results` (the kill is an exception
    raised instead of a checkpoint, not an edit). ``metrics.csv`` and ``summary.json`` are read as files:
    the check is on their bytes (``read_metrics`` parses the values), and ``Run`` has no reader for
    the summary.
    """
    from neuroplastic.cli import main
    from neuroplastic.protocol import load
    from neuroplastic.results import Run

    sets = set_args(overrides)
    out = Path(out)
    reference_root = out / "reference"
    args = ["run", str(protocol_path), "--out", str(out), "--quiet", *sets]
    assert main(["run", str(protocol_path), "--out", str(reference_root), "--quiet", *sets]) == 0

    with _killed_before_checkpoint(epochs):
        try:
            main(args)
        except _Killed:
            pass
        else:
            raise AssertionError(f"the run ended without writing a checkpoint of epoch {epochs}")
    directory = Run.path_for(out, load(protocol_path, overrides))
    cut = Run.load(directory)
    assert cut.manifest["status"] == "running" and not (directory / "summary.json").exists()
    assert cut.latest_checkpoint()[0] == epochs - 1
    assert main([*args, "--resume"]) == 0

    reference = reference_root / directory.name
    (epoch, arrays, state), (ref_epoch, ref_arrays, ref_state) = (Run.load(d).latest_checkpoint()
                                                                  for d in (directory, reference))
    assert epoch == ref_epoch == epochs
    assert sorted(arrays) == sorted(ref_arrays)
    assert any(k.startswith("opt/") for k in arrays)
    for k in arrays:
        assert np.array_equal(arrays[k], ref_arrays[k]), f"{k} differs after resuming"
    assert state == ref_state, "the RNG state or the metrics in the checkpoint differ after resuming"
    assert Run.load(directory).manifest["resumed"] == 1
    assert (directory / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["probe"] == json.loads((reference / "summary.json").read_text())["probe"]
    return directory, summary
