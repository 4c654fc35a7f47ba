"""Malformed model files are rejected by `validate` and by `run` alike, before any run directory exists.

Each case is a shipped model file (models/) with one thing broken. Both commands must exit with 2,
name the broken file (and, where it is known, the line) in one message without a traceback, and
`run` must leave nothing behind.
"""
import os
from pathlib import Path

import pytest

from neuroplastic.cli import main as cli
from neuroplastic.errors import ModelError
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR

NEURON, SYNAPSES = "two_compartment.toml", "clapp_synapses.toml"


def protocol(tmp_path: Path, engine: str = "brian", variant: str = "rate", rule: str = "clapp_s", **files) -> Path:
    """A tiny protocol on the digits whose model files are ``files`` (``file=``, ``synapses=``; else the shipped)."""
    model = "".join(f'{key} = "{path}"\n' for key, path in files.items())
    if engine == "brian":
        timing = "glimpse_ms = 1.0\n" if variant == "spiking" else ""
        extra = f'variant = "{variant}"\ndevice = "runtime"\n' + ("dt_ms = 0.5\n" if variant == "spiking" else "")
    else:
        timing, extra = "", ""
    text = (f'name = "broken_model"\nseed = 1\n[data]\nsource = "digits"\nmax_samples = 40\n'
            f"[stimulus]\npatch = 4\nstride = 2\n{timing}"
            f"[model]\n{model}layers = [3, 3]\n"
            f'[rule]\nname = "{rule}"\nlr = 1e-3\noptimizer = "sgd"\n'
            f'[engine]\nname = "{engine}"\n{extra}'
            "[train]\nepochs = 1\n")
    path = tmp_path / "protocol.toml"
    path.write_text(text)
    return path


def replaced(name: str, *edits: tuple[str, str]) -> str:
    """The shipped model file ``name`` with each ``old`` replaced (once) by ``new``."""
    text = (MODELS_DIR / name).read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def without_rate_table(text: str, instead: str) -> str:
    """A neuron file whose whole [rate] table is replaced by ``instead``."""
    head, rest = text.split("[rate]\n", 1)
    return head + instead + "[spiking]\n" + rest.split("[spiking]\n", 1)[1]


RATE_LATCH = "on_glimpse_end = '''\nzprev = z\naprev = a\n'''"
RATE_PREDICTION_LEARN = 'on_glimpse_end = "w += eta_post * M_post * z_post * zprev_pre"\n'
RETRO_GATE = "M_retro = y_label(t) * int(1 - y_label(t) * u_retro > 0) : 1"
SPIKING_RETRO_MODULATOR = "    # gamma_r = y Theta(1 - y u_retro)\n'''\nmodulator = '''\nu_retro : 1" + " " * 53 + "# accumulated"
LAYER_THRESHOLD = ('threshold = "rand() < rate_out * v * dt * int((timestep(t, dt) + 1) % steps_per_glimpse != 0)"'
                   "\n")


def neuron(*edits):
    return replaced(NEURON, *edits)


def synapses(*edits):
    return replaced(SYNAPSES, *edits)


