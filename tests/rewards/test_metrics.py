import math

import pytest

from rest_cli.errors import RestError, UsageError
from rest_cli.rewards import Reward, build_reward, reward_names, score_records


def scores(name, pairs):
    return build_reward(name).score([{"hyp": h, "ref": r} for h, r in pairs])


def test_registry_lists_the_metric_rewards():
    assert {"chrf", "bleu", "ter", "exact"} <= set(reward_names())
    with pytest.raises(UsageError, match="unknown reward 'nope'"):
        build_reward("nope")


@pytest.mark.parametrize("name", ["chrf", "bleu", "ter", "exact"])
def test_a_perfect_match_scores_one_and_nothing_in_common_scores_zero(name):
    assert scores(name, [("the cat sat on the mat", "the cat sat on the mat"),
                         ("xyz", "the cat")]) == [1.0, 0.0]


def test_known_values():
    # TER: one insertion against 4 reference words = 25%.
    assert scores("ter", [("the cat sat", "the cat sat on")]) == [pytest.approx(0.75)]
    # TER above 100% is clipped at reward 0.
    assert scores("ter", [("a b c d e f", "x")]) == [0.0]
    # Sentence BLEU, effective order: 2/2 unigrams, 1/1 bigram, brevity penalty exp(1 - 3/2).
    assert scores("bleu", [("the cat", "the cat sat")]) == [pytest.approx(math.exp(1 - 1.5))]
    assert scores("exact", [(" a  b ", "a b"), ("a b", "a B")]) == [1.0, 0.0]


def test_chrf_matches_sacrebleu_scaled():
    from sacrebleu.metrics import CHRF
    hyp, ref = "Ein Hund läuft im Park.", "Ein Hund rennt durch den Park."
    assert scores("chrf", [(hyp, ref)]) == [pytest.approx(CHRF().sentence_score(hyp, [ref]).score / 100)]


def test_signature_names_metric_settings_and_versions():
    records = list(score_records([{"hyp": "a b", "ref": "a b"}], build_reward("chrf")))
    sig = records[0]["reward_sig"]
    assert sig.startswith("chrf|nrefs:1|") and "nc:6" in sig and "version:" in sig and "rest:" in sig
    assert records[0]["reward_name"] == "chrf"


class Broken(Reward):
    name = "broken"

    def __init__(self, values):
        self.values = values

    def score(self, records):
        return self.values[: len(records)] if self.values != "short" else []

    def signature(self):
        return "broken"


@pytest.mark.parametrize("values, message", [
    ("short", "returned 0 values for 2 records"), ([0.5, math.nan], "nan"), ([0.5, 1.5], "1.5"),
])
def test_a_misbehaving_reward_fails_before_any_record_of_its_batch_is_yielded(values, message):
    records = [{"hyp": "a"}, {"hyp": "b"}]
    stream = score_records(records, Broken(values), batch_size=2)
    with pytest.raises(RestError, match=message):
        next(stream)
    assert "reward" not in records[0]


def test_batches_are_scored_in_order_across_batch_boundaries():
    records = [{"hyp": "a", "ref": "a" if i % 2 else "b", "i": i} for i in range(7)]
    out = list(score_records(records, build_reward("exact"), batch_size=3))
    assert [(r["i"], r["reward"]) for r in out] == [(i, float(i % 2)) for i in range(7)]


@pytest.mark.parametrize("name", ["chrf", "bleu", "ter"])
def test_signature_before_any_score_is_the_one_after(name):
    # rest rmcheck asks for it even when no pair was scored (every check not applicable)
    before = build_reward(name).signature()
    scored = build_reward(name)
    scored.score([{"hyp": "a dog", "ref": "a cat"}])
    assert before == scored.signature() and "|nrefs:1|" in before
