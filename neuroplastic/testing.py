"""Random test problems shared by the tests and benchmarks (as ``numpy.testing`` serves numpy's)."""
from __future__ import annotations

import numpy as np

__all__ = ["assert_cli_resume_is_bit_identical", "fd_grad", "random_problem", "rel_err"]


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
    from .rate.network import ClappStack

    rng = np.random.default_rng(seed)
    params = ClappStack.init(sizes, rule, rng, dtype="float64", pred_init_scale=pred_init_scale).params
    for l in range(len(sizes) - 1):
        params[f"{l}/W"] = params[f"{l}/W"] + offset / sizes[l]
    x = rng.random((length, sizes[0]))
    y = np.where(rng.random(length) < 0.5, -1.0, 1.0)
    y[0] = 0.0
    return params, x, y


def assert_cli_resume_is_bit_identical(protocol_path, overrides: list[str], out, epochs: int):
    """Run a protocol through the command line, cut it back to epoch ``epochs - 1``, resume, and compare.

    The cut is what a kill after that checkpoint leaves: the last checkpoint and the summary gone and
    the manifest still ``running``. The resumed run must end with the same checkpoint arrays (bit for
    bit), the same ``metrics.csv`` (byte for byte) and the same probe. Returns the run directory and
    its summary, for further checks.
    """
    import json
    import shutil
    from pathlib import Path

    from .cli import main
    from .protocol import load
    from .results import Run

    sets = [a for o in overrides for a in ("--set", o)]
    args = ["run", str(protocol_path), "--out", str(out), "--quiet", *sets]
    assert main(args) == 0
    directory = Run.path_for(Path(out), load(protocol_path, overrides))
    summary = json.loads((directory / "summary.json").read_text())
    reference = Path(out) / "reference"
    shutil.copytree(directory, reference)

    last = f"epoch_{epochs:04d}.npz"
    (directory / "checkpoints" / last).unlink()
    (directory / "summary.json").unlink()
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    assert Run.load(directory).latest_checkpoint()[0] == epochs - 1
    assert main([*args, "--resume"]) == 0

    with np.load(directory / "checkpoints" / last) as a, np.load(reference / "checkpoints" / last) as b:
        assert sorted(a.files) == sorted(b.files)
        assert any(k.startswith("opt/") for k in a.files)
        for k in a.files:
            assert np.array_equal(a[k], b[k]), f"{k} differs after resuming"
    assert (directory / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert json.loads((directory / "summary.json").read_text())["probe"] == summary["probe"]
    return directory, summary
