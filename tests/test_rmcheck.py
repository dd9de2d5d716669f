from rest_cli.rewards import Reward, get_reward
from rest_cli.eval.rmcheck import PERTURBATIONS, check_reward, perturbed_pairs
from tests.helpers import read_jsonl, rest, write_jsonl

PAIRS = [{"src": f"Ich sehe {de} Hunde im Park.", "ref": f"I see {en} dogs in the park."}
         for de, en in [("zwei", "two"), ("drei", "three"), ("vier", "four"), ("fünf", "five"), ("sechs", "six"),
                        ("sieben", "seven"), ("acht", "eight"), ("neun", "nine"), ("zehn", "ten"), ("elf", "eleven")]]


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
    results = check_reward(get_reward("chrf"), PAIRS)
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
