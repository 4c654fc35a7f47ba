"""Protocol files: every malformed file fails with its own clear message, through the API and the CLI.

Each malformed case is a protocol file written into ``tmp_path``. Its message must name the file,
the ``[table] key`` (when there is one) and what is allowed or why; ``neuroplastic validate`` and
``neuroplastic run`` must exit 2 with that message on stderr and write nothing under ``--out``.
The CLI cases call :func:`neuroplastic.cli.main` (the console script's function) in-process for
speed; one test runs the real ``neuroplastic`` executable on all files at once.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neuroplastic.cli import main
from neuroplastic.models import load_model
from neuroplastic.protocol import MODELS_DIR, PROTOCOLS_DIR, ProtocolError, load, loads

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "protocols" / "clapp_digits.toml"
BASE = 'name = "t"\n'

# id -> (protocol text, substrings its message must contain). "{dir}" is the file's directory.
MALFORMED = {
    "unknown_top_level_key": (BASE + 'nmae = "x"\n',
                              ["unknown key or table 'nmae'", "did you mean 'name'?", "allowed:"]),
    "unknown_key_in_table": (BASE + "[rule]\nlr_rate = 1e-3\n",
                             ["[rule] lr_rate", "unknown key", "did you mean 'lr'?",
                              "allowed in [rule]: name, lr, optimizer, negatives"]),
    "unknown_table": (BASE + "[trainer]\nepochs = 3\n",
                      ["unknown key or table 'trainer'", "did you mean 'train'?"]),
    "string_for_int": (BASE + '[train]\nepochs = "10"\n', ['[train] epochs = "10"', "must be an integer >= 1"]),
    "float_for_int": (BASE + "[train]\nepochs = 2.5\n", ["[train] epochs = 2.5", "must be an integer >= 1"]),
    "bool_for_number": (BASE + "[rule]\nlr = true\n", ["[rule] lr = true", "must be a number > 0"]),
    "list_for_str": (BASE + 'description = ["a", "b"]\n', ['description = ["a", "b"]', "must be a string"]),
    "lr_zero": (BASE + "[rule]\nlr = 0\n", ["[rule] lr = 0", "must be a number > 0"]),
    "lr_negative": (BASE + "[rule]\nlr = -1e-3\n", ["[rule] lr = -0.001", "must be a number > 0"]),
    "negatives_zero": (BASE + "[rule]\nnegatives = 0\n", ["[rule] negatives = 0", "must be an integer >= 1"]),
    "saccade_prob_above_one": (BASE + "[stimulus]\nsaccade_prob = 1.5\n[engine]\nname = \"brian\"\n",
                               ["[stimulus] saccade_prob = 1.5", "must be a number >= 0 and <= 1"]),
    "test_fraction_one": (BASE + "[data]\ntest_fraction = 1\n",
                          ["[data] test_fraction = 1", "must be a number > 0 and < 1"]),
    "batch_size_one": (BASE + "[train]\nbatch_size = 1\n", ["[train] batch_size = 1", "must be an integer >= 2"]),
    "rule_not_a_choice": (BASE + '[rule]\nname = "clap"\n',
                          ['[rule] name = "clap"', "must be one of 'clapp', 'clapp_s'", "did you mean 'clapp'?"]),
    "optimizer_not_a_choice": (BASE + '[rule]\noptimizer = "adamw"\n',
                               ['[rule] optimizer = "adamw"', "must be one of 'adam', 'sgd'",
                                "did you mean 'adam'?"]),
    "engine_not_a_choice": (BASE + '[engine]\nname = "numpi"\n',
                            ['[engine] name = "numpi"', "must be one of", "'numpy'", "did you mean 'numpy'?"]),
    "dtype_not_a_choice": (BASE + '[engine]\ndtype = "float16"\n',
                           ['[engine] dtype = "float16"', "must be one of 'float32', 'float64'"]),
    "missing_name": ("seed = 1\n[rule]\nlr = 1e-3\n", ["name: missing", "it is required"]),
    "invalid_toml": (BASE + "[rule\nlr = 1e-3\n", ["not valid TOML", "line 2"]),
    "table_as_scalar": (BASE + 'rule = "clapp"\n', ["'rule' must be a table ([rule])", "got 'clapp'"]),
    "model_file_missing": (BASE + '[model]\nfile = "no_such_model"\n',
                           ["[model] file = 'no_such_model'", "no such model file", "looked in {dir} and "
                            + str(MODELS_DIR), "two_compartment"]),
    "data_path_missing": (BASE + '[data]\npath = "no_such_dir"\n',
                          ["[data] path = 'no_such_dir'", "no such file or directory",
                           str(Path("{dir}") / "no_such_dir")]),
    "empty_layers": (BASE + "[model]\nlayers = []\n", ["[model] layers = []", "a non-empty list"]),
    "evaluate_layer_too_large": (BASE + "[model]\nlayers = [8, 8]\n[evaluate]\nlayers = [1, 3]\n",
                                 ["[evaluate] layers = [1, 3]", "layer 3 does not exist", "the model has 2 layers",
                                  "numbered 1 to 2"]),
    "negative_seed": ("seed = -1\n" + BASE, ["seed = -1", "must be an integer >= 0"]),
    "chunk_glimpses_negative": (BASE + '[engine]\nname = "brian"\nchunk_glimpses = -500\n',
                                ["[engine] chunk_glimpses = -500", "must be an integer >= 0"]),
    "chunk_glimpses_fraction": (BASE + '[engine]\nname = "brian"\nchunk_glimpses = 2.5\n',
                                ["[engine] chunk_glimpses = 2.5", "must be an integer >= 0"]),
}


def _write(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    text, expected = MALFORMED[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    return path, [str(path)] + [e.replace("{dir}", str(tmp_path)) for e in expected]


def _assert_all_in(expected: list[str], message: str) -> None:
    missing = [e for e in expected if e not in message]
    assert not missing, f"message lacks {missing}:\n{message}"


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _console_script() -> list[str]:
    exe = Path(sys.executable).with_name("neuroplastic")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "neuroplastic.cli"]


# -- malformed files: the API ------------------------------------------------------------------
def test_there_are_at_least_15_malformed_cases():
    assert len(MALFORMED) >= 15


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_load_rejects_malformed_file(tmp_path, case):
    path, expected = _write(tmp_path, case)
    with pytest.raises(ProtocolError) as info:
        load(path)
    _assert_all_in(expected, str(info.value))
    assert str(info.value).count("\n") == 0, "one line per error"


def test_messages_are_distinct(tmp_path):
    """No two cases share a message: each says what is wrong with *that* file."""
    messages = {}
    for case in MALFORMED:
        path, _ = _write(tmp_path, case)
        with pytest.raises(ProtocolError) as info:
            load(path)
        messages[case] = str(info.value).replace(str(path), "FILE")
    assert len(set(messages.values())) == len(messages), messages


# -- malformed files: the CLI ------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_cli_validate_and_run_reject_malformed_file(tmp_path, case, capsys):
    path, expected = _write(tmp_path, case)
    code, out, err = _cli(["validate", path], capsys)
    assert code == 2 and out == ""
    _assert_all_in(expected, err)

    out_dir = tmp_path / "runs"
    code, out, err = _cli(["run", path, "--out", out_dir, "--quiet"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("neuroplastic: error: ")
    _assert_all_in(expected, err)
    assert "Traceback" not in err
    assert not out_dir.exists(), "a bad protocol must not create a run directory"


def test_console_script_validate_reports_every_file_and_run_exits_2(tmp_path):
    """The installed `neuroplastic` executable: one validate call over all malformed files, one run."""
    files = {case: _write(tmp_path, case) for case in sorted(MALFORMED)}
    good = QUICKSTART
    proc = subprocess.run([*_console_script(), "validate", str(good), *(str(p) for p, _ in files.values())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"ok      {good}" in proc.stdout
    lines = proc.stderr.splitlines()
    assert len([line for line in lines if line.startswith("invalid ")]) == len(MALFORMED)
    for case, (path, expected) in files.items():
        line = next(line for line in lines if f"{path}:" in line)
        _assert_all_in(expected, line)

    out_dir = tmp_path / "runs"
    path, expected = files["rule_not_a_choice"]
    proc = subprocess.run([*_console_script(), "run", str(path), "--out", str(out_dir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    _assert_all_in(expected, proc.stderr)
    assert proc.stdout == "" and not out_dir.exists()


# -- errors that are not in a file's text --------------------------------------------------------
def test_missing_protocol_file(tmp_path, capsys):
    (tmp_path / "real.toml").write_text(BASE)
    missing = tmp_path / "raal.toml"
    with pytest.raises(ProtocolError) as info:
        load(missing)
    _assert_all_in([str(missing), "no such protocol file", "files there: real.toml"], str(info.value))
    for argv in (["validate", missing], ["run", missing, "--out", tmp_path / "runs"]):
        code, _, err = _cli(argv, capsys)
        assert code == 2
        _assert_all_in([str(missing), "no such protocol file"], err)
    assert not (tmp_path / "runs").exists()


SET_ERRORS = {
    "no_equals_sign": ("rulelr", ["--set", "'rulelr'", "must have the form table.key=value"]),
    "unknown_key": ("rule.lr_rate=1e-3", ["--set", "[rule] lr_rate", "unknown key", "did you mean 'lr'?"]),
    "unknown_table": ("rulez.lr=1e-3", ["--set", "unknown key or table 'rulez'", "did you mean 'rule'?"]),
    "wrong_type": ("train.epochs=many", ["{file}", '[train] epochs = "many"', "must be an integer >= 1"]),
    "evaluate_layer_too_large": ("model.layers=[8]", ["{file}", "[evaluate] layers = [2]", "the model has 1 layer"]),
}


@pytest.mark.parametrize("case", sorted(SET_ERRORS))
def test_bad_set_override(tmp_path, case, capsys):
    path = tmp_path / "p.toml"
    path.write_text(BASE + "[evaluate]\nlayers = [2]\n")
    item, expected = SET_ERRORS[case]
    expected = [e.replace("{file}", str(path)) for e in expected]
    with pytest.raises(ProtocolError) as info:
        load(path, [item])
    _assert_all_in(expected, str(info.value))
    out_dir = tmp_path / "runs"
    for argv in (["validate", path, "--set", item], ["run", path, "--out", out_dir, "--set", item]):
        code, out, err = _cli(argv, capsys)
        assert code == 2 and out == ""
        _assert_all_in(expected, err)
    assert not out_dir.exists()


def test_patch_larger_than_image_fails_before_the_run_directory_exists(tmp_path, capsys):
    """Only the data knows the image size: `run` checks it before it creates anything under --out."""
    path = tmp_path / "big_patch.toml"
    path.write_text(QUICKSTART.read_text().replace("patch = 4", "patch = 9"))
    out_dir = tmp_path / "runs"
    code, out, err = _cli(["run", path, "--out", out_dir, "--set", "data.max_samples=60"], capsys)
    assert code == 2, err
    _assert_all_in([str(path), "[stimulus] patch = 9", "larger than the images (8 x 8)"], err)
    assert "Traceback" not in err
    assert not out_dir.exists(), "no run directory may be left behind"


# -- valid protocols ------------------------------------------------------------------------------
def test_every_shipped_protocol_validates():
    files = sorted(PROTOCOLS_DIR.glob("*.toml"))
    assert files
    for path in files:
        p = load(path)
        assert p.name and p.model_path.is_file()
        load_model(p.model_path)


def test_set_overrides_parse_numbers_and_bare_strings(capsys):
    base = load(QUICKSTART)
    p = load(QUICKSTART, ["rule.lr=3e-4", "rule.name=clapp", "model.layers=[8,8]", "seed=7"])
    assert p.rule.lr == 3e-4 and isinstance(p.rule.lr, float)
    assert p.rule.name == "clapp"
    assert p.model.layers == [8, 8] and p.seed == 7
    assert p.rule.optimizer == base.rule.optimizer and p.train.epochs == base.train.epochs
    assert base.rule.lr == 1e-3, "overrides never change the protocol they start from"
    code, out, _ = _cli(["validate", QUICKSTART, "--set", "rule.lr=3e-4", "--set", "rule.name=clapp"], capsys)
    assert code == 0 and f"ok      {QUICKSTART}" in out


def _toml(data: dict) -> str:
    """A minimal TOML writer for protocol data (top-level scalars, then one table per section)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(v)          # strings and lists of ints are valid TOML as JSON

    top = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [f"[{t}]\n" + "\n".join(f"{k} = {value(v)}" for k, v in s.items())
              for t, s in data.items() if isinstance(s, dict)]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def test_as_dict_round_trips(tmp_path):
    p = load(QUICKSTART, ["evaluate.layers=[2]", "rule.name=clapp"])
    data = p.as_dict()
    assert set(data) == {"name", "description", "seed", "data", "stimulus", "model", "rule", "engine", "train",
                         "evaluate"}
    path = tmp_path / "resolved.toml"
    path.write_text(_toml(data))
    again = load(path)
    assert again.as_dict() == data
    assert again.digest() == p.digest()
    assert loads(_toml(data)).as_dict() == data
    assert json.loads(json.dumps(data)) == data, "as_dict() is plain JSON/TOML data"


