import json
import statistics

import pytest

from rest_cli.errors import RestError
from rest_cli.loop.arms import arm_label, collect, markdown, plot, spread


def seed_report(path, greedy, sampled=None, bleu=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": str(path), "rewards": {"numbers": greedy}, "bleu": bleu, "chrf": None}
    if sampled is not None:
        result["sampled"] = {"rewards": {"numbers": sampled}}
    path.write_text(json.dumps({"results": [result]}))


def make_arms(root, figures):
    """figures: {arm: {seed: (greedy, sampled)}}; returns the arm folders in order."""
    for arm, seeds in figures.items():
        for seed, (greedy, sampled) in seeds.items():
            seed_report(root / arm / f"s{seed}.json", greedy, sampled, bleu=90.0 + seed)
    return [root / arm for arm in figures]


def test_labels_follow_the_papers_nomenclature():
    assert arm_label("nll-g0-i0") == "BC G=0 I=0"
    assert arm_label("nll-g1-i0") == "BC G=1 I=0"
    assert arm_label("gold-g1-i1") == "GOLD G=1 I=1"
    assert arm_label("control") == "control"


def test_spread_is_the_mean_and_sample_deviation():
    assert spread([0.5, 0.7, 0.9]) == {"mean": pytest.approx(0.7), "sd": pytest.approx(0.2), "min": 0.5,
                                       "max": 0.9, "n": 3}
    assert spread([0.4])["sd"] is None  # one seed has no spread, not a spread of 0


def test_arms_are_summarised_and_compared_with_the_baseline_seed_by_seed(tmp_path):
    arms = make_arms(tmp_path, {
        "nll-g0-i0": {1: (0.90, 0.80), 2: (0.92, 0.82), 3: (0.94, 0.84)},
        "nll-g1-i1": {1: (0.95, 0.90), 2: (0.91, 0.91), 3: (0.96, 0.92)},
        "gold-g1-i1": {1: (0.93, 0.85), 2: (0.93, 0.86)},
    })
    results = collect(arms, "numbers")
    baseline, nll, gold = results["arms"]
    assert baseline["summary"]["reward"]["mean"] == pytest.approx(0.92)
    assert nll["summary"]["reward"]["sd"] == pytest.approx(statistics.stdev([0.95, 0.91, 0.96]))
    assert nll["summary"]["bleu"]["mean"] == pytest.approx(92.0)
    # Seed 2's NLL arm (0.91) is below its BC (0.92): compared seed by seed, not by means.
    assert nll["above_baseline"]["reward"] == {"above": 2, "seeds": 3}
    assert nll["above_baseline"]["sampled_reward"] == {"above": 3, "seeds": 3}
    assert gold["above_baseline"]["reward"] == {"above": 2, "seeds": 2}
    assert results["best_greedy"] == "nll-g1-i1"
    table = markdown(results, "Improve losses")
    assert "| BC G=1 I=1 | 3 | 0.9400 ± 0.0265 | 0.9100 ± 0.0100 | 92.00 ± 1.00 | – | 0.9100 – 0.9600 | " \
           "2 of 3; 3 of 3 |" in table
    assert "| GOLD G=1 I=1 | 2 |" in table
    assert "Highest mean test reward (greedy): BC G=1 I=1." in table


def test_the_bar_chart_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    arms = make_arms(tmp_path, {"nll-g0-i0": {1: (0.9, None), 2: (0.92, None)},
                                "oac-g1-i1": {1: (0.95, None)}})
    plot(collect(arms, "numbers"), tmp_path / "losses.png", "Improve losses")
    assert (tmp_path / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_arm_without_reports_or_with_another_reward_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RestError, match="empty: no test reports"):
        collect([tmp_path / "empty"], "numbers")
    arms = make_arms(tmp_path, {"nll-g0-i0": {1: (0.9, None)}})
    seed_report(tmp_path / "broken" / "s1.json", 0.9)
    (tmp_path / "broken" / "s1.json").write_text("{")
    with pytest.raises(RestError, match=r"broken/s1.json: not a `rest eval` report"):
        collect([*arms, tmp_path / "broken"], "numbers")


def test_the_chart_zooms_on_the_arms_near_the_best():
    from rest_cli.loop.arms import _zoom

    near = [{"min": 0.97, "max": 0.99}, {"min": 0.975, "max": 0.985}]
    collapsed = {"min": 0.1, "max": 0.3}
    low, high = _zoom([0.98, 0.98, 0.2], [*near, collapsed])
    assert 0.9 < low < 0.97 and 0.99 < high <= 1.0  # the collapsed arm is left below, not flattening the rest
