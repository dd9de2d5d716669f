"""The guards, value by value: each is exactly 1 on ordinary output and falls to 0 on its failure."""

import re

import pytest

from rest_cli.errors import UsageError
from rest_cli.rewards import build_reward, score_records
from rest_cli.rewards.guards import copied_share, length_ratio, ramp, repeated_share


def guard(spec, src, hyp):
    return build_reward(spec).score([{"src": src, "hyp": hyp}])[0]


@pytest.mark.parametrize("x, full, zero, expected", [
    (0.3, 0.4, 0.8, 1.0), (0.6, 0.4, 0.8, 0.5), (0.9, 0.4, 0.8, 0.0),  # falling
    (0.1, 0.4, 0.0, 0.25), (0.5, 0.4, 0.0, 1.0),                         # rising (towards 0)
])
def test_ramp(x, full, zero, expected):
    assert ramp(x, full, zero) == pytest.approx(expected)


@pytest.mark.parametrize("hyp, share, reward", [
    ("The dog runs in the park.", 1 / 6, 1.0),     # only "park" is shared: 1 of 6 words
    ("The dog läuft im Park.", 3 / 5, 0.5),        # half translated: ramp(0.6, 0.4, 0.8)
    ("Der Hund läuft im Park.", 1.0, 0.0),         # the untranslated copy
    ("der hund LÄUFT im park", 1.0, 0.0),          # case does not hide a copy
    ("", 0.0, 1.0),                                # nothing copied (length-guard judges emptiness)
])
def test_copy_guard_hand_computed(hyp, share, reward):
    src = "Der Hund läuft im Park."
    assert copied_share(src, hyp) == pytest.approx(share)
    assert guard("copy-guard", src, hyp) == pytest.approx(reward)


def test_copy_guard_ignores_numbers_and_takes_its_thresholds():
    assert copied_share("Im Jahr 2024 waren es 17.", "In 2024 there were 17.") == 0.0
    half_copied = guard("copy-guard(lo=0.5, hi=0.7)", "Der Hund läuft im Park.", "The dog läuft im Park.")
    assert half_copied == pytest.approx(0.5)
    assert "lo:0.5|hi:0.7" in build_reward("copy-guard(lo=0.5, hi=0.7)").signature()


@pytest.mark.parametrize("spec, hyp, share, reward", [
    ("repeat-guard", "the cat sat on the mat", 0.0, 1.0),
    ("repeat-guard", "a b c d a b c d", 1.0, 0.0),                                 # a sentence said twice
    ("repeat-guard", "one two three four five six seven eight a b c d a b c d", 0.5, 0.5),  # 8 of 16 words
    ("repeat-guard(n=2)", "in a red shirt and in a blue shirt", 4 / 9, 1 - (4 / 9 - 0.25) / 0.5),
    ("repeat-guard", "", 0.0, 1.0),
])
def test_repeat_guard_hand_computed(spec, hyp, share, reward):
    n = 2 if "n=2" in spec else 4
    assert repeated_share(hyp, n) == pytest.approx(share)
    assert guard(spec, "egal", hyp) == pytest.approx(reward)


@pytest.mark.parametrize("spec, hyp, reward", [
    ("length-guard", "abcdefgh", 1.0),                 # ratio 1
    ("length-guard", "x" * 24, 0.5),                   # ratio 3: halfway from 2 to 4
    ("length-guard", "x" * 40, 0.0),                   # ratio 5: past 2 * max_ratio
    ("length-guard", "ab", 0.625),                     # ratio 0.25: 0.25 / 0.4
    ("length-guard", "", 0.0),
    ("length-guard(max_ratio=1.5)", "x" * 16, 1 - 0.5 / 1.5),  # ratio 2
    ("length-guard(min_ratio=0.5, max_ratio=3)", "x" * 24, 1.0),
])
def test_length_guard_hand_computed(spec, hyp, reward):
    assert guard(spec, "abcd efgh", hyp) == pytest.approx(reward)  # source: 8 characters besides spaces


def test_length_ratio_counts_characters_besides_spaces_and_handles_an_empty_source():
    assert length_ratio("ab  cd", " a b ") == 0.5
    assert guard("length-guard", "", "") == 1.0 and guard("length-guard", "  ", "runaway") == 0.0


@pytest.mark.parametrize("spec, message", [
    ("copy-guard(lo=0.9, hi=0.5)", "lo (0.9) must be below hi (0.5)"),
    ("copy-guard(hi=2)", "hi must be a number in [0, 1], got 2"),
    ("repeat-guard(n=0)", "n must be an integer >= 1"),
    ("repeat-guard(n=2.5)", "n must be an integer >= 1"),
    ("length-guard(max_ratio='long')", "max_ratio must be a number >= 0, got 'long'"),
    ("length-guard(ratio=2)",
     "reward 'length-guard' takes no parameter 'ratio'; its parameters: min_ratio, max_ratio"),
])
def test_bad_parameters_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        build_reward(spec)


@pytest.mark.parametrize("name, needs", [("copy-guard", ("hyp", "src")), ("repeat-guard", ("hyp",)),
                                         ("length-guard", ("hyp", "src"))])
def test_signatures_record_the_settings(name, needs):
    reward = build_reward(name)
    out = list(score_records([{"src": "ein Hund", "hyp": "a dog"}], reward))
    assert reward.needs == needs and out[0]["reward"] == 1.0
    assert out[0]["reward_sig"].startswith(name + "|") and "rest:" in out[0]["reward_sig"]
