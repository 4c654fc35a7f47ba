"""The built-in protocols learn: over 3 seeds their trained layers beat the random-weight encoder."""
from pathlib import Path

import numpy as np
import pytest

from helpers import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


#: Protocols tested here at a smaller scale than shipped (the shipped scale is figure (d)'s, 5 seeds).
SMALLER = {"clapp_digits_spiking": ["data.max_samples=500", "evaluate.presentations=1", "evaluate.fidelity=false"]}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["clapp_digits", "clapp_natural_images", "clapp_speech_quick",
                                      "clapp_video_quick", "clapp_digits_spiking", "clapp_s_conv_quick",
                                      "clapp_conv_quick"])
def test_trained_encoder_beats_random_encoder_over_three_seeds(tmp_path, monkeypatch, protocol):
    monkeypatch.setenv("NEUROPLASTIC_BUILD_DIR", str(tmp_path / "builds"))     # Brian2 builds stay in tmp
    probe_over_seeds = benchmark_module("probe_seeds").probe_over_seeds
    table = probe_over_seeds(ROOT / "protocols" / f"{protocol}.toml", [1, 2, 3], tmp_path, SMALLER.get(protocol, []),
                             force=False)
    assert sorted(table) == ["1", "2"]
    for layer, (trained, rand) in table.items():
        assert len(trained) == len(rand) == 3
        assert np.mean(trained) > np.mean(rand), (layer, trained, rand)
    if protocol == "clapp_digits":
        # The quickstart shows a margin a newcomer can see: >= 2 points at every layer (README, "Set up").
        for layer, (trained, rand) in table.items():
            assert np.mean(trained) - np.mean(rand) >= 0.02, (layer, trained, rand)
