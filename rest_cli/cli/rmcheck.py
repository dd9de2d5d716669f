"""`rest rmcheck`: the paper's reward-model unit tests on (src, ref) pairs."""

from __future__ import annotations

import sys
from itertools import islice
from typing import Annotated, Optional

import orjson
import typer

from rest_cli.cli import options as opts  # the reward options every scoring command shares
from rest_cli.cli.common import SkipInvalidOpt, handles_errors, log, report_skipped
from rest_cli.errors import InputError, UsageError
from rest_cli.io.records import Record, RecordReader  # cli.common imports it anyway: no startup cost


@handles_errors("rmcheck")
def rmcheck(
    reward: Annotated[Optional[str], typer.Option(
        "--reward", "-r", metavar="SPEC", help="Required (or --reward-config): the reward to test.")] = None,
    data: Annotated[str, typer.Option(
        "--data", "-d", help="JSONL pairs with `src` and `ref` ('-' for stdin).")] = ...,
    threshold: Annotated[float, typer.Option(
        help="A check passes when the true translation is strictly preferred at least this often.")] = 0.9,
    perturbation: Annotated[Optional[list[str]], typer.Option(
        "--perturbation", "-p", help="Run only these checks (repeatable).")] = None,
    limit: Annotated[int, typer.Option(help="Use at most this many pairs (0 = all).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the random perturbations.")] = 0,
    reward_config: opts.RewardConfigOpt = None,
    reward_range: opts.RewardRangeOpt = None,
    calibrate: opts.CalibrateOpt = None,
    reward_timeout: opts.RewardTimeoutOpt = opts.REWARD_TIMEOUT,
    reward_restarts: opts.RewardRestartsOpt = opts.REWARD_RESTARTS,
    reward_max_chars: opts.RewardMaxCharsOpt = opts.REWARD_MAX_CHARS,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Score true translations against perturbed ones; table on stderr, JSON on stdout.

    Exits 1 when any check falls below --threshold, so it can gate a pipeline. A check that changed
    no pair (shuffle on one-word references) is "n/a": `"status": "n/a"` and `"passed": null` in the
    JSON, and left out of the verdict. When no check applies, nothing was tested: exit 1.
    """
    from rest_cli.eval.rmcheck import PERTURBATIONS, check_reward, verdict
    from rest_cli.rewards import build_reward

    unknown = set(perturbation or []) - set(PERTURBATIONS)
    if unknown:
        raise UsageError(f"unknown perturbation(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(PERTURBATIONS)}")
    options = opts.reward_options(reward_timeout, reward_restarts, reward_range, calibrate,
                                  max_chars=reward_max_chars)
    with build_reward(reward, options, reward_config) as scorer:
        reader, pairs = _read_pairs(data, limit, skip_invalid)
        results = [r.as_dict(threshold) for r in check_reward(scorer, pairs, perturbation, seed)]
        signature, name = scorer.signature(), reward or scorer.name
    opts.report_truncated("rmcheck", [scorer])
    report = {"reward": name, "reward_sig": signature, "data": reader.name, "pairs": len(pairs),
              "threshold": threshold, "checks": results, "passed": verdict(results)}
    _print_table(report)
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    if report["passed"] is None:
        log("rmcheck", "no check applied to these pairs (each left them unchanged): nothing was tested")
    if not report["passed"]:
        raise typer.Exit(1)


def _read_pairs(data: str, limit: int, skip_invalid: bool) -> tuple[RecordReader, list[Record]]:
    """The reader of `data` and its first `limit` (src, ref) records (all for 0)."""
    reader = RecordReader(data, required=["src", "ref"], skip_invalid=skip_invalid, needed_by="rest rmcheck")
    pairs = list(islice(reader, limit or None))
    report_skipped("rmcheck", reader)
    if not pairs:
        raise InputError(reader.name, None, "no record (with src and ref) to check the reward on")
    return reader, pairs


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rest rmcheck: {report['reward']} on {report['data']} ({report['pairs']} pairs)")
    for column in ("perturbation", "pairs", "prefers true", "mean true", "mean perturbed", ""):
        table.add_column(column, justify="left" if column == "perturbation" else "right")
    shown = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "n/a": "[dim]n/a[/]"}
    for r in report["checks"]:
        if r["status"] == "n/a":
            table.add_row(r["perturbation"], "0", "-", "-", "-", shown["n/a"])
            continue
        table.add_row(r["perturbation"], str(r["pairs"]), f"{100 * r['rate']:.1f}%", f"{r['mean_true']:.3f}",
                      f"{r['mean_perturbed']:.3f}", shown[r["status"]])
    Console(stderr=True).print(table)
