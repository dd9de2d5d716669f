"""Best-of-N: keep each source's highest-reward candidate, with the spread of its N rewards."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rest_cli.errors import RestError
from rest_cli.io.records import Record, is_reference


def best_of_group(group: list[Record]) -> Record:
    """The highest-reward candidate of one source (ties: the earlier), with `best_of` (N),
    `reward_mean` and `reward_max` of the group's rewards."""
    rewards = [r["reward"] for r in group]
    best = max(range(len(group)), key=lambda i: (rewards[i], -i))
    return {**group[best], "best_of": len(group), "reward_mean": math.fsum(rewards) / len(rewards),
            "reward_max": rewards[best]}


@dataclass
class BestOfNStats:
    sources: int = 0
    best_total: float = 0.0
    mean_total: float = 0.0

    def summary(self) -> str:
        if not self.sources:
            return "0 sources"
        return (f"{self.sources} sources: mean best reward {self.best_total / self.sources:.4f}, "
                f"mean reward of all candidates {self.mean_total / self.sources:.4f}")


def best_of_n(groups: Iterable[list[Record]], stats: BestOfNStats) -> Iterator[Record]:
    """One record per group of scored candidates: its best."""
    for group in groups:
        best = best_of_group(group)
        stats.sources += 1
        stats.best_total += best["reward_max"]
        stats.mean_total += best["reward_mean"]
        yield best


def expected_best(rewards: list[float], n: int) -> float:
    """Expected max reward of n candidates drawn without replacement from these N.

    Sampled hypotheses come back sorted by score, so "the first n" would be a biased subset;
    this averages over all subsets of size n instead: the i-th smallest reward is the max of
    C(i-1, n-1) of the C(N, n) subsets.
    """
    ordered = sorted(rewards)
    total = math.comb(len(ordered), n)
    return math.fsum(r * math.comb(i, n - 1) for i, r in enumerate(ordered)) / total


def best_of_n_curve(groups: Iterable[list[Record]], sizes: list[int]) -> dict:
    """Mean over sources of the expected best reward among n samples, for each n in `sizes`.

    Candidates with `origin: "ref"` (references mixed in by `rest sample --include-ref`) are
    not samples of the policy and are left out.
    """
    totals = dict.fromkeys(sizes, 0.0)
    sources = 0
    for group in groups:
        rewards = [r["reward"] for r in group if not is_reference(r)]
        if len(rewards) < max(sizes):
            raise RestError(f"source {group[0].get('id')!r} has {len(rewards)} samples, "
                            f"fewer than {max(sizes)}")
        sources += 1
        for n in sizes:
            totals[n] += expected_best(rewards, n)
    return {"n": sizes,
            "mean_best_reward": [round(totals[n] / sources, 6) if sources else None for n in sizes],
            "sources": sources}
