"""The Python API: protocols with overrides, runs in memory and in a results store, results read back,
CLAPP on one's own arrays, and the tutorial that shows them (docs/examples/plot_python_api.py)."""
from __future__ import annotations

import json
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import neuroplastic
from neuroplastic.cli import main
from neuroplastic.errors import ProtocolError, RunError, TrainingDiverged
from neuroplastic.protocol import load
from neuroplastic.results import Run

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"
TINY = dict(data__max_samples=120, train__epochs=2, model__layers=[8, 8], train__batch_size=16)
TINY_SETS = ["data.max_samples=120", "train.epochs=2", "model.layers=[8, 8]", "train.batch_size=16"]
API = {"ClappFit", "Result", "load_protocol", "load_run", "run", "train_clapp"}


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A temporary directory of its own for ``tempfile``, and an empty working directory: what a run leaves shows."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    return tmp, cwd


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


# -- the package ----------------------------------------------------------------------------------------
def test_import_is_light_and_dir_lists_the_api():
    code = ("import sys, neuroplastic; print(sorted(m for m in ('numpy', 'sklearn', 'brian2') if m in sys.modules)); "
            "print(sorted(set(dir(neuroplastic)) & set(neuroplastic.__all__)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", "import neuroplastic must not load numpy, scikit-learn or Brian2"
    assert set(eval(out[1])) == API
    assert set(neuroplastic.__all__) == API
    assert neuroplastic.run is neuroplastic.api.run
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        neuroplastic.nonsense
    from neuroplastic import data, results        # submodules still import as before
    assert data.load and results.Run


# -- protocols ------------------------------------------------------------------------------------------
def test_overrides_are_the_command_lines_values():
    ours = neuroplastic.load_protocol("clapp_digits", seed=4, rule__lr=3e-4, model__layers=(16, 8),
                                      stimulus__scan="raster", evaluate__baseline=False, data__max_samples=300)
    cli = load(QUICKSTART, ["seed=4", "rule.lr=3e-4", "model.layers=[16, 8]", 'stimulus.scan="raster"',
                            "evaluate.baseline=false", "data.max_samples=300"])
    assert ours.digest() == cli.digest()
    assert (ours.seed, ours.rule.lr, ours.model.layers, ours.evaluate.baseline) == (4, 3e-4, [16, 8], False)
    assert neuroplastic.load_protocol(ours, train__epochs=3).train.epochs == 3     # more overrides on a protocol
    assert neuroplastic.load_protocol(ours, model__layers=np.array([16, 8]), seed=np.int64(4)).digest() == cli.digest()
    assert neuroplastic.load_protocol(QUICKSTART).digest() == load(QUICKSTART).digest()


@pytest.mark.parametrize("kwargs,cli", [
    (dict(rule__lrr=1e-3), "rule.lrr=1e-3"),
    (dict(trian__epochs=2), "trian.epochs=2"),
    (dict(rule__lr=-1), "rule.lr=-1"),
    (dict(model__layers="many"), 'model.layers="many"'),
])
def test_bad_override_gives_the_protocol_error_of_the_command_line(kwargs, cli):
    with pytest.raises(ProtocolError) as theirs:
        load(QUICKSTART, [cli])
    with pytest.raises(ProtocolError) as ours:
        neuroplastic.load_protocol("clapp_digits", **kwargs)
    assert ours.value.problems == theirs.value.problems
    assert str(ours.value).split(": ", 1)[1] == str(theirs.value).split(": ", 1)[1]   # the same, but for where


def test_unknown_protocol_and_unusable_value_are_protocol_errors():
    with pytest.raises(ProtocolError, match="did you mean 'clapp_digits'"):
        neuroplastic.load_protocol("clapp_digit")
    with pytest.raises(ProtocolError, match=r"\[rule\] lr = .*not a protocol value"):
        neuroplastic.load_protocol("clapp_digits", rule__lr=object())


# -- runs -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return neuroplastic.load_protocol("clapp_digits", **TINY)


@pytest.fixture(scope="module")
def in_memory(tiny, tmp_path_factory):
    """The tiny protocol run in memory twice, with a temporary directory of its own and an empty working directory."""
    tmp, cwd = tmp_path_factory.mktemp("tmp"), tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(tmp))
        mp.chdir(cwd)
        first, second = neuroplastic.run(tiny), neuroplastic.run(tiny)
    return first, second, tmp, cwd


