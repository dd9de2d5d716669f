"""`rest score`: attach a reward to every record (docs/rewards.md lists the rewards and spec syntax)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rest_cli.io.records import RecordReader, RecordWriter
from rest_cli.rewards import build_reward, reward_names, score_records
from rest_cli.rewards.external import DEFAULT_RESTARTS
from rest_cli.io.shards import Shard, shard_groups
from rest_cli.cli.common import InputArg, OutputOpt, SkipInvalidOpt, handles_errors, progress, report_skipped


@handles_errors("score")
def score(
    input: InputArg = "-",
    reward: Annotated[Optional[str], typer.Option(
        "--reward", "-r", help=f"Reward spec: a name ({', '.join(reward_names())}), a composition such as "
                               "'product(use, copy-guard)', 'py:MODULE:FUNCTION', or 'cmd:COMMAND ARGS'.")] = None,
    reward_config: Annotated[Optional[str], typer.Option(
        help="JSON or TOML file describing the reward tree, instead of --reward.")] = None,
    reward_range: Annotated[Optional[str], typer.Option(
        help="LO:HI of an unbounded reward, mapped linearly onto [0, 1] and clipped.")] = None,
    calibrate: Annotated[Optional[str], typer.Option(
        help="JSONL file with src and ref: its 1st-99th percentile scores set the range.")] = None,
    reward_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds an external reward command may take for one batch.")] = 300.0,
    reward_restarts: Annotated[int, typer.Option(
        min=0, help="Times an external reward command is restarted on one batch after it dies or hangs.")
    ] = DEFAULT_RESTARTS,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per reward call.")] = 256,
    shard: Annotated[Optional[str], typer.Option(
        help="K/N: only the K-th of N round-robin shares of the sources (records grouped by `id`, as "
             "`rest sample` writes them). The N shards together hold every record once.")] = None,
    output: OutputOpt = "-",
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Add `reward` in [0, 1], `reward_name` and `reward_sig` (how it was computed) to each record."""
    part = Shard.parse(shard) if shard is not None else None
    with build_reward(reward, reward_config, reward_range, calibrate, reward_timeout, batch_size,
                      restarts=reward_restarts) as scorer:
        reader = RecordReader(input, required=[*scorer.needs, *(["id"] if part else [])], skip_invalid=skip_invalid,
                              needed_by=f"reward '{scorer.name}'" + (" and --shard" if part else ""))
        records = shard_groups(reader, part)
        with RecordWriter(output) as writer:
            writer.write_all(progress(score_records(records, scorer, batch_size), f"scoring ({scorer.name})"))
    report_skipped("score", reader)