# id -> (which file, engine variant, rule, the broken text or bytes, what the message must also say)
CASES = {
    # -- neuron file, rate variant --------------------------------------------------------------
    "neuron_equation_does_not_parse": (
        "file", "rate", "clapp_s", neuron(("z = a * int(a > 0) : 1", "z = a * int(a > 0) : : 1")),
        ["[rate] equations", "cannot parse"]),
    "neuron_equation_undefined_variable": (
        "file", "rate", "clapp_s", neuron(("rho_prime = int(a > 0)", "rho_prime = int(b_unknown > 0)")),
        ["b_unknown"]),
    "neuron_equation_units_mismatch": (
        "file", "rate", "clapp_s", neuron(("x = z : 1 ", "x = z : volt ")), ["unit"]),
    "neuron_missing_dendrite": (
        "file", "rate", "clapp_s", neuron(("d : 1        ", "# d : 1      ")), ["'d'", "[rate] equations"]),
    "neuron_missing_rate": (
        "file", "rate", "clapp_s", neuron(("z = a * int(a > 0)", "q = a * int(a > 0)"), ("x = z : 1", "x = q : 1")),
        ["'z'", "[rate] equations"]),
    "neuron_duplicate_variable": (
        "file", "rate", "clapp_s", neuron(("r : 1 ", "d : 1 ")), ["[rate] equations"]),
    "neuron_latch_undefined_variable": (
        "file", "rate", "clapp_s", neuron(("aprev = a\n'''", "aprev = a_unknown\n'''")), ["a_unknown"]),
    "neuron_latch_does_not_parse": (
        "file", "rate", "clapp_s", neuron(("zprev = z\naprev", "zprev = = z\naprev")), ["[rate] on_glimpse_end"]),
    "neuron_latch_not_a_string": (
        "file", "rate", "clapp_s", neuron((RATE_LATCH, "on_glimpse_end = 5")), ["[rate] on_glimpse_end = 5", "string"]),
    "neuron_variant_not_a_table": (
        "file", "rate", "clapp_s", without_rate_table(neuron(), "rate = 5\n"), ["rate = 5", "table"]),
    "neuron_unknown_key": (
        "file", "rate", "clapp_s", neuron(("on_glimpse_end = '''\nzprev", "on_glimpse_ends = '''\nzprev")),
        ["on_glimpse_ends", "unknown", "did you mean 'on_glimpse_end'?"]),
    "neuron_unknown_table": (
        "file", "rate", "clapp_s", neuron(("[spiking.input]", "[spiking.inputs]")), ["spiking.inputs", "unknown"]),
    "neuron_bad_nonlinearity": (
        "file", "rate", "clapp_s", neuron(('nonlinearity = "relu"', 'nonlinearity = "tanh"')), ["'tanh'", "'relu'"]),
    "neuron_not_utf8": (
        "file", "rate", "clapp_s", b"# caf\xe9\n" + (MODELS_DIR / NEURON).read_bytes(), ["UTF-8", ":1"]),
    "neuron_toml_syntax_error": (
        "file", "rate", "clapp_s", neuron(('kind = "neuron"', 'kind = "neuron')), ["TOML", "line 5"]),
    "neuron_without_rate_variant": (
        "file", "rate", "clapp_s", without_rate_table(neuron(), ""), ["[rate]"]),
    "neuron_wrong_kind": (
        "file", "rate", "clapp_s", neuron(('kind = "neuron"', 'kind = "synapses"')), ["kind"]),
    # -- neuron file, spiking variant -----------------------------------------------------------
    "spiking_threshold_does_not_parse": (
        "file", "spiking", "clapp_s", neuron(('"rand() < rate_out', '"rand() < < rate_out')),
        ["[spiking.layer] threshold"]),
    "spiking_reset_undefined_variable": (
        "file", "spiking", "clapp_s", neuron(('reset = "nz += counting"', 'reset = "nz += n_unknown"')), ["n_unknown"]),
    "spiking_constant_unknown_unit": (
        "file", "spiking", "clapp_s", neuron(('tau_m = "10 ms"', 'tau_m = "10 parsecs"')),
        ["[spiking.constants] tau_m"]),
    "spiking_constant_not_a_string": (
        "file", "spiking", "clapp_s", neuron(('tau_m = "10 ms"', "tau_m = 10")), ["[spiking.constants] tau_m = 10"]),
    "spiking_missing_input_rate": (
        "file", "spiking", "clapp_s", neuron(("x_rate = rate_in : Hz ", "# x_rate = rate_in : Hz")),
        ["'x_rate'", "[spiking.input] equations"]),
    "spiking_missing_threshold": (
        "file", "spiking", "clapp_s", neuron((LAYER_THRESHOLD, "")), ["[spiking.layer]", "threshold"]),
    "spiking_equation_units_mismatch": (
        "file", "spiking", "clapp_s", neuron(("(Is - v) / tau_m : 1", "(Is - v) / tau_m : volt")), ["unit"]),
    # -- synapse file ----------------------------------------------------------------------------
    "synapses_missing_on_pre": (
        "synapses", "rate", "clapp_s", synapses((RATE_PREDICTION_LEARN, "")), ["[rate.prediction]", "on_glimpse_end"]),
    "synapses_summed_wrong_units": (
        "synapses", "rate", "clapp_s", synapses(("w * zprev_pre : 1 (summed)", "w * zprev_pre : volt (summed)")),
        ["d_post"]),
    "synapses_on_pre_inconsistent_units": (
        "synapses", "rate", "clapp_s", synapses(("z_post * zprev_pre\"", "z_post * zprev_pre * second\"")), ["unit"]),
    "synapses_on_pre_undefined_variable": (
        "synapses", "rate", "clapp_s", synapses(("rho_prime_prev_post * xprev_pre ", "rho_prime_prev_post * xprev_q ")),
        ["xprev_q"]),
    "synapses_model_bad_flag": (
        "synapses", "rate", "clapp_s", synapses(("a_post = w * x_pre : 1 (summed)", "a_post = w * x_pre : 1 (sumed)")),
        ["[rate.feedforward] model"]),
    "synapses_missing_summed_soma": (
        "synapses", "rate", "clapp_s", synapses(("a_post = w * x_pre : 1 (summed)", "apost = w * x_pre : 1")),
        ["'a_post'", "[rate.feedforward] model"]),
    "synapses_missing_transpose_table": (
        "synapses", "rate", "clapp_s", synapses(('prediction_model = "r_pre = w * z_post : 1 (summed)"\n', "")),
        ["[rate.retrodiction_transpose]", "prediction_model"]),
    "synapses_modulation_without_eta": (
        "synapses", "rate", "clapp_s", synapses(("eta : 1 (shared, constant)", "# eta : 1 (shared, constant)")),
        ["'eta'", "[rate.modulation] layer"]),
    "synapses_unknown_key": (
        "synapses", "rate", "clapp_s", synapses((RATE_PREDICTION_LEARN, RATE_PREDICTION_LEARN + 'lr = "0.1"\n')),
        ["[rate.prediction] lr", "unknown"]),
    "synapses_score_not_a_string": (
        "synapses", "rate", "clapp_s", synapses(('score = "u_post = z_pre * d_pre : 1 (summed)"', "score = [1]")),
        ["[rate.modulation] score", "string"]),
    "synapses_retro_undefined_variable": (
        "synapses", "rate", "clapp", synapses(("r_post = w * z_pre : 1 (summed)", "r_post = w * q_pre : 1 (summed)")),
        ["q_pre"]),
    "synapses_not_utf8": (
        "synapses", "rate", "clapp_s", (MODELS_DIR / SYNAPSES).read_bytes().replace(b"Hebbian", b"H\xebbbian", 1),
        ["UTF-8"]),
    "synapses_wrong_kind": (
        "synapses", "rate", "clapp_s", synapses(('kind = "synapses"', 'kind = "neuron"')), ["kind"]),
    "synapses_spiking_on_spike_undefined": (
        "synapses", "spiking", "clapp_s", synapses(("(x_rate_pre * tau_s)", "(x_rate_pre * tau_unknown)")),
        ["tau_unknown"]),
    "synapses_spiking_missing_score": (
        "synapses", "spiking", "clapp", synapses(('score = "r_post += w * z_pre"\n', "")),
        ["[spiking.retrodiction]", "score"]),
    # -- CLAPP's retrodiction pathway: its own score u_retro and gate M_retro ([*.retrodiction_modulation]) --
    "synapses_clapp_missing_retrodiction_gate": (
        "synapses", "rate", "clapp", synapses((RETRO_GATE, "# " + RETRO_GATE)),
        ["'M_retro'", "[rate.retrodiction_modulation] layer"]),
    "synapses_spiking_clapp_missing_retrodiction_gate": (
        "synapses", "spiking", "clapp", synapses((RETRO_GATE + SPIKING_RETRO_MODULATOR, "# " + RETRO_GATE
                                                  + SPIKING_RETRO_MODULATOR)),
        ["'M_retro'", "[spiking.retrodiction_modulation] layer"]),
    "synapses_clapp_missing_retrodiction_score": (
        "synapses", "rate", "clapp", synapses(('score = "u_retro_post = zprev_pre * r_pre : 1 (summed)"\n', "")),
        ["[rate.retrodiction_modulation] score is missing"]),
    "synapses_clapp_retrodiction_score_undefined_variable": (
        "synapses", "rate", "clapp", synapses(("u_retro_post = zprev_pre * r_pre", "u_retro_post = zprev_pre * q_pre")),
        ["q_pre"]),
    "synapses_clapp_s_missing_transpose_gate": (
        "synapses", "rate", "clapp_s", synapses(("layer = \"M_retro = M : 1", "layer = \"M_retro_s = M : 1")),
        ["'M_retro'", "[rate.retrodiction_transpose] layer"]),
}

