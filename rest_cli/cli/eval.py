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
from rest_cli.eval.evaluate import (
    GIVEN_HYP,
    EvalPlan,
    Evaluation,
    evaluate_model,
    evaluate_outputs,
    evaluate_samples,
    read_outputs,
    read_samples,
    with_significance,
)
from rest_cli.eval.evaluate import compare as compare_results
from rest_cli.eval.plot import check_can_plot, plot_comparison
from rest_cli.eval.sampled import SampleMeasures
from rest_cli.eval.significance import ALPHA
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
        help="Also report the mean reward of this many samples per source, with --model (default with "
             "--pass-at or --majority: the largest K or M they name).")] = 0,
    temperature: Annotated[float, typer.Option(help="Temperature for --sample.")] = 0.8,
    max_length: Annotated[int, typer.Option(help="Longest output, in tokens, with --model.")] = 256,
    compute_type: Annotated[str, typer.Option(
        help="CTranslate2 compute type (auto: int8 on CPU), with --model.")] = "auto",
    pass_at: Annotated[Optional[str], typer.Option(
        "--pass-at", metavar="K,K,...",
        help="Also report pass@K for each K: the chance that at least one of K samples of a source is "
             "correct, estimated without bias from all its samples (with --model, --sample N of them; "
             "without, the records of each id in the input), averaged over sources.")] = None,
    majority: Annotated[Optional[str], typer.Option(
        "--majority", metavar="M,M,...",
        help="Also report maj@M for each M: a source is correct when the most common answer among M of "
             "its samples is correct (a sample's answer: its hyp_answer, else its hyp).")] = None,
    correct_at: Annotated[float, typer.Option(
        help="For --pass-at and --majority: a sample is correct when its reward is at least this "
             "(1.0: full marks of a binary reward).")] = 1.0,
    bootstrap: Annotated[int, typer.Option(
        metavar="RESAMPLES",
        help="With --compare: paired bootstrap resampling over the sources, this many resamples (0: "
             "none). Gives each figure's 95% interval and a p-value against the first (sacrebleu's "
             "test for BLEU and chrF, the same resamples for each mean reward), and flags reward "
             "hacking when a reward rises and BLEU or chrF falls, both with p < 0.05.")] = 1000,
    hack_threshold: Annotated[float, typer.Option(
        help="Without the bootstrap (--bootstrap 0, or samples per source): flag reward hacking when a "
             "reward rises while BLEU or chrF falls by more than this many points.")] = 1.0,
    plot: Annotated[Optional[Path], typer.Option(
        metavar="FILE.png",
        help="With --compare and the bootstrap: also draw each figure of each system with its 95% "
             "interval and p-value against the first (needs matplotlib).")] = None,
    brief: Annotated[bool, typer.Option(
        "--brief", help="One line per result on stderr instead of the table (same JSON).")] = False,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Print a table on stderr and the figures as JSON on stdout. The set is held in memory."""
    if not model:
        _refuse_model_options(ctx)
    if plot is not None:
        check_can_plot(compare, bootstrap)
    measures = _measures(ctx, pass_at, majority, correct_at, rewards=bool(reward or reward_config))
    plan = EvalPlan(decode=DecodeOptions(n=1, beam=beam, max_length=max_length),
                    sample_n=sample or measures.most, temperature=temperature, max_length=max_length,
                    measures=measures)
    engine = EngineOptions(compute_type=compute_type)
    wanted = _wanted_rewards(reward, reward_config)
    options = opts.reward_options(reward_timeout, reward_restarts, reward_range, calibrate,
                                  rewards=len(wanted), max_chars=reward_max_chars)
    with ExitStack() as stack:
        rewards = [stack.enter_context(build_reward(spec, options, config)) for spec, config in wanted]
        if model:
            labels = reward or [r.name for r in rewards]
            data, sources = _sources(input, rewards, labels, skip_invalid)
            evaluations = [evaluate_model(m, sources, rewards, plan, engine, track=_progress)
                           for m in [model, *(compare or [])]]
        else:
            data, evaluations = _given_outputs(input, compare or [], rewards, measures, skip_invalid)
    opts.report_truncated("eval", rewards)
    results = with_significance(evaluations, bootstrap)
    if plot is not None:
        plot_comparison(results, plot)
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


def _measures(ctx: typer.Context, pass_at: str | None, majority: str | None, correct_at: float,
              rewards: bool) -> SampleMeasures:
    """The measures of samples asked for; refused without a reward, which is what says correct."""
    measures = SampleMeasures(pass_at=_sizes("--pass-at", pass_at), majority=_sizes("--majority", majority),
                              correct_at=correct_at)
    if measures.asked and not rewards:
        raise UsageError("--pass-at and --majority count samples whose reward is correct: give the reward "
                         "with --reward (-r) or --reward-config")
    if not measures.asked and _on_command_line(ctx, "correct_at"):
        raise UsageError("--correct-at: what counts as correct for --pass-at and --majority; give one "
                         "of them")
    return measures


def _sizes(option: str, text: str | None) -> tuple[int, ...]:
    """`1,4,16` as (1, 4, 16): sorted, each once."""
    if text is None:
        return ()
    try:
        return tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise UsageError(f"{option} takes whole numbers >= 1 separated by commas, got {text!r}") from None


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


def _given_outputs(input: str, others: list[str], rewards: list[Reward], measures: SampleMeasures,
                   skip_invalid: bool) -> tuple[str, list[Evaluation]]:
    """The input's name, and results for the outputs in it and in each --compare file: one output
    per source, or with --pass-at or --majority the samples of each source (grouped by id)."""
    grouped = measures.asked
    fields = ["id", "hyp"] if grouped else ["hyp", "ref"]
    needs = list(dict.fromkeys([*fields, *(f for r in rewards for f in r.needs)]))

    def read(path: str, like: list | None = None, like_name: str = "") -> tuple[str, list]:
        reader = RecordReader(path, required=needs, optional=["src", "ref"] if grouped else ["id", "src"],
                              skip_invalid=skip_invalid, needed_by="rest eval without -m")
        outputs = (read_samples if grouped else read_outputs)(reader, like, like_name)
        report_skipped("eval", reader)
        return reader.name, outputs

    def measure(outputs: list, name: str) -> Evaluation:
        if grouped:
            return evaluate_samples(outputs, rewards, measures, name)
        return evaluate_outputs(outputs, rewards, name)

    name, first = read(input)
    if not first:
        raise InputError(name, None, "no record to evaluate on")
    results = [measure(first, name)]
    for path in others:
        if os.path.isdir(path):
            raise UsageError(f"--compare {path}: a directory; without --model, --compare takes files of "
                             f"outputs (give --model to decode with model directories)")
        other_name, outputs = read(path, first, name)
        results.append(measure(outputs, other_name))
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
    for label, get, estimate in _rows(results[0]):
        table.add_row(label, *(_cell(get(r), get(r) - get(results[0]) if i else None, estimate(r))
                               for i, r in enumerate(results)))
    if "bootstrap" in results[0]:
        table.caption = (f"± 95% interval, p against the first: paired bootstrap, "
                         f"{results[0]['bootstrap']['resamples']} resamples of the sources")
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
    figures += [f"{label} {name} {value:.4f}" for label, name, value in _sampled_measures(result)]
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
    """(label, the figure of a result, its bootstrap estimate or None) for each row of the table."""
    def none(r):
        return None

    def of_reward(name):
        return lambda r: r.get("bootstrap", {}).get("rewards", {}).get(name)

    def of_metric(m):
        return lambda r: r.get("bootstrap", {}).get(m)

    rows = [(f"reward {name}", lambda r, n=name: r["rewards"][n], of_reward(name))
            for name in result["rewards"]]
    rows += [(f"sampled {name}", lambda r, n=name: r["sampled"]["rewards"][n], none)
             for name in result.get("sampled", {}).get("rewards", {})]
    rows += [(f"{label} {name}", lambda r, i=i: _sampled_measures(r)[i][2], none)
             for i, (label, name, _) in enumerate(_sampled_measures(result))]
    rows += [(m, lambda r, m=m: r[m], of_metric(m)) for m in ("bleu", "chrf", "length_ratio") if m in result]
    return rows + [(m, lambda r, m=m: r[m], none) for m in ("distinct_1", "distinct_2")]


def _sampled_measures(result: dict) -> list[tuple[str, str, float]]:
    """(`pass@4`, reward name, value) for each pass@k and maj@m of a result, in a fixed order."""
    sampled = result.get("sampled", {})
    return [(f"{label}@{k}", name, value)
            for measure, label in (("pass_at", "pass"), ("majority", "maj"))
            for name, values in sampled.get(measure, {}).items() for k, value in values.items()]


def _cell(value: float, delta: float | None, estimate: dict | None) -> str:
    """`0.9820 ± 0.0030 (+0.0120, p 0.0010*)`: the figure, its 95% interval, and against the first
    column the delta and its p-value (* below 0.05)."""
    text = f"{value:.4f}" if estimate is None else f"{value:.4f} ± {estimate['ci']:.4f}"
    if delta is None:
        return text
    if estimate is None or "p_value" not in estimate:
        return f"{text} ({delta:+.4f})"
    mark = "*" if estimate["p_value"] < ALPHA else ""
    return f"{text} ({delta:+.4f}, p {estimate['p_value']:.4f}{mark})"


def _progress(candidates, what: str, total: int):
    from rest_cli.cli.progress import progress

    return progress(candidates, "eval", what, total)
