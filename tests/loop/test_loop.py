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
    assert "| g2-i1 | 0.7000 | 0.6500 |" in text and "Best-of-N, bc: N=1: 0.4000, N=2: 0.6000" in text
    plot(results, tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
