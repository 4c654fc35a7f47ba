"""k-fold probing (``[evaluate] folds``): every sample of the probe's data is tested once, on fixed folds."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neuroplastic.cli import main
from neuroplastic.engines.base import probe_encoder
from neuroplastic.engines.prepare import prepare
from neuroplastic.evaluate import kfold_probe, linear_probe, probe_layers, stratified_folds, stratified_split
from neuroplastic.evaluate import probe as probe_module
from neuroplastic.protocol import ProtocolError, load, loads

QUICKSTART = Path(__file__).resolve().parents[1] / "protocols" / "clapp_digits.toml"
TINY = ["data.max_samples=120", "train.epochs=1", "model.layers=[8,8]", "train.batch_size=16"]


def _problem(n: int = 90, classes: int = 3, f: int = 5, glimpses: int = 4, seed: int = 0):
    """Noisy, overlapping classes: (n, glimpses, f) features of two layers and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, f))
    layer = centres[labels][:, None, :] + 2.0 * rng.normal(size=(n, glimpses, f))
    return [layer, np.tanh(layer)], labels


def _sklearn_probe(C: float = 1.0):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def test_folds_0_is_the_train_test_probe_as_before():
    features, labels = _problem()
    train, test = stratified_split(labels, 0.5, seed=3)
    got = probe_layers(features, labels, train, test, [1, 2], C=0.5)
    for layer in (1, 2):
        f = features[layer - 1].mean(axis=1)
        expected = _sklearn_probe(0.5).fit(f[train], labels[train]).score(f[test], labels[test])
        assert got[layer] == expected == linear_probe(f[train], labels[train], f[test], labels[test], C=0.5)
    assert probe_layers(features, labels, train, test, [1, 2], C=0.5, folds=0, seed=99) == got


def test_kfold_accuracy_is_sklearns_stratified_kfold_pooled_over_folds():
    features, labels = _problem()
    x = features[0].mean(axis=1)
    correct = 0
    for train, test in StratifiedKFold(5, shuffle=True, random_state=7).split(x, labels):
        correct += np.sum(_sklearn_probe(2.0).fit(x[train], labels[train]).predict(x[test]) == labels[test])
    assert kfold_probe(x, labels, 5, seed=7, C=2.0) == correct / len(labels)


def test_every_sample_is_predicted_exactly_once(monkeypatch):
    features, labels = _problem(n=61)
    x = features[0].mean(axis=1)
    folds = stratified_folds(labels, 4, seed=1)
    held_out = np.concatenate([test for _, test in folds])
    assert len(folds) == 4 and np.array_equal(np.sort(held_out), np.arange(len(labels)))
    for train, test in folds:
        assert not set(train) & set(test) and len(train) + len(test) == len(labels)
        assert set(labels[test]) == set(labels)                            # stratified: every class in every fold
    predicted = []
    fitted = probe_module._fitted_probe

    def recording(x_, y_, C):
        clf = fitted(x_, y_, C)
        predict = clf.predict
        clf.predict = lambda rows: predicted.append(len(rows)) or predict(rows)
        return clf

    monkeypatch.setattr(probe_module, "_fitted_probe", recording)
    kfold_probe(x, labels, 4, seed=1)
    assert sum(predicted) == len(labels) and len(predicted) == 4


def test_kfold_covers_train_and_test_and_is_deterministic():
    features, labels = _problem()
    train, test = stratified_split(labels, 0.5, seed=0)
    got = probe_layers(features, labels, train, test, [1, 2], folds=5, seed=11)
    assert got == probe_layers(features, labels, train, test, [1, 2], folds=5, seed=11)
    for layer in (1, 2):
        assert got[layer] == kfold_probe(features[layer - 1].mean(axis=1), labels, 5, seed=11)
    a, b = stratified_folds(labels, 5, seed=11), stratified_folds(labels, 5, seed=12)
    assert not all(np.array_equal(s[1], t[1]) for s, t in zip(a, b)), "the seed draws the folds"


