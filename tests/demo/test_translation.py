import statistics

import orjson
import pytest

from rest_cli.demo.translation import (
    NOISE_KINDS,
    SYSTEMATIC_TEMPLATE,
    DemoSpec,
    _swap_tens_and_units,
    demo_splits,
    spell,
)
from rest_cli.rewards.numbers import NumberMatch, spelled_digits
from tests.helpers import read_jsonl, rest

SPEC = DemoSpec(train=900, valid=100, test=100, noise=0.2, systematic=0.7, seed=3)


@pytest.fixture(scope="module")
def splits():
    return demo_splits(SPEC)


def test_sizes_ids_and_no_repeated_sources(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 900, "valid": 100, "test": 100}
    sources = [r["src"] for records in splits.values() for r in records]
    assert len(set(sources)) == len(sources)
    assert splits["valid"][0]["id"] == "valid-000000"


def test_same_seed_same_data(splits):
    assert demo_splits(SPEC) == splits
    assert demo_splits(DemoSpec(train=900, valid=100, test=100, noise=0.2, systematic=0.7, seed=4)) != splits


def test_clean_references_score_one_and_noisy_ones_less(splits):
    reward = NumberMatch()
    for split in ("valid", "test"):
        assert all(r["noise"] is None and reward.score_pair(r["src"], r["ref"]) == 1.0 for r in splits[split])
    random_noise = [r for r in splits["train"] if r["noise"] in NOISE_KINDS]
    assert 0.15 < len(random_noise) / 900 < 0.25 and {r["noise"] for r in random_noise} == set(NOISE_KINDS)
    noisy = [r for r in splits["train"] if r["noise"]]
    wrong = [reward.score_pair(r["src"], r["ref"]) for r in noisy if r["noise"] != "dropped-word"]
    assert max(wrong) < 1.0 and statistics.mean(wrong) < 0.8


def test_systematic_noise_swaps_most_swappable_salaries(splits):
    english = SYSTEMATIC_TEMPLATE.split("{n}")[0]
    salaries = [r for r in splits["train"] if r["ref"].startswith(english)]
    swapped = [r for r in salaries if r["noise"] == "systematic-swap"]
    assert {r["noise"] for r in splits["train"] if not r["ref"].startswith(english)} <= {None, *NOISE_KINDS}
    # 70% of the swappable ones; not every number is swappable
    assert 0.25 < len(swapped) / len(salaries) < 0.7
    assert all(NumberMatch().score_pair(r["src"], r["ref"]) < 1.0 for r in swapped)


def test_german_compounds_reorder():
    assert spell(24, "cardinal", "de") == "vierundzwanzig" and spell(24, "cardinal", "en") == "twenty-four"
    assert (_swap_tens_and_units(24) == 42 and _swap_tens_and_units(1224) == 1242
            and _swap_tens_and_units(30) is None)


@pytest.mark.parametrize("source, hypothesis, expected", [
    ("Ich sehe vierundzwanzig Hunde.", "I see twenty-four dogs.", 1.0),
    ("Ich sehe vierundzwanzig Hunde.", "I see forty-two dogs.", 0.5),       # 2*1 matching digit / 4
    ("Ich sehe vierundzwanzig Hunde.", "I see 24 dogs.", 0.0),              # the digit hack is guarded
    ("Er ist neunzehnhundertneunundneunzig geboren.", "He was born in nineteen ninety-nine.", 1.0),
    ("Er ist neunzehnhundertneunundneunzig geboren.", "He was born in nineteen ninety-eight.", 0.75),
    ("Ich sehe zwei Hunde.", "I see dogs.", 0.0),
    ("Ich sehe Hunde.", "I see dogs.", 1.0),
])
def test_numbers_reward_values(source, hypothesis, expected):
    assert NumberMatch().score_pair(source, hypothesis) == pytest.approx(expected)


def test_years_read_as_one_number():
    assert (spelled_digits("nineteen ninety-nine", "en")
            == spelled_digits("neunzehnhundertneunundneunzig", "de") == "1999")


@pytest.mark.subprocess
def test_demo_data_command_writes_three_splits(tmp_path):
    result = rest("demo-data", str(tmp_path / "demo"), "--train", "50", "--valid", "10", "--test", "10")
    assert result.returncode == 0, result.stderr
    assert [len(read_jsonl((tmp_path / "demo" / f"{s}.jsonl").read_bytes()))
            for s in ("train", "valid", "test")] == [50, 10, 10]
    test = read_jsonl((tmp_path / "demo" / "test.jsonl").read_bytes())
    as_candidates = b"".join(orjson.dumps({**r, "hyp": r["ref"]}) + b"\n" for r in test)
    scored = rest("score", "--reward", "numbers", input=as_candidates)
    assert [r["reward"] for r in read_jsonl(scored.stdout)] == [1.0] * 10
