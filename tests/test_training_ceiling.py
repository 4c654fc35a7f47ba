"""benchmarks/training_ceiling.py: two rate runs apart only by their input's jitter, on a small protocol."""
import numpy as np

from helpers import benchmark_module


def test_jitter_is_the_only_difference_between_the_two_runs():
    """Without jitter the two runs are one run (r = 1 at every layer); with it they drift apart (r < 1)."""
    ceiling = benchmark_module("training_ceiling").ceiling
    small = dict(data__max_samples=60, train__epochs=2, model__layers=[8, 8], evaluate__folds=0)
    same = ceiling("clapp_digits_spiking", 2, jitter=0.0, **small)
    assert len(same) == 2 and np.allclose(same, 1.0, rtol=0, atol=1e-12)
    apart = ceiling("clapp_digits_spiking", 2, **small)
    assert all(0 < r < 1 for r in apart), apart
