import json

import pytest

from rest_cli.errors import RestError, UsageError
from rest_cli.loop.decisions import best_model, still_rising, tau_schedule, threshold
from rest_cli.loop.report import collect, markdown, plot
from tests.helpers import write_jsonl


def test_tau_schedule_skips_thresholds_below_the_mean_reward():
    paper = [0.0, 0.7, 0.8, 0.9, 0.95, 0.99]
    assert tau_schedule(paper, 3, mean=0.5) == [0.7, 0.8, 0.9]
    assert tau_schedule(paper, 3, mean=0.85) == [0.9, 0.95, 0.99]
    assert tau_schedule(paper, 3, mean=0.96) == [0.99, 0.99, 0.99]
    assert tau_schedule(paper, 2, mean=0.999) == [0.99, 0.99]
    with pytest.raises(UsageError, match="must rise"):
        tau_schedule([0.9, 0.7], 1, 0.0)


def test_threshold_reads_the_mean_from_the_candidates(tmp_path):
    scored = write_jsonl(tmp_path / "c.jsonl", [{"reward": r} for r in (0.7, 0.8, 1.0)])
    assert threshold("tau", [0.0, 0.7, 0.8, 0.9], 1, str(scored)) == 0.9
    assert threshold("percentile", [50, 75], 2) == 75 and threshold("gamma", [0.5], 3) == 0.5
    with pytest.raises(UsageError):
        threshold("tau", [0.5], 1)


def eval_report(path, model, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"results": [{"model": model, "rewards": {"numbers": value},
                                             "sampled": {"rewards": {"numbers": value - 0.1}},
                                             "bleu": 50.0, "chrf": 70.0}]}))
    return str(path)


def test_rising_and_best(tmp_path):
    a, b, c = (eval_report(tmp_path / f"{n}.json", n, v) for n, v in (("a", 0.5), ("b", 0.7), ("c", 0.7)))
    assert still_rising([a], "numbers") and still_rising([a, b], "numbers")
    assert not still_rising([a, b, c], "numbers")  # equal is not rising
    assert best_model([a, b, c], "numbers") == "b"  # ties go to the earlier, less trained policy
    with pytest.raises(RestError, match="not a `rest eval` report with reward 'chrf'"):
        best_model([a], "chrf")


