"""The ground-truth sample that bounds tuning and evaluation cost on large shops."""

from __future__ import annotations

from training.rec_truth import sample_truth


def test_a_small_truth_is_used_whole_and_a_large_one_is_a_stable_sample() -> None:
    truth = {f"C{i:06d}": {f"P{i % 7}"} for i in range(10_000)}
    assert sample_truth(truth, 10_000) is truth
    a, b = sample_truth(truth, 2_000, seed=3), sample_truth(dict(reversed(truth.items())), 2_000, seed=3)
    assert set(a) == set(b)  # chosen by id, not by position
    assert 1_800 < len(a) < 2_200 and all(truth[u] == a[u] for u in a)
    assert set(sample_truth(truth, 2_000, seed=4)) != set(a)
