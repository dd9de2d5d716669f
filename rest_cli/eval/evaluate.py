"""Evaluation: decode a held-out set with a policy, or take outputs already made, and measure them:
reward and other metrics side by side.

Reward gains are only trusted next to metrics the policy was not trained on: corpus BLEU and chrF
against references, length ratio and distinct-n. A reward that rises while BLEU or chrF falls is
flagged as likely reward hacking.

Tasks with a verifiable reward are also measured over N samples per source: pass@k and majority
voting (`sampled.py`), from a policy's samples or from a file of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from rest_cli.errors import InputError, UsageError
from rest_cli.eval.sampled import SampleMeasures
from rest_cli.eval.significance import ALPHA, MIN_SOURCES, Outputs, paired_bootstrap
from rest_cli.io.records import Record, RecordReader, id_key, is_reference, iter_groups
from rest_cli.rewards import Reward, score_records
from rest_cli.sampling import DecodeOptions, EngineOptions, Sampler, SampleStats

GREEDY = DecodeOptions(n=1, beam=1)
# What a result measured on outputs read from a file says in place of its decoding options.
GIVEN_HYP = "hyp given"
# Watches candidates go by (what they are, how many are expected): the CLI's progress display.
Tracker = Callable[[Iterable[Record], str, int], Iterable[Record]]


def scored(candidates: Iterable[Record], reward: Reward) -> list[Record]:
    """Copies of the candidates scored by `reward`, with any field its scoring adds (an answer
    reward's `hyp_answer`, say); the inputs stay as they are, for the next reward."""
    return list(score_records(({**c} for c in candidates), reward))


def mean_of(values: Sequence[float]) -> float:
    """The mean, summed exactly (fsum); NaN for no values."""
    return math.fsum(values) / len(values) if values else math.nan


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams over all n-grams of the outputs (diversity; collapses under hacking)."""
    ngrams = [tuple(words[i:i + n]) for words in (t.split() for t in texts)
              for i in range(len(words) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0


def reference_metrics(hyps: list[str], refs: list[str]) -> dict:
    """Corpus BLEU and chrF with sacrebleu signatures, and the hypothesis/reference length ratio."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    bleu_score, chrf_score = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    return {"bleu": round(bleu_score.score, 4), "bleu_sig": str(bleu.get_signature()),
            "chrf": round(chrf_score.score, 4), "chrf_sig": str(chrf.get_signature()),
            "length_ratio": round(bleu_score.ratio, 4)}


def diversity(hyps: Sequence[str]) -> dict:
    """distinct-1 and distinct-2 of the outputs, as the report gives them."""
    return {"distinct_1": round(distinct_n(hyps, 1), 4), "distinct_2": round(distinct_n(hyps, 2), 4)}


def outputs_of(candidates: list[Record], rewards: Sequence[Reward]) -> Outputs:
    """One output per source as a paired test reads them: hyps, refs (when every one has one), and
    each reward's value per source (copies are scored: the inputs stay as they are)."""
    refs = [c["ref"] for c in candidates] if candidates and all("ref" in c for c in candidates) else None
    return Outputs(hyps=[c["hyp"] for c in candidates], refs=refs,
                   rewards={r.name: [s["reward"] for s in scored(candidates, r)] for r in rewards})


def candidate_metrics(outputs: Outputs, rewards: Sequence[Reward]) -> dict:
    """Reward means, diversity, and reference metrics when every output has a `ref`."""
    metrics = {"rewards": {name: round(mean_of(values), 6) for name, values in outputs.rewards.items()},
               "reward_sigs": {r.name: r.signature() for r in rewards}, **diversity(outputs.hyps)}
    if outputs.refs is not None:
        metrics.update(reference_metrics(list(outputs.hyps), list(outputs.refs)))
    return metrics


@dataclass(frozen=True)
class Evaluation:
    """A result as the report gives it, and what a paired test needs of it (None for samples:
    several per source have no one-to-one pairing)."""

    result: dict
    outputs: Outputs | None


def sample_figures(candidates: list[Record], rewards: Sequence[Reward], measures: SampleMeasures) -> dict:
    """Over samples grouped by source: each reward's mean, and the pass@k and maj@m `measures` asks
    for, each reward scoring the samples once: {"samples", "rewards", ["correct_at", "pass_at",
    "majority"]}, the last two by reward name, then k or m."""
    figures: dict = {"samples": len(candidates), "rewards": {},
                     **({"correct_at": measures.correct_at} if measures.asked else {})}
    for reward in rewards:
        records = scored(candidates, reward)
        figures["rewards"][reward.name] = round(mean_of([r["reward"] for r in records]), 6)
        for measure, values in measures.measure(list(iter_groups(records))).items():
            figures.setdefault(measure, {})[reward.name] = values
    return figures


