"""`rest eval`: measure one or more policies (decoding an evaluation set) or files of outputs;
reward, BLEU, chrF side by side."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer

from rest_cli.cli import options as opts  # the reward options every scoring command shares
from rest_cli.cli.common import InputArg, SkipInvalidOpt, handles_errors, log, report_skipped
from rest_cli.errors import InputError, UsageError
from rest_cli.eval.evaluate import GIVEN_HYP, EvalPlan, evaluate_model, evaluate_outputs, read_outputs
from rest_cli.eval.evaluate import compare as compare_results
from rest_cli.io.records import Record, RecordReader
from rest_cli.rewards import Reward, build_reward
from rest_cli.sampling import DecodeOptions, EngineOptions, with_ids

# The options that say how a model decodes: without -m they are refused, not ignored.
_MODEL_ONLY = ("beam", "sample", "temperature", "max_length", "compute_type")


@handles_errors("eval")
def evaluate(
    ctx: typer.Context,
    input: InputArg = "-",
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=(
        "Model directory to decode the set with. Without it, each record's `hyp` is evaluated "
        "against its `ref` (one hyp per source)."))] = None,
    compare: Annotated[Optional[list[str]], typer.Option(
        "--compare",
        help="Further model directories (with --model), or files of outputs of the same sources "
             "(without), shown with deltas against the first (repeatable).")] = None,
    reward: Annotated[Optional[list[str]], typer.Option(
        "--reward", "-r", metavar="SPEC", help="Reward(s) to report (repeatable).")] = None,
    reward_config: opts.RewardConfigOpt = None,
    reward_range: opts.RewardRangeOpt = None,
    calibrate: opts.CalibrateOpt = None,
    reward_timeout: opts.RewardTimeoutOpt = opts.REWARD_TIMEOUT,
    reward_restarts: opts.RewardRestartsOpt = opts.REWARD_RESTARTS,
    reward_max_chars: opts.RewardMaxCharsOpt = opts.REWARD_MAX_CHARS,
    beam: Annotated[int, typer.Option(help="Beam size for the main figures (1 = greedy), with --model.")] = 1,
    sample: Annotated[int, typer.Option(
        help="Also report the mean reward of this many samples per source, with --model.")] = 0,
    temperature: Annotated[float, typer.Option(help="Temperature for --sample.")] = 0.8,
    max_length: Annotated[int, typer.Option(help="Longest output, in tokens, with --model.")] = 256,
    compute_type: Annotated[str, typer.Option(
        help="CTranslate2 compute type (auto: int8 on CPU), with --model.")] = "auto",
    hack_threshold: Annotated[float, typer.Option(
        help="Flag reward hacking when a reward rises while BLEU or chrF falls by more than "
             "this many points.")] = 1.0,
    brief: Annotated[bool, typer.Option(
        "--brief", help="One line per result on stderr instead of the table (same JSON).")] = False,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Print a table on stderr and the figures as JSON on stdout. The set is held in memory."""
    if not model:
        _refuse_model_options(ctx)
    plan = EvalPlan(decode=DecodeOptions(n=1, beam=beam, max_length=max_length), sample_n=sample,
                    temperature=temperature, max_length=max_length)
    engine = EngineOptions(compute_type=compute_type)
    wanted = _wanted_rewards(reward, reward_config)
    options = opts.reward_options(reward_timeout, reward_restarts, reward_range, calibrate,
                                  rewards=len(wanted), max_chars=reward_max_chars)
    with ExitStack() as stack:
        rewards = [stack.enter_context(build_reward(spec, options, config)) for spec, config in wanted]
        if model:
            labels = reward or [r.name for r in rewards]
            data, sources = _sources(input, rewards, labels, skip_invalid)
            results = [evaluate_model(m, sources, rewards, plan, engine, track=_progress)
                       for m in [model, *(compare or [])]]
        else:
            data, results = _given_outputs(input, compare or [], rewards, skip_invalid)
    opts.report_truncated("eval", rewards)
    report = {"data": data, "results": results, "comparisons": compare_results(results, hack_threshold)}
    if brief:
        _print_brief(report)
    else:
        _print_table(report)
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def _refuse_model_options(ctx: typer.Context) -> None:
    """Without -m nothing is decoded: a decoding option given then is a mistake to point out."""
    given = [param.opts[0] for param in ctx.command.params
             if param.name in _MODEL_ONLY and _on_command_line(ctx, param.name)]
    if given:
        raise UsageError(f"{', '.join(given)}: how a model decodes, for --model; without --model, "
                         f"rest eval evaluates each record's hyp as it is")


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given (on the command line), rather than left at its default."""
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")


def _sources(input: str, rewards: list[Reward], labels: list[str],
             skip_invalid: bool) -> tuple[str, list[Record]]:
    """The input's name and the sources to decode; what a reward reads besides the output (`ref`,
    say) must be in each."""
    needs = list(dict.fromkeys(["src", *(f for r in rewards for f in r.needs if f != "hyp")]))
    reader = RecordReader(input, required=needs, optional=["id", "ref"], skip_invalid=skip_invalid,
                          needed_by="rest eval" + (f" with {', '.join(labels)}" if labels else ""))
    sources = list(with_ids(reader))
    report_skipped("eval", reader)
    if not sources:
        raise InputError(reader.name, None, "no record to evaluate on")
    return reader.name, sources


def _given_outputs(input: str, others: list[str], rewards: list[Reward],
                   skip_invalid: bool) -> tuple[str, list[dict]]:
    """The input's name, and results for the outputs in it and in each --compare file."""
    needs = list(dict.fromkeys(["hyp", "ref", *(f for r in rewards for f in r.needs)]))

    def read(path: str, like: list[Record] | None = None, like_name: str = "") -> tuple[str, list[Record]]:
        reader = RecordReader(path, required=needs, optional=["id", "src"], skip_invalid=skip_invalid,
                              needed_by="rest eval without -m")
        outputs = read_outputs(reader, like, like_name)
        report_skipped("eval", reader)
        return reader.name, outputs

    name, first = read(input)
    if not first:
        raise InputError(name, None, "no record to evaluate on")
    results = [evaluate_outputs(first, rewards, name)]
    for path in others:
        if os.path.isdir(path):
            raise UsageError(f"--compare {path}: a directory; without --model, --compare takes files of "
                             f"outputs (give --model to decode with model directories)")
        other_name, outputs = read(path, first, name)
        results.append(evaluate_outputs(outputs, rewards, other_name))
    return name, results


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
        table.add_column(_heading(result), justify="right")
    for label, get in _rows(results[0]):
        table.add_row(label, *(_cell(get(r), get(r) - get(results[0]) if i else None)
                               for i, r in enumerate(results)))
    console = Console(stderr=True)
    console.print(table)
    for row in report["comparisons"]:
        if row["reward_hacking_suspected"]:
            console.print(f"[bold red]reward hacking suspected[/] for {row['model']}: {row['why']}")