def test_probe_encoder_probes_trained_and_random_on_the_same_folds():
    features, labels = _problem()
    p = loads('name = "x"\n[model]\nlayers = [5, 5]\n[evaluate]\nfolds = 3\n')
    train, test = stratified_split(labels, 0.5, seed=0)
    rows, summary = probe_encoder(p, features, features, labels, train, test)
    assert summary["probe"] == summary["probe_random"]                     # same features, same folds
    again = probe_encoder(p, features, features, labels, train, test)[1]
    assert again == summary
    n = len(labels)
    assert all(round(a * n) == pytest.approx(a * n) for a in summary["probe"].values())   # pooled over all n
    default = probe_encoder(p.with_overrides(["evaluate.folds=0"]), features, None, labels, train, test)[1]
    assert default["probe"] == {str(l): a for l, a in probe_layers(features, labels, train, test, [1, 2]).items()}


@pytest.mark.parametrize("value", [1, -1, 2.5, True])
def test_folds_other_than_0_or_at_least_2_are_refused(value):
    with pytest.raises(ProtocolError) as info:
        load(QUICKSTART, [f"evaluate.folds={str(value).lower()}"])
    message = str(info.value)
    assert message.startswith(f"{QUICKSTART}: [evaluate] folds = ") and "must be 0 or an integer >= 2" in message


def test_more_folds_than_the_smallest_class_is_refused_before_training():
    protocol = load(QUICKSTART, [*TINY, "evaluate.folds=2"])
    labels = prepare(protocol).dataset.labels
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    assert prepare(protocol.with_overrides([f"evaluate.folds={smallest}"])).probe_set() is not None
    with pytest.raises(ProtocolError) as info:
        prepare(protocol.with_overrides([f"evaluate.folds={smallest + 1}"]))
    message = str(info.value)
    assert message.startswith(f"{QUICKSTART}: [evaluate] folds = {smallest + 1}: ")
    assert f"smallest with {smallest}" in message and message.endswith(f"allowed: 0 or 2 to {smallest}")
    with pytest.raises(ValueError):
        stratified_folds(labels, smallest + 1, seed=0)


def test_run_with_folds_reports_a_probe(tmp_path):
    sets = [*TINY, "evaluate.folds=5"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["run", str(QUICKSTART), "--out", str(tmp_path), "--quiet",
                     *[a for s in sets for a in ("--set", s)]])
    assert code == 0, out.getvalue()
    (directory,) = tmp_path.glob("clapp_digits-*")
    summary = json.loads((directory / "summary.json").read_text())
    assert sorted(summary["probe"]) == sorted(summary["probe_random"]) == ["1", "2"]
    for accuracy in (*summary["probe"].values(), *summary["probe_random"].values()):
        assert 0 <= accuracy <= 1 and round(accuracy * 120) == pytest.approx(accuracy * 120)   # all 120 samples
    assert "layer" in out.getvalue() and "trained" in out.getvalue()


def test_the_status_line_counts_the_folds_and_quiet_shows_none(capsys, monkeypatch):
    import time

    from neuroplastic import progress
    from neuroplastic.progress import showing

    done = []
    features, labels = _problem()
    kfold_probe(features[0].mean(axis=1), labels, 3, seed=0, on_fold=lambda: done.append(1))
    assert len(done) == 3                                         # one advance per fold
    monkeypatch.setattr(progress, "REFRESH_S", 0.01)              # redraw while a fold runs
    fitted = probe_module._fitted_probe
    monkeypatch.setattr(probe_module, "_fitted_probe", lambda *a: time.sleep(0.1) or fitted(*a))  # a slower fold
    every = np.arange(len(labels))
    with showing(True):
        probe_layers(features, labels, every, every, [1], folds=3)
    err = capsys.readouterr().err
    assert "linear probe layer 1 (3 folds): 0/3" in err
    assert any(f"linear probe layer 1 (3 folds): {k}/3" in err for k in (1, 2, 3)), err
    with showing(False):
        probe_layers(features, labels, every, every, [1], folds=3)
    assert capsys.readouterr().err == ""