@dataclass(frozen=True)
class EvalPlan:
    """What to measure: the decoding for the main figures, and optionally sampled rewards, with
    pass@k and majority voting over the samples."""

    decode: DecodeOptions = GREEDY
    sample_n: int = 0               # also sample this many per source and report their mean reward
    temperature: float = 0.8
    max_length: int = 256
    measures: SampleMeasures = SampleMeasures()

    def __post_init__(self):
        if option := self.measures.wanting(self.sample_n):
            raise UsageError(f"{option} needs at least {self.measures.most} samples of each source, "
                             f"but --sample is {self.sample_n}")


def _untracked(candidates: Iterable[Record], what: str, total: int) -> Iterable[Record]:
    return candidates


def evaluate_model(model_dir: str, sources: list[Record], rewards: Sequence[Reward], plan: EvalPlan,
                   engine: EngineOptions = EngineOptions(), track: Tracker = _untracked) -> Evaluation:
    """Decode `sources` with one policy and measure the outputs.

    `track(candidates, what, total)` sees the candidates as they are decoded: the CLI's progress display.
    """
    sampler = Sampler(model_dir, engine)
    decoded = list(track(sampler.sample(sources, plan.decode, SampleStats()), "candidates (greedy)",
                         len(sources) * plan.decode.n))
    outputs = outputs_of([c for c in decoded if c["k"] == 0], rewards)
    result = {"model": model_dir, "decode": plan.decode.describe(), "sources": len(sources),
              **candidate_metrics(outputs, rewards)}
    if plan.sample_n:
        sampling = DecodeOptions(n=plan.sample_n, temperature=plan.temperature, max_length=plan.max_length)
        sampled = list(track(sampler.sample(sources, sampling, SampleStats()), "candidates (sampled)",
                             len(sources) * sampling.n))
        result["sampled"] = {"decode": sampling.describe(), **sample_figures(sampled, rewards, plan.measures)}
    return Evaluation(result, outputs)


def read_outputs(reader: RecordReader, like: list[Record] | None = None, like_name: str = "") -> list[Record]:
    """The records of `reader` as one output (`hyp`) per source; an id seen twice is refused at its line.

    Several outputs of one source (a file of sampled candidates) would weigh its reference several
    times in corpus BLEU and chrF, so the figures would not match a decoded evaluation's. With
    `like` (the outputs read from `like_name`), the records must be of the same sources, in order.
    """
    records: list[Record] = []
    seen: set[tuple[bool, str | int]] = set()
    for record in reader:
        if "id" in record and not _first_time(record["id"], seen):
            raise reader.fail(f"id {record['id']!r} appears again: without -m, rest eval takes one hyp "
                              f"per source (pick one per source first, e.g. with rest bestofn), or "
                              f"samples of each source for --pass-at and --majority")
        if like is not None:
            _check_same_source(record, like, len(records), like_name, reader)
        records.append(record)
    if like is not None and len(records) < len(like):
        raise InputError(reader.name, None, f"{len(records)} outputs, but {like_name} has {len(like)}: "
                                            f"outputs to compare must be of the same sources")
    return records


def _first_time(value, seen: set[tuple[bool, str | int]]) -> bool:
    key = id_key(value)  # exactly as written: 1 and "1" are different ids
    if key in seen:
        return False
    seen.add(key)
    return True


def _check_same_source(record: Record, like: list[Record], index: int, like_name: str,
                       reader: RecordReader, what: str = "record") -> None:
    """Refuse a record that is not the source `like` holds at the same place (`what`: a record, or
    the first of a source's samples)."""
    if index >= len(like):
        raise reader.fail(f"more {'outputs' if what == 'record' else 'sources'} than the {len(like)} of "
                          f"{like_name}: outputs to compare must be of the same sources")
    if any(record.get(f) != like[index].get(f) for f in ("id", "src", "ref")):
        raise reader.fail(f"not the same source as {what} {index + 1} of {like_name} (id, src or ref "
                          f"differ): outputs to compare must be of the same sources, in the same order")


def read_samples(reader: RecordReader, like: list[list[Record]] | None = None,
                 like_name: str = "") -> list[list[Record]]:
    """The records of `reader` as one list of samples per source, grouped by `id` (an id that comes
    back after others is refused at its line). With `like` (the sources read from `like_name`),
    the sources must be the same, in order; their numbers of samples may differ."""
    heads = None if like is None else [samples[0] for samples in like]
    groups = list(iter_groups(_same_sources(reader, heads, like_name), reader=reader))
    if heads is not None and len(groups) < len(heads):
        raise InputError(reader.name, None, f"{len(groups)} sources, but {like_name} has {len(heads)}: "
                                            f"outputs to compare must be of the same sources")
    return groups


def _same_sources(reader: RecordReader, heads: list[Record] | None, like_name: str):
    """The records of `reader`, each source's first refused at its line when `heads` holds another."""
    index, current = -1, None
    for record in reader:
        if heads is not None and (index < 0 or record["id"] != current):
            index, current = index + 1, record["id"]
            _check_same_source(record, heads, index, like_name, reader, what="source")
        yield record