def _print_brief(report: dict) -> None:
    """One line per result, and one per suspected reward hacking: for logs that run eval often."""
    for result in report["results"]:
        where = result["model"] if result["decode"] == GIVEN_HYP else f"{result['model']} on {report['data']}"
        log("eval", f"{where}: {_figures(result)}")
    for row in report["comparisons"]:
        if row["reward_hacking_suspected"]:
            log("eval", f"reward hacking suspected for {row['model']}: {row['why']}")


def _figures(result: dict) -> str:
    """`chrf 0.5123, BLEU 31.20, chrF 55.02, length ratio 0.98`: the figures a log line needs."""
    figures = [f"{name} {value:.4f}" for name, value in result["rewards"].items()]
    figures += [f"sampled {name} {value:.4f}"
                for name, value in result.get("sampled", {}).get("rewards", {}).items()]
    if "bleu" in result:
        figures += [f"BLEU {result['bleu']:.2f}", f"chrF {result['chrf']:.2f}",
                    f"length ratio {result['length_ratio']:.2f}"]
    return ", ".join(figures or [f"distinct-1 {result['distinct_1']:.4f}",
                                 f"distinct-2 {result['distinct_2']:.4f}"])


def _heading(result: dict) -> str:
    """A column's heading: the last three parts of the model directory, or of the file of outputs."""
    if result["decode"] == GIVEN_HYP:
        return "hyp of " + "/".join(Path(result["model"].removeprefix("hyp of ")).parts[-3:])
    return "/".join(Path(result["model"]).parts[-3:])


def _rows(result: dict):
    rows = [(f"reward {name}", lambda r, n=name: r["rewards"][n]) for name in result["rewards"]]
    rows += [(f"sampled {name}", lambda r, n=name: r["sampled"]["rewards"][n])
             for name in result.get("sampled", {}).get("rewards", {})]
    rows += [(m, lambda r, m=m: r[m]) for m in ("bleu", "chrf", "length_ratio") if m in result]
    return rows + [(m, lambda r, m=m: r[m]) for m in ("distinct_1", "distinct_2")]


def _cell(value: float, delta: float | None) -> str:
    return f"{value:.4f}" if delta is None else f"{value:.4f} ({delta:+.4f})"


def _progress(candidates, what: str, total: int):
    from rest_cli.cli.progress import progress

    return progress(candidates, "eval", what, total)