#: What the numpy engine reads from a neuron file: its kind and [rate] nonlinearity (of a well-formed file).
NUMPY_CASES = ["neuron_variant_not_a_table", "neuron_unknown_key", "neuron_bad_nonlinearity", "neuron_not_utf8",
               "neuron_toml_syntax_error", "neuron_without_rate_variant", "neuron_wrong_kind",
               "neuron_latch_not_a_string"]


def write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / "models" / name
    path.parent.mkdir(exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def assert_rejected(tmp_path, capsys, proto: Path, path: Path, expect: list[str]) -> None:
    """validate and run exit with 2, name ``path`` and say ``expect``; run writes nothing."""
    rc = cli(["validate", str(proto)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(path) in err and "Traceback" not in err, err
    for text in expect:
        assert text in err, f"{text!r} not in {err!r}"
    out = tmp_path / "out"
    rc = cli(["run", str(proto), "--out", str(out), "--quiet"])
    run_err = capsys.readouterr().err
    assert rc == 2, run_err
    assert str(path) in run_err and "Traceback" not in run_err, run_err
    assert not out.exists() or not any(out.iterdir()), "run left a run directory behind"


@pytest.mark.parametrize("case", sorted(CASES))
def test_brian_rejects_malformed_model_file(tmp_path, capsys, case):
    key, variant, rule, content, expect = CASES[case]
    name = NEURON if key == "file" else SYNAPSES
    path = write(tmp_path, name, content)
    proto = protocol(tmp_path, "brian", variant, rule, **{key: path})
    assert_rejected(tmp_path, capsys, proto, path, expect)


@pytest.mark.parametrize("case", NUMPY_CASES)
def test_numpy_rejects_malformed_neuron_file(tmp_path, capsys, case):
    _, _, _, content, expect = CASES[case]
    path = write(tmp_path, NEURON, content)
    assert_rejected(tmp_path, capsys, protocol(tmp_path, "numpy", file=path), path, expect)


def test_numpy_rejects_a_wrong_nonlinearity_type(tmp_path, capsys):
    path = write(tmp_path, NEURON, replaced(NEURON, ('nonlinearity = "relu"', "nonlinearity = 1")))
    assert_rejected(tmp_path, capsys, protocol(tmp_path, "numpy", file=path), path, ["[rate] nonlinearity = 1"])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
@pytest.mark.parametrize("engine", ["brian", "numpy"])
def test_unreadable_model_file(tmp_path, capsys, engine):
    path = write(tmp_path, NEURON, (MODELS_DIR / NEURON).read_text())
    path.chmod(0)
    try:
        assert_rejected(tmp_path, capsys, protocol(tmp_path, engine, file=path), path, ["cannot read"])
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("engine", ["brian", "numpy"])
def test_model_file_that_cannot_be_read(tmp_path, capsys, monkeypatch, engine):
    """As a file without read permission reads (root reads through permissions, so it is simulated)."""
    path = write(tmp_path, NEURON, (MODELS_DIR / NEURON).read_text())
    read_bytes = Path.read_bytes

    def denied(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert_rejected(tmp_path, capsys, protocol(tmp_path, engine, file=path), path,
                    ["cannot read model file: Permission denied"])


def test_load_model_names_unreadable_paths(tmp_path):
    with pytest.raises(ModelError, match=f"{tmp_path}: cannot read model file"):
        load_model(tmp_path)                                     # a directory
    with pytest.raises(ModelError, match="cannot read model file"):
        load_model(tmp_path / "missing.toml")
    path = write(tmp_path, NEURON, b"kind = \"neuron\"\n# \xff\n")
    with pytest.raises(ModelError, match=f"{path}:2: not UTF-8"):
        load_model(path)


def test_model_directory_given_as_model_file(tmp_path, capsys):
    folder = tmp_path / "models" / NEURON
    folder.mkdir(parents=True)
    rc = cli(["validate", str(protocol(tmp_path, "brian", file=folder))])
    err = capsys.readouterr().err
    assert rc == 2 and str(folder) in err and "Traceback" not in err, err


@pytest.mark.parametrize("variant,rule", [("rate", "clapp_s"), ("rate", "clapp"), ("spiking", "clapp_s"),
                                          ("spiking", "clapp")])
def test_shipped_model_files_pass_the_check(tmp_path, capsys, variant, rule):
    rc = cli(["validate", str(protocol(tmp_path, "brian", variant, rule))])
    assert rc == 0, capsys.readouterr().err


def test_every_table_of_the_variant_is_required(tmp_path, capsys):
    """The model-file reference declares [rate.retrodiction] required: CLAPP-s protocols need it too."""
    text = (MODELS_DIR / SYNAPSES).read_text()
    start = text.index("[rate.retrodiction]\n")
    path = write(tmp_path, SYNAPSES, text[:start] + text[text.index("# ---", start):])
    for rule in ("clapp_s", "clapp"):
        rc = cli(["validate", str(protocol(tmp_path, "brian", "rate", rule, synapses=path))])
        err = capsys.readouterr().err
        assert rc == 2 and f"{path}: [rate.retrodiction] is missing" in err, err
