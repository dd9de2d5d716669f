import pytest

from rest_cli.bestofn import BestOfNStats, best_of_group, best_of_n


def test_best_of_group_keeps_the_best_with_mean_and_max():
    group = [{"id": 1, "k": k, "reward": r} for k, r in enumerate([0.2, 0.8, 0.5, 0.8])]
    best = best_of_group(group)
    assert (best["k"], best["best_of"], best["reward_max"]) == (1, 4, 0.8)
    assert best["reward_mean"] == pytest.approx(0.575)
    assert "best_of" not in group[1]  # the input record is not modified


def test_best_of_n_summary():
    groups = [[{"reward": 0.0}, {"reward": 1.0}], [{"reward": 0.5}]]
    stats = BestOfNStats()
    assert [r["reward"] for r in best_of_n(groups, stats)] == [1.0, 0.5]
    assert stats.summary() == "2 sources: mean best reward 0.7500, mean reward of all candidates 0.5000"
