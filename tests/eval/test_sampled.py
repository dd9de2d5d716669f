import importlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rest_cli.errors import UsageError
from rest_cli.eval.evaluate import sample_figures
from rest_cli.eval.sampled import SampleMeasures, majority_vote, pass_at_k, vote_key
from rest_cli.rewards import Reward


def test_pass_at_k_by_hand():
    # n=5 samples, c=2 correct, so 3 wrong:
    # pass@1 = 1 - C(3,1)/C(5,1) = 1 - 3/5  = 0.4
    # pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    # pass@3 = 1 - C(3,3)/C(5,3) = 1 - 1/10 = 0.9
    # pass@4: any 4 of the 5 hold a correct one (only 3 are wrong), so 1.
    assert [pass_at_k(5, 2, k) for k in (1, 2, 3, 4, 5)] == pytest.approx([0.4, 0.7, 0.9, 1.0, 1.0])
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0


def test_pass_at_k_is_exact_where_binomials_overflow_a_float():
    # C(2000, 1000) is about 2e600; the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i) agrees.
    n, c, k = 2000, 3, 1000
    product = 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
    assert pass_at_k(n, c, k) == pytest.approx(product, rel=1e-12)
    assert pass_at_k(100_000, 1, 1) == pytest.approx(1e-5, rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(3, 1, 4), (3, 1, 0), (3, 4, 1), (3, -1, 1)])
def test_pass_at_k_refuses_what_it_cannot_estimate(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 60), data=st.data())
def test_pass_at_k_grows_with_k_and_with_c(n, data):
    c, k = data.draw(st.integers(0, n)), data.draw(st.integers(1, n))
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    if k == 1:
        assert value == pytest.approx(c / n)  # pass@1 is the share correct
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value


def sample(hyp, reward=0.0, **extra):
    return {"id": "s", "hyp": hyp, "reward": reward, **extra}


def test_vote_key_prefers_the_answer_and_strips_the_text():
    assert vote_key(sample(" 42 \n")) == vote_key(sample("42"))
    assert vote_key(sample("so it is 4", hyp_answer="4")) == vote_key(sample("4 it is", hyp_answer="4"))
    assert vote_key(sample("4", hyp_answer="4")) != vote_key(sample("4"))  # an answer never meets a text
    assert vote_key(sample("4", hyp_answer=4)) != vote_key(sample("4", hyp_answer="4"))
    assert vote_key(sample("no idea", hyp_answer=None)) is None


def test_majority_tie_goes_to_the_vote_seen_first():
    votes = [sample("a", 0.0), sample("b", 1.0), sample("b ", 1.0), sample("a", 0.0)]
    assert majority_vote(votes) is votes[0]
    assert majority_vote(votes[1:]) is votes[1]
    assert majority_vote(votes + [sample("b", 1.0)]) is votes[1]  # b now has three


def test_majority_ignores_samples_without_an_answer():
    # Three samples gave no answer; of the two that did, "7" is the majority.
    votes = [sample("?", hyp_answer=None)] * 3 + [sample("x", 1.0, hyp_answer="7"),
                                                  sample("y", 0.0, hyp_answer="6")]
    assert majority_vote(votes) is votes[3]
    assert majority_vote([sample("?", hyp_answer=None)] * 2) is None
    assert majority_vote([]) is None


def scored_sources():
    """Two sources of 4 samples; rewards 1/0 with answers. Source a: 2 correct, majority "4" (right).
    Source b: 1 correct, majority "6" (wrong); one sample gave no answer."""
    a = [sample(h, r, id="a", hyp_answer=ans) for h, r, ans in
         [("4", 1.0, "4"), ("5", 0.0, "5"), ("four: 4", 1.0, "4"), ("3", 0.0, "3")]]
    b = [sample(h, r, id="b", hyp_answer=ans) for h, r, ans in
         [("6", 0.0, "6"), ("?", 0.0, None), ("7", 1.0, "7"), ("=6", 0.0, "6")]]
    return [a, b]