def test_digest_changes_with_values_not_with_explicit_defaults():
    minimal = loads(BASE)
    explicit = loads(BASE + 'seed = 0\ndescription = ""\n[rule]\nname = "clapp_s"\nlr = 0.001\noptimizer = "adam"\n'
                     "[train]\nepochs = 10\nbatch_size = 64\n[model]\nlayers = [64, 64]\ninit_scale = 1\n"
                     '[evaluate]\nlayers = "all"\nbaseline = true\n')
    assert explicit.digest() == minimal.digest()
    assert minimal.with_overrides(["rule.lr=1e-3"]).digest() == minimal.digest()
    assert loads(BASE + "[rule]\nlr = 1\n").digest() == loads(BASE + "[rule]\nlr = 1.0\n").digest()
    changed = {loads(BASE + extra).digest() for extra in (
        "[rule]\nlr = 0.002\n", "seed = 1\n", "[model]\nlayers = [64, 32]\n", '[rule]\nname = "clapp"\n',
        '[evaluate]\nlayers = [1]\n', "[train]\nepochs = 11\n")}
    assert minimal.digest() not in changed and len(changed) == 6


# -- a schema per component, and run identity ----------------------------------------------------
def test_editing_a_model_file_changes_the_run_identity(tmp_path):
    from neuroplastic.protocol import MODELS_DIR

    model = tmp_path / "neuron.toml"
    model.write_text((MODELS_DIR / "two_compartment.toml").read_text())
    text = f'name = "x"\n[model]\nfile = "{model}"\n'
    before = loads(text).digest()
    assert loads(text).digest() == before                                  # deterministic
    model.write_text(model.read_text().replace("tau_m", "tau_m ", 1))      # one edit of the equations' text
    assert loads(text).digest() != before


