"""The results of a ReST run: tables (Markdown and JSON), warnings and a plot, from the files rest.mk leaves.

Where those files are is loop/layout.py's to say: validation and test `rest eval` reports per
policy, the marks of skipped Improve steps, the filter's counts of each Improve step's data, the
final policy, and the Best-of-N curves of `rest bestofn --curve`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rest_cli.io.atomic import replacing_file
from rest_cli.loop.layout import BC, RunLayout, parse_step_name
from rest_cli.select.filters import more_samples_advice, mostly_references


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def headline_figures(report: dict | None, reward: str) -> dict:
    """The headline figures of one `rest eval` report (None where absent)."""
    if report is None:
        return {}
    result = report["results"][0]
    sampled = result.get("sampled", {})
    figures = {"reward": result["rewards"].get(reward),
               "sampled_reward": sampled.get("rewards", {}).get(reward),
               "bleu": result.get("bleu"), "chrf": result.get("chrf")}
    # Tasks with a checked answer (TASK=arithmetic): {"1": pass@1, ...} and {"8": maj@8}.
    for kind in ("pass_at", "majority"):
        if sampled.get(kind, {}).get(reward):
            figures[kind] = sampled[kind][reward]
    return figures


def display_name(policy: str) -> str:
    """How a policy is called in tables and plots: BC, ReST G1 I2, control: converged."""
    if policy == BC:
        return "BC"
    step = parse_step_name(policy)
    if step is not None:
        return f"ReST G{step[0]} I{step[1]}"
    return policy.replace("control-", "control: ")


def collect(run: Path, reward: str) -> dict:
    """Every policy's validation and test figures in loop order, Improve data, controls, curves, warnings."""
    layout = RunLayout(run)
    rows = [{"policy": name, "skipped": layout.skipped_mark(name).exists(),
             "valid": headline_figures(_load(layout.valid_report(name)), reward),
             "test": headline_figures(_load(layout.test_report(name)), reward),
             "improve_data": _load(layout.filter_stats(name)) if name != BC else None}
            for name in layout.step_names()]
    controls = [{"policy": p.stem, "test": headline_figures(_load(p), reward)}
                for p in layout.control_reports()]
    curves = {p.stem: _load(p) for p in layout.curves()}
    final = _final_policy(layout)
    results = {"run": str(run), "reward": reward, "final_policy": final, "steps": rows, "controls": controls,
               "best_of_n": curves}
    results["warnings"] = warnings(results)
    return results


def _final_policy(layout: RunLayout) -> str | None:
    """The step the run ended on (g$(G)/policy names its model), None if it is not known."""
    policy_file = layout.final_policy_file()
    if policy_file is None:
        return None
    return layout.step_of_model(policy_file.read_text().strip())


def warnings(results: dict) -> list[str]:
    """What a reader must not miss: Improve steps trained mostly on references, a final policy that is BC."""
    found = []
    for row in results["steps"]:
        data = row.get("improve_data")
        if data and mostly_references(data.get("reference_share")):
            found.append(f"{display_name(row['policy'])} trained on data that is "
                         f"{100 * data['reference_share']:.0f}% references ({data['references_out']:,} of "
                         f"{data['records_out']:,}): mostly behaviour cloning again; "
                         f"{more_samples_advice(data['references_out'] == data.get('references_in'))}")
    if results.get("final_policy") == BC:
        found.append("the final policy is BC: no Improve step raised the validation reward, so ReST "
                     "changed nothing")
    return found


