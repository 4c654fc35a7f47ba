"""The papers' read-out: a linear softmax layer trained by Adam, with an optional validation split and, as the
papers train it, on fresh augmented views of its training images."""
import json
import re

import numpy as np
import pytest
from helpers import fd_grad, rel_err, set_args

from neuroplastic.cli import main
from neuroplastic.errors import ProtocolError
from neuroplastic.evaluate import kfold_probe, linear_probe, probe_layers, stratified_split
from neuroplastic.evaluate import probe as probe_module
from neuroplastic.evaluate.probe import AdamProbe, ProbeSettings, softmax_cross_entropy, validation_split
from neuroplastic.protocol import PROTOCOLS_DIR, load, loads
from neuroplastic.results import Run

BASE = 'name = "x"\n'


def test_gradient_equals_finite_differences_of_the_loss():
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(7, 5)), rng.integers(0, 4, 7)
    W, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    _, dW, db = softmax_cross_entropy(W, b, x, t)
    assert rel_err(dW, fd_grad(lambda P: softmax_cross_entropy(P, b, x, t)[0], W)) < 1e-6
    assert rel_err(db, fd_grad(lambda P: softmax_cross_entropy(W, P, x, t)[0], b)) < 1e-6


def test_separable_problem_is_decoded_perfectly():
    rng = np.random.default_rng(1)
    centres = 6 * rng.normal(size=(3, 4))
    y = np.repeat(np.arange(3), 60)
    x = centres[y] + rng.normal(size=(len(y), 4))
    train, test = stratified_split(y, 0.5, seed=0)
    got = linear_probe(x[train], y[train], x[test], y[test], settings=ProbeSettings("adam", lr=1e-2, epochs=50,
                                                                                    batch=16))
    assert got == 1.0


def _digits(n=400):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:n], y[:n]


def test_digits_accuracy_is_close_to_the_logistic_regression_probe():
    x, y = _digits()
    train, test = stratified_split(y, 0.5, seed=0)
    logistic = linear_probe(x[train], y[train], x[test], y[test])
    adam = linear_probe(x[train], y[train], x[test], y[test], settings=ProbeSettings("adam", batch=32))
    assert logistic > 0.85 and abs(adam - logistic) <= 0.03, (adam, logistic)


def test_early_stopping_keeps_the_best_validation_epoch():
    # Few samples, many noise features: the probe overfits, the validation accuracy peaks and falls.
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 30)
    x = np.concatenate([y[:, None] + 1.5 * rng.normal(size=(60, 1)), rng.normal(size=(60, 200))], axis=1)
    train, val = validation_split(y, 0.5, seed=3)
    clf = AdamProbe(x[train], y[train], x[val], y[val], lr=1e-2, epochs=60, batch=8, rng=np.random.default_rng(4))
    curve = np.asarray(clf.curve)
    assert len(curve) == 60 and clf.epoch == int(np.argmax(curve)) + 1
    assert curve.max() > curve[-1], "this problem is meant to overfit"
    assert clf.score(x[val], y[val]) == curve.max()          # the kept weights are the best epoch's


def test_validation_split_is_stratified_disjoint_and_deterministic():
    y = np.repeat(np.arange(4), [20, 30, 40, 50])
    train, val = validation_split(y, 0.25, seed=5)
    assert not set(train) & set(val) and len(train) + len(val) == len(y)
    assert np.array_equal(np.bincount(y[val]), [5, 8, 10, 12])            # 25 % of each class (rounded)
    again = validation_split(y, 0.25, seed=5)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(validation_split(y, 0.25, seed=6)[1], val)
    with pytest.raises(ValueError, match=r"\[evaluate\] validation"):
        validation_split(np.array([0, 1]), 0.2, seed=0)                  # nothing left to validate on


