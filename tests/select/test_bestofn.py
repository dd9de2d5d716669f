import shlex
import sys

import pytest

from rest_cli.select.bestofn import BestOfNStats, best_of_group, best_of_n
from tests.helpers import read_jsonl, rest, write_jsonl


def hanging_reward(tmp_path) -> str:
    """A `cmd:` reward that never answers: only --reward-timeout ends it."""
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(60)\n")
    return f"cmd:{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


TIMED_OUT = "after 0 restarts: it gave no answer within 0.3 s, so rest stopped it"


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
    from rest_cli.errors import RestError
    from rest_cli.select.bestofn import best_of_n_curve
    group = ([{"id": 1, "reward": r, "origin": "sample"} for r in (0.0, 1.0)]
             + [{"id": 1, "reward": 1.0, "origin": "ref"}])
    assert best_of_n_curve([group], [1, 2]) == {"n": [1, 2], "mean_best_reward": [0.5, 1.0], "sources": 1}
    with pytest.raises(RestError, match="fewer than 4"):
        best_of_n_curve([group], [1, 4])


@pytest.mark.subprocess
def test_curve_through_the_cli(tmp_path):
    scored = write_jsonl(tmp_path / "s.jsonl",
                         [{"id": i, "reward": r} for i in (1, 2) for r in (0.2, 0.6, 1.0)])
    result = rest("bestofn", "--curve", "1,3", str(scored), "-o", str(tmp_path / "curve.json"))
    assert result.returncode == 0, result.stderr
    assert read_jsonl((tmp_path / "curve.json").read_bytes()) == [
        {"n": [1, 3], "mean_best_reward": [0.6, 1.0], "sources": 2}]
    assert rest("bestofn", "--curve", "0,x", str(scored)).returncode == 2


@pytest.mark.subprocess
def test_bestofn_scores_a_stream_with_the_shared_reward_options(tmp_path):
    stream = write_jsonl(tmp_path / "c.jsonl", [{"id": 1, "hyp": h} for h in ("ab", "abcd", "a")])
    (tmp_path / "lengths.py").write_text("def f(records):\n    return [len(r['hyp']) for r in records]\n")
    best = rest("bestofn", "-r", "py:lengths:f", "--reward-range", "0:8", str(stream), cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert [(r["hyp"], r["reward"]) for r in read_jsonl(best.stdout)] == [("abcd", 0.5)]


@pytest.mark.subprocess
def test_bestofn_shows_the_reward_capped_text(tmp_path):
    stream = write_jsonl(tmp_path / "c.jsonl", [{"id": 1, "hyp": h} for h in ("ab", "abcd", "a")])
    (tmp_path / "lengths.py").write_text("def f(records):\n    return [len(r['hyp']) for r in records]\n")
    best = rest("bestofn", "-r", "py:lengths:f", "--reward-range", "0:8", "--reward-max-chars", "2",
                str(stream), cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert [(r["hyp"], r["reward"]) for r in read_jsonl(best.stdout)] == [("ab", 0.25)]  # "abcd" seen as "ab"
    assert ("rest bestofn: truncated 1 record(s) to 2 characters of hyp, ref and src for the reward"
            in best.stderr.decode())


@pytest.mark.subprocess
def test_bestofn_honours_the_reward_timeout(tmp_path):
    stream = write_jsonl(tmp_path / "c.jsonl", [{"id": 1, "hyp": "a"}, {"id": 1, "hyp": "b"}])
    out = rest("bestofn", "-r", hanging_reward(tmp_path), "--reward-timeout", "0.3",
               "--reward-restarts", "0", str(stream))
    lines = out.stderr.decode().splitlines()
    assert out.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("rest bestofn: error: reward command ") and TIMED_OUT in lines[0]


@pytest.mark.subprocess
def test_bestofn_refuses_a_range_without_a_reward(tmp_path):
    scored = write_jsonl(tmp_path / "s.jsonl", [{"id": 1, "reward": 0.5}])
    out = rest("bestofn", "--reward-range", "0:1", str(scored))
    assert out.returncode == 2 and "--reward-range sets the range of one reward, but no rewards are given" \
        in out.stderr.decode()
