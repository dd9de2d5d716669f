"""A picture of `rest eval --compare`: each figure of each system with its 95% bootstrap interval.

One panel per figure (each mean reward, then corpus BLEU and chrF), one point per system in the
order compared, the interval as an error bar, and each later system's p-value against the first
written above it, so that "is this gain real?" reads off the picture as it does off the table.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from rest_cli.errors import UsageError
from rest_cli.eval.significance import MIN_SOURCES
from rest_cli.io.atomic import replacing_file


def check_can_plot(compare: list[str] | None, resamples: int) -> None:
    """Refuse --plot before any decoding when it could draw nothing."""
    if not compare or resamples < 1:
        raise UsageError("--plot draws the bootstrap intervals of --compare: give --compare and keep "
                         "--bootstrap above 0")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs the optional package matplotlib: pip install matplotlib "
                         "(in a checkout: pip install -e '.[plot]')") from None


def short_label(model: str) -> str:
    """A system's name on the axis: the last two parts of its path, a trailing `model` left out
    (`runs/m30k/chrf/s1/g2/i3/model` is `g2/i3`)."""
    parts = [p for p in Path(model).parts if p not in ("/", ".")]
    if len(parts) > 1 and parts[-1] == "model":
        parts = parts[:-1]
    return "/".join(parts[-2:]) or model


# Characters per line of a panel's title: a composite reward's spec runs far wider than its panel
# and would print over its neighbours' titles.
TITLE_WIDTH = 32


def panel_title(title: str) -> str:
    """`title` in lines of at most TITLE_WIDTH characters, broken at spaces (a spec's commas)."""
    return "\n".join(textwrap.wrap(title, TITLE_WIDTH, break_long_words=False, break_on_hyphens=False))


def panels(results: list[dict]) -> list[tuple[str, list[dict]]]:
    """(title, the systems' estimates) per figure that every system has an estimate of."""
    estimates = [result.get("bootstrap") for result in results]
    if len(results) < 2 or any(e is None for e in estimates):
        raise UsageError("--plot: no bootstrap intervals to draw; they need at least "
                         f"{MIN_SOURCES} sources and one output of each system per source")
    found = [(f"reward {name}", [e["rewards"][name] for e in estimates]) for name in estimates[0]["rewards"]]
    found += [(metric.replace("bleu", "BLEU").replace("chrf", "chrF"), [e[metric] for e in estimates])
              for metric in ("bleu", "chrf") if all(metric in e for e in estimates)]
    return found


def plot_comparison(results: list[dict], path: Path, labels: list[str] | None = None) -> None:
    """Draw `results` (rest eval's, with bootstrap estimates) to the PNG at `path`."""
    figures = panels(results)
    labels = labels or [short_label(str(result.get("model") or f"system {k + 1}"))
                        for k, result in enumerate(results)]
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on a cluster node
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(figures), figsize=(3.6 * len(figures), 4.2), squeeze=False)
    for axis, (title, estimates) in zip(axes[0], figures):
        _panel(axis, title, labels, estimates)
    figure.suptitle("mean ± 95% interval (paired bootstrap); p against the first")
    figure.tight_layout()
    with replacing_file(path) as out:
        figure.savefig(out, format="png", dpi=100)
    plt.close(figure)


def _panel(axis, title: str, labels: list[str], estimates: list[dict]) -> None:
    positions = range(len(estimates))
    means = [e["mean"] for e in estimates]
    axis.errorbar(positions, means, yerr=[e["ci"] for e in estimates], fmt="o", capsize=4,
                  color="#6a3d9a")
    axis.axhline(means[0], color="grey", linewidth=0.8, linestyle="--")
    for k, estimate in enumerate(estimates[1:], start=1):
        axis.annotate(f"p={estimate['p_value']:.3f}", (k, estimate["mean"] + estimate["ci"]),
                      textcoords="offset points", xytext=(0, 4), ha="center", fontsize="small")
    axis.set_xticks(list(positions), labels, rotation=30, ha="right")
    axis.set_title(panel_title(title), fontsize="medium")
    axis.margins(x=0.2, y=0.15)
