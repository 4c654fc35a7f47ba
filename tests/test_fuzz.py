"""Fuzz: hundreds of malformed protocols, each one exit 2 with one message naming the file and the key.

The cases are generated from the schema itself (every key of every table gets values of the wrong
type, out of its bounds, outside its choices, absurdly large), plus broken files (not TOML, not
UTF-8, empty, binary, tables where values belong). For every case, ``neuroplastic validate`` and
``neuroplastic run`` must: exit with 2, print no traceback, name the protocol file and (for a bad
value) the ``[table] key``, and write nothing, neither under ``--out`` nor anywhere else in the
temporary directory the test works in.
"""
from __future__ import annotations

import copy
import json
import random
import re
import tomllib
from pathlib import Path

import pytest

from neuroplastic.cli import main
from neuroplastic.protocol import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
BASE = (ROOT / "protocols" / "clapp_digits.toml").read_text()
LAYERS = re.search(r"^layers = \[[0-9, ]*\]$", BASE, re.M).group(0)     # the quickstart's [model] layers line


def _toml(value) -> str:
    """``value`` as TOML (``"nan"``/``"inf"`` as the TOML floats, dicts as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _dump(raw: dict) -> str:
    top = [f"{k} = {_toml(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    tables = [f"\n[{t}]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in body.items())
              for t, body in raw.items() if isinstance(body, dict)]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


def _bad_values(spec) -> list:
    """Values ``spec`` must refuse: wrong type, outside its bounds or choices, absurd sizes."""
    kind = spec.kind
    if kind == "bool":
        return ["yes", 1, [True]]
    if kind in ("str", "path"):
        return [5, ["a"], {"x": 1}] + (["no_such_choice"] if spec.choices is not None else [])
    if kind in ("int", "float"):
        bad = ["ten", [1], True] + (["nan", "inf"] if kind == "float" else [1.5])
        if spec.low is not None:
            bad.append(spec.low - 1 if kind == "int" else spec.low - 0.5)
        if spec.high is not None:
            bad.append(spec.high * 10 + 1)
        return bad
    return [[], ["a"], 5, [0], [-3], [1.5]] + ([] if kind == "int_list" else ["some"])


def _cases() -> list[tuple[str, str, str]]:
    """``(id, protocol text, what the message must name)`` for every generated malformation."""
    base = tomllib.loads(BASE)
    cases = []
    for table, keys in SCHEMA.items():
        for key, spec in keys.items():
            values = {"name": [5, "../x", "a" * 300, "/abs", ""], "description": [5, []]}.get(key, _bad_values(spec)) \
                if table == "" else _bad_values(spec)
            for value in values:
                raw = copy.deepcopy(base)
                (raw if table == "" else raw.setdefault(table, {}))[key] = value
                where = key if table == "" else f"[{table}] {key}"
                cases.append((f"{table}.{key}={value!r}"[:50], _dump(raw), where))
    structural = {
        "not-toml": "name = \n[rule\n",
        "empty": "",
        "binary": "\x00\x01\x02garbage",
        "unknown-table": BASE + "\n[rules]\nlr = 1\n",
        "unknown-key": BASE.replace("[rule]", "[rule]\nlearning_rate = 1e-3", 1),
        "table-as-value": BASE.replace("[rule]", "rule = 5\n[rule_x]", 1),
        "value-as-table": BASE + "\n[seed]\nx = 1\n",
        "array-of-tables": BASE + "\n[[data2]]\nsource = 'x'\n",
        "nested-table": BASE + "\n[model.sub]\nx = 1\n",
        "huge-layers": BASE.replace(LAYERS, "layers = [1000000000]"),
        "two-huge-layers": BASE.replace(LAYERS, "layers = [100000, 100000]"),
        "huge-negatives": BASE.replace("[rule]", "[rule]\nnegatives = 1000000000", 1).replace('"clapp_s"', '"clapp"'),
        "huge-epochs": BASE.replace("epochs = 60", "epochs = 1000000000000"),
        "2000-layers": BASE.replace(LAYERS, "layers = " + _toml([4] * 2000)),
    }
    cases += [(name, text, "") for name, text in structural.items()]
    return cases


CASES = _cases()


def test_there_are_enough_cases():
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_malformed_protocol_is_one_message_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    _, text, names = case
    box = tmp_path / "box"
    box.mkdir()
    monkeypatch.chdir(box)                      # relative paths a bug might write to land here, and are seen
    path = box / "p.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if "\x00" not in text else text.encode())
    for argv in (["validate", str(path)], ["run", str(path), "--out", str(box / "runs"), "--quiet"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert "Traceback" not in err and str(path) in err, err
        if names:
            assert names in err, err
    assert sorted(p.name for p in box.iterdir()) == ["p.toml"], "nothing written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box"]


def test_a_non_utf8_protocol_is_one_message(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_bytes(BASE.encode().replace(b"clapp_digits", b"clapp\xff\xfe", 1))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a text file (TOML must be UTF-8)" in err and str(path) in err


def test_random_overrides_are_one_message(tmp_path, capsys):
    """Random ``--set`` items over every key: never a traceback, always exit 0 or 2."""
    rng = random.Random(1)
    keys = [(t, k, s) for t, ks in SCHEMA.items() if t for k, s in ks.items()]
    path = ROOT / "protocols" / "clapp_digits.toml"
    for _ in range(60):
        table, key, spec = rng.choice(keys)
        value = rng.choice(_bad_values(spec))
        code = main(["validate", str(path), "--set", f"{table}.{key}={_toml(value)}"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and f"[{table}] {key}" in err, (table, key, value, err)
