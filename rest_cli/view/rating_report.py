"""`rest rate --report`: what a rating session found.

- **Human eval diff** (the paper's Figure 7): the mean score of system B minus system A, over
  items, each item's scores first averaged over the raters who rated it; its 95% interval and
  p-value by paired bootstrap resampling of the items, with the same rules as `rest eval
  --compare` (significance.py).
- **Agreement between raters**, for each pair who rated items in common: Spearman's rho and
  Kendall's tau-b of their scores (both outputs of each common item), the share of identical
  scores, and the mean absolute difference.
- **Human scores against rewards** (the paper's Figures 9 and 10): Spearman and Kendall of each
  output's mean human score against each reward of it: the `reward` the outputs' files carried,
  and any reward given with --reward, scored now.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rest_cli.correlation import kendall_tau, spearman
from rest_cli.errors import UsageError
from rest_cli.eval.significance import MIN_SOURCES, RESAMPLES, confidence, p_value, resample_indices
from rest_cli.io.atomic import replacing_file
from rest_cli.view.rating import Item, RatingStore


def _per_item(ratings: list[dict]) -> dict[int, tuple[float, float]]:
    """Each rated item's (mean score of A, mean score of B) over its raters."""
    scores = defaultdict(list)
    for rating in ratings:
        scores[rating["item"]].append((rating["score_a"], rating["score_b"]))
    return {item: (float(np.mean([a for a, _ in pairs])), float(np.mean([b for _, b in pairs])))
            for item, pairs in sorted(scores.items())}


@dataclass
class Session:
    """What a ratings database holds, read once: items, ratings, each rated item's mean scores,
    and each reward of the rated outputs (A's, then B's, in item order)."""

    store: RatingStore
    items: list[Item]
    ratings: list[dict]
    per_item: dict[int, tuple[float, float]]
    rated: list[Item]
    rewards: dict[str, list]

    @classmethod
    def load(cls, store: RatingStore, specs: Sequence[str] = ()) -> Session:
        """The session, with the files' `reward` and each reward of `specs` scored now."""
        items, ratings = store.items(), store.ratings()
        per_item = _per_item(ratings)
        rated = [i for i in items if i.item in per_item]
        rewards = {**_file_rewards(rated), **score_outputs(rated, specs)}
        return cls(store, items, ratings, per_item, rated, rewards)

    def human_scores(self) -> list[float]:
        """Each rated output's mean human score, A's then B's."""
        return [self.per_item[i.item][0] for i in self.rated] + [self.per_item[i.item][1] for i in self.rated]


def _outputs(rated: list[Item]) -> list[dict]:
    """The rated outputs as records (A's, then B's), without the fields they lack."""
    def record(item: Item, hyp: str) -> dict:
        fields = {"id": item.id, "src": item.src, "ref": item.ref, "hyp": hyp}
        return {key: value for key, value in fields.items() if value is not None}
    return [record(i, i.hyp_a) for i in rated] + [record(i, i.hyp_b) for i in rated]


def score_outputs(rated: list[Item], specs: Sequence[str]) -> dict[str, list[float]]:
    """Each reward of `specs` over the rated outputs; a field a reward needs and they lack is one line."""
    from rest_cli.rewards import build_reward, score_records

    records, found = _outputs(rated), {}
    with ExitStack() as stack:
        for spec in specs:
            reward = stack.enter_context(build_reward(spec))
            missing = [f for f in reward.needs if any(f not in r for r in records)]
            if missing:
                raise UsageError(f"reward {spec!r} needs {', '.join(repr(f) for f in missing)}, which the "
                                 f"rated outputs do not all have")
            found[spec] = [r["reward"] for r in score_records(({**r} for r in records), reward)]
    return found


def _file_rewards(rated: list[Item]) -> dict[str, list]:
    """The `reward` the outputs' files carried, per rated output (A's, then B's); none if absent."""
    values = [i.reward_a for i in rated] + [i.reward_b for i in rated]
    return {"reward (from the files)": values} if any(v is not None for v in values) else {}


def human_eval_diff(per_item: dict[int, tuple[float, float]], resamples: int = RESAMPLES) -> dict | None:
    """B's mean human score minus A's over the rated items, with a bootstrap interval and p-value
    (none under MIN_SOURCES items: resampling so few says nothing)."""
    if not per_item:
        return None
    a = np.array([scores[0] for scores in per_item.values()])
    b = np.array([scores[1] for scores in per_item.values()])
    observed = float(b.mean() - a.mean())
    found = {"items": len(a), "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": observed,
             "diff_bootstrap_mean": None, "diff_ci": None, "p_value": None, "resamples": None}
    if len(a) < MIN_SOURCES:
        return found
    indices = resample_indices(len(a), resamples)
    resampled_a, resampled_b = a[indices].mean(axis=1), b[indices].mean(axis=1)
    diff_mean, diff_ci = confidence(resampled_b - resampled_a)
    return {**found, "diff_bootstrap_mean": diff_mean, "diff_ci": diff_ci,
            "p_value": p_value(resampled_a, resampled_b, observed), "resamples": resamples}


