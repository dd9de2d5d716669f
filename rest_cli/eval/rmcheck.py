"""Reward-model unit tests: does the reward prefer the true translation over broken ones?

ReST optimises whatever the reward rewards. The paper found its learned reward could be gamed
(repeating a sentence raised it) and tested the reward model for such failures before trusting
it. Each perturbation below is a cheap way to get a bad output; a sound reward scores the true
translation strictly higher than each.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from rest_cli.io.records import Record
from rest_cli.rewards import Reward, score_records


def _repeat(hyp: str, src: str, other_ref: str, rng: random.Random) -> str:
    return f"{hyp} {hyp}"


def _shuffle(hyp: str, src: str, other_ref: str, rng: random.Random) -> str:
    words = hyp.split()
    rng.shuffle(words)
    return " ".join(words)


def _truncate(hyp: str, src: str, other_ref: str, rng: random.Random) -> str:
    words = hyp.split()
    return " ".join(words[: len(words) // 2])


def _drop_words(hyp: str, src: str, other_ref: str, rng: random.Random, share: float = 0.3) -> str:
    words = hyp.split()
    dropped = set(rng.sample(range(len(words)), max(1, round(share * len(words))))) if words else set()
    return " ".join(w for i, w in enumerate(words) if i not in dropped)


def _copy_source(hyp: str, src: str, other_ref: str, rng: random.Random) -> str:
    return src


def _other_reference(hyp: str, src: str, other_ref: str, rng: random.Random) -> str:
    return other_ref


def _empty(hyp: str, src: str, other_ref: str, rng: random.Random) -> str:
    return ""


# name -> how to break a true translation, given its source and another pair's reference.
PERTURBATIONS: dict[str, Callable[[str, str, str, random.Random], str]] = {
    "repeat": _repeat, "shuffle": _shuffle, "truncate": _truncate, "drop-words": _drop_words,
    "copy-source": _copy_source, "other-reference": _other_reference, "empty": _empty,
}


@dataclass
class CheckResult:
    """One perturbation's outcome. With no pair it changed (`shuffle` on one-word references), the
    check tested nothing: its status is "n/a", `passed` is None, and it takes no part in a verdict."""

    perturbation: str
    pairs: int = 0          # pairs where the perturbation changed the output
    preferred: int = 0      # ... and the reward scored the true translation strictly higher
    mean_true: float = 0.0
    mean_perturbed: float = 0.0

    @property
    def rate(self) -> float:
        return self.preferred / self.pairs if self.pairs else float("nan")

    def passed(self, threshold: float) -> bool | None:
        """True or False against `threshold`; None when the check did not apply to any pair."""
        return self.rate >= threshold if self.pairs else None

    def as_dict(self, threshold: float) -> dict:
        passed = self.passed(threshold)
        applies = self.pairs > 0
        return {"perturbation": self.perturbation, "pairs": self.pairs, "preferred": self.preferred,
                "rate": round(self.rate, 4) if applies else None,
                "mean_true": round(self.mean_true, 4) if applies else None,
                "mean_perturbed": round(self.mean_perturbed, 4) if applies else None,
                "status": "n/a" if passed is None else "pass" if passed else "fail", "passed": passed}


def verdict(checks: list[dict]) -> bool | None:
    """The checks' verdict: False if any failed, else True if any applied, else None (nothing tested)."""
    applied = [c["passed"] for c in checks if c["passed"] is not None]
    return all(applied) if applied else None


def perturbed_pairs(pairs: list[Record], name: str, seed: int) -> list[tuple[Record, Record]]:
    """(true, perturbed) candidate records for one perturbation; unchanged outputs are left out."""
    rng = random.Random(f"{seed}:{name}")
    perturb = PERTURBATIONS[name]
    out = []
    for index, pair in enumerate(pairs):
        other = pairs[(index + 1 + rng.randrange(len(pairs) - 1)) % len(pairs)] if len(pairs) > 1 else pair
        broken = perturb(pair["ref"], pair["src"], other["ref"], rng)
        if broken != pair["ref"]:
            out.append(({**pair, "hyp": pair["ref"]}, {**pair, "hyp": broken}))
    return out


def _rewards(candidates: list[Record], reward: Reward) -> list[float]:
    return [r["reward"] for r in score_records(candidates, reward)]


def check_reward(reward: Reward, pairs: list[Record], names: list[str] | None = None,
                 seed: int = 0) -> list[CheckResult]:
    """Run each perturbation over `pairs` (records with `src` and `ref`) and count preferences."""
    results = []
    for name in names or list(PERTURBATIONS):
        both = perturbed_pairs(pairs, name, seed)
        true = _rewards([t for t, _ in both], reward)
        broken = _rewards([b for _, b in both], reward)
        result = CheckResult(name, pairs=len(both), preferred=sum(t > b for t, b in zip(true, broken)))
        if both:
            result.mean_true, result.mean_perturbed = sum(true) / len(true), sum(broken) / len(broken)
        results.append(result)
    return results