def evaluate_outputs(records: list[Record], rewards: Sequence[Reward], name: str) -> Evaluation:
    """Measure outputs already made (each record's `hyp` against its `ref`): no model, no decoding."""
    outputs = outputs_of(records, rewards)
    return Evaluation({"model": f"hyp of {name}", "decode": GIVEN_HYP, "sources": len(records),
                       **candidate_metrics(outputs, rewards)}, outputs)


def evaluate_samples(groups: list[list[Record]], rewards: Sequence[Reward], measures: SampleMeasures,
                     name: str) -> Evaluation:
    """Measure samples already made, several per source (no model): each reward's mean over all
    samples, distinct-n, and under `sampled` the pass@k and maj@m `measures` asks for.

    References mixed in by `rest sample --include-ref` (`origin: ref`) are not the policy's samples
    and are left out. No corpus BLEU or chrF: several outputs of a source would weigh its
    reference several times.
    """
    sources = [[r for r in group if not is_reference(r)] for group in groups]
    for group, samples in zip(groups, sources):
        measures.check_samples(len(samples), f"source {group[0]['id']!r} of {name}")  # before scoring
    samples = [r for group in sources for r in group]
    figures = sample_figures(samples, rewards, measures)
    return Evaluation({"model": f"hyp of {name}", "decode": GIVEN_HYP, "sources": len(sources),
                       "rewards": figures.pop("rewards"),
                       "reward_sigs": {r.name: r.signature() for r in rewards},
                       **diversity([r["hyp"] for r in samples]), "sampled": {"decode": GIVEN_HYP, **figures}},
                      None)


def with_significance(evaluations: list[Evaluation], resamples: int) -> list[dict]:
    """The results, each with its bootstrap estimates (`bootstrap`: 95% intervals, and p-values
    against the first) when there are several to compare, each with one output per source, and at
    least MIN_SOURCES sources."""
    results = [e.result for e in evaluations]
    outputs = [e.outputs for e in evaluations]
    if (resamples < 1 or len(evaluations) < 2 or any(o is None for o in outputs)
            or len(outputs[0].hyps) < MIN_SOURCES):
        return results
    return [{**result, "bootstrap": estimates}
            for result, estimates in zip(results, paired_bootstrap(outputs, resamples))]


def compare(results: list[dict], hack_threshold: float = 1.0) -> list[dict]:
    """Deltas of each result against the first, with a reward-hacking flag.

    With bootstrap estimates (`with_significance`), flagged: some reward rose and BLEU or chrF fell,
    each significantly (p < ALPHA). Without: some reward rose while corpus BLEU or chrF fell by more
    than `hack_threshold` points.
    """
    base = results[0]
    rows = []
    for other in results[1:]:
        reward_deltas = {name: round(other["rewards"][name] - value, 6)
                         for name, value in base["rewards"].items()}
        metric_deltas = {m: round(other[m] - base[m], 4)
                         for m in ("bleu", "chrf") if m in base and m in other}
        rises, falls = _hacking_signs(reward_deltas, metric_deltas, other.get("bootstrap"), hack_threshold)
        rows.append({"model": other["model"], "against": base["model"], "rewards": reward_deltas,
                     **metric_deltas, **_sampled_deltas(base, other),
                     "hacking_test": "bootstrap" if "bootstrap" in other else "threshold",
                     "reward_hacking_suspected": bool(rises and falls),
                     "why": (f"{', '.join(rises)} up while {', '.join(falls)} down"
                             if rises and falls else "")})
    return rows


def _hacking_signs(reward_deltas: dict, metric_deltas: dict, estimates: dict | None,
                   hack_threshold: float) -> tuple[list[str], list[str]]:
    """(rewards that rose, metrics that fell), significantly by the bootstrap when it was run, each
    named with its p-value; else any rise, and falls of more than `hack_threshold` points."""
    if estimates is None:
        return ([name for name, delta in reward_deltas.items() if delta > 0],
                [m for m, delta in metric_deltas.items() if delta < -hack_threshold])

    def significant(deltas: dict, figures: dict, sign: int) -> list[str]:
        return [f"{name} (p = {figures[name]['p_value']:.4f})" for name, delta in deltas.items()
                if delta * sign > 0 and name in figures and figures[name]["p_value"] < ALPHA]

    return (significant(reward_deltas, estimates["rewards"], +1),
            significant(metric_deltas, {m: estimates[m] for m in metric_deltas if m in estimates}, -1))


def _sampled_deltas(base: dict, other: dict) -> dict:
    """Deltas of pass@k and maj@m, by reward and k, where both results have them."""
    ours, theirs = base.get("sampled", {}), other.get("sampled", {})
    return {measure: {name: {k: round(theirs[measure][name][k] - value, 6) for k, value in values.items()}
                      for name, values in ours[measure].items()}
            for measure in ("pass_at", "majority") if measure in ours and measure in theirs}
