"""benchmarks/bench_brian_stream.py: a stream's runs of the binary and the time each costs."""
import json

import pytest

from helpers import benchmark_module


@pytest.mark.slow
def test_time_per_run_is_fitted_across_chunk_lengths(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))     # Brian2 builds stay in tmp
    monkeypatch.setenv("NEUROPLASTIC_BENCH_JSON", str(tmp_path / "bench.json"))
    assert benchmark_module("bench_brian_stream").main(["--glimpses", "200", "--chunk", "100", "25"]) == 0
    recorded = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["chunk"], r["runs"], r["glimpses"]) for r in recorded["details"]["rows"]] == [(100, 2, 200), (25, 8, 200)]
    assert recorded["details"]["seconds_per_run"] > 0               # six more runs of the binary cost time
    assert recorded["ratios"] == {}                                 # one stream length: no memory comparison
    assert "time per run of the binary" in capsys.readouterr().out


def test_counts_below_one_are_refused_before_any_work(capsys):
    main = benchmark_module("bench_brian_stream").main
    for flag in ("--chunk", "--glimpses"):
        with pytest.raises(SystemExit) as stop:
            main([flag, "0"])
        assert stop.value.code == 2 and "--glimpses and --chunk: counts of 1 or more" in capsys.readouterr().err
