"""Measures of N sampled outputs per source, for tasks with a verifiable reward (ReST-EM):
pass@k and majority voting (maj@m).

A sample counts as correct when its reward is at least `correct_at` (1.0 by default: a binary
reward's full marks). No torch here: these are counts over scored records.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from rest_cli.errors import UsageError
from rest_cli.io.records import Record
from rest_cli.io.shards import derived_seed
from rest_cli.select.filters import random_subset


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k for one source with `c` correct of `n` samples (Chen et al.
    2021): the chance that k of the n, drawn without replacement, hold a correct one,
    1 - C(n-c, k) / C(n, k).

    Python's integers are exact and their true division is correctly rounded, so the binomials
    never overflow or lose precision (the product form would round at every factor).
    """
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def vote_key(record: Record) -> tuple | None:
    """What a sample votes for: its `hyp_answer` (the normalised final answer an answer reward
    extracts; null: it gave none, and does not vote), else its `hyp` without surrounding space.

    Keys are tagged so an answer never meets a whole text; an answer is keyed as its JSON, so
    that 1 and "1" differ and a list is a key too.
    """
    if "hyp_answer" in record:
        answer = record["hyp_answer"]
        return None if answer is None else ("answer", orjson.dumps(answer))
    return ("hyp", record["hyp"].strip())


def majority_vote(samples: Sequence[Record]) -> Record | None:
    """The first sample of the most common vote; a tie goes to the vote whose first sample came
    first. None when no sample votes."""
    keys = [vote_key(sample) for sample in samples]
    votes = Counter(key for key in keys if key is not None)
    if not votes:
        return None
    # Counter keeps first-seen order, and most_common keeps that order among equal counts.
    winner, _ = votes.most_common(1)[0]
    return samples[keys.index(winner)]


@dataclass(frozen=True)
class SampleMeasures:
    """Which measures of N samples per source to report: pass@k for each k in `pass_at`, maj@m
    for each m in `majority`, a sample counting as correct when its reward >= `correct_at`."""

    pass_at: tuple[int, ...] = ()
    majority: tuple[int, ...] = ()
    correct_at: float = 1.0

    def __post_init__(self):
        for option, sizes in (("--pass-at", self.pass_at), ("--majority", self.majority)):
            if any(size < 1 for size in sizes):
                raise UsageError(f"{option} takes whole numbers >= 1, got {', '.join(map(str, sizes))}")
        if not 0.0 <= self.correct_at <= 1.0:
            raise UsageError(f"--correct-at must be in [0, 1], got {self.correct_at:g}")

    @property
    def asked(self) -> bool:
        return bool(self.pass_at or self.majority)

    @property
    def most(self) -> int:
        """The most samples of one source any measure needs (0 when none is asked)."""
        return max((*self.pass_at, *self.majority), default=0)

    def wanting(self, n: int) -> str | None:
        """The option that needs more than `n` samples of a source (`--pass-at 16`), or None.

        pass@k for k > n has no unbiased estimate from n samples, and maj@m for m > n would be a
        vote of fewer than m: both are refused rather than quietly measured on fewer.
        """
        if self.most <= n:
            return None
        return f"{'--pass-at' if self.most in self.pass_at else '--majority'} {self.most}"

    def check_samples(self, n: int, where: str) -> None:
        """Refuse measures that need more than the `n` samples that `where` (a source) has."""
        if option := self.wanting(n):
            raise UsageError(f"{option} needs at least {self.most} samples of each source, but {where} "
                             f"has {n}")

    def is_correct(self, sample: Record | None) -> bool:
        """Whether a scored sample counts as correct (None, no sample, does not)."""
        return sample is not None and sample["reward"] >= self.correct_at

    def measure(self, sources: Sequence[Sequence[Record]]) -> dict:
        """The means over `sources` (each a list of one source's scored samples) of the measures
        asked: {"pass_at": {"k": value}, "majority": {"m": value}}, keys as in the JSON report."""
        for samples in sources:
            self.check_samples(len(samples), f"source {samples[0].get('id')!r}" if samples else "a source")
        figures = {}
        if self.pass_at:
            figures["pass_at"] = {str(k): _mean([self._pass_at(s, k) for s in sources]) for k in self.pass_at}
        if self.majority:
            figures["majority"] = {str(m): _mean([self._majority(s, m) for s in sources])
                                   for m in self.majority}
        return figures

    def _pass_at(self, samples: Sequence[Record], k: int) -> float:
        return pass_at_k(len(samples), sum(map(self.is_correct, samples)), k)

    def _majority(self, samples: Sequence[Record], m: int) -> bool:
        """Whether the vote of m samples of the source is correct. With more than m, the m are drawn
        at random (seeded by the source's id): samples come sorted by log-probability, so the first
        m would be the policy's likeliest, not m independent draws."""
        if len(samples) > m:
            samples = random_subset(list(samples), m, derived_seed(0, "majority", m, samples[0].get("id")))
        return self.is_correct(majority_vote(samples))


def _mean(values: Sequence[float]) -> float | None:
    return round(math.fsum(values) / len(values), 6) if values else None
