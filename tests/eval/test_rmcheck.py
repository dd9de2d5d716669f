import json
import shlex
import sys

import pytest

from rest_cli.eval.rmcheck import PERTURBATIONS, check_reward, perturbed_pairs, verdict
from rest_cli.rewards import Reward, build_reward
from rest_cli.rewards.base import FieldCap
from tests.helpers import read_jsonl, rest, write_jsonl


def hanging_reward(tmp_path) -> str:
    """A `cmd:` reward that never answers: only --reward-timeout ends it."""
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(60)\n")
    return f"cmd:{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


TIMED_OUT = "after 0 restarts: it gave no answer within 0.3 s, so rest stopped it"

PAIRS = [{"src": f"Ich sehe {de} Hunde im Park.", "ref": f"I see {en} dogs in the park."}
         for de, en in [("zwei", "two"), ("drei", "three"), ("vier", "four"), ("fünf", "five"),
                        ("sechs", "six"), ("sieben", "seven"), ("acht", "eight"), ("neun", "nine"),
                        ("zehn", "ten"), ("elf", "eleven")]]


class LovesLength(Reward):
    """A deliberately bad reward: longer is better, whatever it says."""

    name = "loves-length"

    def score(self, records):
        return [min(1.0, len(r["hyp"]) / 200) for r in records]

    def signature(self):
        return "loves-length"


def by_name(results):
    return {r.perturbation: r for r in results}


def test_a_length_loving_reward_fails_repeat_and_copy_but_not_truncate():
    results = by_name(check_reward(LovesLength(), PAIRS))
    assert results["repeat"].rate == 0.0 and results["truncate"].rate == 1.0 and results["empty"].rate == 1.0
    assert not results["repeat"].as_dict(0.9)["passed"] and results["truncate"].as_dict(0.9)["passed"]


def test_chrf_prefers_the_true_translation_everywhere():
    results = check_reward(build_reward("chrf"), PAIRS)
    assert [r.perturbation for r in results] == list(PERTURBATIONS)
    assert all(r.pairs == len(PAIRS) and r.rate == 1.0 for r in results)


def test_perturbations_are_seeded_and_change_the_output():
    first, again = perturbed_pairs(PAIRS, "shuffle", 0), perturbed_pairs(PAIRS, "shuffle", 0)
    assert first == again and all(true["hyp"] != broken["hyp"] for true, broken in first)
    assert sorted(first[0][1]["hyp"].split()) == sorted(PAIRS[0]["ref"].split())
    copies = perturbed_pairs(PAIRS, "copy-source", 0)
    assert [b["hyp"] for _, b in copies] == [p["src"] for p in PAIRS]
    others = perturbed_pairs(PAIRS, "other-reference", 0)
    assert all(b["hyp"] in {p["ref"] for p in PAIRS} - {t["hyp"]} for t, b in others)
    dropped = perturbed_pairs(PAIRS, "drop-words", 0)[0][1]["hyp"].split()
    assert len(dropped) == 7 - 2  # 30% of 7 words, rounded


@pytest.mark.subprocess
def test_cli_fails_on_a_reward_that_misses_word_order(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    numbers = rest("rmcheck", "--reward", "numbers", "--data", str(data))
    report = read_jsonl(numbers.stdout.replace(b"\n", b" "))[0]
    checks = {c["perturbation"]: c for c in report["checks"]}
    assert numbers.returncode == 1 and not report["passed"]
    assert not checks["shuffle"]["passed"] and checks["copy-source"]["passed"]  # numbers ignores word order
    assert rest("rmcheck", "--reward", "chrf", "--data", str(data)).returncode == 0
    bad = rest("rmcheck", "--reward", "chrf", "--data", str(data), "-p", "nonsense")
    assert bad.returncode == 2 and "unknown perturbation(s) nonsense" in bad.stderr.decode()


@pytest.mark.subprocess
def test_cli_honours_the_reward_timeout(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:2])
    out = rest("rmcheck", "-r", hanging_reward(tmp_path), "-d", str(data), "--reward-timeout", "0.3",
               "--reward-restarts", "0")
    lines = out.stderr.decode().splitlines()
    assert out.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("rest rmcheck: error: reward command ") and TIMED_OUT in lines[0]


@pytest.mark.subprocess
def test_cli_takes_the_reward_from_a_config_file(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    (tmp_path / "r.json").write_text(json.dumps({"reward": "chrf"}))
    out = rest("rmcheck", "--reward-config", str(tmp_path / "r.json"), "-d", str(data))
    assert out.returncode == 0, out.stderr
    assert read_jsonl(out.stdout.replace(b"\n", b" "))[0]["reward"] == "chrf"
    missing = rest("rmcheck", "-d", str(data))
    assert missing.returncode == 2 and "give the reward as --reward SPEC or as --reward-config FILE" \
        in missing.stderr.decode()


ONE_WORD = [{"src": "Hund", "ref": "dog"}, {"src": "Katze", "ref": "cat"}, {"src": "Maus", "ref": "mouse"}]


def test_a_check_that_changes_no_pair_is_not_applicable():
    results = by_name(check_reward(build_reward("chrf"), ONE_WORD, ["shuffle", "repeat"]))
    assert results["shuffle"].pairs == 0  # one word shuffled is the same word
    assert results["shuffle"].as_dict(0.9) == {
        "perturbation": "shuffle", "pairs": 0, "preferred": 0, "rate": None, "mean_true": None,
        "mean_perturbed": None, "status": "n/a", "passed": None}
    checks = [r.as_dict(0.9) for r in results.values()]
    assert checks[1]["status"] == "pass" and verdict(checks) is True
    assert verdict(checks[:1]) is None and verdict([*checks, {"passed": False}]) is False


def test_the_reward_is_shown_the_pairs_through_its_cap():
    reward = LovesLength()
    reward.cap = FieldCap(5)  # as build_reward sets it from --reward-max-chars
    truncate = by_name(check_reward(reward, PAIRS, ["truncate"]))["truncate"]  # "I see two": "I see"
    assert truncate.mean_true == truncate.mean_perturbed == pytest.approx(5 / 200) and truncate.rate == 0.0
    assert reward.cap.truncated == 2 * len(PAIRS)


@pytest.mark.subprocess
def test_cli_reports_a_check_without_pairs_as_not_applicable(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", ONE_WORD)
    out = rest("rmcheck", "-r", "chrf", "-d", str(data), "-p", "shuffle", "-p", "repeat")
    assert out.returncode == 0, out.stderr
    report = read_jsonl(out.stdout.replace(b"\n", b" "))[0]
    assert report["passed"] is True
    assert [(c["perturbation"], c["status"], c["passed"]) for c in report["checks"]] == [
        ("shuffle", "n/a", None), ("repeat", "pass", True)]
    assert "n/a" in out.stderr.decode()  # the table
    nothing = rest("rmcheck", "-r", "chrf", "-d", str(data), "-p", "shuffle")
    assert nothing.returncode == 1 and read_jsonl(nothing.stdout.replace(b"\n", b" "))[0]["passed"] is None
    assert ("rest rmcheck: no check applied to these pairs (each left them unchanged): nothing was tested"
            in nothing.stderr.decode())
