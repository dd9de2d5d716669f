"""`rest eval`: decode an evaluation set with one or more policies; reward, BLEU, chrF side by side."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer

from rest_cli.cli import options as opts  # the reward options every scoring command shares
from rest_cli.cli.common import InputArg, SkipInvalidOpt, handles_errors, report_skipped
from rest_cli.errors import InputError, UsageError
from rest_cli.eval.evaluate import EvalPlan, evaluate_model
from rest_cli.eval.evaluate import compare as compare_results
from rest_cli.io.records import RecordReader
from rest_cli.rewards import build_reward
from rest_cli.sampling import DecodeOptions, EngineOptions, with_ids


@handles_errors("eval")
def evaluate(
    input: InputArg = "-",
    model: Annotated[str, typer.Option("--model", "-m", help="Model directory to evaluate.")] = ...,
    compare: Annotated[Optional[list[str]], typer.Option(
        "--compare",
        help="Further model directories, shown with deltas against --model (repeatable).")] = None,
    reward: Annotated[Optional[list[str]], typer.Option(
        "--reward", "-r", help="Reward(s) to report (repeatable).")] = None,
    reward_config: opts.RewardConfigOpt = None,
    reward_range: opts.RewardRangeOpt = None,
    calibrate: opts.CalibrateOpt = None,
    reward_timeout: opts.RewardTimeoutOpt = opts.REWARD_TIMEOUT,
    reward_restarts: opts.RewardRestartsOpt = opts.REWARD_RESTARTS,
    reward_max_chars: opts.RewardMaxCharsOpt = opts.REWARD_MAX_CHARS,
    beam: Annotated[int, typer.Option(help="Beam size for the main figures (1 = greedy).")] = 1,
    sample: Annotated[int, typer.Option(
        help="Also report the mean reward of this many samples per source.")] = 0,
    temperature: Annotated[float, typer.Option(help="Temperature for --sample.")] = 0.8,
    max_length: Annotated[int, typer.Option(help="Longest output, in tokens.")] = 256,
    compute_type: Annotated[str, typer.Option(help="CTranslate2 compute type (auto: int8 on CPU).")] = "auto",
    hack_threshold: Annotated[float, typer.Option(
        help="Flag reward hacking when a reward rises while BLEU or chrF falls by more than "
             "this many points.")] = 1.0,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Print a table on stderr and the figures as JSON on stdout. The set is held in memory."""
    plan = EvalPlan(decode=DecodeOptions(n=1, beam=beam, max_length=max_length), sample_n=sample,
                    temperature=temperature, max_length=max_length)
    engine = EngineOptions(compute_type=compute_type)
    wanted = _wanted_rewards(reward, reward_config)
    options = opts.reward_options(reward_timeout, reward_restarts, reward_range, calibrate,
                                  rewards=len(wanted), max_chars=reward_max_chars)
    with ExitStack() as stack:
        rewards = [stack.enter_context(build_reward(spec, options, config)) for spec, config in wanted]
        labels = reward or [r.name for r in rewards]
        # The outputs become `hyp`; whatever else a reward reads (`ref`, say) must be in every record.
        needs = list(dict.fromkeys(["src", *(f for r in rewards for f in r.needs if f != "hyp")]))
        reader = RecordReader(input, required=needs, optional=["id", "ref"], skip_invalid=skip_invalid,
                              needed_by="rest eval" + (f" with {', '.join(labels)}" if labels else ""))
        sources = list(with_ids(reader))
        report_skipped("eval", reader)
        if not sources:
            raise InputError(reader.name, None, "no record to evaluate on")
        results = [evaluate_model(m, sources, rewards, plan, engine) for m in [model, *(compare or [])]]
    opts.report_truncated("eval", rewards)
    report = {"data": reader.name, "results": results,
              "comparisons": compare_results(results, hack_threshold)}
    _print_table(report)
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def _wanted_rewards(specs: list[str] | None, config: str | None) -> list[tuple[str | None, str | None]]:
    """(spec, config) for each reward to build: the --reward specs, or the --reward-config file."""
    if specs and config:
        raise UsageError("give the rewards as --reward SPEC (repeatable) or as --reward-config FILE, "
                         "not both")
    return [(spec, None) for spec in specs or []] + ([(None, config)] if config else [])


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    results = report["results"]
    table = Table(title=f"rest eval: {report['data']} "
                        f"({results[0]['sources']} sources, {results[0]['decode']})")
    table.add_column("metric")
    for result in results:
        table.add_column("/".join(Path(result["model"]).parts[-3:]), justify="right")
    for label, get in _rows(results[0]):
        table.add_row(label, *(_cell(get(r), get(r) - get(results[0]) if i else None)
                               for i, r in enumerate(results)))
    console = Console(stderr=True)
    console.print(table)
    for row in report["comparisons"]:
        if row["reward_hacking_suspected"]:
            console.print(f"[bold red]reward hacking suspected[/] for {row['model']}: {row['why']}")


def _rows(result: dict):
    rows = [(f"reward {name}", lambda r, n=name: r["rewards"][n]) for name in result["rewards"]]
    rows += [(f"sampled {name}", lambda r, n=name: r["sampled"]["rewards"][n])
             for name in result.get("sampled", {}).get("rewards", {})]
    rows += [(m, lambda r, m=m: r[m]) for m in ("bleu", "chrf", "length_ratio") if m in result]
    return rows + [(m, lambda r, m=m: r[m]) for m in ("distinct_1", "distinct_2")]


def _cell(value: float, delta: float | None) -> str:
    return f"{value:.4f}" if delta is None else f"{value:.4f} ({delta:+.4f})"
