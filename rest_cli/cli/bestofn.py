"""`rest bestofn`: Best-of-N at inference, or as a selector on a scored stream."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Annotated, Optional

import typer

from rest_cli.cli import options as opts  # the reward options every scoring command shares
from rest_cli.cli.common import InputArg, OutputOpt, SkipInvalidOpt, handles_errors, log, report_skipped
from rest_cli.errors import UsageError
from rest_cli.io.atomic import write_file
from rest_cli.io.records import Record, RecordReader, RecordWriter, iter_groups
from rest_cli.rewards import Reward, build_reward, score_records
from rest_cli.sampling import DecodeOptions, EngineOptions
from rest_cli.select.bestofn import BestOfNStats, best_of_n, best_of_n_curve


@handles_errors("bestofn")
def bestofn(
    input: InputArg = "-",
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=(
        "Sample -n candidates per source from this model directory. Without it, the input is an "
        "already sampled stream grouped by id."))] = None,
    reward: Annotated[Optional[str], typer.Option("--reward", "-r", metavar="SPEC", help=(
        "Score candidates with this reward first (required with --model; without it the input "
        "must carry `reward`)."))] = None,
    reward_config: opts.RewardConfigOpt = None,
    reward_range: opts.RewardRangeOpt = None,
    calibrate: opts.CalibrateOpt = None,
    reward_timeout: opts.RewardTimeoutOpt = opts.REWARD_TIMEOUT,
    reward_restarts: opts.RewardRestartsOpt = opts.REWARD_RESTARTS,
    reward_max_chars: opts.RewardMaxCharsOpt = opts.REWARD_MAX_CHARS,
    n: Annotated[int, typer.Option("-n", help="Candidates per source, with --model.")] = 16,
    temperature: Annotated[float, typer.Option(help="Sampling temperature, with --model.")] = 0.8,
    max_length: Annotated[int, typer.Option(help="Longest candidate, in tokens, with --model.")] = 256,
    seed: Annotated[int, typer.Option(help="Random seed, with --model.")] = 0,
    compute_type: Annotated[str, typer.Option(help="CTranslate2 compute type, with --model.")] = "auto",
    curve: Annotated[Optional[str], typer.Option(help=(
        "Instead of records, print the Best-of-N curve as JSON: the mean best reward for each n in "
        "this comma-separated list (e.g. 1,2,4,8,16), estimated over all subsets of the samples."))] = None,
    output: OutputOpt = "-",
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Write each source's best candidate with `best_of`, `reward_mean` and `reward_max`."""
    sizes = _curve_sizes(curve) if curve else None
    scores = bool(reward or reward_config)
    if model and not scores:
        raise UsageError("--model needs --reward to rank the candidates it samples")
    options = opts.reward_options(reward_timeout, reward_restarts, reward_range, calibrate,
                                  rewards=int(scores), max_chars=reward_max_chars)
    decode = DecodeOptions(n=max(sizes) if sizes else n, temperature=temperature, max_length=max_length)
    engine = EngineOptions(compute_type=compute_type, seed=seed)
    stats = BestOfNStats()
    with build_reward(reward, options, reward_config) if scores else nullcontext() as scorer:
        reader, groups = _groups(input, model, scorer, decode, engine, skip_invalid)
        if sizes:
            curve_data = best_of_n_curve(groups, sizes)
            if scorer:
                scorer.close()  # a command's stray last line fails the run before anything is written
            _write_curve(curve_data, output)
        else:
            with RecordWriter(output) as writer:
                writer.write_all(best_of_n(groups, stats))
                if scorer:
                    scorer.close()  # before the output is complete, as above
    report_skipped("bestofn", reader)
    opts.report_truncated("bestofn", [scorer] if scorer else [])
    if not sizes:
        log("bestofn", stats.summary())


def _groups(input: str, model: str | None, scorer: Reward | None, decode: DecodeOptions,
            engine: EngineOptions, skip_invalid: bool) -> tuple[RecordReader, Iterator[list[Record]]]:
    """The reader and the scored candidates grouped by source: sampled from `model`, or read."""
    if model:
        reader, candidates = _sampled(input, model, decode, engine, scorer, skip_invalid)
        return reader, iter_groups(score_records(candidates, scorer))
    required = ["id"] + (list(scorer.needs) if scorer else ["reward"])
    reader = RecordReader(input, required=required, skip_invalid=skip_invalid, needed_by="rest bestofn")
    return reader, iter_groups(score_records(reader, scorer) if scorer else reader, reader=reader)


def _curve_sizes(curve: str) -> list[int]:
    try:
        sizes = sorted({int(n) for n in curve.split(",")})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise UsageError(f"--curve takes whole numbers >= 1 separated by commas, got {curve!r}")
    return sizes


def _write_curve(curve: dict, output: str) -> None:
    import orjson

    data = orjson.dumps(curve, option=orjson.OPT_APPEND_NEWLINE)
    if output == "-":
        sys.stdout.buffer.write(data)
    else:
        write_file(output, data)


def _sampled(input: str, model: str, decode: DecodeOptions, engine: EngineOptions, scorer: Reward,
             skip_invalid: bool) -> tuple[RecordReader, Iterator[Record]]:
    """The reader of sources and the stream of candidates sampled for them."""
    from rest_cli.sampling import Sampler, SampleStats, with_ids

    needs = ["src"] + [f for f in scorer.needs if f not in ("hyp", "src")]
    reader = RecordReader(input, required=needs, optional=["id"], skip_invalid=skip_invalid,
                          needed_by=f"reward '{scorer.name}'")
    return reader, Sampler(model, engine).sample(with_ids(reader), decode, SampleStats())
