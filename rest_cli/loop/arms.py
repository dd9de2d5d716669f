"""Several arms of an experiment over seeds: mean, spread, a table and a bar chart.

An arm is a folder of test-set `rest eval` reports, one per seed (`s1.json`, `s2.json`, ...), as
losses.mk leaves them for the paper's Figure 5: `RUN/test/LOSS-gG-iI/sS.json`. The first arm is
the baseline (BC G=0 I=0 there): every other arm is compared with it seed by seed, since seed S of
each arm grew from the same BC.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from rest_cli.errors import RestError
from rest_cli.io.atomic import replacing_file
from rest_cli.loop.report import headline_figures, reward_cell, score_cell

_SEED_FILE = re.compile(r"s(\d+)\.json$")
_ARM = re.compile(r"([a-z]+)-g(\d+)-i(\d+)$")
# The figures summarised over seeds; the first two are the bar chart's panels.
MEASURES = (("reward", "test reward (greedy)"), ("sampled_reward", "test reward (sampled)"),
            ("bleu", "test BLEU"), ("chrf", "test chrF"))
# The paper's names of the losses (its Figure 5): NLL is behaviour cloning, "BC".
_LOSS_NAMES = {"nll": "BC"}


def arm_label(name: str) -> str:
    """`nll-g1-i0` as the paper writes it, `BC G=1 I=0`; `gold-g1-i1`, `GOLD G=1 I=1`; others as named."""
    match = _ARM.match(name)
    if match is None:
        return name
    loss, grow, improve = match.groups()
    return f"{_LOSS_NAMES.get(loss, loss.upper())} G={grow} I={improve}"


def seed_reports(arm: Path) -> dict[int, Path]:
    """The arm's reports by seed; an arm without any is an error naming its folder."""
    found = {int(m[1]): path for path in arm.glob("s*.json") if (m := _SEED_FILE.match(path.name))}
    if not found:
        raise RestError(f"{arm}: no test reports (s1.json, s2.json, ...) of an arm")
    return dict(sorted(found.items()))


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), lowest and highest, and how many."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values)}


def _arm(arm: Path, reward: str) -> dict:
    seeds = {}
    for seed, path in seed_reports(arm).items():
        try:
            seeds[seed] = headline_figures(json.loads(path.read_text()), reward)
        except (OSError, ValueError, KeyError, IndexError) as err:
            raise RestError(f"{path}: not a `rest eval` report with reward {reward!r} ({err})") from None
    summary = {}
    for key, _ in MEASURES:
        values = [figures[key] for figures in seeds.values() if figures.get(key) is not None]
        if values:
            summary[key] = spread(values)
    return {"name": arm.name, "label": arm_label(arm.name), "seeds": seeds, "summary": summary}


def collect(arms: list[Path], reward: str) -> dict:
    """Every arm's figures per seed and over seeds, each compared with the first arm seed by seed."""
    if not arms:
        raise RestError("no arms given")
    rows = [_arm(arm, reward) for arm in arms]
    baseline = rows[0]
    for row in rows[1:]:
        row["above_baseline"] = {key: _seeds_above(row, baseline, key) for key, _ in MEASURES[:2]}
    greedy = [row for row in rows if "reward" in row["summary"]]
    best = max(greedy, key=lambda row: row["summary"]["reward"]["mean"]) if greedy else None
    return {"reward": reward, "baseline": baseline["name"], "arms": rows,
            "best_greedy": best["name"] if best else None}


def _seeds_above(row: dict, baseline: dict, key: str) -> dict:
    """In how many of the seeds both arms have, this arm's figure is above the baseline's."""
    shared = [seed for seed, figures in row["seeds"].items()
              if figures.get(key) is not None and baseline["seeds"].get(seed, {}).get(key) is not None]
    above = sum(row["seeds"][seed][key] > baseline["seeds"][seed][key] for seed in shared)
    return {"above": above, "seeds": len(shared)}


def _mean_sd(summary: dict, key: str, cell) -> str:
    if key not in summary:
        return "–"
    figure = summary[key]
    sd = "" if figure["sd"] is None else f" ± {cell(figure['sd'])}"
    return f"{cell(figure['mean'])}{sd}"


