"""Reference-based rewards from sacrebleu's sentence-level metrics, scaled to [0, 1]."""

from __future__ import annotations

from rest_cli import __version__
from rest_cli.io.records import Record
from rest_cli.rewards.base import Reward, register


def _clip(value: float) -> float:
    # sacrebleu's floating point can land a hair outside [0, 100]
    # (BLEU of a perfect match: 100.00000000000004).
    return min(1.0, max(0.0, value))


class _SacrebleuReward(Reward):
    """A sacrebleu sentence metric against the record's `ref`."""

    needs = ("hyp", "ref")
    scale = "x/100"

    def __init__(self):
        self.metric = self._make_metric()

    def _make_metric(self):
        raise NotImplementedError

    def _to_unit(self, score: float) -> float:
        return _clip(score / 100.0)

    def score(self, records: list[Record]) -> list[float]:
        sentence_score = self.metric.sentence_score
        return [self._to_unit(sentence_score(r["hyp"], [r["ref"]]).score) for r in records]

    def signature(self) -> str:
        if not hasattr(self.metric, "num_refs"):  # sacrebleu learns it when scoring; here it is always 1
            self.metric.num_refs = 1  # (rmcheck asks for the signature even when no pair was scored)
        return f"{self.name}|{self.metric.get_signature()}|scale:{self.scale}|rest:{__version__}"


@register("chrf")
class ChrF(_SacrebleuReward):
    """Sentence chrF (character 6-grams, beta 2) / 100."""

    name = "chrf"

    def _make_metric(self):
        from sacrebleu.metrics import CHRF
        return CHRF()


@register("bleu")
class SentenceBLEU(_SacrebleuReward):
    """Sentence BLEU with effective order (sacrebleu's sentence-level smoothing) / 100."""

    name = "bleu"

    def _make_metric(self):
        from sacrebleu.metrics import BLEU
        return BLEU(effective_order=True)


@register("ter")
class InverseTER(_SacrebleuReward):
    """max(0, 1 - TER/100): an edit rate turned into a reward, 1 for a perfect match."""

    name = "ter"
    scale = "max(0,1-x/100)"

    def _make_metric(self):
        from sacrebleu.metrics import TER
        return TER()

    def _to_unit(self, score: float) -> float:
        return _clip(1.0 - score / 100.0)


@register("exact")
class ExactMatch(Reward):
    """1 if hypothesis and reference are equal once runs of white space are folded, else 0."""

    name = "exact"
    needs = ("hyp", "ref")

    def score(self, records: list[Record]) -> list[float]:
        return [float(r["hyp"].split() == r["ref"].split()) for r in records]

    def signature(self) -> str:
        return f"exact|norm:whitespace|rest:{__version__}"