def test_validation_never_sees_the_test_split(monkeypatch):
    """The probe is fitted on (part of) the train split, for the logistic regression too."""
    x, y = _digits(200)
    train, test = stratified_split(y, 0.5, seed=0)
    seen = []
    fitted = probe_module._fitted_probe
    monkeypatch.setattr(probe_module, "_fitted_probe", lambda a, b, C: seen.append(len(a)) or fitted(a, b, C))
    a = linear_probe(x[train], y[train], x[test], y[test], settings=ProbeSettings(validation=0.2, seed=1))
    assert seen == [len(train) - len(validation_split(y[train], 0.2, np.random.SeedSequence(1).spawn(2)[0])[1])]
    assert a == linear_probe(x[train], y[train], x[test], y[test], settings=ProbeSettings(validation=0.2, seed=1))


def test_linear_without_validation_is_the_logistic_regression_probe():
    x, y = _digits(200)
    train, test = stratified_split(y, 0.5, seed=0)
    features = [x[:, None, :]]
    plain = probe_layers(features, y, train, test, [1], C=0.5)
    assert plain == probe_layers(features, y, train, test, [1], C=0.5, settings=ProbeSettings(seed=9))
    assert plain[1] == float(probe_module._fitted_probe(x[train], y[train], 0.5).score(x[test], y[test]))


def test_adam_probe_is_deterministic_and_works_with_folds():
    x, y = _digits(150)
    settings = ProbeSettings("adam", lr=1e-2, epochs=20, batch=32, validation=0.2, seed=3)
    a = kfold_probe(x, y, 3, seed=0, settings=settings)
    assert a == kfold_probe(x, y, 3, seed=0, settings=settings) and 0.5 < a <= 1
    features, every = [x[:, None, :]], np.arange(len(y))
    assert probe_layers(features, y, every, every, [1], folds=3, seed=0, settings=settings) == {1: a}


def test_protocol_reads_the_adam_keys_only_with_the_adam_probe():
    p = loads(BASE + '[evaluate]\nprobe = "adam"\nprobe_lr = 0.01\nprobe_epochs = 7\nvalidation = 0.1\nfolds = 3\n')
    assert ProbeSettings.of(p.evaluate, 4) == ProbeSettings("adam", 0.01, 7, 256, 0.1, 4)
    assert p.evaluate.as_dict()["probe_batch"] == 256
    minimal = loads(BASE)
    assert "probe_lr" not in minimal.evaluate.as_dict() and minimal.evaluate.probe_lr == 1e-3
    assert "validation" not in minimal.identity()["protocol"]["evaluate"]   # earlier runs keep their names
    assert loads(BASE + "[evaluate]\nvalidation = 0.2\n").digest() != minimal.digest()
    with pytest.raises(ProtocolError, match=r"\[evaluate\] probe_epochs = 5: read only with \[evaluate\] probe = "
                                            r"'adam', not with probe = 'linear'"):
        loads(BASE + "[evaluate]\nprobe_epochs = 5\n")


@pytest.mark.parametrize("setting, message", [
    ('probe = "sgd"', r"""\[evaluate\] probe = "sgd": must be one of 'linear', 'adam'"""),
    ("validation = 1.0", r"\[evaluate\] validation = 1\.0: must be a number >= 0 and < 1"),
    ("validation = -0.1", r"\[evaluate\] validation = -0\.1: must be a number >= 0 and < 1"),
    ('probe = "adam"\nprobe_lr = -1e-3', r"\[evaluate\] probe_lr = -0\.001: must be a number > 0"),
    ('probe = "adam"\nprobe_batch = 0', r"\[evaluate\] probe_batch = 0: must be an integer >= 1"),
])
def test_bad_values_are_refused_naming_the_key_and_the_allowed_values(setting, message):
    with pytest.raises(ProtocolError, match=message):
        loads(BASE + f"[evaluate]\n{setting}\n")


@pytest.mark.slow
def test_cli_runs_the_quickstart_protocol_with_the_adam_probe(tmp_path, capsys):
    quickstart = PROTOCOLS_DIR / "clapp_digits.toml"
    sets = ['evaluate.probe="adam"', "train.epochs=2", "data.max_samples=300"]
    code = main(["run", str(quickstart), "--out", str(tmp_path), "--quiet", *set_args(sets)])
    assert code == 0, capsys.readouterr().err
    directory = Run.path_for(tmp_path, load(quickstart, sets))
    summary = json.loads((directory / "summary.json").read_text())
    manifest = json.loads((directory / "manifest.json").read_text())
    assert summary["probe"] and all(0 < a <= 1 for a in summary["probe"].values())
    assert "adam" in json.dumps(manifest)