def test_the_identity_names_the_data_directory_not_where_it_lies(tmp_path):
    for where in ("a", "b"):
        (tmp_path / where / "stl10_binary").mkdir(parents=True)
    ids = {loads(f'name = "x"\n[data]\nsource = "stl10"\npath = "{tmp_path / w / "stl10_binary"}"\n').digest()
           for w in ("a", "b")}
    assert len(ids) == 1


@pytest.mark.parametrize("text,key", [
    ('[engine]\nname = "brian"\n[rule]\nnegatives = 4', "[rule] negatives"),        # Brian2 has no negatives
    ('[engine]\nname = "brian"\n[train]\nbatch_size = 32', "[train] batch_size"),   # nor batches
    ('[engine]\nname = "numpy"\n[stimulus]\nglimpse_ms = 20.0', "[stimulus] glimpse_ms"),   # no time
    ('[engine]\nname = "numpy"\n[engine]\ndevice = "cpp"', None),                     # (TOML: duplicate table)
    ('[engine]\nname = "numpy"\ncuda_arch = 8.0', "[engine] cuda_arch"),
    ('[rule]\nname = "clapp"\nnegatives = 2', "[rule] negatives"),                     # CLAPP: one pair a step
    ('[rule]\nname = "hinge_e2e_bp"\n[stimulus]\nkind = "views"\nsaccade_prob = 0.3', "[stimulus] saccade_prob"),
    ('[rule]\nname = "clapp_s"\ntau = 1.0', "[rule] tau"),
])
def test_a_key_the_rule_or_engine_does_not_read_is_refused(text, key):
    with pytest.raises(ProtocolError) as info:
        loads(f'name = "x"\n{text}')
    if key is not None:
        assert f"{key} = " in str(info.value) and "not read by" in str(info.value)