def test_in_memory_run_leaves_nothing_and_repeats(tiny, in_memory):
    first, second, tmp, cwd = in_memory
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == [], "an in-memory run leaves nothing on disk"
    assert first.directory is None and first.status == "finished" and not first.reused
    assert first.probe == second.probe and set(first.probe) == {1, 2}
    assert sorted(first.weights) == ["1/W", "1/W_pred", "2/W", "2/W_pred"], "weights only, no optimiser state"
    for key in first.weights:
        np.testing.assert_array_equal(first.weights[key], second.weights[key])
        assert not np.array_equal(first.weights[key], first.initial_weights[key]), "the weights learned"
    assert [len(v) for v in first.history("loss").values()] == [2, 2]
    assert sorted(first.features) == [1, 2] and first.features[1].shape == (120, 8)
    assert len(first.labels) == 120

    # The features are the trained weights' own: the probe's glimpses through the final weights, averaged.
    from neuroplastic.engines.prepare import prepare
    from neuroplastic.rules import stack_rates

    patches = prepare(tiny).probe_set().stimulus.patches.astype("float32")
    for layer, rates in enumerate(stack_rates(first.weights, patches), start=1):
        np.testing.assert_allclose(first.features[layer], rates.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_a_finished_run_is_returned_not_refused(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    directory = Run.path_for(out, tiny)
    unfinished = Run.open(out, tiny)
    unfinished.fail("stopped")
    unfinished.close()
    with pytest.raises(RunError, match="unfinished run.*--resume"):
        neuroplastic.run(tiny, out)

    trained = neuroplastic.run(tiny, out, resume=True)
    assert trained.directory == directory and not trained.reused and trained.status == "finished"
    before = _snapshot(directory)
    again = neuroplastic.run(tiny, out)
    assert again.reused and again.probe == trained.probe and _snapshot(directory) == before
    assert neuroplastic.load_run(directory).probe == trained.probe
    assert neuroplastic.Result.load(directory).weights.keys() == trained.weights.keys()

    code = main(["run", str(QUICKSTART), "--out", str(out), *[a for s in TINY_SETS for a in ("--set", s)]])
    printed = capsys.readouterr().out
    assert code == 0 and f"already finished: {directory}" in printed
    assert f"{1:>5}  {trained.probe[1]:8.3f}" in printed, "the saved probe table"
    assert _snapshot(directory) == before

    forced = neuroplastic.run(tiny, out, force=True)
    assert not forced.reused and forced.probe == trained.probe       # trained again, the same numbers
    assert json.loads((directory / "manifest.json").read_text())["command"][0] == "neuroplastic.run"


def test_run_protocol_reads_a_run_another_process_finished_meanwhile(tiny, tmp_path, monkeypatch, capsys):
    from neuroplastic import runner

    out = tmp_path / "runs"
    assert runner.run_protocol(tiny, out, progress=False).code == 0
    directory = Run.path_for(out, tiny)
    saved = json.loads((directory / "summary.json").read_text())
    real, calls = runner._finished, []

    def not_yet(directory):        # the first look comes before the other process has finished
        calls.append(directory)
        return None if len(calls) == 1 else real(directory)

    monkeypatch.setattr(runner, "_finished", not_yet)
    again = runner.run_protocol(tiny, out, progress=False)
    assert len(calls) == 2 and again.reused and again.code == 0 and again.summary == saved
    monkeypatch.undo()

    (directory / "summary.json").write_text("{not json")
    code = main(["run", str(QUICKSTART), "--out", str(out), "--quiet", *[a for s in TINY_SETS for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2 and "summary.json cannot be read" in err and "--force" in err


def test_failures_raise_the_packages_errors(tmp_path, private_tmp):
    diverging = neuroplastic.load_protocol("clapp_digits", **TINY, rule__lr=1e12, rule__optimizer="sgd")
    with pytest.raises(TrainingDiverged, match="training diverged") as err, np.errstate(all="ignore"):
        neuroplastic.run(diverging)
    assert any("in-memory run" in note for note in err.value.__notes__)
    assert list(private_tmp[0].iterdir()) == []
    with pytest.raises(RunError, match="give out="):
        neuroplastic.run(diverging, resume=True)
    with pytest.raises(RunError, match="not a run directory"):
        neuroplastic.load_run(tmp_path)


# -- your own arrays ------------------------------------------------------------------------------------
def test_train_clapp_is_the_engines_training_bit_for_bit(tiny, in_memory):
    """The same glimpse sequences and seed: train_clapp ends with the run's weights exactly."""
    from neuroplastic.engines.prepare import prepare

    prepared = prepare(tiny)
    fit = neuroplastic.train_clapp(prepared.stimulus.patches[prepared.train_idx], layers=[8, 8], epochs=2,
                                   batch_size=16, seed=tiny.seed)
    result = in_memory[0]
    assert fit.params.keys() == result.weights.keys()
    for key in fit.params:
        np.testing.assert_array_equal(fit.params[key], result.weights[key])
    np.testing.assert_allclose(fit.loss, np.stack([result.history("loss")[l] for l in (1, 2)], axis=1))


def test_train_clapp_refuses_what_it_cannot_train():
    x = np.zeros((10, 4, 6))
    with pytest.raises(ProtocolError, match="rule = 'hinge_rll': not a dense CLAPP rule"):
        neuroplastic.train_clapp(x, rule="hinge_rll")
    with pytest.raises(ProtocolError, match=r"shape \(10, 6\)"):
        neuroplastic.train_clapp(x[:, 0])
    with pytest.raises(ProtocolError, match="batch_size = 1"):
        neuroplastic.train_clapp(x, batch_size=1)


# -- the tutorial ---------------------------------------------------------------------------------------
def test_the_python_api_tutorial_runs(private_tmp, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    try:
        ns = runpy.run_path(str(ROOT / "docs" / "examples" / "plot_python_api.py"), run_name="__main__")
    finally:
        plt.close("all")
    assert ns["result"].probe == ns["again"].probe
    assert ns["loaded"].reused and not ns["kept"].reused and ns["kept"].probe == ns["result"].probe
    assert ns["fit"].loss[-1, 0] < ns["fit"].loss[0, 0]
    assert ns["trained_share"] > ns["random_share"]
