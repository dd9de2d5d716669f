import shlex
import sys

import pytest

from rest_cli.eval.evaluate import compare, distinct_n, mean_of, outputs_of, reference_metrics
from rest_cli.rewards import RewardOptions, build_reward
from tests.helpers import read_jsonl, rest, write_jsonl


def hanging_reward(tmp_path) -> str:
    """A `cmd:` reward that never answers: only --reward-timeout ends it."""
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(60)\n")
    return f"cmd:{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


TIMED_OUT = "after 0 restarts: it gave no answer within 0.3 s, so rest stopped it"


def test_distinct_n():
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)  # (a b), (b a) over 4 bigrams
    assert distinct_n([""], 2) == 0.0


def test_reference_metrics_on_a_perfect_and_a_short_output():
    perfect = reference_metrics(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert (perfect["bleu"], perfect["chrf"], perfect["length_ratio"]) == (100.0, 100.0, 1.0)
    assert (reference_metrics(["the cat"], ["the cat sat on the mat"])["length_ratio"]
            == pytest.approx(2 / 6, abs=1e-4))
    assert perfect["bleu_sig"].startswith("nrefs:1|") and "version:" in perfect["chrf_sig"]


def test_outputs_show_the_reward_capped_text_and_keep_the_candidates():
    reward = build_reward("exact", RewardOptions(max_chars=3))
    candidates = [{"hyp": "abcdef", "ref": "abcxyz"}, {"hyp": "ab", "ref": "ba"}]
    outputs = outputs_of(candidates, [reward])
    assert outputs.rewards == {"exact": [1.0, 0.0]} and reward.cap.truncated == 1
    assert mean_of(outputs.rewards["exact"]) == 0.5 and outputs.refs == ["abcxyz", "ba"]
    assert candidates == [{"hyp": "abcdef", "ref": "abcxyz"}, {"hyp": "ab", "ref": "ba"}]


def result(model, reward, bleu, chrf):
    return {"model": model, "rewards": {"use": reward}, "bleu": bleu, "chrf": chrf}


def test_compare_flags_reward_up_while_bleu_falls():
    rows = compare([result("bc", 0.5, 30.0, 55.0), result("rest", 0.7, 25.0, 55.5),
                    result("ok", 0.6, 30.5, 54.5)])
    assert rows[0]["reward_hacking_suspected"] and rows[0]["why"] == "use up while bleu down"
    assert rows[0]["rewards"] == {"use": pytest.approx(0.2)} and rows[0]["bleu"] == -5.0
    assert not rows[1]["reward_hacking_suspected"]  # chrF fell by 0.5 only, under the 1.0 threshold


@pytest.mark.subprocess
def test_eval_command_json_and_comparison(random_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl",
                       [{"src": "eins hund", "ref": "one dog"}, {"src": "zwei", "ref": "two"}])
    out = rest("eval", "-m", str(random_model_dir), "--compare", str(random_model_dir), "-r", "chrf",
               "--sample", "2", "--max-length", "8", str(data))
    assert out.returncode == 0, out.stderr
    report = read_jsonl(out.stdout.replace(b"\n", b" "))[0]
    first, second = report["results"]
    assert (first["sources"] == 2 and set(first["rewards"]) == {"chrf"} and "bleu" in first
            and "sampled" in first)
    assert first == second  # same model, same seed: the same figures
    assert report["comparisons"][0]["rewards"] == {"chrf": 0.0}
    # Two sources are too few to resample: no intervals, the threshold rule for the flag.
    assert "bootstrap" not in first and report["comparisons"][0]["hacking_test"] == "threshold"
    assert "rest eval" in out.stderr.decode()


@pytest.mark.subprocess
def test_eval_honours_the_reward_timeout(random_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl", [{"src": "eins hund", "ref": "one dog"}])
    out = rest("eval", "-m", str(random_model_dir), "-r", "chrf", "-r", hanging_reward(tmp_path),
               "--max-length", "4", "--reward-timeout", "0.3", "--reward-restarts", "0", str(data))
    last = out.stderr.decode().splitlines()[-1]
    assert out.returncode == 1 and last.startswith("rest eval: error: reward command ") and TIMED_OUT in last


@pytest.mark.subprocess
@pytest.mark.parametrize("option", [["--reward-range", "0:1"], ["--calibrate", "cal.jsonl"]])
def test_eval_refuses_one_range_for_several_rewards(random_model_dir, tmp_path, option):
    data = write_jsonl(tmp_path / "test.jsonl", [{"src": "eins hund", "ref": "one dog"}])
    out = rest("eval", "-m", str(random_model_dir), "-r", "chrf", "-r", "bleu", *option, str(data))
    lines = out.stderr.decode().splitlines()
    assert out.returncode == 2 and lines == [
        f"rest eval: error: {option[0]} sets the range of one reward, but 2 rewards are given; "
        f"to range one of them, write scale(SPEC, lo=LO, hi=HI) in its --reward"], lines


@pytest.mark.subprocess
def test_eval_pass_at_k_and_majority_of_a_models_samples(random_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl",
                       [{"src": "eins hund", "ref": "one dog"}, {"src": "zwei", "ref": "two"}])
    args = ("eval", "-m", str(random_model_dir), "--compare", str(random_model_dir), "-r", "chrf",
            "--max-length", "8", "--pass-at", "1,3", "--majority", "3", "--correct-at", "0.1", str(data))
    out = rest(*args)
    assert out.returncode == 0, out.stderr
    report = read_jsonl(out.stdout.replace(b"\n", b" "))[0]
    first, second = report["results"]
    sampled = first["sampled"]
    # Without --sample, the largest K or M sets the samples per source.
    assert sampled["samples"] == 2 * 3 and sampled["decode"].startswith("sample|n:3|")
    assert set(sampled["pass_at"]["chrf"]) == {"1", "3"} and set(sampled["majority"]["chrf"]) == {"3"}
    assert sampled["pass_at"]["chrf"]["1"] <= sampled["pass_at"]["chrf"]["3"]
    assert sampled["correct_at"] == 0.1 and first == second
    assert report["comparisons"][0]["pass_at"] == {"chrf": {"1": 0.0, "3": 0.0}}
    assert "pass@3 chrf" in out.stderr.decode()


@pytest.mark.subprocess
def test_eval_refuses_more_k_than_samples_before_decoding(random_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl", [{"src": "eins hund", "ref": "one dog"}])
    out = rest("eval", "-m", str(random_model_dir), "-r", "chrf", "--sample", "2", "--pass-at", "1,4",
               str(data))
    assert out.returncode == 2 and out.stderr.decode().splitlines() == [
        "rest eval: error: --pass-at 4 needs at least 4 samples of each source, but --sample is 2"]
