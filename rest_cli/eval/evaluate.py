"""Evaluation: decode a held-out set with a policy and measure it, reward and other metrics side by side.

Reward gains are only trusted next to metrics the policy was not trained on: corpus BLEU and chrF
against references, length ratio and distinct-n. A reward that rises while BLEU or chrF falls is
flagged as likely reward hacking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rest_cli.io.records import Record
from rest_cli.rewards import Reward, score_records
from rest_cli.sampling import DecodeOptions, EngineOptions, Sampler, SampleStats

GREEDY = DecodeOptions(n=1, beam=1)


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


def evaluate_model(model_dir: str, sources: list[Record], rewards: Sequence[Reward], plan: EvalPlan,
                   engine: EngineOptions = EngineOptions()) -> dict:
    """Decode `sources` with one policy and measure the outputs."""
    sampler = Sampler(model_dir, engine)
    decoded = list(sampler.sample(sources, plan.decode, SampleStats()))
    best = [c for c in decoded if c["k"] == 0]
    result = {"model": model_dir, "decode": plan.decode.describe(), "sources": len(sources),
              **candidate_metrics(best, rewards)}
    if plan.sample_n:
        sampling = DecodeOptions(n=plan.sample_n, temperature=plan.temperature, max_length=plan.max_length)
        sampled = list(sampler.sample(sources, sampling, SampleStats()))
        result["sampled"] = {"decode": sampling.describe(),
                             "rewards": {r.name: round(mean_reward(sampled, r), 6) for r in rewards}}
    return result


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
