"""The quickstart protocol learns: over 3 seeds its trained layers beat the random-weight encoder."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _probe_seeds():
    spec = importlib.util.spec_from_file_location("probe_seeds", ROOT / "benchmarks" / "probe_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.probe_over_seeds


@pytest.mark.slow
def test_quickstart_beats_random_encoder_over_three_seeds(tmp_path):
    table = _probe_seeds()(ROOT / "protocols" / "clapp_digits.toml", [1, 2, 3], tmp_path, [], force=False)
    assert sorted(table) == ["1", "2"]
    for layer, (trained, rand) in table.items():
        assert len(trained) == len(rand) == 3
        assert np.mean(trained) > np.mean(rand), (layer, trained, rand)
    # Learned features improve with depth while random ones degrade (SCIENCE.md §3).
    assert np.mean(table["2"][1]) < np.mean(table["1"][1])
