"""Best-of-N: keep each source's highest-reward candidate, with the spread of its N rewards."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .records import Record


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
