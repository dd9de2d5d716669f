"""The results of a ReST run: a table (Markdown and JSON) and a plot, from the files rest.mk leaves.

Where those files are is loop/layout.py's to say: validation and test `rest eval` reports per
policy, the marks of skipped Improve steps, and the Best-of-N curves of `rest bestofn --curve`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rest_cli.io.atomic import replacing_file
from rest_cli.loop.layout import RunLayout


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _figures(report: dict | None, reward: str) -> dict:
    """The headline figures of one `rest eval` report (None where absent)."""
    if report is None:
        return {}
    result = report["results"][0]
    sampled = result.get("sampled", {}).get("rewards", {})
    return {"reward": result["rewards"].get(reward), "sampled_reward": sampled.get(reward),
            "bleu": result.get("bleu"), "chrf": result.get("chrf")}


def collect(run: Path, reward: str) -> dict:
    """Every policy's validation and test figures, in loop order, plus controls and curves."""
    layout = RunLayout(run)
    rows = [{"policy": name, "skipped": layout.skipped_mark(name).exists(),
             "valid": _figures(_load(layout.valid_report(name)), reward),
             "test": _figures(_load(layout.test_report(name)), reward)} for name in layout.step_names()]
    controls = [{"policy": p.stem, "test": _figures(_load(p), reward)} for p in layout.control_reports()]
    curves = {p.stem: _load(p) for p in layout.curves()}
    return {"run": str(run), "reward": reward, "steps": rows, "controls": controls, "best_of_n": curves}


def _cell(value) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(results: dict) -> str:
    """The results as Markdown tables."""
    lines = [f"# ReST results: {results['run']} (reward `{results['reward']}`)", "",
             "| policy | valid reward | test reward (greedy) | test reward (sampled) "
             "| test BLEU | test chrF |",
             "|---|---|---|---|---|---|"]
    for row in results["steps"] + results["controls"]:
        valid, test = row.get("valid", {}), row["test"]
        name = row["policy"] + (" (skipped: validation reward stopped rising)" if row.get("skipped") else "")
        lines.append(f"| {name} | {_cell(valid.get('reward'))} | {_cell(test.get('reward'))} | "
                     f"{_cell(test.get('sampled_reward'))} | {_cell(test.get('bleu'))} | "
                     f"{_cell(test.get('chrf'))} |")
    for name, curve in results["best_of_n"].items():
        lines += ["", f"Best-of-N, {name}: " + ", ".join(
            f"N={n}: {_cell(v)}" for n, v in zip(curve["n"], curve["mean_best_reward"]))]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Validation and test reward per step (the paper's Figures 3-4) and Best-of-N curves (Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on a cluster node
    import matplotlib.pyplot as plt

    figure, (steps_axis, bon_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [row["policy"] for row in results["steps"]]
    for split, style in (("valid", "o-"), ("test", "s-")):
        steps_axis.plot(names, [row[split].get("reward") or float("nan") for row in results["steps"]], style,
                        label=split)
    for color, control in enumerate(results["controls"], start=2):
        if control["test"].get("reward") is not None:
            steps_axis.axhline(control["test"]["reward"], linestyle="--", color=f"C{color}",
                               label=f"test, {control['policy']}")
    steps_axis.set(title="Reward per ReST step", xlabel="policy", ylabel=f"reward ({results['reward']})")
    steps_axis.legend()
    for name, curve in results["best_of_n"].items():
        bon_axis.plot(curve["n"], curve["mean_best_reward"], "o-", label=name)
    bon_axis.set(title="Best-of-N on the test set", xlabel="N", ylabel="mean best reward", xscale="log")
    bon_axis.legend()
    figure.tight_layout()
    with replacing_file(path) as out:
        figure.savefig(out, format="png", dpi=100)
    plt.close(figure)
