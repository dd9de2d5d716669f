import pytest

from rest_cli.select.bestofn import BestOfNStats, best_of_group, best_of_n


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


def test_expected_best_matches_brute_force_over_subsets():
    import itertools
    import statistics

    from rest_cli.select.bestofn import expected_best
    rewards = [0.1, 0.5, 0.3, 0.9, 0.3]
    for n in range(1, 6):
        brute = statistics.mean(max(c) for c in itertools.combinations(rewards, n))
        assert expected_best(rewards, n) == pytest.approx(brute)


def test_curve_leaves_references_out_and_needs_enough_samples():
    from rest_cli.select.bestofn import best_of_n_curve
    from rest_cli.errors import RestError
    group = [{"id": 1, "reward": r, "origin": "sample"} for r in (0.0, 1.0)] + [{"id": 1, "reward": 1.0, "origin": "ref"}]
    assert best_of_n_curve([group], [1, 2]) == {"n": [1, 2], "mean_best_reward": [0.5, 1.0], "sources": 1}
    with pytest.raises(RestError, match="fewer than 4"):
        best_of_n_curve([group], [1, 4])


def test_curve_through_the_cli(tmp_path):
    from tests.helpers import read_jsonl, rest, write_jsonl
    scored = write_jsonl(tmp_path / "s.jsonl", [{"id": i, "reward": r} for i in (1, 2) for r in (0.2, 0.6, 1.0)])
    result = rest("bestofn", "--curve", "1,3", str(scored), "-o", str(tmp_path / "curve.json"))
    assert result.returncode == 0, result.stderr
    assert read_jsonl((tmp_path / "curve.json").read_bytes()) == [{"n": [1, 3], "mean_best_reward": [0.6, 1.0],
                                                                    "sources": 2}]
    assert rest("bestofn", "--curve", "0,x", str(scored)).returncode == 2