def _above_cell(row: dict, key: str) -> str:
    counts = row.get("above_baseline", {}).get(key)
    return "–" if not counts or not counts["seeds"] else f"{counts['above']} of {counts['seeds']}"


def markdown(results: dict, title: str) -> str:
    """The arms as a Markdown table: mean ± sample sd over seeds, the greedy range, seeds above baseline."""
    rows, baseline = results["arms"], arm_label(results["baseline"])
    lines = [f"# {title} (reward `{results['reward']}`)", "",
             f"Mean ± standard deviation over seeds. \"Above {baseline}\": in how many seeds the "
             f"policy's test reward is above that of the {baseline} it grew from (greedy; sampled).", "",
             "| policy | seeds | " + " | ".join(label for _, label in MEASURES)
             + f" | greedy: lowest – highest | above {baseline} |",
             "|---|---:|" + "---:|" * len(MEASURES) + "---:|---:|"]
    for row in rows:
        summary = row["summary"]
        cells = [_mean_sd(summary, key, reward_cell if key.endswith("reward") else score_cell)
                 for key, _ in MEASURES]
        greedy = summary.get("reward")
        span = f"{reward_cell(greedy['min'])} – {reward_cell(greedy['max'])}" if greedy else "–"
        above = ("–" if row is rows[0]
                 else f"{_above_cell(row, 'reward')}; {_above_cell(row, 'sampled_reward')}")
        lines.append(f"| {row['label']} | {len(row['seeds'])} | " + " | ".join(cells)
                     + f" | {span} | {above} |")
    if results.get("best_greedy"):
        lines += ["", f"Highest mean test reward (greedy): {arm_label(results['best_greedy'])}."]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path, title: str) -> None:
    """Bars of the mean greedy and sampled test reward per arm, the spread as error bars, each seed a dot.

    Coloured as in the paper: the baseline grey, the others shades of purple.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on a cluster node
    import matplotlib.pyplot as plt

    rows = results["arms"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    purples = plt.get_cmap("Purples")
    colors = ["0.6"] + [purples(0.45 + 0.5 * k / max(1, len(rows) - 2)) for k in range(len(rows) - 1)]
    for axis, (key, label) in zip(axes, MEASURES[:2]):
        _bars(axis, rows, key, colors)
        axis.set(title=f"{title}: {label}", ylabel=f"reward ({results['reward']})")
    figure.tight_layout()
    with replacing_file(path) as out:
        figure.savefig(out, format="png", dpi=100)
    plt.close(figure)


def _bars(axis, rows: list[dict], key: str, colors: list) -> None:
    positions = range(len(rows))
    means = [row["summary"].get(key, {}).get("mean", float("nan")) for row in rows]
    errors = [row["summary"].get(key, {}).get("sd") or 0.0 for row in rows]
    axis.bar(positions, means, yerr=errors, color=colors, capsize=4)
    for position, row in zip(positions, rows):
        values = [figures[key] for figures in row["seeds"].values() if figures.get(key) is not None]
        axis.plot([position] * len(values), values, "k.", markersize=5)
    present = [row["summary"][key] for row in rows if key in row["summary"]]
    if present:
        low, high = _zoom([s["mean"] for s in present], present)
        axis.set_ylim(low, high)
        for position, row in zip(positions, rows):  # an arm far below the others: its mean, written
            mean = row["summary"].get(key, {}).get("mean")
            if mean is not None and mean < low:
                axis.annotate(f"{mean:.3f} (below)", (position, low), xytext=(0, 4),
                              textcoords="offset points", ha="center", fontsize="small", rotation=90,
                              va="bottom")
    axis.set_xticks(list(positions), [row["label"] for row in rows], rotation=30, ha="right")


def _zoom(means: list[float], spreads: list[dict]) -> tuple[float, float]:
    """The y range that shows the differences between the arms near the best: rewards near 1 would
    otherwise look all alike, and one collapsed arm would flatten the rest. Arms whose mean is more
    than 0.1 below the best are left below the range (and labelled)."""
    best = max(means)
    near = [s for m, s in zip(means, spreads) if m >= best - 0.1]
    low, high = min(s["min"] for s in near), max(s["max"] for s in near)
    margin = max(0.005, 0.25 * (high - low))
    return low - margin, (min(1.0, high + margin) if high <= 1.0 else high + margin)