def test_a_validation_split_that_leaves_nothing_to_train_on_is_refused_before_training(tmp_path, capsys):
    args = ["run", str(PROTOCOLS_DIR / "clapp_digits.toml"), "--out", str(tmp_path / "runs"), "--quiet",
            "--set", "data.max_samples=30", "--set", "evaluate.validation=0.99"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "[evaluate] validation = 0.99 of 16 training samples leaves 0 to train on" in err
    assert not any((tmp_path / "runs").glob("*/manifest.json"))            # nothing was started


# -- the augmented read-out ([evaluate] probe_augment) ----------------------------------------------------

def test_the_adam_probe_trains_on_the_views_it_is_given():
    x, y = _digits(200)
    kwargs = dict(lr=1e-2, epochs=5, batch=32)
    plain = AdamProbe(x, y, rng=np.random.default_rng(0), **kwargs)
    same = AdamProbe(x, y, rng=np.random.default_rng(0), draw=lambda rows, rng: x[rows], **kwargs)
    np.testing.assert_array_equal(same.W, plain.W)                  # views equal to the features: the same probe
    noisy = AdamProbe(x, y, rng=np.random.default_rng(0), **kwargs,
                      draw=lambda rows, rng: x[rows] + 4 * rng.standard_normal(x[rows].shape))
    assert not np.allclose(noisy.W, plain.W)
    np.testing.assert_array_equal(noisy.mean, plain.mean)          # the unaugmented features standardise


def _run(tmp_path, protocol, sets):
    code = main(["run", str(PROTOCOLS_DIR / protocol), "--out", str(tmp_path), "--quiet",
                 *set_args(sets)])
    assert code == 0
    return json.loads((Run.path_for(tmp_path, load(PROTOCOLS_DIR / protocol, sets)) / "summary.json").read_text())


@pytest.mark.parametrize("protocol, sets", [
    ("tang_e2e_bp_quick.toml", ["stimulus.crop=6", "data.max_samples=200", "model.layers=[16,16]"]),
    ("clapp_s_conv_quick.toml", ["stimulus.crop=12", "data.max_samples=120"]),
])
def test_an_augmented_adam_probe_reads_fresh_views_of_its_training_images(tmp_path, protocol, sets):
    sets = [*sets, "train.epochs=1", 'evaluate.probe="adam"', "evaluate.probe_epochs=3", "evaluate.probe_batch=16"]
    plain = _run(tmp_path, protocol, sets)
    augmented = _run(tmp_path, protocol, [*sets, "evaluate.probe_augment=true"])
    for key in ("probe", "probe_random"):
        assert set(augmented[key]) == set(plain[key]) == {"1", "2"}
        assert all(0 < a <= 1 for a in augmented[key].values())
        assert augmented[key] != plain[key], key                    # the views changed what the probe learned


@pytest.mark.parametrize("protocol, sets, message", [
    ("clapp_digits.toml", [], r"draws random crop windows of images: read with the hinge rules"),
    ("tang_e2e_bp_quick.toml", [], r"crop = 0 keeps whole images; set crop > 0"),
    ("tang_e2e_bp_quick.toml", ["stimulus.crop=6", "evaluate.folds=3"], r"with \[evaluate\] folds = 3 use folds = 0"),
])
def test_an_augmented_probe_without_crops_to_draw_is_refused_before_anything_is_written(tmp_path, capsys, protocol,
                                                                                        sets, message):
    sets = [*sets, 'evaluate.probe="adam"', "evaluate.probe_augment=true"]
    args = ["run", str(PROTOCOLS_DIR / protocol), "--out", str(tmp_path / "runs"), "--quiet"]
    assert main([*args, *set_args(sets)]) == 2
    err = capsys.readouterr().err
    assert f"{protocol}: [evaluate] probe_augment = true " in err and re.search(message, err)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
