"""benchmarks/probe_presentations.py re-probes a finished spiking run's trained weights with more presentations."""
import json
from pathlib import Path

import pytest

from helpers import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_reprobing_a_spiking_run_gives_its_probe_at_its_own_presentations(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))     # Brian2 builds stay in tmp
    from neuroplastic.protocol import load
    from neuroplastic.results import Run

    protocol_file = ROOT / "protocols" / "clapp_digits_spiking.toml"
    sets = ["data.max_samples=150", "train.epochs=1", "evaluate.folds=2", "evaluate.fidelity=false", "seed=3"]
    benchmark_module("probe_seeds").probe_over_seeds(protocol_file, [3], tmp_path, sets[:-1], force=False)
    protocol = load(protocol_file, sets)
    assert protocol.evaluate.presentations == 2
    directory = Run.path_for(tmp_path, protocol)
    summary = json.loads((directory / "summary.json").read_text())

    reprobe = benchmark_module("probe_presentations").reprobe
    table = reprobe(protocol, directory, [1, 2])
    assert table[2] == summary["probe"]                 # the same noise, weights, split and probe as the run
    assert table[1].keys() == summary["probe"].keys()
    assert json.loads((directory / "probe_presentations.json").read_text()) == {str(k): v for k, v in table.items()}

    from neuroplastic.engines.brian import engine
    monkeypatch.setattr(engine, "presented_rates", lambda *a: pytest.fail("simulated counts it had"))
    assert reprobe(protocol, directory, [2]) == {2: table[2]}


def test_counts_below_one_and_rate_runs_are_refused_before_any_work(tmp_path, capsys):
    main = benchmark_module("probe_presentations").main
    protocol_file = str(ROOT / "protocols" / "clapp_digits_spiking.toml")
    with pytest.raises(SystemExit) as stop:
        main([protocol_file, "--presentations", "2", "0", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "--presentations: counts of 1 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main([protocol_file, "--set", "engine.variant=rate", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "only a spiking run has spikes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main([protocol_file, "--seeds", "4", "--out", str(tmp_path)])
    assert "seed 4: no finished run" in str(stop.value.code)
    assert list(tmp_path.iterdir()) == []                          # nothing written
