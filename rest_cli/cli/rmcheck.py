"""`rest rmcheck`: the paper's reward-model unit tests on (src, ref) pairs."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import orjson
import typer

from rest_cli.cli.common import SkipInvalidOpt, handles_errors, report_skipped


@handles_errors("rmcheck")
def rmcheck(
    reward: Annotated[str, typer.Option("--reward", "-r", help="The reward to test.")] = ...,
    data: Annotated[str, typer.Option("--data", "-d", help="JSONL pairs with `src` and `ref` ('-' for stdin).")] = ...,
    threshold: Annotated[float, typer.Option(
        help="A check passes when the true translation is strictly preferred at least this often.")] = 0.9,
    perturbation: Annotated[Optional[list[str]], typer.Option(
        "--perturbation", "-p", help="Run only these checks (repeatable).")] = None,
    limit: Annotated[int, typer.Option(help="Use at most this many pairs (0 = all).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the random perturbations.")] = 0,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Score true translations against perturbed ones; table on stderr, JSON on stdout.

    Exits 1 when any check falls below --threshold, so it can gate a pipeline.
    """
    from itertools import islice

    from rest_cli.errors import InputError, UsageError
    from rest_cli.io.records import RecordReader
    from rest_cli.rewards import make_reward
    from rest_cli.eval.rmcheck import PERTURBATIONS, check_reward

    unknown = set(perturbation or []) - set(PERTURBATIONS)
    if unknown:
        raise UsageError(f"unknown perturbation(s) {', '.join(sorted(unknown))}; known: {', '.join(PERTURBATIONS)}")
    reader = RecordReader(data, required=["src", "ref"], skip_invalid=skip_invalid, needed_by="rest rmcheck")
    pairs = list(islice(reader, limit or None))
    report_skipped("rmcheck", reader)
    if not pairs:
        raise InputError(reader.name, None, "no record (with src and ref) to check the reward on")
    with make_reward(reward) as scorer:
        results = [r.as_dict(threshold) for r in check_reward(scorer, pairs, perturbation, seed)]
        signature = scorer.signature()
    report = {"reward": reward, "reward_sig": signature, "data": reader.name, "pairs": len(pairs),
              "threshold": threshold, "checks": results, "passed": all(r["passed"] for r in results)}
    _print_table(report)
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    if not report["passed"]:
        raise typer.Exit(1)


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rest rmcheck: {report['reward']} on {report['data']} ({report['pairs']} pairs)")
    for column in ("perturbation", "pairs", "prefers true", "mean true", "mean perturbed", ""):
        table.add_column(column, justify="left" if column == "perturbation" else "right")
    for r in report["checks"]:
        verdict = "[green]pass[/]" if r["passed"] else "[bold red]FAIL[/]"
        table.add_row(r["perturbation"], str(r["pairs"]), f"{100 * r['rate']:.1f}%", f"{r['mean_true']:.3f}",
                      f"{r['mean_perturbed']:.3f}", verdict)
    Console(stderr=True).print(table)