def test_report_collects_steps_controls_and_curves(tmp_path):
    run = tmp_path / "run"
    eval_report(run / "g0" / "valid.json", "bc", 0.5)
    eval_report(run / "test" / "bc.json", "bc", 0.45)
    for g, i, v in ((1, 1, 0.6), (1, 2, 0.55), (2, 1, 0.7)):
        eval_report(run / f"g{g}" / f"i{i}" / "valid.json", f"g{g}i{i}", v)
        eval_report(run / "test" / f"g{g}-i{i}.json", f"g{g}i{i}", v - 0.05)
    (run / "g1" / "i2" / "skipped").write_text("")
    eval_report(run / "test" / "control-more.json", "more", 0.5)
    (run / "bon").mkdir()
    (run / "bon" / "bc.json").write_text(json.dumps({"n": [1, 2], "mean_best_reward": [0.4, 0.6],
                                                     "sources": 3}))
    results = collect(run, "numbers")
    assert [s["policy"] for s in results["steps"]] == ["bc", "g1-i1", "g1-i2", "g2-i1"]
    assert results["steps"][1]["test"] == {"reward": pytest.approx(0.55),
                                           "sampled_reward": pytest.approx(0.45), "bleu": 50.0, "chrf": 70.0}
    assert results["steps"][2]["skipped"] and results["controls"][0]["policy"] == "control-more"
    text = markdown(results)
    assert "| ReST G2 I1 | 0.7000 | 0.6500 | 0.5500 | 50.00 | 70.00 | – |" in text
    assert "| BC | 0.5000 |" in text and "| control: more | – | 0.5000 |" in text
    assert "| N | BC |\n|---:|---:|\n| 1 | 0.4000 |\n| 2 | 0.6000 |" in text
    assert results["final_policy"] is None and results["warnings"] == []  # no policy file: nothing claimed
    plot(results, tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run_with_improve_data(tmp_path, reference_share, final):
    """A run of one Grow step whose Improve step trained on data with this share of references."""
    run = tmp_path / "run"
    eval_report(run / "g0" / "valid.json", str(run / "g0" / "model"), 0.5)
    eval_report(run / "test" / "bc.json", str(run / "g0" / "model"), 0.5)
    eval_report(run / "g1" / "i1" / "valid.json", str(run / "g1" / "i1" / "model"), 0.6)
    eval_report(run / "test" / "g1-i1.json", str(run / "g1" / "i1" / "model"), 0.6)
    refs = round(100 * reference_share)
    (run / "g1" / "i1" / "data.stats.json").write_text(json.dumps(
        {"records_out": 100, "references_out": refs, "samples_out": 100 - refs,
         "reference_share": reference_share}))
    for model in ("g0/model", "g1/i1/model"):
        (run / model).mkdir(parents=True)
    (run / "g1" / "policy").write_text(str(run / final) + "\n")
    return collect(run, "numbers")


def test_improve_data_of_mostly_references_is_flagged_and_named(tmp_path):
    results = _run_with_improve_data(tmp_path, 1.0, "g1/i1/model")
    assert results["final_policy"] == "g1-i1"
    assert len(results["warnings"]) == 1
    assert results["warnings"][0].startswith(
        "ReST G1 I1 trained on data that is 100% references (100 of 100)")
    text = markdown(results)
    assert f"> **Warning:** {results['warnings'][0]}" in text
    assert "| **ReST G1 I1 (final)** |" in text and "| 100 (0% samples) |" in text


def test_improve_data_shows_samples_and_references_with_their_mean_rewards(tmp_path):
    _run_with_improve_data(tmp_path, 0.25, "g1/i1/model")
    stats = tmp_path / "run" / "g1" / "i1" / "data.stats.json"
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "mean_reward_samples_out": 0.8123,
                                 "mean_reward_references_out": 1.0}))
    text = markdown(collect(tmp_path / "run", "numbers"))
    assert "| 100 (75% samples, mean reward 0.81; references 1.00) |" in text


def test_with_every_reference_kept_the_advice_is_more_samples_per_source(tmp_path):
    # One reference and about one sample per source (a few samples equal to their reference
    # deduplicated): --references keep is in use already, so it is not the advice.
    results = _run_with_improve_data(tmp_path, 0.51, "g1/i1/model")
    stats = tmp_path / "run" / "g1" / "i1" / "data.stats.json"
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "references_in": 51}))
    warning = collect(tmp_path / "run", "numbers")["warnings"][0]
    assert "every reference is kept" in warning and "--references keep" not in warning
    assert "--references keep" in results["warnings"][0]  # references_in unknown: the general advice


def test_mostly_samples_is_not_flagged_and_a_final_bc_is(tmp_path):
    results = _run_with_improve_data(tmp_path, 0.3, "g0/model")
    assert results["final_policy"] == "bc"
    assert results["warnings"] == ["the final policy is BC: no Improve step raised the validation reward, "
                                   "so ReST changed nothing"]
    assert "| **BC (final)** |" in markdown(results) and "| 100 (70% samples) |" in markdown(results)


def test_the_plot_draws_zero_rewards_names_n_values_and_says_greedy(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rest_cli.loop.report import _plot_best_of_n, _plot_steps

    results = _run_with_improve_data(tmp_path, 0.3, "g1/i1/model")
    results["steps"][0]["test"]["reward"] = 0.0  # a reward of 0 is a point, not a gap
    results["best_of_n"] = {"bc": {"n": [1, 2, 4, 16], "mean_best_reward": [0.1, 0.2, 0.3, 0.4]}}
    figure, (steps_axis, bon_axis) = plt.subplots(1, 2)
    _plot_steps(steps_axis, results)
    _plot_best_of_n(bon_axis, results["best_of_n"])
    test_line = next(line for line in steps_axis.get_lines() if line.get_label() == "test (greedy)")
    assert list(test_line.get_ydata()) == [0.0, pytest.approx(0.6)]
    assert [label.get_text() for label in steps_axis.get_xticklabels()] == ["BC", "ReST G1 I1"]
    assert [label.get_text() for label in bon_axis.get_xticklabels()] == ["1", "2", "4", "16"]
    plt.close(figure)