def reward_cell(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def score_cell(value) -> str:
    """BLEU and chrF as sacrebleu reports them: two decimals."""
    return "–" if value is None else f"{value:.2f}"


def _share(data: dict | None) -> str:
    """`39,765 (27% samples, mean reward 0.82; references 1.00)`: what an Improve step trained on."""
    if not data or data.get("reference_share") is None:
        return "–"
    figures = (("mean reward", data.get("mean_reward_samples_out")),
               ("references", data.get("mean_reward_references_out")))
    means = [f"{label} {value:.2f}" for label, value in figures if value is not None]
    return (f"{data['records_out']:,} ({100 * (1 - data['reference_share']):.0f}% samples"
            + "".join(f"{', ' if k == 0 else '; '}{text}" for k, text in enumerate(means)) + ")")


def markdown(results: dict) -> str:
    """The results as Markdown: the policy table, Best-of-N, warnings."""
    lines = [f"# ReST results: {results['run']} (reward `{results['reward']}`)", ""]
    for warning in results.get("warnings", []):
        lines += [f"> **Warning:** {warning}", ""]
    rows = results["steps"] + results["controls"]
    measures = _sample_measures(rows)
    lines += ["| policy | valid reward | test reward (greedy) | test reward (sampled) | "
              + "".join(f"test {label} | " for label, _, _ in measures)
              + "test BLEU | test chrF | Improve data |",
              "|---|---|---:|---:|" + "---:|" * len(measures) + "---:|---:|---|"]
    for row in rows:
        valid, test = row.get("valid", {}), row["test"]
        lines.append(f"| {_policy_cell(row, results.get('final_policy'))} "
                     f"| {reward_cell(valid.get('reward'))} "
                     f"| {reward_cell(test.get('reward'))} | {reward_cell(test.get('sampled_reward'))} | "
                     + "".join(f"{reward_cell(_figure(test, kind, size))} | " for _, kind, size in measures)
                     + f"{score_cell(test.get('bleu'))} | {score_cell(test.get('chrf'))} "
                     f"| {_share(row.get('improve_data'))} |")
    lines += _best_of_n_table(results["best_of_n"])
    return "\n".join(lines) + "\n"


def _sample_measures(rows: list[dict]) -> list[tuple[str, str, str]]:
    """The pass@k and maj@m the test reports hold: (label, key, size), as `rest eval --pass-at/--majority`
    wrote them."""
    found = []
    for kind, label in (("pass_at", "pass@"), ("majority", "maj@")):
        sizes = sorted({size for row in rows for size in row["test"].get(kind, {})}, key=int)
        found += [(f"{label}{size}", kind, size) for size in sizes]
    return found


def _policy_cell(row: dict, final: str | None) -> str:
    name = display_name(row["policy"])
    if row["policy"] == final:
        return f"**{name} (final)**"
    return name + (" (skipped: validation reward stopped rising)" if row.get("skipped") else "")


def _best_of_n_table(curves: dict) -> list[str]:
    """Mean best reward on the test set per N (rows) and policy (columns)."""
    if not curves:
        return []
    sizes = sorted({n for curve in curves.values() for n in curve["n"]})
    by_size = {name: dict(zip(curve["n"], curve["mean_best_reward"])) for name, curve in curves.items()}
    names = list(curves)
    lines = ["", "Best-of-N on the test set (mean best reward of N samples):", "",
             "| N | " + " | ".join(_curve_name(name) for name in names) + " |",
             "|---:|" + "---:|" * len(names)]
    lines += [f"| {n} | " + " | ".join(reward_cell(by_size[name].get(n)) for name in names) + " |"
              for n in sizes]
    return lines


def _curve_name(name: str) -> str:
    return {"bc": "BC", "final": "final policy"}.get(name, name)


def summary(results: dict, layout: RunLayout) -> str:
    """The end of a run's log: the table, the warnings again, and where the results are."""
    files = [layout.results(suffix) for suffix in ("md", "json", "png")]
    paths = [f"  {path}" for path in files if path.exists()]
    return markdown(results) + "\nResults:\n" + "\n".join(paths) + "\n"


def plot(results: dict, path: Path) -> None:
    """Validation and test reward per step (the paper's Figures 3-4) and Best-of-N curves (Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on a cluster node
    import matplotlib.pyplot as plt

    figure, (steps_axis, bon_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    _plot_steps(steps_axis, results)
    _plot_best_of_n(bon_axis, results["best_of_n"])
    figure.tight_layout()
    with replacing_file(path) as out:
        figure.savefig(out, format="png", dpi=100)
    plt.close(figure)


def _plot_steps(axis, results: dict) -> None:
    """Each figure per step as a line; each control arm's as a level line of the same colour, one dash
    style per arm."""
    names, steps = [display_name(row["policy"]) for row in results["steps"]], results["steps"]
    axis.plot(names, [_or_nan(row["valid"].get("reward")) for row in steps], "o-",
              label="validation (greedy)")
    measures = [("greedy", "reward", None), *_sample_measures(steps)]
    colors = {}
    for label, key, size in measures:
        line, = axis.plot(names, [_or_nan(_figure(row["test"], key, size)) for row in steps],
                          "s-" if size is None else "^-", label=f"test ({label})")
        colors[label] = line.get_color()
    for control, style in zip(results["controls"], ("--", ":", "-.")):
        for label, key, size in measures:
            value = _figure(control["test"], key, size)
            if value is not None:
                axis.axhline(value, linestyle=style, color=colors[label],
                             label=f"test ({label}), {display_name(control['policy'])}")
    axis.set(title="Reward per ReST step", xlabel="policy", ylabel=f"reward ({results['reward']})")
    axis.tick_params(axis="x", labelrotation=30)
    axis.legend(fontsize="small")


def _figure(figures: dict, key: str, size: str | None) -> float | None:
    """A test figure: the reward (size None), or pass@size / maj@size."""
    return figures.get(key) if size is None else figures.get(key, {}).get(size)


def _or_nan(value: float | None) -> float:
    """A missing figure as a gap in the line; a reward of 0.0 is a point like any other."""
    return float("nan") if value is None else value


def _plot_best_of_n(axis, curves: dict) -> None:
    sizes = sorted({n for curve in curves.values() for n in curve["n"]})
    for name, curve in curves.items():
        axis.plot(curve["n"], curve["mean_best_reward"], "o-", label=_curve_name(name))
    axis.set(title="Best-of-N on the test set (sampled)", xlabel="N (samples per source)",
             ylabel="mean best reward", xscale="log")
    if sizes:  # the N values themselves, not powers of ten
        axis.set_xticks(sizes, [str(n) for n in sizes])
        axis.minorticks_off()
    axis.legend()
