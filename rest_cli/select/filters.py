"""The Improve step's filters: which scored candidates are kept for fine-tuning.

A global threshold works record by record (ReST's F(x, y; tau) = 1[R(x, y) > tau]).
Per-source filters (percentile, gamma, top-k, de-duplication, a cap on the candidates kept per
source) look at all candidates of one source, so they read a stream grouped by `id` and hold one
group at a time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from rest_cli.errors import UsageError
from rest_cli.io.records import Record, RecordReader, is_reference, iter_groups
from rest_cli.io.shards import derived_seed

# What a filter does with the references `rest sample --include-ref` mixes in (`origin: ref`):
# `filter` judges them as candidates (ReST's equation 3: the original data must pass the threshold
# too); `keep` always keeps them and leaves them out of every per-source figure, so that a
# reference-based reward (chrF of a reference against itself is 1.0) does not set the bar its own
# source's samples must reach; `drop` trains on the policy's samples only.
REFERENCE_MODES = ("filter", "keep", "drop")


@dataclass(frozen=True)
class FilterSpec:
    """What to keep. Criteria combine: a candidate must pass every threshold given, then
    `top_k` keeps the best survivors of each source, then `max_per_source` keeps a random subset
    of what is left. `dedup` drops repeated hypotheses of a source first (keeping the first), so
    thresholds, top-k and the cap see distinct candidates."""

    tau: float | None = None          # keep reward > tau
    percentile: float | None = None   # keep reward >= the P-th percentile of the source's rewards
    gamma: float | None = None        # keep reward >= gamma*max + (1-gamma)*mean of the source
    top_k: int | None = None          # keep the k best of the source (ties: earlier first)
    dedup: bool = False
    max_per_source: int | None = None  # keep at most this many of the source, drawn at random (ReST-EM)
    seed: int = 0                     # of the draw; each source's own seed comes from it and its id
    references: str = "filter"        # one of REFERENCE_MODES

    def __post_init__(self):
        if self.references not in REFERENCE_MODES:
            raise UsageError(f"--references must be one of {', '.join(REFERENCE_MODES)}, "
                             f"got {self.references!r}")
        _check_range("--tau", self.tau, 0.0, 1.0)
        _check_range("--percentile", self.percentile, 0.0, 100.0)
        _check_range("--gamma", self.gamma, 0.0, 1.0)
        for option, value in (("--top-k", self.top_k), ("--max-per-source", self.max_per_source)):
            if value is not None and value < 1:
                raise UsageError(f"{option} must be at least 1, got {value}")
        if not (self.per_source or self.tau is not None or self.references == "drop"):
            raise UsageError("give a filter: --tau, --percentile, --gamma, --top-k, --dedup, "
                             "--max-per-source or --references drop")

    @property
    def per_source(self) -> bool:
        return (self.percentile is not None or self.gamma is not None or self.top_k is not None
                or self.dedup or self.max_per_source is not None)

    def fields(self) -> tuple[str, ...]:
        """The record fields this filter reads."""
        return ("reward",) + (("id",) if self.per_source else ()) + (("hyp",) if self.dedup else ())


def _check_range(option: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not (low <= value <= high):
        raise UsageError(f"{option} must be in [{low:g}, {high:g}], got {value:g}")


def percentile_threshold(rewards: list[float], percentile: float) -> float:
    """The P-th percentile of rewards, linearly interpolated (numpy's default)."""
    import numpy

    return float(numpy.percentile(rewards, percentile))


def gamma_threshold(rewards: list[float], gamma: float) -> float:
    """gamma*max + (1-gamma)*mean; capped at max so rounding in the mean never empties a source."""
    best = max(rewards)
    mean = math.fsum(rewards) / len(rewards)
    return min(gamma * best + (1.0 - gamma) * mean, best)


def dedup_hypotheses(group: list[Record]) -> list[Record]:
    """Drop candidates whose `hyp` repeats an earlier one of the same source."""
    seen: set[str] = set()
    unique = []
    for record in group:
        if record["hyp"] not in seen:
            seen.add(record["hyp"])
            unique.append(record)
    return unique


def top_k(group: list[Record], k: int) -> list[Record]:
    """The k highest-reward candidates, in their original order; ties go to the earlier."""
    ranked = sorted(range(len(group)), key=lambda i: -group[i]["reward"])[:k]
    return [group[i] for i in sorted(ranked)]


def random_subset(group: list[Record], k: int, seed: int) -> list[Record]:
    """k records of `group` drawn at random without replacement (all when it has no more than k),
    in their original order: the same seed and group give the same subset."""
    if len(group) <= k:
        return list(group)
    chosen = random.Random(seed).sample(range(len(group)), k)
    return [group[i] for i in sorted(chosen)]


def filter_group(group: list[Record], spec: FilterSpec) -> list[Record]:
    """Apply `spec` to the candidates of one source; order is kept."""
    if spec.references == "filter":
        return _filter_candidates(group, spec)
    refs = [r for r in group if is_reference(r)]
    samples = [r for r in group if not is_reference(r)]
    if spec.references == "drop":
        return _filter_candidates(samples, spec)
    if spec.dedup:  # a sample that repeats its reference would train on the reference twice
        reference_texts = {ref["hyp"] for ref in refs}
        samples = [r for r in samples if r["hyp"] not in reference_texts]
    kept = {id(r) for r in refs} | {id(r) for r in _filter_candidates(samples, spec)}
    return [r for r in group if id(r) in kept]


def _filter_candidates(group: list[Record], spec: FilterSpec) -> list[Record]:
    if not group:
        return []
    if spec.dedup:
        group = dedup_hypotheses(group)
    rewards = [r["reward"] for r in group]
    floor = -math.inf
    if spec.percentile is not None:
        floor = max(floor, percentile_threshold(rewards, spec.percentile))
    if spec.gamma is not None:
        floor = max(floor, gamma_threshold(rewards, spec.gamma))
    tau = -math.inf if spec.tau is None else spec.tau
    kept = [r for r in group if r["reward"] > tau and r["reward"] >= floor]
    if spec.top_k is not None:
        kept = top_k(kept, spec.top_k)
    if spec.max_per_source is not None and kept:
        # Seeded by the source's id, not its position: shards and the order of sources never change it.
        seed = derived_seed(spec.seed, "max-per-source", kept[0]["id"])
        kept = random_subset(kept, spec.max_per_source, seed)
    return kept


# Improve data that is more than this share references is mostly behaviour cloning again: the
# policy's own samples, what ReST learns from, are the minority (issue seen at N=2 on Multi30k).
MOSTLY_REFERENCES = 0.5


def mostly_references(share: float | None) -> bool:
    """Whether kept data with this share of references (None: no references in the input) is mostly BC."""
    return share is not None and share > MOSTLY_REFERENCES


def more_samples_advice(every_reference_kept: bool) -> str:
    """How to make the policy's own samples most of the Improve data."""
    if every_reference_kept:  # --references keep, or every reference passed: one sample a source only ties
        return ("every reference is kept, so the samples outnumber them only where a source keeps two or "
                "more: sample more candidates per source (N) or keep more of them per source (a lower "
                "percentile or gamma)")
    return ("sample more candidates per source (N) and filter per source (percentile or gamma) with "
            "--references keep, which keeps each reference without letting it set its samples' bar")


@dataclass
class FilterStats:
    """What a filter run did, for the summary on stderr and `--stats`.

    References mixed in by `rest sample --include-ref` (`origin: ref`) are counted apart from
    the policy's samples, so a user sees which of the two the Improve step will train on.
    """

    records_in: int = 0
    records_out: int = 0
    sources: int = 0
    empty_sources: int = 0
    reward_in: float = 0.0
    reward_out: float = 0.0
    refs_in: int = 0
    refs_out: int = 0
    ref_reward_out: float = 0.0

    def add(self, group: list[Record], kept: list[Record]) -> None:
        self.records_in += len(group)
        self.records_out += len(kept)
        self.sources += 1
        self.empty_sources += not kept
        self.reward_in += math.fsum(r["reward"] for r in group)
        self.reward_out += math.fsum(r["reward"] for r in kept)
        self.refs_in += sum(is_reference(r) for r in group)
        kept_refs = [r["reward"] for r in kept if is_reference(r)]
        self.refs_out += len(kept_refs)
        self.ref_reward_out += math.fsum(kept_refs)

    @property
    def reference_share(self) -> float | None:
        """The share of kept records that are references; None when no reference was in the input."""
        return self.refs_out / self.records_out if self.refs_in and self.records_out else None

    def summary(self) -> str:
        share = 100.0 * self.records_out / self.records_in if self.records_in else 0.0
        return (f"{self.records_in:,} records in, {self.records_out:,} out ({share:.1f}%){self._origins()}; "
                f"{self.sources:,} sources, {self.empty_sources:,} left with no candidate; "
                f"mean reward {_mean(self.reward_in, self.records_in)} in, "
                f"{_mean(self.reward_out, self.records_out)} out")

    def _origins(self) -> str:
        if self.reference_share is None:
            return ""
        samples = self.records_out - self.refs_out
        return (f": {samples:,} samples ({100 * (1 - self.reference_share):.1f}%, mean reward "
                f"{_mean(self.reward_out - self.ref_reward_out, samples)}) and {self.refs_out:,} references "
                f"({100 * self.reference_share:.1f}%, {_mean(self.ref_reward_out, self.refs_out)})")

    def references_warning(self) -> str | None:
        """A warning when most of what passed are references: fine-tuning on it is mostly BC again."""
        if not mostly_references(self.reference_share):
            return None
        return (f"references are {100 * self.reference_share:.0f}% of the kept records: training on them "
                f"is mostly more behaviour cloning, not learning from the policy's own samples; "
                f"{more_samples_advice(self.refs_out == self.refs_in)}")

    def as_dict(self) -> dict:
        """The counts and means, for `rest filter --stats` (and the loop's report)."""
        samples_out = self.records_out - self.refs_out
        return {"records_in": self.records_in, "records_out": self.records_out, "sources": self.sources,
                "empty_sources": self.empty_sources, "references_in": self.refs_in,
                "references_out": self.refs_out, "samples_out": samples_out,
                "reference_share": self.reference_share,
                "mean_reward_in": _ratio(self.reward_in, self.records_in),
                "mean_reward_out": _ratio(self.reward_out, self.records_out),
                "mean_reward_samples_out": _ratio(self.reward_out - self.ref_reward_out, samples_out),
                "mean_reward_references_out": _ratio(self.ref_reward_out, self.refs_out)}


def _ratio(total: float, count: int) -> float | None:
    return total / count if count else None


def _mean(total: float, count: int) -> str:
    return f"{total / count:.4f}" if count else "-"


def _filter_by_tau(reader: RecordReader, spec: FilterSpec, stats: FilterStats) -> Iterator[Record]:
    """The global threshold (and what to do with references), record by record in constant
    memory (the hot path of Improve).

    Sources are counted as runs of consecutive equal ids, for the summary only: an ungrouped
    stream is filtered correctly and merely counted loosely.
    """
    tau = -math.inf if spec.tau is None else spec.tau
    source, kept_in_source = _NO_ID, True
    for record in reader:
        reward = record["reward"]
        record_id = record.get("id", _NO_ID)
        if record_id is _NO_ID or record_id != source:
            stats.sources += 1
            stats.empty_sources += not kept_in_source
            source, kept_in_source = record_id, False
        is_ref = is_reference(record)
        stats.records_in += 1
        stats.reward_in += reward
        stats.refs_in += is_ref
        if _passes_tau(is_ref, reward, tau, spec.references):
            kept_in_source = True
            stats.records_out += 1
            stats.reward_out += reward
            if is_ref:
                stats.refs_out += 1
                stats.ref_reward_out += reward
            yield record
    stats.empty_sources += not kept_in_source


_NO_ID = object()


def _passes_tau(is_ref: bool, reward: float, tau: float, references: str) -> bool:
    if is_ref and references != "filter":
        return references == "keep"
    return reward > tau


def filter_records(reader: RecordReader, spec: FilterSpec, stats: FilterStats) -> Iterator[Record]:
    """Stream the records of `reader` that pass `spec`, counting into `stats`."""
    if not spec.per_source:
        yield from _filter_by_tau(reader, spec, stats)
        return
    for group in iter_groups(reader, reader=reader):
        kept = filter_group(group, spec)
        stats.add(group, kept)
        yield from kept
