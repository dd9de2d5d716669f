"""Evaluation: decode a held-out set with a policy, or take outputs already made, and measure them:
reward and other metrics side by side.

Reward gains are only trusted next to metrics the policy was not trained on: corpus BLEU and chrF
against references, length ratio and distinct-n. A reward that rises while BLEU or chrF falls is
flagged as likely reward hacking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson

from rest_cli.errors import InputError
from rest_cli.io.records import Record, RecordReader
from rest_cli.rewards import Reward, score_records
from rest_cli.sampling import DecodeOptions, EngineOptions, Sampler, SampleStats

GREEDY = DecodeOptions(n=1, beam=1)
# What a result measured on outputs read from a file says in place of its decoding options.
GIVEN_HYP = "hyp given"
# Watches candidates go by (what they are, how many are expected): the CLI's progress display.
Tracker = Callable[[Iterable[Record], str, int], Iterable[Record]]


def mean_reward(candidates: list[Record], reward: Reward) -> float:
    """Mean of `reward` over candidates (copies are scored: the inputs stay as they are)."""
    values = [r["reward"] for r in score_records(({**c} for c in candidates), reward)]
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


def candidate_metrics(candidates: list[Record], rewards: Sequence[Reward]) -> dict:
    """Reward means, and reference metrics when every candidate has a `ref`."""
    hyps = [c["hyp"] for c in candidates]
    metrics = {"rewards": {r.name: round(mean_reward(candidates, r), 6) for r in rewards},
               "reward_sigs": {r.name: r.signature() for r in rewards},
               "distinct_1": round(distinct_n(hyps, 1), 4), "distinct_2": round(distinct_n(hyps, 2), 4)}
    if candidates and all("ref" in c for c in candidates):
        metrics.update(reference_metrics(hyps, [c["ref"] for c in candidates]))
    return metrics


@dataclass(frozen=True)
class EvalPlan:
    """What to measure: the decoding for the main figures, and optionally sampled rewards."""

    decode: DecodeOptions = GREEDY
    sample_n: int = 0               # also sample this many per source and report their mean reward
    temperature: float = 0.8
    max_length: int = 256


def _untracked(candidates: Iterable[Record], what: str, total: int) -> Iterable[Record]:
    return candidates


def evaluate_model(model_dir: str, sources: list[Record], rewards: Sequence[Reward], plan: EvalPlan,
                   engine: EngineOptions = EngineOptions(), track: Tracker = _untracked) -> dict:
    """Decode `sources` with one policy and measure the outputs.

    `track(candidates, what, total)` sees the candidates as they are decoded: the CLI's progress display.
    """
    sampler = Sampler(model_dir, engine)
    decoded = list(track(sampler.sample(sources, plan.decode, SampleStats()), "candidates (greedy)",
                         len(sources) * plan.decode.n))
    best = [c for c in decoded if c["k"] == 0]
    result = {"model": model_dir, "decode": plan.decode.describe(), "sources": len(sources),
              **candidate_metrics(best, rewards)}
    if plan.sample_n:
        sampling = DecodeOptions(n=plan.sample_n, temperature=plan.temperature, max_length=plan.max_length)
        sampled = list(track(sampler.sample(sources, sampling, SampleStats()), "candidates (sampled)",
                             len(sources) * sampling.n))
        result["sampled"] = {"decode": sampling.describe(),
                             "rewards": {r.name: round(mean_reward(sampled, r), 6) for r in rewards}}
    return result


def read_outputs(reader: RecordReader, like: list[Record] | None = None, like_name: str = "") -> list[Record]:
    """The records of `reader` as one output (`hyp`) per source; an id seen twice is refused at its line.

    Several outputs of one source (a file of sampled candidates) would weigh its reference several
    times in corpus BLEU and chrF, so the figures would not match a decoded evaluation's. With
    `like` (the outputs read from `like_name`), the records must be of the same sources, in order.
    """
    records: list[Record] = []
    seen: set[bytes] = set()
    for record in reader:
        if "id" in record and not _first_time(record["id"], seen):
            raise reader.fail(f"id {record['id']!r} appears again: without -m, rest eval takes one hyp "
                              f"per source (pick one per source first, e.g. with rest bestofn)")
        if like is not None:
            _check_same_source(record, like, len(records), like_name, reader)
        records.append(record)
    if like is not None and len(records) < len(like):
        raise InputError(reader.name, None, f"{len(records)} outputs, but {like_name} has {len(like)}: "
                                            f"outputs to compare must be of the same sources")
    return records


def _first_time(value, seen: set[bytes]) -> bool:
    key = orjson.dumps(value)  # exactly as written: 1 and "1" are different ids
    if key in seen:
        return False
    seen.add(key)
    return True


def _check_same_source(record: Record, like: list[Record], index: int, like_name: str,
                       reader: RecordReader) -> None:
    """Refuse a record that is not the source `like` holds at the same place."""
    if index >= len(like):
        raise reader.fail(f"more outputs than the {len(like)} of {like_name}: outputs to compare must be "
                          f"of the same sources")
    if any(record.get(f) != like[index].get(f) for f in ("id", "src", "ref")):
        raise reader.fail(f"not the same source as record {index + 1} of {like_name} (id, src or ref "
                          f"differ): outputs to compare must be of the same sources, in the same order")


def evaluate_outputs(outputs: list[Record], rewards: Sequence[Reward], name: str) -> dict:
    """Measure outputs already made (each record's `hyp` against its `ref`): no model, no decoding."""
    return {"model": f"hyp of {name}", "decode": GIVEN_HYP, "sources": len(outputs),
            **candidate_metrics(outputs, rewards)}


def compare(results: list[dict], hack_threshold: float = 1.0) -> list[dict]:
    """Deltas of each result against the first, with a reward-hacking flag.

    Flagged: some reward rose while corpus BLEU or chrF fell by more than `hack_threshold` points.
    """
    base = results[0]
    rows = []
    for other in results[1:]:
        reward_deltas = {name: round(other["rewards"][name] - value, 6)
                         for name, value in base["rewards"].items()}
        metric_deltas = {m: round(other[m] - base[m], 4)
                         for m in ("bleu", "chrf") if m in base and m in other}
        falls = [m for m, delta in metric_deltas.items() if delta < -hack_threshold]
        rises = [name for name, delta in reward_deltas.items() if delta > 0]
        rows.append({"model": other["model"], "against": base["model"], "rewards": reward_deltas,
                     **metric_deltas, "reward_hacking_suspected": bool(rises and falls),
                     "why": (f"{', '.join(rises)} up while {', '.join(falls)} down"
                             if rises and falls else "")})
    return rows