@pytest.mark.parametrize("engine,device,allowed", [("numpy", "cpp", "'cpu', 'cuda'"),
                                                   ("brian", "cpu", "'runtime', 'cpp', 'cuda'")])
def test_each_engine_reads_engine_device_with_its_own_values(engine, device, allowed):
    with pytest.raises(ProtocolError, match=rf'\[engine\] device = "{device}".*{allowed}'):
        loads(f'name = "x"\n[engine]\nname = "{engine}"\ndevice = "{device}"')
    rate = loads(f'name = "x"\n[engine]\nname = "numpy"')
    spiking = loads(f'name = "x"\n[engine]\nname = "brian"')
    assert (rate.engine.device, rate.engine.array, spiking.engine.device) == ("cpu", "numpy", "cpp")


def test_a_key_of_the_other_variant_of_the_same_engine_is_accepted():
    p = loads('name = "x"\n[engine]\nname = "brian"\nvariant = "rate"\ndt_ms = 0.2')
    assert p.with_overrides(['engine.variant="spiking"']).engine.dt_ms == 0.2


def test_every_problem_of_a_file_is_reported_at_once():
    with pytest.raises(ProtocolError) as info:
        loads('name = "x"\n[rule]\nlr = -1\nlr_rate = 2\n[train]\nepochs = 0')
    keys = [k for k, _ in info.value.problems]
    assert keys == ["rule.lr_rate", "rule.lr", "train.epochs"]
    assert "3 problems" in str(info.value)


def test_unused_keys_are_not_part_of_the_resolved_protocol_but_read_as_defaults():
    p = loads('name = "x"\n[rule]\nname = "clapp"')
    assert "negatives" not in p.as_dict()["rule"] and p.rule.negatives == 1
    assert "saccade_prob" in p.as_dict()["stimulus"]