def rater_agreement(ratings: list[dict]) -> list[dict]:
    """For each pair of raters with items in common: correlation and agreement of their scores."""
    by_rater = defaultdict(dict)
    for rating in ratings:
        by_rater[rating["rater"]][rating["item"]] = (rating["score_a"], rating["score_b"])
    pairs = []
    for first, second in itertools.combinations(sorted(by_rater), 2):
        common = sorted(set(by_rater[first]) & set(by_rater[second]))
        if not common:
            continue
        x = [score for item in common for score in by_rater[first][item]]
        y = [score for item in common for score in by_rater[second][item]]
        pairs.append({"raters": [first, second], "items": len(common), "spearman": _finite(spearman(x, y)),
                      "kendall": _finite(kendall_tau(x, y)),
                      "same_score": sum(p == q for p, q in zip(x, y)) / len(x),
                      "mean_abs_difference": float(np.mean(np.abs(np.subtract(x, y))))})
    return pairs


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def reward_correlations(session: Session) -> dict:
    """Spearman and Kendall of the outputs' mean human scores against each reward of them."""
    human, found = session.human_scores(), {}
    for name, values in session.rewards.items():
        pairs = [(h, r) for h, r in zip(human, values) if r is not None]
        if len(pairs) < 2:
            continue
        hs, rs = zip(*pairs)
        found[name] = {"outputs": len(pairs), "spearman": _finite(spearman(hs, rs)),
                       "kendall": _finite(kendall_tau(hs, rs))}
    return found


def report(session: Session, resamples: int = RESAMPLES) -> dict:
    """The session's figures as JSON: counts, the human eval diff, agreement, human against rewards."""
    ratings = session.ratings
    raters = sorted({r["rater"] for r in ratings})
    return {"ratings_file": str(session.store.path), "systems": session.store.meta("systems"),
            "items": len(session.items), "ratings": len(ratings),
            "raters": {name: sum(r["rater"] == name for r in ratings) for name in raters},
            "human_eval_diff": human_eval_diff(session.per_item, resamples),
            "agreement": rater_agreement(ratings), "reward_correlations": reward_correlations(session)}


def markdown(found: dict) -> str:
    a, b = found["systems"]
    lines = [f"# Human ratings: {b} (B) against {a} (A)", "",
             f"{found['ratings']} ratings of {found['items']} items by {len(found['raters'])} rater(s): "
             + ", ".join(f"{name} {count}" for name, count in found["raters"].items()), ""]
    diff = found["human_eval_diff"]
    if diff and diff["p_value"] is not None:
        lines += [f"Human eval diff (B − A, 0-6 scale): **{diff['diff']:+.3f}** ± {diff['diff_ci']:.3f} "
                  f"(95% bootstrap interval, {diff['items']} items; p = {diff['p_value']:.4f}); "
                  f"mean A {diff['mean_a']:.3f}, mean B {diff['mean_b']:.3f}.", ""]
    elif diff:
        lines += [f"Human eval diff (B − A, 0-6 scale): **{diff['diff']:+.3f}** on {diff['items']} items, "
                  f"too few for an interval (at least {MIN_SOURCES}).", ""]
    if found["agreement"]:
        lines += ["| raters | common items | Spearman | Kendall | same score | mean abs. difference |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {' / '.join(p['raters'])} | {p['items']} | {_number(p['spearman'])} "
                  f"| {_number(p['kendall'])} | {100 * p['same_score']:.0f}% "
                  f"| {p['mean_abs_difference']:.2f} |" for p in found["agreement"]]
        lines.append("")
    if found["reward_correlations"]:
        lines += ["| reward | outputs | Spearman with human score | Kendall |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {c['outputs']} | {_number(c['spearman'])} | {_number(c['kendall'])} |"
                  for name, c in found["reward_correlations"].items()]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def plot(session: Session, path: Path) -> None:
    """The paper's Figures 9 and 10: how often each score was given to each system, and each reward
    against the human score (one box per score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratings, rewards = session.ratings, session.rewards
    a_name, b_name = session.store.meta("systems")
    panels = 1 + len(rewards)
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    scale = np.arange(7)
    counts_a = [sum(r["score_a"] == s for r in ratings) for s in scale]
    counts_b = [sum(r["score_b"] == s for r in ratings) for s in scale]
    axes[0][0].bar(scale - 0.2, counts_a, width=0.4, color="0.6", label=f"A: {a_name}")
    axes[0][0].bar(scale + 0.2, counts_b, width=0.4, color="#6a51a3", label=f"B: {b_name}")
    axes[0][0].set(title="Human scores", xlabel="score (0-6)", ylabel="ratings", xticks=scale)
    axes[0][0].legend(fontsize="small")
    human = [round(score) for score in session.human_scores()]
    for axis, (name, values) in zip(axes[0][1:], rewards.items()):
        groups = [[v for h, v in zip(human, values) if h == s and v is not None] for s in scale]
        axis.boxplot(groups, positions=scale)
        axis.set(title=f"{name} by human score", xlabel="human score (mean over raters, rounded)",
                 ylabel=name)
    figure.tight_layout()
    with replacing_file(path) as out:
        figure.savefig(out, format="png", dpi=100)
    plt.close(figure)
