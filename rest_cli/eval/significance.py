"""Is a difference between two systems real? Paired bootstrap resampling over the sources.

For corpus BLEU and chrF, sacrebleu's own paired bootstrap test (`sacrebleu --paired-bs`: the
Moses script's test, Koehn 2004), so that the figures are the ones sacrebleu prints for the same
files. For each mean reward, the same test on the same resamples: sacrebleu's seed
(`SACREBLEU_SEED`, 12345 by default) and generator draw the same sets of sources, each system's
mean is taken over each set, and

- the 95% confidence interval is sacrebleu's: the bootstrap mean ± half the width between the
  2.5th and 97.5th percentiles of the resampled figure;
- the p-value is sacrebleu's: the share of resamples whose absolute difference, centred on its
  bootstrap mean, exceeds the observed absolute difference ((count + 1) / (resamples + 1)). It
  says whether the two differ, not which is better: the delta's sign says that. One departure:
  where the observed difference is exactly 0, the p-value is 1. (For identical outputs sacrebleu's
  rule gives its smallest value, 1 / (resamples + 1): every resampled difference is 0, and none
  exceeds 0.)

With `SACREBLEU_SEED=none` both draw fresh entropy: then the rewards' resamples and sacrebleu's
are separate draws. Under MIN_SOURCES sources there is no test at all: with one source every
resample is the same, and any difference would look certain.

Every system is compared with the first, source by source, so all must be outputs of the same
sources in the same order (rest eval checks that before measuring).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000  # sacrebleu's default for --paired-bs
MIN_SOURCES = 10  # fewer, and resampling says nothing: no intervals, no p-values
ALPHA = 0.05  # the significance level the reward-hacking flag uses, as sacrebleu marks with "*"


@dataclass(frozen=True)
class Outputs:
    """What a paired test resamples of one system: its output per source, the references (None
    when a source has none), and each reward's value per source."""

    hyps: Sequence[str]
    refs: Sequence[str] | None
    rewards: dict[str, Sequence[float]]


@dataclass(frozen=True)
class Estimate:
    """A figure's bootstrap estimate: mean ± ci is its 95% interval; p_value against the first
    system (None for the first itself)."""

    mean: float
    ci: float
    p_value: float | None = None

    def as_json(self) -> dict:
        return {"mean": round(self.mean, 6), "ci": round(self.ci, 6),
                **({} if self.p_value is None else {"p_value": round(self.p_value, 6)})}


def sacrebleu_seed() -> int | None:
    """The seed sacrebleu's tests use: SACREBLEU_SEED, 12345 unless set; `none` draws fresh entropy."""
    seed = os.environ.get("SACREBLEU_SEED", "12345")
    return None if seed.lower() == "none" else int(seed)


def resample_indices(sources: int, resamples: int) -> np.ndarray:
    """The sets of sources each resample draws (with replacement), exactly as sacrebleu draws them."""
    return np.random.default_rng(sacrebleu_seed()).choice(sources, size=(resamples, sources), replace=True)


def confidence(resampled: np.ndarray) -> tuple[float, float]:
    """sacrebleu's 95% interval of a resampled figure: (bootstrap mean, half-width)."""
    from sacrebleu.significance import estimate_ci

    mean, ci = estimate_ci(resampled)
    return float(mean), float(ci)


def p_value(resampled_base: np.ndarray, resampled_other: np.ndarray, observed: float) -> float:
    """How often the centred resampled absolute difference exceeds the observed one: sacrebleu's rule
    (1 for no difference at all)."""
    if observed == 0:
        return 1.0
    differences = np.abs(resampled_other - resampled_base)
    exceeding = int(np.sum(differences - differences.mean() > abs(observed)))
    return (exceeding + 1) / (len(differences) + 1)


def reward_estimates(systems: list[Outputs], name: str, resamples: int = RESAMPLES) -> list[Estimate]:
    """The mean reward `name` of each system, estimated over the same resamples of the sources."""
    values = [np.asarray(system.rewards[name], dtype=np.float64) for system in systems]
    indices = resample_indices(len(values[0]), resamples)
    resampled = [value[indices].mean(axis=1) for value in values]
    base = resampled[0]
    estimates = [Estimate(*confidence(base))]
    for value, other in zip(values[1:], resampled[1:]):
        observed = float(value.mean() - values[0].mean())
        estimates.append(Estimate(*confidence(other), p_value(base, other, observed)))
    return estimates


def corpus_estimates(systems: list[Outputs], resamples: int = RESAMPLES) -> dict[str, list[Estimate]]:
    """Corpus BLEU and chrF by sacrebleu's paired bootstrap test, {"bleu": [...], "chrf": [...]}."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    named = [(str(k), list(system.hyps)) for k, system in enumerate(systems)]
    metrics = {"bleu": BLEU(), "chrf": CHRF()}
    _, scores = PairedTest(named, metrics, [list(systems[0].refs)], test_type="bs", n_samples=resamples)()
    columns = [column for name, column in scores.items() if name != "System"]  # in the order of `metrics`
    return {key: [Estimate(float(r.mean), float(r.ci), None if k == 0 else _no_difference_is_1(r, column[0]))
                  for k, r in enumerate(column)]
            for key, column in zip(metrics, columns)}


def _no_difference_is_1(result, base) -> float:
    return 1.0 if result.score == base.score else float(result.p_value)


def paired_bootstrap(systems: list[Outputs], resamples: int = RESAMPLES) -> list[dict]:
    """Each system's estimates as JSON: {"rewards": {name: estimate}, "bleu": ..., "chrf": ...}, BLEU
    and chrF where every system has references; the first system's have no p-value."""
    found: list[dict] = [{"resamples": resamples, "rewards": {}} for _ in systems]
    for name in systems[0].rewards:
        for figures, estimate in zip(found, reward_estimates(systems, name, resamples)):
            figures["rewards"][name] = estimate.as_json()
    if all(system.refs is not None for system in systems):
        for metric, estimates in corpus_estimates(systems, resamples).items():
            for figures, estimate in zip(found, estimates):
                figures[metric] = estimate.as_json()
    return found
