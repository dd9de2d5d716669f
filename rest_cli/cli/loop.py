"""`rest loop ...`: the small decisions rest.mk asks for between steps, and the final report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from rest_cli.cli.common import handles_errors, log
from rest_cli.loop.settings import FILTER_KINDS

app = typer.Typer(
    help="Helpers for the ReST loop in rest.mk: thresholds, early stopping, policy choice, report.",
    no_args_is_help=True)
Reports = Annotated[list[str], typer.Argument(
    help="`rest eval` reports on the validation set, in step order.")]
RewardOpt = Annotated[str, typer.Option(
    "--reward", "-r", metavar="SPEC", help="The reward the loop optimises.")]


@app.command("threshold")
@handles_errors("loop threshold")
def threshold(
    step: Annotated[int, typer.Option(help="Improve step, from 1.")],
    schedule: Annotated[str, typer.Option(
        help="Rising thresholds, space separated.")] = "0.0 0.7 0.8 0.9 0.95 0.99",
    kind: Annotated[Literal[FILTER_KINDS], typer.Option(help="The filter's kind.")] = "tau",
    candidates: Annotated[Optional[str], typer.Option(
        help="Scored candidates (tau: to skip values below their mean).")] = None,
) -> None:
    """Print the filter value for an Improve step."""
    from rest_cli.errors import UsageError
    from rest_cli.loop.decisions import threshold as pick

    try:
        values = [float(v) for v in schedule.split()]
    except ValueError:
        raise UsageError(f"--schedule takes numbers separated by spaces, got {schedule!r}") from None
    value = pick(kind, values, step, candidates)
    how = ("the schedule's values above the candidates' mean reward" if kind == "tau"
           else "per source, from the schedule")
    log("loop threshold", f"Improve step {step}: --{kind} {value:g} ({how}: {schedule})")
    print(f"{value:g}")


@app.command("check")
@handles_errors("loop check")
def check(settings: Annotated[list[str], typer.Argument(
        metavar="NAME=VALUE...", help="rest.mk's variables, e.g. G=2 'LRS=3e-4 2e-4'.")]) -> None:
    """Check a run's settings before any work starts: silent if they are fine, else one line per problem."""
    from rest_cli.errors import UsageError
    from rest_cli.loop.settings import check as check_settings

    pairs = [setting.partition("=") for setting in settings]
    malformed = [setting for setting, (_, equals, _) in zip(settings, pairs) if not equals]
    if malformed:
        raise UsageError(f"expected NAME=VALUE, got {malformed[0]!r}")
    check_settings({name: value for name, _, value in pairs})


@app.command("rising")
@handles_errors("loop rising")
def rising(reports: Reports, reward: RewardOpt) -> None:
    """Print `rising` if the last report's validation reward beats all earlier ones, else `stopped`.

    Both are decisions and exit 0; an error (a missing or damaged report) exits non-zero, so a
    Makefile never takes a failure for "stopped rising".
    """
    from rest_cli.loop.decisions import still_rising

    if still_rising(reports, reward):
        print("rising")
        return
    log("loop rising", f"validation {reward} stopped rising at {reports[-1]}")
    print("stopped")


@app.command("best")
@handles_errors("loop best")
def best(reports: Reports, reward: RewardOpt) -> None:
    """Print the model of the report with the best validation reward (the Grow step's policy)."""
    from rest_cli.loop.decisions import best_model

    print(best_model(reports, reward))


@app.command("report")
@handles_errors("loop report")
def report(run: Annotated[Path, typer.Argument(help="The run folder.")], reward: RewardOpt,
           plot: Annotated[bool, typer.Option(
               help="Also draw results.png (needs matplotlib).")] = True) -> None:
    """Write RUN/results.md, results.json and results.png from a finished loop."""
    import json

    from rest_cli.io.atomic import write_file
    from rest_cli.loop.layout import RunLayout
    from rest_cli.loop.report import collect, markdown
    from rest_cli.loop.report import plot as draw

    results, layout = collect(run, reward), RunLayout(run)
    write_file(layout.results("json"), (json.dumps(results, indent=2) + "\n").encode())
    write_file(layout.results("md"), markdown(results).encode())
    if plot:
        draw(results, layout.results("png"))
    log("loop report", f"wrote {layout.results('md')}")


@app.command("summary")
@handles_errors("loop summary")
def summary(run: Annotated[Path, typer.Argument(help="The run folder.")]) -> None:
    """Print a finished run's results table and where its files are; warnings again on stderr."""
    import json

    from rest_cli.errors import RestError
    from rest_cli.loop.layout import RunLayout
    from rest_cli.loop.report import summary as describe

    layout = RunLayout(run)
    try:
        results = json.loads(layout.results("json").read_text())
    except (OSError, ValueError) as err:
        raise RestError(f"{layout.results('json')}: no results of a finished run ({err})") from None
    print(describe(results, layout), end="")
    for warning in results.get("warnings", []):
        log("loop summary", f"warning: {warning}")


@app.command("arms")
@handles_errors("loop arms")
def arms(folders: Annotated[list[Path], typer.Argument(
             help="One folder per arm, each with a test report per seed (s1.json, s2.json, ...); the first "
                  "is the baseline.")],
         reward: RewardOpt,
         output: Annotated[Path, typer.Option(
             "--output", "-o", help="Writes OUTPUT.md, OUTPUT.json and OUTPUT.png.")],
         title: Annotated[str, typer.Option(help="The table's and the plot's title.")] = "Improve losses",
         plot: Annotated[bool, typer.Option(help="Also draw OUTPUT.png (needs matplotlib).")] = True) -> None:
    """Compare arms over seeds (losses.mk: the paper's Figure 5): mean, spread, a table and a bar chart."""
    import json

    from rest_cli.io.atomic import write_file
    from rest_cli.loop.arms import collect, markdown
    from rest_cli.loop.arms import plot as draw

    results = collect(folders, reward)
    write_file(output.with_name(output.name + ".json"), (json.dumps(results, indent=2) + "\n").encode())
    write_file(output.with_name(output.name + ".md"), markdown(results, title).encode())
    if plot:
        draw(results, output.with_name(output.name + ".png"), title)
    log("loop arms", f"wrote {output}.md")