def test_measures_average_over_sources():
    figures = SampleMeasures(pass_at=(1, 2), majority=(4,)).measure(scored_sources())
    # pass@1: (2/4 + 1/4) / 2; pass@2: ((1 - C(2,2)/C(4,2)) + (1 - C(3,2)/C(4,2))) / 2 = (5/6 + 1/2) / 2
    assert figures == {"pass_at": {"1": 0.375, "2": pytest.approx(2 / 3, abs=1e-6)},
                       "majority": {"4": 0.5}}


def test_correct_at_sets_what_counts_as_correct():
    sources = [[sample("a", 0.6), sample("b", 0.4)]]
    assert SampleMeasures(pass_at=(1,)).measure(sources) == {"pass_at": {"1": 0.0}}
    assert SampleMeasures(pass_at=(1,), correct_at=0.5).measure(sources) == {"pass_at": {"1": 0.5}}


def test_majority_of_fewer_than_the_samples_is_a_seeded_draw():
    measures = SampleMeasures(majority=(3,))
    sources = [[sample(h, float(h == "r"), id=i) for h in "rrwwwrrw"] for i in range(40)]
    once, again = measures.measure(sources), measures.measure(sources)
    assert once == again and 0.0 < once["majority"]["3"] < 1.0  # drawn, not the first three (r r w)


@pytest.mark.parametrize("measures, option", [(SampleMeasures(pass_at=(1, 4)), "--pass-at 4"),
                                              (SampleMeasures(pass_at=(2,), majority=(5,)), "--majority 5")])
def test_more_samples_than_a_source_has_is_a_usage_error(measures, option):
    assert measures.wanting(3) == option and measures.wanting(5) is None
    with pytest.raises(UsageError, match=f"^{option} needs at least .* but source 'x' has 3$"):
        measures.check_samples(3, "source 'x'")


@pytest.mark.parametrize("spec, message", [({"pass_at": (0,)}, "--pass-at takes whole numbers >= 1"),
                                           ({"majority": (2, -1)}, "--majority takes"),
                                           ({"correct_at": 1.5}, "--correct-at must be in")])
def test_bad_measures_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        SampleMeasures(**spec)


class AnswerReward(Reward):
    """Gives `hyp_answer` (the last word) as it scores, as an answer reward does; 1 if it is the ref.

    `as_scores`: through the rewards' `Scores` (values and fields to add); else by writing on the
    records it is shown, as a `py:` function may.
    """

    name = "last-word"
    needs = ("hyp", "ref")

    def __init__(self, as_scores: bool):
        self.as_scores = as_scores

    def score(self, records):
        answers = [{"hyp_answer": r["hyp"].split()[-1] if r["hyp"].split() else None} for r in records]
        values = [float(a["hyp_answer"] == r["ref"]) for a, r in zip(answers, records)]
        if self.as_scores:
            return Scores(values, answers)
        for record, answer in zip(records, answers):
            record.update(answer)
        return values

    def signature(self):
        return "last-word"


# Scores is being added to rewards/base.py beside this work; test through it where it is there.
Scores = getattr(importlib.import_module("rest_cli.rewards.base"), "Scores", None)


@pytest.mark.parametrize("as_scores", [False, pytest.param(True, marks=pytest.mark.skipif(
    Scores is None, reason="rewards.base has no Scores"))])
def test_majority_votes_by_the_answer_a_reward_adds_while_scoring(as_scores):
    # By whole texts, all four differ and the first, "5", would win: the answers make "4" the majority.
    candidates = [{"id": "q", "ref": "4", "hyp": h} for h in ("5", "it is 4", "so 4", "maybe")]
    measures = SampleMeasures(pass_at=(1,), majority=(4,))
    figures = sample_figures(candidates, [AnswerReward(as_scores)], measures)
    assert figures == {"samples": 4, "rewards": {"last-word": 0.5}, "correct_at": 1.0,
                       "pass_at": {"last-word": {"1": 0.5}}, "majority": {"last-word": {"4": 1.0}}}
    assert "hyp_answer" not in candidates[0]  # copies were scored
